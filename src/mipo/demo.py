"""``mipo demo``: the embedded SmolLM2-135M-Instruct, offline, on the CPU.

For now it loads the model (converting and caching it on first use) and answers one chat prompt.
"""

from __future__ import annotations

import argparse
import time

from mipo.models import DEFAULT_MODEL


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model to load (default: {DEFAULT_MODEL})")
    parser.add_argument(
        "--prompt", default="What is the capital of France?", help="the chat prompt to answer"
    )


def main(args: argparse.Namespace) -> int:
    from mipo.models import load_model

    start = time.perf_counter()
    print(f"loading {args.model} ...", flush=True)
    model, tokenizer = load_model(args.model)
    print(f"loaded in {time.perf_counter() - start:.1f}s")
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": args.prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(model.device)
    output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"user: {args.prompt}\nassistant: {reply.strip()}")
    return 0
