"""A training output folder that mipo owns, so that nothing mipo did not write is ever deleted.

A run writes ``OUT/mipo_run.json``: the fingerprint of the job and the entries (files and folders) it wrote.
``--overwrite`` accepts only a folder holding that marker and removes only the entries it lists; a folder
without it that is not empty is refused. An overwrite trains into a staging folder beside OUT and swaps at
the end, so a run that fails leaves the old artifact whole. An output that is, or contains, one of the run's
inputs is refused before anything is touched.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo.core.errors import MipoError, OutputExistsError
from mipo.core.files import atomic_write_json

MARKER = "mipo_run.json"
SUMMARY = "train_summary.json"
CHECKPOINTS = "checkpoints"
FINGERPRINT = "mipo_fingerprint.json"  # inside CHECKPOINTS: what the checkpoints are a training of


@dataclass
class RunFolder:
    """Where a run writes (``work``: OUT itself, or the staging folder of an overwrite) and what it resumes."""

    out: Path
    work: Path
    checkpoint: str | None = None
    kept: frozenset[str] = (
        frozenset()
    )  # entries of ``work`` that were there before the run and are not its own

    @property
    def staged(self) -> bool:
        return self.work != self.out


def refuse_inputs_inside(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output folder that is, or contains, an input (``{"--pairs": path, ...}``)."""
    out_path = Path(out).resolve()
    for flag, path in inputs.items():
        if path is None or not Path(path).exists():
            continue
        resolved = Path(path).resolve()
        if resolved == out_path or out_path in resolved.parents:
            raise MipoError(
                f"{flag} {path} is inside --out {out}: the run would replace its own input; choose another --out"
            )


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("entries"), list) else None


def write_marker(folder: Path, fingerprint: dict[str, Any], entries: list[str]) -> None:
    atomic_write_json(
        folder / MARKER, {"fingerprint": fingerprint, "entries": sorted(set(entries) | {MARKER})}
    )


def staging_folder(out: Path) -> Path:
    return out.with_name(f".{out.name}.mipo-new")


def plan(out: str | Path, *, overwrite: bool, resume: bool) -> RunFolder:
    """Decide where the run writes; refuse what would lose data. Deletes nothing but a stale staging folder
    of an earlier overwrite (call on every process: the answer is the same; only the caller's main process
    should act on it)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MipoError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return RunFolder(out, out)
    marker = read_marker(out)
    finished = (out / SUMMARY).is_file()
    if not overwrite and not resume:
        if marker is not None and finished:
            raise MipoError(
                f"{out}: holds a finished training run; pass --overwrite to train it again, or choose another --out"
            )
        raise OutputExistsError(out)
    if marker is None:
        raise MipoError(
            f"{out}: not written by a mipo training run (no {MARKER}); refusing to "
            f"{'replace' if overwrite else 'resume'} it; choose another --out"
        )
    if overwrite:
        return RunFolder(out, staging_folder(out))
    if finished:
        raise MipoError(
            f"{out}: this training run is finished ({SUMMARY}); there is nothing to resume. "
            "Use the model as it is, or pass --overwrite to train it again"
        )
    checkpoint = last_complete_checkpoint(out / CHECKPOINTS)
    kept = {p.name for p in out.iterdir()} - set(marker["entries"])
    return RunFolder(out, out, checkpoint, frozenset(kept))


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` the Trainer finished writing: its ``trainer_state.json`` (written last)
    reads as JSON. A checkpoint cut by a kill is skipped; with ``save_total_limit=2`` the one before it is
    still there."""
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(p.name.split("-")[-1]), p)
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name.split("-")[-1].isdigit()
    )
    for _, path in reversed(steps):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        return str(path)
    return None


def clear_staging(folder: RunFolder) -> None:
    """Remove what an interrupted overwrite left in the staging folder (only mipo ever writes there)."""
    if folder.staged and folder.work.exists():
        if read_marker(folder.work) is None and any(folder.work.iterdir()):
            raise MipoError(f"{folder.work}: not written by mipo; remove it or choose another --out")
        shutil.rmtree(folder.work)


def finish(folder: RunFolder, fingerprint: dict[str, Any]) -> None:
    """List what the run wrote in its marker; for an overwrite, replace the old run's entries with the new."""
    written = [p.name for p in folder.work.iterdir() if p.name not in folder.kept]
    write_marker(folder.work, fingerprint, written)
    if not folder.staged:
        return
    old = read_marker(folder.out) or {"entries": []}
    for name in old["entries"]:
        _remove(folder.out / name)
    for entry in folder.work.iterdir():
        _remove(folder.out / entry.name)  # a same-named file the old marker did not list: the new run's wins
        entry.replace(folder.out / entry.name)
    folder.work.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
