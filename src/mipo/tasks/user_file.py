"""``file:PATH``: the user's own items, one JSON object a line.

- math: ``{"question": "...", "answer": 42}`` (a number, or text holding one), scored like ``gsm8k``;
- multiple choice: ``{"question": "...", "choices": ["...", "..."], "answer": "B"}`` (a letter, or a
  0-based index), scored like ``arc-easy``.

The kind is detected from the first record's fields (``choices`` present: multiple choice); every record
must then be of that kind. ``id`` and ``context`` (the user's stated context) are optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mipo.errors import InputError
from mipo.files import read_jsonl
from mipo.tasks import Item, Task, multiple_choice
from mipo.tasks import math as math_task


def _text(path: Path, line: int, row: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    value = row.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, "missing or empty (expected text)", line=line, field=field)
    return value


def _math_item(path: Path, line: int, row: dict[str, Any]) -> Item:
    question = _text(path, line, row, "question")
    raw = row.get("answer")
    if isinstance(raw, bool) or raw is None:
        number = None
    else:
        number = math_task.normalize_number(str(raw)) if isinstance(raw, (int, float, str)) else None
    if number is None:
        raise InputError(path, f"expected a number, got {raw!r}", line=line, field="answer")
    return Item(
        str(row.get("id", f"line-{line}")),
        math_task.prompt_text(question),
        _text(path, line, row, "context", required=False),
        answer=number,
        meta={"question": question},
    )


def _choice_item(path: Path, line: int, row: dict[str, Any]) -> Item:
    question = _text(path, line, row, "question")
    choices = row.get("choices")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise InputError(path, "expected a list of at least 2 non-empty texts", line=line, field="choices")
    if len(choices) > len(multiple_choice.LETTERS):
        raise InputError(path, f"at most {len(multiple_choice.LETTERS)} choices", line=line, field="choices")
    raw = row.get("answer")
    letters = multiple_choice.LETTERS[: len(choices)]
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(choices):
        answer = letters[raw]
    elif isinstance(raw, str) and raw.strip().isdigit() and int(raw) < len(choices):
        answer = letters[int(raw)]
    elif isinstance(raw, str) and len(raw.strip()) == 1 and raw.strip().upper() in letters:
        answer = raw.strip().upper()
    else:
        raise InputError(
            path,
            f"expected a letter {letters[0]}-{letters[-1]} or an index 0-{len(choices) - 1}, got {raw!r}",
            line=line,
            field="answer",
        )
    item = multiple_choice.make_item(str(row.get("id", f"line-{line}")), question, choices, answer)
    item.context = _text(path, line, row, "context", required=False)
    return item


def task(path_text: str) -> Task:
    path = Path(path_text)
    if not path.is_file():
        raise InputError(path, "file not found (file:PATH takes a JSONL file of items)")
    items: list[Item] = []
    kind = None
    for line, row in read_jsonl(path):
        row_kind = "choice" if "choices" in row else "math"
        if kind is None:
            kind = row_kind
            if "question" not in row:
                raise InputError(
                    path, "missing; an item needs 'question' and 'answer'", line=line, field="question"
                )
        elif row_kind != kind:
            expected = "multiple-choice ('choices' present)" if kind == "choice" else "math (no 'choices')"
            raise InputError(
                path, f"items before this one are {expected}; do not mix kinds", line=line, field="choices"
            )
        items.append(_choice_item(path, line, row) if kind == "choice" else _math_item(path, line, row))
    if not items:
        raise InputError(path, "no items")
    if kind == "choice":
        return Task(
            f"file:{path}", "choice", items, multiple_choice.score, "accuracy (answer letter)", str(path)
        )
    return Task(
        f"file:{path}", "generate", items, math_task.score, "exact match of the final number", str(path)
    )
