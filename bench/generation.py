"""Generation speed, in one run: tokens/s of ``model.generate`` (one prompt at a time, batches of 32),
of mipo's ``hf`` engine with one worker and with its default workers (one per core), of llama.cpp on the
same GGUF file (the tool a CPU user would pick; skipped where ``llama-cpp-python`` is not installed),
and of a plain forward pass over as many tokens (the compute ceiling); and MIPO pairs per minute with
``random`` negatives (one generation per prompt) against a pipeline that generates chosen and rejected
separately (two generations per prompt).

    PYTHONPATH=src python bench/generation.py --model smollm2-135m --prompts 64 --max-new-tokens 128

Ends with one line of ``key=value`` ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import mipo  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY before OpenMP loads, for every run below)

TOPICS = ["the ocean", "volcanoes", "bread", "chess", "the moon", "bees", "trains", "jazz"]
ASKS = [
    "Explain {} to a child.",
    "Write a short poem about {}.",
    "Give three facts about {}.",
    "What is the history of {}?",
    "Why do people like {}?",
    "Describe {} in one paragraph.",
    "What would happen without {}?",
    "Tell me a story that involves {}.",
]


def make_prompts(n: int) -> list[str]:
    prompts = [ask.format(topic) for topic in TOPICS for ask in ASKS]
    return (prompts * (n // len(prompts) + 1))[:n]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--one-at-a-time", type=int, default=4, help="prompts for (a), which is slow")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=64, help="mipo engine batch size")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from mipo.engine.generation import (
        GenerationStats,
        encode_conversations,
        generate_responses,
        stop_token_ids,
    )
    from mipo.engine.models import load_model
    from mipo.pairs.build import run_pairs
    from mipo.pairs.config import PairsConfig

    model, tokenizer = load_model(args.model, device="cpu")
    texts = make_prompts(args.prompts)
    convs = [[{"role": "user", "content": t}] for t in texts]
    encoded = encode_conversations(tokenizer, convs)
    stops = stop_token_ids(model, tokenizer)
    sampling = dict(
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
    )
    rates: dict[str, float] = {}

    def generate_batched(ids_list, batch):
        torch.manual_seed(0)
        tokens = 0
        for first in range(0, len(ids_list), batch):
            chunk = ids_list[first : first + batch]
            padded = tokenizer.pad({"input_ids": chunk}, return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(**padded, **sampling)
            new = out[:, padded["input_ids"].shape[1] :]
            tokens += int((~torch.isin(new, torch.tensor(stops + [tokenizer.pad_token_id]))).sum())
        return tokens

    tokens, seconds = timed(lambda: generate_batched(encoded[: args.one_at_a_time], 1))
    rates["a_generate_one_at_a_time"] = tokens / seconds
    print(
        f"(a) generate, one prompt at a time ({args.one_at_a_time} prompts): {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s",
        flush=True,
    )

    tokens, seconds = timed(lambda: generate_batched(encoded, 32))
    rates["b_generate_batch32"] = tokens / seconds
    print(
        f"(b) generate, batches of 32: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s",
        flush=True,
    )

    def mipo_engine(label: str, key: str, workers: int | None) -> None:
        stats = GenerationStats()
        _, seconds = timed(
            lambda: generate_responses(
                model,
                tokenizer,
                convs,
                temperature=args.temperature,
                top_p=args.top_p,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                progress=False,
                stats=stats,
                workers=workers,
            )
        )
        rates[key] = stats.new_tokens / seconds
        print(
            f"({key[0]}) mipo hf engine, {label}, batch {args.batch_size}: {stats.new_tokens} tokens in "
            f"{seconds:.1f}s = {rates[key]:.1f} tok/s",
            flush=True,
        )

    from mipo.engine.workers import default_workers

    workers = default_workers("cpu")
    mipo_engine("one worker (2 threads)", "c1_mipo_one_worker", 1)
    mipo_engine(f"{workers} workers (the default)", "c_mipo_hf", None)

    # (d) the ceiling: one forward pass per batch of 64 sequences as long as prompt + new tokens.
    length = max(len(e) for e in encoded) + args.max_new_tokens
    ids = torch.randint(0, len(tokenizer), (min(64, args.prompts), length))
    with torch.inference_mode():
        model(input_ids=ids[:2, :16])  # warm-up
        _, seconds = timed(lambda: model(input_ids=ids, logits_to_keep=1))
    rates["d_forward"] = ids.numel() / seconds
    print(
        f"(d) forward pass: {ids.numel()} tokens in {seconds:.1f}s = {rates['d_forward']:.1f} tok/s",
        flush=True,
    )

    threads = args.threads or torch.get_num_threads()
    rates["e_llamacpp"] = llamacpp_rate(args, encoded, set(stops), threads)

    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = Path(tmp) / "prompts.jsonl"
        prompts_file.write_text(
            "".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in enumerate(texts))
        )
        # mipo pairs, random: one generation per prompt serves as chosen and (for another prompt) rejected.
        summary, seconds = timed(
            lambda: run_pairs(
                PairsConfig(
                    model=args.model,
                    prompts=str(prompts_file),
                    out=f"{tmp}/pairs.jsonl",
                    max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    batch_size=args.batch_size,
                    device="cpu",
                    progress=False,
                )
            )
        )
        random_per_min = summary.pairs / seconds * 60
        # Two-pass: generate chosen for x, then rejected for x' (the same negatives), with the same engine;
        # end to end like `mipo pairs` above, so the model load counts on both sides.
        rows = [json.loads(line) for line in open(f"{tmp}/pairs.jsonl")]
        start = time.perf_counter()
        model, tokenizer = load_model(args.model, device="cpu")
        generate_responses(
            model,
            tokenizer,
            [r["prompt"] for r in rows],
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            progress=False,
        )
        generate_responses(
            model,
            tokenizer,
            [r["negative_prompt"] for r in rows],
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            progress=False,
            seed=1,
        )
        two_pass_per_min = len(rows) / (time.perf_counter() - start) * 60
    print(
        f"pairs/min: random {random_per_min:.1f}, two-pass {two_pass_per_min:.1f} ({summary.pairs} pairs; "
        "both end to end, model load included)"
    )
    engine = rates["c_mipo_hf"]
    llamacpp = f"{engine / rates['e_llamacpp']:.2f}" if rates["e_llamacpp"] else "skipped"
    print(
        f"vs_batch32={engine / rates['b_generate_batch32']:.2f} vs_forward={engine / rates['d_forward']:.2f} "
        f"vs_one_worker={engine / rates['c1_mipo_one_worker']:.2f} vs_llamacpp={llamacpp} "
        f"vs_one_at_a_time={engine / rates['a_generate_one_at_a_time']:.2f} "
        f"pairs_per_min_vs_two_pass={random_per_min / two_pass_per_min:.2f}"
    )


def llamacpp_rate(args, encoded: list[list[int]], stops: set[int], threads: int) -> float:
    """(e) llama.cpp on the built-in model's GGUF file, all prompts in one context; 0 when not installed."""
    import importlib.util

    if args.model != "smollm2-135m":
        print("(e) llama.cpp: skipped (the GGUF peer runs on the built-in smollm2-135m only)", flush=True)
        return 0.0
    if importlib.util.find_spec("llama_cpp") is None:
        print("(e) llama.cpp: skipped (llama-cpp-python is not installed: make bench builds it)", flush=True)
        return 0.0
    import llamacpp_peer
    from mipo.engine.models import BUILTIN_MODELS

    path = str(BUILTIN_MODELS["smollm2-135m"].gguf_path())
    tokens, seconds = llamacpp_peer.generate(
        path,
        encoded,
        stops,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        threads=threads,
    )
    print(
        f"(e) llama.cpp (llama-cpp-python, Q4_1 GGUF, {len(encoded)} sequences in one context, {threads} "
        f"threads): {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s",
        flush=True,
    )
    return tokens / seconds


if __name__ == "__main__":
    main()
