"""Does the guidance teacher itself continue the loops a distilled model falls into?

For each reply of a trained model that repeats itself (scripts/results_table.py's definition: under 70% of
its 3-word sequences distinct), score the reply's own tokens, past its first ``--skip``, under the base
model with the user's context (CAD A = 0) and under CAD A = 1 and 3 of the base (the teachers of the
``guidance`` objective): the mean probability of the reply's token and the share of positions where it is
the teacher's top token. The base model's own replies to the same items are the control. A teacher that
gives a loop's next token a high probability would teach the loop on the student's own replies too
(on-policy distillation), so distilling along them would not remove it.

    python scripts/teacher_on_loops.py docs/results/screen-guidance-mixed-a3-preserve-p3-s*/eval/prefs

Reads the evaluation folders' example files (``prefs.model.jsonl``, ``prefs.model.no-context.jsonl``,
``prefs.baseline.jsonl``); loads the base model (``--model``, default the embedded smollm2-135m) in fp32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_table import _rows, repeats_itself  # noqa: E402


def measure(model, tokenizer, rows, bare: dict[str, list], alphas: list[float], skip: int) -> dict:
    """Per teacher A: mean probability of the reply's own tokens past ``skip``, and top-1 agreement."""
    import torch

    from mipo.engine.cad import cad_log_probs
    from mipo.engine.scoring import encode_response, reply_token_logprobs

    replies = [r["response"] for r in rows]
    with_context = reply_token_logprobs(model, tokenizer, [r["prompt"] for r in rows], replies, batch_size=4)
    without = reply_token_logprobs(model, tokenizer, [bare[r["id"]] for r in rows], replies, batch_size=4)
    totals = {a: [0.0, 0, 0] for a in alphas}  # probability sum, top-1 hits, positions
    for row, w, wo in zip(rows, with_context, without):
        _, reply_ids = encode_response(tokenizer, row["prompt"], row["response"])
        targets = torch.tensor(reply_ids[skip:])
        if targets.numel() == 0:
            continue
        for a in alphas:
            teacher = cad_log_probs(w[skip:], wo[skip:], a)
            picked = teacher.gather(1, targets[:, None])[:, 0]
            totals[a][0] += float(picked.exp().sum())
            totals[a][1] += int((teacher.argmax(-1) == targets).sum())
            totals[a][2] += targets.numel()
    return {a: (p / n, hits / n, n) for a, (p, hits, n) in totals.items() if n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluation folders (eval/prefs)")
    parser.add_argument("--model", default="smollm2-135m", help="the base model: the teachers' source")
    parser.add_argument("--alphas", default="0,1,3", help="teacher strengths A (0 = the base with context)")
    parser.add_argument("--skip", type=int, default=8, help="reply tokens skipped before scoring")
    parser.add_argument("--task", default="prefs")
    args = parser.parse_args()

    import torch

    from mipo.engine.models import load_model

    torch.set_num_threads(1)
    model, tokenizer = load_model(args.model, dtype=torch.float32)
    alphas = [float(a) for a in args.alphas.split(",")]
    print("| replies | n | tokens | " + " | ".join(f"A = {a:g}: p(token), top-1" for a in alphas) + " |")
    print("|---|---|---|" + "---|" * len(alphas))
    for n, folder in enumerate(args.folders):
        examples = folder / "examples"
        bare = {r["id"]: r["prompt"] for r in _rows(examples / f"{args.task}.model.no-context.jsonl")}
        looping = [r for r in _rows(examples / f"{args.task}.model.jsonl") if repeats_itself(r["response"])]
        rows = [(f"{folder}: the model's repeating", looping)]
        if n == 0:  # the same base replies in every folder of one task: the control, once
            control = [
                r
                for r in _rows(examples / f"{args.task}.baseline.jsonl")
                if not repeats_itself(r["response"])
            ]
            rows.append(("the base's own, not repeating", control))
        for name, replies in rows:
            scores = measure(model, tokenizer, replies, bare, alphas, args.skip)
            n_tokens = next(iter(scores.values()))[2] if scores else 0
            cells = " | ".join(
                f"{scores[a][0]:.2f}, {scores[a][1]:.2f}" if a in scores else "-" for a in alphas
            )
            print(f"| {name} | {len(replies)} | {n_tokens} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
