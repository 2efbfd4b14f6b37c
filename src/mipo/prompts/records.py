"""The prompts stage: read prompt records from JSONL, CSV, Parquet, a saved ``datasets`` folder or a Hub id,
or a named dataset registered in ``PROMPT_SOURCES`` (``prism``, ``prism:FOLDER``; ``mipo.tasks.personal``).

A record is ``{id, prompt, context?, system?, answer?, meta?}``: ``prompt`` is a string or a list of chat
messages, ``context`` the user's own context (a persona, stated preferences). ``to_conversation`` turns a
record into the chat messages a model answers; the context goes into the system message by default
(``context_mode="system"``), which small instruct models follow best, or before the user's question
(``context_mode="prefix"``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo.core.errors import ConfigError, InputError, MipoError
from mipo.core.files import TEXT_ENCODING, read_jsonl, read_parquet_rows
from mipo.core.registry import Registry

Message = dict[str, str]
CONTEXT_MODES = ("system", "prefix")
ROLES = ("system", "user", "assistant")

# Named datasets a prompt source may be (``NAME`` or ``NAME:ARGUMENT``): name -> ``rows(argument, split)``,
# a list of records. Their modules live in ``mipo.tasks`` and register here on import.
PROMPT_SOURCES: Registry = Registry("prompt source", "mipo.tasks")


@dataclass
class PromptRecord:
    id: str
    prompt: str | list[Message]
    context: str | None = None
    system: str | None = None
    answer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    group: str | None = None  # the value of ``group_field``, when one is given
    line: int | None = None  # where the record was read (1-based), for error messages

    @property
    def question(self) -> str:
        """The text of the user's (last) turn."""
        if isinstance(self.prompt, str):
            return self.prompt
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")

    def prompt_text(self) -> str:
        """One string standing for the whole prompt, used to tell duplicates apart."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)


def load_prompts(
    source: str | Path,
    *,
    prompt_field: str = "prompt",
    context_field: str = "context",
    id_field: str = "id",
    system_field: str = "system",
    answer_field: str = "answer",
    group_field: str | None = None,
    split: str = "train",
    limit: int | None = None,
) -> list[PromptRecord]:
    """Read and check prompt records; ids default to the line (or row) number.

    Bad rows raise an ``InputError`` naming the file, line and field.
    """
    source = str(source)
    records: list[PromptRecord] = []
    seen_ids: dict[str, int] = {}
    for line, row in _read_rows(source, split):
        record = _to_record(
            source, line, row, prompt_field, context_field, id_field, system_field, answer_field, group_field
        )
        if record.id in seen_ids:
            raise InputError(
                source, f"id {record.id!r} repeats line {seen_ids[record.id]}", line=line, field=id_field
            )
        seen_ids[record.id] = line
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise InputError(source, "no prompt records")
    return records


def _read_rows(source: str, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    path = Path(source).expanduser()
    if path.is_dir():
        yield from _datasets_rows(source, lambda: _load_from_disk(path, split))
        return
    if not path.exists():
        head, _, argument = source.partition(":")
        if head and "/" not in head and head in PROMPT_SOURCES:
            yield from enumerate(PROMPT_SOURCES.get(head)(argument or None, split), start=1)
            return
        parts = source.split("/")
        if len(parts) == 2 and all(parts) and not path.suffix:
            yield from _datasets_rows(source, lambda: _load_hub(source, split))
            return
        raise MipoError(f"{source}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or _looks_like_jsonl(path):
        yield from read_jsonl(path)
    elif suffix == ".json":
        yield from _json_array_rows(path)
    elif suffix in (".csv", ".tsv"):
        yield from _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        yield from read_parquet_rows(path)
    else:
        raise InputError(path, f"unknown file type '{suffix}': use .jsonl, .json, .csv, .tsv or .parquet")


def _looks_like_jsonl(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    with path.open("rb") as f:
        return f.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{"


def _json_array_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import json

    try:
        data = json.loads(path.read_text(encoding=TEXT_ENCODING))
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    if not isinstance(data, list):
        raise InputError(path, "expected a JSON array of objects (or JSON Lines)")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise InputError(path, f"item {number}: expected an object, got {type(row).__name__}")
        yield number, row


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open("r", encoding=TEXT_ENCODING, newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            for row in reader:
                # Empty cells mean "no value"; the line is where the row starts (the header is line 1).
                yield reader.line_num, {k: (v if v != "" else None) for k, v in row.items() if k is not None}
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None
    except csv.Error as e:
        raise InputError(path, f"malformed CSV: {e}") from None


def _load_from_disk(path: Path, split: str):
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise MipoError(f"{path}: not a saved datasets folder ({e})") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ConfigError(f"{path}: no split '{split}' (has: {', '.join(data)}); pass --split")
        data = data[split]
    return data


def _load_hub(name: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown id, gated...: one line, not a traceback
        text = str(e).strip().splitlines()
        raise MipoError(
            f"cannot load '{name}' from the Hugging Face Hub: {text[0] if text else type(e).__name__}"
        ) from None


def _datasets_rows(source: str, load) -> Iterator[tuple[int, dict[str, Any]]]:
    yield from enumerate(load(), start=1)


def _to_record(
    source: str,
    line: int,
    row: dict[str, Any],
    prompt_field: str,
    context_field: str,
    id_field: str,
    system_field: str,
    answer_field: str,
    group_field: str | None,
) -> PromptRecord:
    def fail(field_name: str, message: str) -> InputError:
        return InputError(source, message, line=line, field=field_name)

    if prompt_field not in row:
        found = ", ".join(map(str, row)) or "none"
        raise fail(prompt_field, f"missing or empty prompt (fields found: {found}); pass --prompt-field NAME")
    prompt = row.get(prompt_field)
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()) or prompt == []:
        raise fail(prompt_field, "missing or empty prompt")
    if isinstance(prompt, list):
        prompt = _check_messages(prompt, fail, prompt_field)
    elif not isinstance(prompt, str):
        raise fail(prompt_field, f"expected a string or a list of chat messages, got {type(prompt).__name__}")
    context = _optional_text(row.get(context_field), fail, context_field)
    system = _optional_text(row.get(system_field), fail, system_field)
    raw_id = row.get(id_field)
    if raw_id is None:
        record_id = str(line)
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id).strip():
        record_id = str(raw_id)
    else:
        raise fail(id_field, f"expected a non-empty string or integer, got {raw_id!r}")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise fail("meta", f"expected an object, got {type(meta).__name__}")
    used = {prompt_field, context_field, id_field, system_field, answer_field, "meta"}
    meta = {**{k: v for k, v in row.items() if k not in used and v is not None}, **meta}
    group = None
    if group_field is not None:
        value = row.get(group_field)
        if value is None or str(value).strip() == "":
            raise fail(group_field, "missing group value (asked for by --group-field)")
        group = str(value)
    return PromptRecord(
        id=record_id,
        prompt=prompt,
        context=context,
        system=system,
        answer=row.get(answer_field),
        meta=meta,
        group=group,
        line=line,
    )


def _optional_text(value: Any, fail, field_name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail(field_name, f"expected a string, got {type(value).__name__}")
    return value.strip() or None


def _check_messages(messages: list[Any], fail, field_name: str) -> list[Message]:
    checked = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise fail(
                field_name,
                f"message {k + 1}: expected {{'role': one of {', '.join(ROLES)}, 'content': a string}}",
            )
        checked.append({"role": m["role"], "content": m["content"]})
    if checked[-1]["role"] != "user" or not checked[-1]["content"].strip():
        raise fail(field_name, "the last message must be a non-empty user turn")
    return checked


def to_conversation(
    record: PromptRecord,
    *,
    context_mode: str = "system",
    with_context: bool = True,
    with_system: bool = True,
) -> list[Message]:
    """The chat messages for ``record``, ending with the user's turn.

    ``context_mode="system"`` puts the context in the system message (after the record's ``system`` text);
    ``"prefix"`` puts it before the user's last turn, separated by a blank line.
    """
    if context_mode not in CONTEXT_MODES:
        raise ConfigError(f"context_mode must be one of {', '.join(CONTEXT_MODES)}, got {context_mode!r}")
    if isinstance(record.prompt, str):
        messages = [{"role": "user", "content": record.prompt}]
    else:
        messages = [dict(m) for m in record.prompt]
    has_system = messages[0]["role"] == "system"
    if has_system and not with_system:
        messages = messages[1:]
        has_system = False
    context = record.context if with_context else None
    system_parts = []
    if with_system and record.system and not has_system:
        system_parts.append(record.system)
    if context and context_mode == "system":
        system_parts.append(context)
    if system_parts:
        if has_system:
            messages[0]["content"] = "\n\n".join([messages[0]["content"], *system_parts])
        else:
            messages.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
    if context and context_mode == "prefix":
        messages[-1]["content"] = f"{context}\n\n{messages[-1]['content']}"
    return messages


def write_records(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Prompt records as JSONL, written atomically."""
    from mipo.core.files import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
