"""``file:PATH``: the user's own items, one record a line (JSONL; CSV and Parquet read too).

- math: ``{"question": "...", "answer": 42}`` (a number, or text holding one), scored like ``gsm8k``;
- multiple choice: ``{"question": "...", "choices": ["...", "..."], "answer": "B"}`` (a letter, or a
  0-based index), scored like ``arc-easy``.

The kind is detected from the first record's fields (``choices`` present: multiple choice); every record
must then be of that kind. ``id``, ``context`` (the user's stated context) and ``system`` are optional.
Records are read by ``mipo.prompts.records.load_prompts`` (``question`` is the prompt field), so ids follow its
rule: the ``id`` field, else the line number.
"""

from __future__ import annotations

from pathlib import Path

from mipo.core.errors import InputError
from mipo.prompts.records import PromptRecord, load_prompts
from mipo.tasks import gsm8k, multiple_choice
from mipo.tasks.base import Item, Task, TaskOptions, register_task


def _math_item(path: Path, record: PromptRecord) -> Item:
    raw = record.answer
    if isinstance(raw, bool) or raw is None:
        number = None
    else:
        number = gsm8k.normalize_number(str(raw)) if isinstance(raw, (int, float, str)) else None
    if number is None:
        raise InputError(path, f"expected a number, got {raw!r}", line=record.line, field="answer")
    question = record.prompt
    return Item.from_record(
        record, prompt=gsm8k.prompt_text(question), answer=number, meta={"question": question}
    )


def _choice_answer(path: Path, record: PromptRecord, choices: list[str]) -> str:
    raw = record.answer
    letters = multiple_choice.LETTERS[: len(choices)]
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(choices):
        return letters[raw]
    if isinstance(raw, str) and raw.strip().isdigit() and int(raw) < len(choices):
        return letters[int(raw)]
    if isinstance(raw, str) and len(raw.strip()) == 1 and raw.strip().upper() in letters:
        return raw.strip().upper()
    raise InputError(
        path,
        f"expected a letter {letters[0]}-{letters[-1]} or an index 0-{len(choices) - 1}, got {raw!r}",
        line=record.line,
        field="answer",
    )


def _choice_item(path: Path, record: PromptRecord) -> Item:
    choices = record.meta.get("choices")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise InputError(
            path, "expected a list of at least 2 non-empty texts", line=record.line, field="choices"
        )
    if len(choices) > len(multiple_choice.LETTERS):
        raise InputError(
            path, f"at most {len(multiple_choice.LETTERS)} choices", line=record.line, field="choices"
        )
    answer = _choice_answer(path, record, choices)
    made = multiple_choice.make_item(record.id, record.prompt, choices, answer)
    return Item.from_record(record, prompt=made.prompt, answer=answer, choices=made.choices, meta=made.meta)


def items(path: Path) -> tuple[str, list[Item]]:
    """``(kind, items)`` of a user's item file; the first record decides the kind."""
    records = load_prompts(path, prompt_field="question")
    kind = "choice" if "choices" in records[0].meta else "generate"
    out = []
    for record in records:
        if not isinstance(record.prompt, str):
            raise InputError(path, "expected text", line=record.line, field="question")
        if ("choices" in record.meta) != (kind == "choice"):
            expected = "multiple-choice ('choices' present)" if kind == "choice" else "math (no 'choices')"
            raise InputError(
                path,
                f"items before this one are {expected}; do not mix kinds",
                line=record.line,
                field="choices",
            )
        out.append(_choice_item(path, record) if kind == "choice" else _math_item(path, record))
    return kind, out


def task(path_text: str) -> Task:
    path = Path(path_text)
    if not path.is_file():
        raise InputError(path, "file not found (file:PATH takes a JSONL file of items)")
    kind, found = items(path)
    if kind == "choice":
        return Task(
            f"file:{path}", "choice", found, multiple_choice.score, "accuracy (answer letter)", str(path)
        )
    return Task(f"file:{path}", "generate", found, gsm8k.score, "exact match of the final number", str(path))


@register_task("file", "your own math or multiple-choice items, one JSON object a line", argument="PATH")
def _build(options: TaskOptions) -> Task:
    return task(str(options.argument))
