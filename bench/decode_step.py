"""Time of one decode step of mipo's engine (and of the prefill), for tuning threads and OpenMP waiting.

    PYTHONPATH=src python bench/decode_step.py --rows 64
    GOMP_SPINCOUNT=100000 PYTHONPATH=src python bench/decode_step.py   # compare OpenMP settings, one per run

Runs a batch for 4 and for 36 new tokens (no row dropped) and reports the difference per step, so the
prefill and the model load cancel out. Prints the OpenMP settings it ran under.
"""

from __future__ import annotations

import argparse
import os
import time

import mipo  # noqa: F401  (before torch: sets OMP_WAIT_POLICY=PASSIVE unless it is set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=64, help="prompts decoded together")
    args = parser.parse_args()

    import torch

    from generation import make_prompts  # bench/generation.py: the same prompts
    from mipo.engine.generation import GenerationStats, _decode_batch, encode_conversations, stop_token_ids
    from mipo.engine.models import load_model

    model, tokenizer = load_model(args.model, device="cpu")
    prompts = encode_conversations(
        tokenizer, [[{"role": "user", "content": t}] for t in make_prompts(args.rows)]
    )
    stops = torch.tensor(stop_token_ids(model, tokenizer))
    rows = [(ids, row) for row, ids in enumerate(prompts)]  # (prompt ids, the row's random seed)

    def run(steps: int) -> float:
        start = time.perf_counter()
        _decode_batch(
            model,
            rows,
            stops=stops,
            pad_id=tokenizer.pad_token_id,
            temperature=0.1,
            top_p=0.9,
            max_new_tokens=steps,
            drop_finished=False,
            stats=GenerationStats(),
        )
        return time.perf_counter() - start

    run(2)  # warm-up
    short, long = run(4), run(36)
    step = (long - short) / 32
    print(
        f"rows={args.rows} threads={torch.get_num_threads()} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}: decode step {step * 1000:.1f} ms "
        f"({args.rows / step:.0f} tok/s), prefill {short - 4 * step:.2f} s"
    )


if __name__ == "__main__":
    main()
