"""Where along a distilled model's replies does the user's context lift the repeated tokens?

For each reply of an evaluation folder (``prefs.model.jsonl``), the PMI of each of its first 64 tokens with
the user's context under the base model, log p(y_t|x, y<t) - log p(y_t|x', y<t) (x' the conversation
without its system message), at the tokens of its repeated 4-grams (``guidance``'s
``repeated_ngram_mask``): for each reply that repeats itself (scripts/results_table.py's definition), how
many of those tokens are above 0.5, 1 and 2 nats, and the same counts over the replies that do not. This
is what chose ``guidance --unlikelihood_pmi 0.5`` (docs/training.md).

    python scripts/context_loop_pmi.py docs/results/screen-guidance-mixed-a3-preserve-once-p3-s0/eval/prefs

Loads the base model (``--model``, default the embedded smollm2-135m) in fp32, one thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_table import _rows, repeats_itself  # noqa: E402

THRESHOLDS = (0.5, 1.0, 2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, help="an evaluation folder holding examples/prefs.model.jsonl")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    import torch

    from mipo.engine.models import load_model
    from mipo.engine.scoring import encode_response, reply_token_logprobs
    from mipo.training.objectives._guidance import repeated_ngram_mask, token_pmi

    torch.set_num_threads(1)
    model, tokenizer = load_model(args.model, device="cpu")
    rows = [row for row in _rows(args.eval_dir / "examples" / "prefs.model.jsonl") if row.get("response")]
    texts = [row["response"] for row in rows]
    with_context = [row["prompt"] for row in rows]
    without = [[m for m in messages if m.get("role") != "system"] for messages in with_context]
    # one list of log-probs per prompt kind: rows of the same reply align whatever the prompt
    logp_with, logp_without = (
        reply_token_logprobs(model, tokenizer, c, texts) for c in (with_context, without)
    )
    others: list[float] = []
    for text, messages, lp_with, lp_without in zip(texts, with_context, logp_with, logp_without):
        reply = encode_response(tokenizer, messages, text)[1][:64]
        n = len(reply)
        pmi = token_pmi(lp_with[:n], lp_without[:n], torch.tensor(reply))
        repeated = [v for v, r in zip(pmi.tolist(), repeated_ngram_mask(reply, 4)) if r]
        if repeats_itself(text):
            above = ", ".join(f"> {t}: {sum(v > t for v in repeated)}" for t in THRESHOLDS)
            print(f"repeating reply {text[:50]!r}: {len(repeated)} repeated tokens; {above}")
        else:
            others += repeated
    above = ", ".join(f"> {t}: {sum(v > t for v in others)}" for t in THRESHOLDS)
    print(f"the replies that do not repeat themselves: {len(others)} repeated tokens; {above}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
