"""``mipo run config.yaml``: prompts -> pairs -> train -> eval -> report, in one run folder.

Each stage writes its artifact and ``stage.json`` (its resolved settings and a key). The key hashes the
stage's settings and the keys of the stages it reads, so rerunning the same command skips finished
stages, resumes an interrupted one, and a changed setting reruns that stage and those after it only.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo.config import load_yaml, option, require
from mipo.errors import ConfigError
from mipo.files import atomic_write_json

log = logging.getLogger(__name__)

STAGES = ("prompts", "pairs", "train", "eval", "report")


@dataclass
class RunConfig:
    run_dir: str = option("runs/mipo", "folder that holds every stage's output")
    model: str = option("smollm2-135m", "the base model: a built-in name, a folder or a Hub id")
    seed: int = option(0, "seed for every stage that samples")
    prompts: dict = option({}, "where the prompts come from: {task: prefs|gsm8k, ...} or {file: PATH, ...}")
    pairs: dict = option({}, "settings of `mipo pairs` (PairsConfig fields)")
    train: dict = option({}, "settings of `mipo train` (TrainConfig fields)")
    eval: list = option([], "one mapping per evaluation (EvalConfig fields; `task` required)")
    report: dict = option({}, "settings of the report: {examples: N}")
    title: str = option("", "a title for the report")

    def __post_init__(self) -> None:
        problems = []
        if not self.prompts:
            problems.append("'prompts' is empty: give {task: prefs} or {file: PATH}")
        for i, e in enumerate(self.eval):
            if not isinstance(e, dict) or "task" not in e:
                problems.append(f"eval[{i}] needs a 'task'")
        require(problems)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``train.learning_rate=1e-4`` or ``eval.0.limit=20``: set one key, YAML-typed."""
    import yaml

    values = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not KEY=VALUE (e.g. train.learning_rate=1e-4)")
        dotted, raw = item.split("=", 1)
        keys, node = dotted.split("."), values
        for k in keys[:-1]:
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise ConfigError(f"override '{item}': no list item {k}")
                node = node[int(k)]
            else:
                node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = yaml.safe_load(raw)
        else:
            node[last] = yaml.safe_load(raw)
    return values


def load_run_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    from mipo.config import from_dict

    return from_dict(RunConfig, apply_overrides(load_yaml(path), list(overrides)), source=str(path))


def stage_key(settings: Any, upstream: list[str]) -> str:
    blob = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Stage:
    name: str
    folder: Path
    settings: dict
    upstream: list[str]
    run: Callable[[Path, bool], Any]  # (folder, resume) -> None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = stage_key(self.settings, self.upstream)


def run_stage(stage: Stage) -> str:
    """Skip, resume or (re)run one stage; returns what happened."""
    state_file = stage.folder / "stage.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state and state.get("key") == stage.key and state.get("finished"):
        log.info("%s: finished already (key %s), skipped", stage.name, stage.key)
        return "skipped"
    resume = bool(state and state.get("key") == stage.key)
    if state and not resume:
        log.info("%s: settings changed, rerunning it", stage.name)
        shutil.rmtree(stage.folder)
    stage.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state_file, {"stage": stage.name, "key": stage.key, "finished": False,
                                   "settings": stage.settings, "upstream": stage.upstream})
    start = time.perf_counter()
    stage.run(stage.folder, resume)
    atomic_write_json(state_file, {"stage": stage.name, "key": stage.key, "finished": True,
                                   "seconds": round(time.perf_counter() - start, 1),
                                   "settings": stage.settings, "upstream": stage.upstream})
    return "resumed" if resume else "ran"
