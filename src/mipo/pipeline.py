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
    reuse_stages: bool = option(
        True,
        "copy a finished stage with the same key from a sibling run folder (same parent) instead of "
        "rerunning it: runs that differ only in training settings share their prompts and pairs",
    )

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
            node[int(last)] = _parse_value(raw)
        else:
            node[last] = _parse_value(raw)
    return values


def _parse_value(raw: str) -> Any:
    """YAML-typed, except that ``1e-4`` is a number (YAML 1.1 wants ``1.0e-4``)."""
    import yaml

    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


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


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs (nested mappings by dotted key)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


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
        changed = _changes(state.get("settings") or {}, stage.settings)
        if state.get("upstream") != stage.upstream:
            changed.append("an earlier stage's key changed")
        return "rerun", "changed: " + ("; ".join(changed) or "stage key (mipo version)")
    return "run", "not run yet"


def run_stage(stage: Stage, run_dir: Path | None = None) -> str:
    """Skip, resume, copy (from a sibling run folder under ``run_dir``'s parent) or (re)run one stage;
    returns what happened."""
    state_file = stage.folder / "stage.json"
    action, reason = stage_plan(stage, run_dir)
    if action == "skip":
        log.info("%s: %s, skipped", stage.name, reason)
        return "skipped"
    if action == "copy":
        twin = _finished_twin(stage, run_dir)
        if stage.folder.exists():
            shutil.rmtree(stage.folder)
        partial = stage.folder.with_name(stage.folder.name + ".copying")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(twin, partial)
        partial.rename(stage.folder)
        log.info("%s: %s, copied", stage.name, reason)
        return "copied"
    resume = action == "resume"
    if action == "rerun":
        log.info("%s: %s; rerunning it", stage.name, reason)
        shutil.rmtree(stage.folder)
    stage.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        state_file,
        {
            "stage": stage.name,
            "key": stage.key,
            "finished": False,
            "settings": stage.settings,
            "upstream": stage.upstream,
        },
    )
    start = time.perf_counter()
    stage.run(stage.folder, resume)
    atomic_write_json(
        state_file,
        {
            "stage": stage.name,
            "key": stage.key,
            "finished": True,
            "seconds": round(time.perf_counter() - start, 1),
            "settings": stage.settings,
            "upstream": stage.upstream,
        },
    )
    return "resumed" if resume else "ran"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def build_stages(config: RunConfig) -> list[Stage]:
    """The run as a chain of stages; each one's key covers its settings and everything upstream."""
    from mipo.config import from_dict

    run_dir = Path(config.run_dir)
    stages: list[Stage] = []

    # prompts: a built-in task's train prompts, or the user's file (its content is part of the key)
    prompts_settings = dict(config.prompts)
    prompts_dir = run_dir / "prompts"
    if "file" in prompts_settings:
        source = Path(prompts_settings["file"])
        if not source.is_file():
            raise ConfigError(f"prompts.file: {source} not found")
        prompts_settings["sha256"] = _file_digest(source)
        prompts_path = source

        def run_prompts(folder: Path, resume: bool) -> None:
            atomic_write_json(
                folder / "source.json", {"file": str(source.resolve()), "sha256": prompts_settings["sha256"]}
            )
    else:
        from mipo.evaluation import EvalConfig

        # the run's seed draws the train profiles unless prompts.export_seed fixes them: part of the key
        prompts_settings.setdefault("export_seed", config.seed)
        export = dict(prompts_settings)
        prompts_path = prompts_dir / "prompts.jsonl"
        export_config = from_dict(EvalConfig, {**export, "export_train": str(prompts_path)}, source="prompts")

        def run_prompts(folder: Path, resume: bool) -> None:
            from mipo.evaluation import export_train

            export_train(export_config)

    stages.append(Stage("prompts", prompts_dir, prompts_settings, [], run_prompts))

    # pairs
    from mipo.pairs import PairsConfig, build_pairs

    pairs_path = run_dir / "pairs" / "pairs.jsonl"
    pairs_settings = {"model": config.model, "seed": config.seed, **config.pairs}
    from_dict(
        PairsConfig, {**pairs_settings, "prompts": str(prompts_path), "out": str(pairs_path)}, source="pairs"
    )

    def run_pairs(folder: Path, resume: bool) -> None:
        build_pairs(
            from_dict(
                PairsConfig,
                {
                    **pairs_settings,
                    "prompts": str(prompts_path),
                    "out": str(pairs_path),
                    "resume": resume,
                    "overwrite": not resume,
                },
                source="pairs",
            )
        )

    stages.append(Stage("pairs", pairs_path.parent, pairs_settings, [stages[-1].key], run_pairs))

    # train
    from mipo.training import TrainConfig, train

    model_dir = run_dir / "train" / "model"
    train_settings = {"model": config.model, "seed": config.seed, **config.train}
    from_dict(
        TrainConfig, {**train_settings, "pairs": str(pairs_path), "out": str(model_dir)}, source="train"
    )

    def run_train(folder: Path, resume: bool) -> None:
        resume = resume and model_dir.exists()
        train(
            from_dict(
                TrainConfig,
                {
                    **train_settings,
                    "pairs": str(pairs_path),
                    "out": str(model_dir),
                    "resume": resume,
                    "overwrite": not resume,
                },
                source="train",
            )
        )

    stages.append(Stage("train", model_dir.parent, train_settings, [stages[-1].key], run_train))

    # eval: every entry compares the trained model with its baseline (the base model unless named)
    from mipo.evaluation import EvalConfig, evaluate

    train_key = stages[-1].key
    for i, entry in enumerate(config.eval):
        name = str(entry.get("name") or entry["task"]).replace(":", "-").replace("/", "-")
        settings = {"baseline": config.model, **{k: v for k, v in entry.items() if k != "name"}}
        folder = run_dir / "eval" / name
        from_dict(EvalConfig, {**settings, "model": str(model_dir), "out": str(folder)}, source=f"eval[{i}]")

        def run_eval(folder: Path, resume: bool, settings: dict = settings) -> None:
            evaluate(
                from_dict(
                    EvalConfig,
                    {
                        **settings,
                        "model": str(model_dir),
                        "out": str(folder),
                        "overwrite": True,
                        "resume": resume,
                    },
                    source="eval",
                )
            )

        stages.append(Stage(f"eval:{name}", folder, settings, [train_key], run_eval))

    # report: reads everything; cheap, so it reruns whenever anything upstream changed
    from mipo.report import build_report

    def run_report(folder: Path, resume: bool) -> None:
        build_report(run_dir, title=config.title)

    stages.append(
        Stage("report", run_dir / "report", dict(config.report), [s.key for s in stages], run_report)
    )
    return stages


def run_pipeline(config: RunConfig) -> Path:
    """Run every stage of ``config`` in order (skipping finished ones); return the report's path."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from mipo.config import to_dict

    atomic_write_json(run_dir / "run_config.json", to_dict(config))
    stages = build_stages(config)
    for i, stage in enumerate(stages, start=1):
        log.info("[%d/%d] %s", i, len(stages), stage.name)
        outcome = run_stage(stage, run_dir if config.reuse_stages else None)
        log.info("[%d/%d] %s: %s", i, len(stages), stage.name, outcome)
    return run_dir / "report" / "report.md"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run prompts -> pairs -> train -> eval -> report from a YAML config into one run folder. Rerunning "
        "skips finished stages and resumes an interrupted one; a changed setting reruns that stage and "
        "the ones after it. Example configs: configs/*.yaml."
    )
    parser.add_argument(
        "config",
        help="the run's YAML file (keys: run_dir, model, seed, prompts, pairs, train, eval, report, title)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override any key, e.g. train.learning_rate=1e-4 eval.0.limit=20 run_dir=runs/x",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what each stage would do (skip, copy, resume, rerun, run) and why; run nothing",
    )


def main(args: argparse.Namespace) -> int:
    config = load_run_config(args.config, args.overrides)
    if args.plan:
        run_dir = Path(config.run_dir)
        for stage in build_stages(config):
            action, reason = stage_plan(stage, run_dir if config.reuse_stages else None)
            print(f"{stage.name:<16} {action:<7} {reason}")
        return 0
    report = run_pipeline(config)
    print(f"report: {report} (and {report.with_suffix('.html')})")
    return 0
