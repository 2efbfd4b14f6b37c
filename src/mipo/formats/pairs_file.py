"""Read a preference-pairs file (JSONL or Parquet) into the rows TRL's trainers take.

Accepted: TRL's conversational format with an explicit prompt (``prompt`` a list of messages, ``chosen`` and
``rejected`` lists of assistant messages), as ``mipo pairs`` writes it, and TRL's standard format (three
strings). Other fields (id, strategy, negative_prompt, ...) are ignored, except those asked for with
``keep`` (the contrastive objectives read ``negative_prompt``). Every bad row is an ``InputError``
naming the file, the line (JSONL) or row (Parquet), and the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mipo.core.errors import InputError, MipoError
from mipo.core.files import read_jsonl

FIELDS = ("prompt", "chosen", "rejected")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise InputError(path, f"not a readable Parquet file: {e}") from None
        yield from enumerate(table.to_pylist(), start=1)
    else:
        yield from read_jsonl(path)


def _messages(value: Any, path: Path, line: int, field: str) -> list[dict[str, str]]:
    if not value or not all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        raise InputError(
            path, "expected a non-empty list of {role, content} messages", line=line, field=field
        )
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


def read_pairs(
    path: str | Path, *, keep: Sequence[str] = (), flags: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Return ``[{prompt, chosen, rejected}]``, all rows in one format (conversational or standard).

    ``keep``: prompt-like fields (``negative_prompt``) every row must also have, in the prompt's format;
    they are kept in the returned rows. ``flags``: optional true/false fields (``negative_context``), kept
    where a row has them.
    """
    path = Path(path)
    if not path.is_file():
        raise MipoError(f"{path}: pairs file not found")
    pairs: list[dict[str, Any]] = []
    conversational: bool | None = None
    for line, row in _rows(path):
        for field in FIELDS:
            if field not in row or row[field] is None:
                raise InputError(
                    path, "missing (a pair needs prompt, chosen and rejected)", line=line, field=field
                )
        is_chat = isinstance(row["prompt"], list)
        if conversational is None:
            conversational = is_chat
        pair = {}
        for field in FIELDS:
            value = row[field]
            if conversational:
                if not isinstance(value, list):
                    raise InputError(
                        path,
                        f"expected a list of messages like the rows above, got {type(value).__name__}",
                        line=line,
                        field=field,
                    )
                pair[field] = _messages(value, path, line, field)
            else:
                if not isinstance(value, str):
                    raise InputError(
                        path,
                        f"expected a string like the rows above, got {type(value).__name__}",
                        line=line,
                        field=field,
                    )
                if not value.strip() and field != "prompt":
                    raise InputError(path, "empty response", line=line, field=field)
                pair[field] = value
        if conversational and any(m["role"] != "assistant" for m in pair["chosen"] + pair["rejected"]):
            raise InputError(
                path, "chosen and rejected must be assistant messages", line=line, field="chosen"
            )
        for field in keep:
            pair[field] = _prompt_like(row.get(field), path, line, field, conversational=bool(conversational))
        for field in flags:
            if row.get(field) is not None:
                if not isinstance(row[field], bool):
                    raise InputError(
                        path, f"expected true or false, got {row[field]!r}", line=line, field=field
                    )
                pair[field] = row[field]
        pairs.append(pair)
    if not pairs:
        raise InputError(path, "no pairs: the file is empty")
    return pairs


def _prompt_like(value: Any, path: Path, line: int, field: str, *, conversational: bool) -> Any:
    """A field that holds a prompt (``negative_prompt``), in the format of the row's prompt."""
    if value is None:
        raise InputError(
            path,
            "missing (this objective needs it; mipo pairs writes it in every row)",
            line=line,
            field=field,
        )
    if conversational:
        return _messages(value if isinstance(value, list) else None, path, line, field)
    if not isinstance(value, str):
        raise InputError(
            path, f"expected a string like the prompt, got {type(value).__name__}", line=line, field=field
        )
    return value


def require_rejected_answers_negative_prompt(path: str | Path, *, needed_by: str) -> None:
    """Refuse a file whose rejected replies are not the negative prompt's own replies. ``mipo pairs`` writes x''s
    reply as the rejected one unless a row's ``generation.rejected`` names another choice (``--select pmi
    --rejected lowest``: the lowest-PMI reply to x itself); rows from other tools are taken as x''s replies."""
    path = Path(path)
    for line, row in _rows(path):
        generation = row.get("generation")
        chosen_as = generation.get("rejected", "negative") if isinstance(generation, dict) else "negative"
        if chosen_as != "negative":
            raise InputError(
                path,
                f"is not the negative prompt's own reply (generation.rejected: {chosen_as!r}); {needed_by} "
                "needs it: pairs made with --rejected negative",
                line=line,
                field="rejected",
            )


def require_negatives_without_context(path: str | Path, *, needed_by: str) -> None:
    """Refuse a file in which every pair's negative prompt carries a user context (``negative_context: true``,
    as ``mipo pairs --strategy other-context`` writes): ``needed_by`` keeps what the model does *without* one.
    Rows without the field (other tools, older files) count as negatives without a context."""
    path = Path(path)
    first = None
    for line, row in _rows(path):
        first = first or line
        if row.get("negative_context") is not True:
            return
    if first is not None:
        raise InputError(
            path,
            f"every pair's negative prompt carries a user context; {needed_by} keeps what the model does "
            "without one: use pairs whose negative prompt has none (--strategy incomplete, cad or mixed), or "
            "--preserve 0",
            line=first,
            field="negative_context",
        )
