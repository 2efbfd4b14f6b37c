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
    from mipo.training.objectives._guidance import repeated_ngram_mask, token_pmi

    torch.set_num_threads(1)
    model, tokenizer = load_model(args.model, device="cpu")

    def prompt_ids(messages: list[dict]) -> list[int]:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def logits(prompt: list[int], reply: list[int]) -> torch.Tensor:
        with torch.no_grad():
            full = model(input_ids=torch.tensor([prompt + reply])).logits[0]
        return full[len(prompt) - 1 : len(prompt) + len(reply) - 1]

    others: list[float] = []
    for row in _rows(args.eval_dir / "examples" / "prefs.model.jsonl"):
        text = row.get("response") or ""
        reply = tokenizer(text, add_special_tokens=False)["input_ids"][:64]
        if not reply:
            continue
        messages = row["prompt"]
        bare = [m for m in messages if m.get("role") != "system"]
        pmi = token_pmi(
            logits(prompt_ids(messages), reply), logits(prompt_ids(bare), reply), torch.tensor(reply)
        )
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
