"""Artifact files: atomic writes, and row files that are flushed as they grow and resume after a kill.

A row file ``out.jsonl`` is built in ``out.jsonl.partial``; each row is flushed when written, and the
partial file is renamed onto ``out.jsonl`` only when the stage finishes, so a finished artifact is
never half-written, and ``resume=True`` picks up the rows already in the partial file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mipo.errors import InputError, MipoError, OutputExistsError


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)``; malformed lines raise an ``InputError`` naming file and line."""
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(
                        path, f"malformed JSON: {e.msg} (column {e.colno})", line=number
                    ) from None
                if not isinstance(row, dict):
                    raise InputError(path, f"expected a JSON object, got {type(row).__name__}", line=number)
                yield number, row
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None
    except FileNotFoundError:
        raise MipoError(f"{path}: file not found") from None


class RowWriter:
    """Append rows to ``path`` (JSONL, or Parquet at close) with flush-per-row and resume.

    ``existing`` holds the rows already written when resuming, so the caller can skip their work.
    """

    def __init__(self, path: str | Path, *, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.existing: list[dict[str, Any]] = []
        if self.path.exists() and not overwrite:
            raise OutputExistsError(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.partial.exists():
            self.existing = self._read_partial()
        elif self.partial.exists():
            if not overwrite:
                raise MipoError(
                    f"{self.partial} holds an interrupted run; pass --resume to continue it "
                    "or --overwrite to start again"
                )
        self._file = self.partial.open("w" if not self.existing else "a", encoding="utf-8")
        self.count = len(self.existing)

    def _read_partial(self) -> list[dict[str, Any]]:
        rows, good_bytes = [], 0
        with self.partial.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # the last row was cut by the kill: drop it, it will be redone
                try:
                    rows.append(json.loads(raw))
                except json.JSONDecodeError:
                    break
                good_bytes += len(raw)
        with self.partial.open("r+b") as f:
            f.truncate(good_bytes)
        return rows

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> Path:
        """Finish: move the partial file onto the final path (converting to Parquet if asked)."""
        self._file.close()
        if self.path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [row for _, row in read_jsonl(self.partial)]
            tmp = self.path.with_name(self.path.name + ".tmp")
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            os.replace(tmp, self.path)
            self.partial.unlink()
        else:
            os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Stop without finishing: the partial file stays for ``--resume``."""
        self._file.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
