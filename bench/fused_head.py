"""TRL's fused LM head on a CPU: every position scored (TRL's CPU path) against the reply positions only (mipo's).

One batch of 16 sequences (--prompt-tokens prompt + --reply-tokens reply, random token ids) through
SmolLM2-135M with a LoRA adapter (r 16, all linear projections), fp32: the no-grad forward of a reference
pass and the forward + backward of a training step, each timed 3 times, the two ways alternating; the
ratio of the best times. The summed reply log-probs of the two ways are printed: they must agree.

Usage: PYTHONPATH=src python bench/fused_head.py [--prompt-tokens 150] [--reply-tokens 48]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=150)
    parser.add_argument("--reply-tokens", type=int, default=48)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from mipo.engine.models import load_model
    from mipo.engine.trl_internals import reply_positions_only

    model, _ = load_model("smollm2-135m", device="cpu")
    add_fused_lm_head(model)
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    torch.manual_seed(0)
    width = args.prompt_tokens + args.reply_tokens
    ids = torch.randint(0, model.config.vocab_size, (args.rows, width))
    labels = ids.clone()
    labels[:, : args.prompt_tokens] = -100

    def step(grad: bool) -> tuple[float, float]:
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
            if grad:
                out.log_probs.sum().backward()
        return time.perf_counter() - start, float(out.log_probs.detach().sum())

    print(
        f"SmolLM2-135M + LoRA, {args.rows} rows x ({args.prompt_tokens} prompt + {args.reply_tokens} reply) "
        f"tokens, {torch.get_num_threads()} threads"
    )
    ratios = {}
    for grad, name in ((False, "reference forward"), (True, "forward + backward")):
        times: dict[str, list[float]] = {"every": [], "replies": []}
        sums = {}
        for _ in range(args.repeats):
            times["every"].append((r := step(grad))[0])
            sums["every"] = r[1]
            with reply_positions_only():
                times["replies"].append((r := step(grad))[0])
            sums["replies"] = r[1]
        ratios[grad] = min(times["every"]) / min(times["replies"])
        print(
            f"{name}: every position {min(times['every']):.2f} s, reply positions only {min(times['replies']):.2f} s "
            f"(best of {args.repeats}); reply log-probs {sums['every']:.3f} / {sums['replies']:.3f}"
        )
    print(f"forward_vs_every_position={ratios[False]:.2f} step_vs_every_position={ratios[True]:.2f}")


if __name__ == "__main__":
    main()
