"""Artifact files: atomic writes, and row files that are flushed as they grow and resume after a kill.

A row file ``out.jsonl`` is built in ``out.jsonl.partial``; each row is flushed when written, and the
partial file is renamed onto ``out.jsonl`` only when the stage finishes, so a finished artifact is
never half-written, an overwritten one is replaced only by a finished one, and ``resume=True`` picks up
the rows already in the partial file. Beside the partial file, ``out.jsonl.fingerprint.json`` records the
job that writes it (``mipo.core.fingerprint``): a resume by another job is refused.

Every text input is read as ``utf-8-sig``: a byte-order mark, as spreadsheet programs write it, is dropped.
An ``OSError`` on an output (cannot create it, disk full) becomes one ``MipoError`` naming the path.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mipo.core.errors import InputError, MipoError, OutputExistsError
from mipo.core.fingerprint import changes

TEXT_ENCODING = "utf-8-sig"  # UTF-8, with a leading byte-order mark dropped if there is one


def output_error(path: str | Path, error: OSError, *, kept: bool = False) -> MipoError:
    """One line for an output that cannot be created or written (read-only, /proc, disk full, ...)."""
    cause = error.strerror or str(error)
    more = "; the rows already written are kept: fix it and rerun with --resume" if kept else ""
    return MipoError(f"cannot write {path}: {cause}{more}")


def check_output_not_input(out: str | Path, **inputs: str | Path | None) -> None:
    """Refuse an output path that is one of the inputs, or a folder holding one, before anything is touched."""
    target = Path(out).expanduser().resolve()
    for name, source in inputs.items():
        if source is None:
            continue
        path = Path(source).expanduser().resolve()
        if path == target or target in path.parents:
            flag = "--" + name.replace("_", "-")
            raise MipoError(f"--out {out} would replace the input {flag} {source}: choose another --out")


def fingerprint_path(out: str | Path) -> Path:
    """Where the fingerprint of the job writing ``out`` is kept while it is unfinished."""
    out = Path(out)
    return out.with_name(out.name + ".fingerprint.json")


def read_parquet_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` of a Parquet file; an unreadable file is one ``InputError``."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise InputError(path, f"cannot read Parquet: {e}") from None
    yield from enumerate(table.to_pylist(), start=1)


def read_complete_lines(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON rows of a file being appended to, and the byte length they take.

    Reading stops at a last line cut by a kill (no newline, or not JSON): that row is redone on resume.
    """
    rows, good_bytes = [], 0
    with Path(path).open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            good_bytes += len(raw)
    return rows, good_bytes


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
        with path.open("r", encoding=TEXT_ENCODING) as f:
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


def remove_leftovers(out: str | Path, companions: Iterable[Path] = ()) -> None:
    """Delete what a kill left beside a *finished* ``out``, between its final rename and the clean-up: the
    job's fingerprint and ``companions`` (e.g. pairs' response caches) only mean something while ``out`` is
    unfinished, and the rows they hold are all in ``out``."""
    for path in [fingerprint_path(out), *companions]:
        path.unlink(missing_ok=True)


class RowWriter:
    """Append rows to ``path`` (JSONL, or Parquet at close) with flush-per-row and resume.

    ``existing`` holds the rows already written when resuming, so the caller can skip their work. With
    ``fingerprint``, a resumed partial file must have been started by the same job (else ``MipoError``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        fingerprint: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.fingerprint = fingerprint
        self.existing: list[dict[str, Any]] = []
        if self.path.exists() and not overwrite:
            remove_leftovers(self.path)
            raise OutputExistsError(self.path, resume=resume)
        if resume and self.partial.exists():
            if fingerprint is not None:
                check_resume(fingerprint_path(self.path), fingerprint, what=str(self.path))
            self.existing = self._read_partial()
        elif self.partial.exists() and not overwrite:
            raise MipoError(
                f"{self.partial} holds an interrupted run; pass --resume to continue it "
                "or --overwrite to start again"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fingerprint is not None and not self.existing:
                write_fingerprint(fingerprint_path(self.path), fingerprint)
            self._file = self.partial.open("w" if not self.existing else "a", encoding="utf-8")
        except OSError as e:
            raise output_error(self.path, e) from None
        self.count = len(self.existing)

    def _read_partial(self) -> list[dict[str, Any]]:
        rows, good_bytes = read_complete_lines(self.partial)
        with self.partial.open("r+b") as f:
            f.truncate(good_bytes)
        return rows

    def write(self, row: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            self._file.flush()
        except OSError as e:
            raise output_error(self.partial, e, kept=True) from None
        self.count += 1

    def close(self) -> Path:
        """Finish: move the partial file onto the final path (converting to Parquet if asked)."""
        try:
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
        except OSError as e:
            raise output_error(self.path, e, kept=self.partial.exists()) from None
        fingerprint_path(self.path).unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Stop without finishing: the partial file stays for ``--resume``."""
        try:
            self._file.close()
        except OSError:  # a full disk fails the last flush too; the rows flushed before stay resumable
            pass

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# The record of what a partial artifact holds, beside it: a resume by another job is refused.
def write_fingerprint(path: str | Path, fp: dict[str, Any]) -> Path:
    """Write ``fp`` next to the artifact it describes (atomically)."""
    return atomic_write_json(path, fp)


def read_fingerprint(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def check_resume(path: str | Path, fp: dict[str, Any], *, what: str) -> None:
    """Refuse to resume ``what`` when the fingerprint recorded at ``path`` differs from ``fp``.

    A missing record (an artifact from before fingerprints) is refused too: mipo cannot tell what it holds.
    """
    recorded = read_fingerprint(path)
    if recorded is None:
        raise MipoError(
            f"cannot resume {what}: {path} (the record of what it holds) is missing; pass --overwrite to start again"
        )
    differ = changes(recorded, fp)
    if differ:
        raise MipoError(
            f"cannot resume {what}: it was started with other settings ({'; '.join(differ)}); "
            "rerun with the original settings, or pass --overwrite to start again"
        )
