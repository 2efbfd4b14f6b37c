"""One stage of a run: its inputs and settings fingerprinted, skipped when finished, copied from a finished twin,
refused when what it finished with has changed."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.core.files import atomic_write_json
from mipo.core.fingerprint import changes, digest, fingerprint

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """One step of the run: its folder, the settings and inputs that decide its output, and the keys of the
    stages it reads. ``key`` hashes them with mipo's version: a different key never resumes this folder."""

    name: str
    folder: Path
    settings: dict
    upstream: list[str]
    run: Callable[[Path, bool], Any]  # (folder, resume) -> None
    inputs: dict = field(default_factory=dict)  # identities of files and model weights the stage reads
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = digest(fingerprint(settings=self.settings, inputs=self.inputs, upstream=self.upstream))

    def state(self, *, finished: bool, **extra: Any) -> dict[str, Any]:
        """What ``stage.json`` records: enough to say later what changed."""
        from mipo import __version__

        return {
            "stage": self.name,
            "key": self.key,
            "finished": finished,
            **extra,
            "settings": self.settings,
            "inputs": self.inputs,
            "upstream": self.upstream,
            "mipo": __version__,
        }


def _read_state(folder: Path) -> dict | None:
    state_file = folder / "stage.json"
    return json.loads(state_file.read_text()) if state_file.is_file() else None


def _finished_twin(stage: Stage, run_dir: Path) -> Path | None:
    """The same stage, finished with the same key, in a sibling run folder."""
    relative = stage.folder.relative_to(run_dir)
    if not run_dir.resolve().parent.is_dir():
        return None
    for sibling in sorted(run_dir.resolve().parent.iterdir()):
        folder = sibling / relative
        if sibling == run_dir.resolve() or not folder.is_dir():
            continue
        state = _read_state(folder)
        if state and state.get("key") == stage.key and state.get("finished"):
            return folder
    return None


def _what_changed(state: dict, stage: Stage) -> str:
    from mipo import __version__

    changed = changes(state.get("settings") or {}, stage.settings)
    changed += changes(state.get("inputs") or {}, stage.inputs, "inputs.")
    if state.get("upstream") != stage.upstream:
        changed.append("an earlier stage's key changed")
    if state.get("mipo") != __version__:
        changed.append(f"mipo version: {state.get('mipo', '(unset)')} -> {__version__}")
    return "; ".join(changed) or "stage key"


def stage_plan(stage: Stage, run_dir: Path | None = None) -> tuple[str, str]:
    """What ``run_stage`` will do and why: ``(action, reason)`` with action one of skip, copy, resume,
    rerun, run. Reads stage.json files only."""
    state = _read_state(stage.folder)
    same_key = bool(state and state.get("key") == stage.key)
    if same_key and state.get("finished"):
        return "skip", f"finished (key {stage.key})"
    twin = _finished_twin(stage, run_dir) if run_dir is not None else None
    if twin is not None:
        return "copy", f"same key finished in {twin}"
    if same_key:
        return "resume", "interrupted"
    if state:
        return "rerun", "changed: " + _what_changed(state, stage)
    return "run", "not run yet"


def _copy_twin(stage: Stage, twin: Path) -> None:
    """Replace the stage's folder by a copy of ``twin``; a copy cut short is never taken for the stage."""
    if stage.folder.exists():
        shutil.rmtree(stage.folder)
    partial = stage.folder.with_name(stage.folder.name + ".copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(twin, partial)
    partial.rename(stage.folder)


def run_stage(stage: Stage, run_dir: Path | None = None) -> str:
    """Skip, resume, copy (from a sibling run folder under ``run_dir``'s parent) or (re)run one stage;
    returns what happened. A stage resumes only its own key's output: any other is deleted first."""
    state_file = stage.folder / "stage.json"
    action, reason = stage_plan(stage, run_dir)
    if action == "skip":
        log.info("%s: %s, skipped", stage.name, reason)
        return "skipped"
    if action == "copy":
        _copy_twin(stage, _finished_twin(stage, run_dir))
        log.info("%s: %s, copied", stage.name, reason)
        return "copied"
    resume = action == "resume"
    if action == "rerun":
        # another key's output, finished or not, never mixes with this one's
        log.info("%s: %s; rerunning it", stage.name, reason)
        shutil.rmtree(stage.folder)
    stage.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state_file, stage.state(finished=False))
    start = time.perf_counter()
    stage.run(stage.folder, resume)
    atomic_write_json(state_file, stage.state(finished=True, seconds=round(time.perf_counter() - start, 1)))
    return "resumed" if resume else "ran"
