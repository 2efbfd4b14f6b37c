"""``mipo run config.yaml``: prompts -> pairs -> train -> eval -> report, in one run folder.

Each stage writes its artifact and ``stage.json`` (its resolved settings and a key). The key hashes the
stage's settings, the identity of what it reads (a prompts file's sha256, a model folder's weight files),
the keys of the stages it reads and mipo's version, so rerunning the same command skips finished stages,
resumes an interrupted one, and a changed setting reruns that stage and those after it only. A stage
resumes only an output of its own key; any other is deleted before it runs again.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.config import load_yaml, option, require
from mipo.errors import ConfigError, MipoError
from mipo.files import atomic_write_json
from mipo.fingerprint import changes, digest, file_sha256, fingerprint, input_identity, weights_identity

if TYPE_CHECKING:
    from mipo.evaluation import EvalConfig

log = logging.getLogger(__name__)

STAGES = ("prompts", "pairs", "train", "eval", "report")


@dataclass
class RunConfig:
    run_dir: str = option("runs/mipo", "folder that holds every stage's output")
    model: str = option("smollm2-135m", "the base model: a built-in name, a folder or a Hub id")
    seed: int = option(0, "seed for every stage that samples")
    rounds: int = option(
        1,
        "MIPO rounds: round r builds its pairs with round r-1's model and trains from it (the reference is "
        "round r-1's model); rounds after the first go in pairs-rN/ and train-rN/; eval runs on the last",
    )
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
        if not isinstance(self.rounds, int) or self.rounds < 1:
            problems.append(f"'rounds' must be a whole number of at least 1, got {self.rounds!r}")
        require(problems)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``train.learning_rate=1e-4`` or ``eval.0.limit=20``: set one key, YAML-typed."""
    values = copy.deepcopy(values)
    for item in overrides:
        keys, raw = _split_override(item)
        node = values
        for k in keys[:-1]:
            node = _child(node, k, item)
        last = keys[-1]
        if isinstance(node, list):
            node[_list_index(node, last, item)] = _parse_value(raw)
        else:
            node[last] = _parse_value(raw)
    return values


def _split_override(item: str) -> tuple[list[str], str]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not KEY=VALUE (e.g. train.learning_rate=1e-4)")
    dotted, raw = item.split("=", 1)
    return dotted.split("."), raw


def _list_index(node: list, key: str, item: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override '{item}': no list item {key}")
    return int(key)


def _child(node: dict | list, key: str, item: str) -> dict | list:
    """The mapping or list under ``key`` (a new mapping where there is none yet)."""
    child = node[_list_index(node, key, item)] if isinstance(node, list) else node.setdefault(key, {})
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"override '{item}': '{key}' is {child!r}, not a mapping of settings")
    return child


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


def section_settings(section: str) -> set[str]:
    """The keys a section of the run config accepts: the fields of the config it becomes."""
    from mipo.evaluation import EvalConfig
    from mipo.pairs import PairsConfig
    from mipo.report import ReportConfig
    from mipo.tasks.export import PromptExportConfig
    from mipo.training import TrainConfig

    classes = {
        "prompts": (PromptExportConfig, {"file"}),  # a built-in task's export settings, or the user's file
        "pairs": (PairsConfig, set()),
        "train": (TrainConfig, set()),
        "eval": (EvalConfig, {"name"}),  # name: the eval's folder under eval/ (default: the task)
        "report": (ReportConfig, set()),
    }
    cls, extra = classes[section]
    names = set(extra)
    for f in dataclasses.fields(cls):
        # a field's short aliases (``aliases=("--epochs",)``) are keys too
        names |= {f.name, *(a.lstrip("-").replace("-", "_") for a in f.metadata.get("aliases", ()))}
    return names


def check_override_keys(overrides: list[str]) -> None:
    """Refuse an override that sets an unknown key, naming the override (the YAML file is not to blame)."""
    top_level = {f.name for f in dataclasses.fields(RunConfig)}
    for item in overrides:
        keys, _ = _split_override(item)
        known, key = top_level, keys[0]
        if keys[0] in ("prompts", "pairs", "train", "report") and len(keys) > 1:
            known, key = section_settings(keys[0]), keys[1]
        elif keys[0] == "eval" and len(keys) > 2:
            known, key = section_settings("eval"), keys[2]
        elif keys[0] in top_level and keys[0] != "eval" and len(keys) > 1:
            raise ConfigError(f"override '{item}': '{keys[0]}' is one value, not a mapping of settings")
        if key.replace("-", "_") not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"override '{item}': unknown key '{key}'{hint}")


def load_run_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    from mipo.config import from_dict

    check_override_keys(list(overrides))
    return from_dict(RunConfig, apply_overrides(load_yaml(path), list(overrides)), source=str(path))


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


def _model_inputs(config: Any) -> dict[str, Any]:
    """The identity of the weights a pairs or train stage loads (a model folder's files are in its key)."""
    return {"model": weights_identity(config.model)}


def _finished_output(command_settings: Any) -> bool:
    """The command's output is whole: pairs.jsonl, train_summary.json and results.json are written last."""
    out = Path(command_settings.out)
    return out.is_file() or (out / "train_summary.json").is_file() or (out / "results.json").is_file()


def _prompts_stage(config: RunConfig, run_dir: Path) -> tuple[Stage, Path]:
    """A built-in task's train prompts, or the user's file (its content is part of the key)."""
    from mipo.config import from_dict

    settings = dict(config.prompts)
    if "file" in settings:
        source = Path(settings["file"])
        if not source.is_file():
            raise ConfigError(f"prompts.file: {source} not found")
        inputs = {"file": input_identity(source)}

        def run_prompts(folder: Path, resume: bool) -> None:
            atomic_write_json(
                folder / "source.json", {"file": str(source.resolve()), "sha256": file_sha256(source)}
            )

        return Stage("prompts", run_dir / "prompts", settings, [], run_prompts, inputs), source

    from mipo.tasks.export import PromptExportConfig, export_prompts

    # the run's seed draws the train profiles unless prompts.export_seed fixes them: part of the key
    settings.setdefault("export_seed", config.seed)
    prompts_path = run_dir / "prompts" / "prompts.jsonl"
    export_config = from_dict(PromptExportConfig, {**settings, "out": str(prompts_path)}, source="prompts")

    def run_export(folder: Path, resume: bool) -> None:
        export_prompts(export_config)

    return Stage("prompts", run_dir / "prompts", settings, [], run_export), prompts_path


def as_config_keys(message: str, config_class: type, section: str) -> str:
    """A command's error as a `mipo run` user reads it: its flags (``--limit``) named as the config keys
    that set them (``pairs.limit``), under the config section it came from."""
    import dataclasses
    import re

    fields = {f.name for f in dataclasses.fields(config_class)}

    def key(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return f"{section}.{name}" if name in fields else match.group(0)

    message = re.sub(r"(?<![\w-])--([A-Za-z][\w-]*)", key, message)
    return message if message.startswith(f"{section}") else f"{section}: {message}"


def _command_stage(
    name: str,
    folder: Path,
    upstream: Stage | list[Stage],
    command: Callable[[Any], Any],
    config_class: type,
    settings: dict,
    flags: Callable[[bool], dict],
    inputs: Callable[[Any], dict],
    source: str,
) -> Stage:
    """A stage that runs one mipo command (pairs, train, eval): its config is ``settings`` plus the run's
    paths and resume flags (``flags(resume)``); a bad setting is refused when the stage is built, before
    any stage runs."""
    from mipo.config import from_dict

    def command_config(resume: bool) -> Any:
        try:
            return from_dict(config_class, {**settings, **flags(resume)}, source=source)
        except ConfigError as e:
            raise ConfigError(as_config_keys(str(e), config_class, source)) from None

    def run(folder: Path, resume: bool) -> None:
        command_settings = command_config(resume)
        if resume and _finished_output(command_settings):
            return  # killed after the command finished, before stage.json said so: nothing left to do
        command(command_settings)

    upstream_keys = [s.key for s in upstream] if isinstance(upstream, list) else [upstream.key]
    return Stage(name, folder, settings, upstream_keys, run, inputs(command_config(False)))


@dataclass
class _Round:
    """Where round r of the MIPO loop starts: the model it samples and trains from, and the stage that
    made that model (None in round 1: the run's base model, identified by its weights)."""

    number: int
    model: str
    trained_by: Stage | None = None

    def folder(self, run_dir: Path, stage: str) -> Path:
        return run_dir / (stage if self.number == 1 else f"{stage}-r{self.number}")

    def name(self, stage: str) -> str:
        return stage if self.number == 1 else f"{stage}-r{self.number}"

    def inputs(self, config: Any) -> dict[str, Any]:
        # Round 1 reads the base model's weights; a later round's model is the previous train stage's
        # output, identified by that stage's key (its folder may not exist yet when the stages are built).
        return _model_inputs(config) if self.trained_by is None else {}

    def upstream(self, stage: Stage) -> list[Stage]:
        return [stage] if self.trained_by is None else [stage, self.trained_by]


def _pairs_stage(
    config: RunConfig, run_dir: Path, prompts_path: Path, upstream: Stage, round_: _Round | None = None
) -> tuple[Stage, Path]:
    from mipo.pairs import PairsConfig, build_pairs

    round_ = round_ or _Round(1, config.model)
    pairs_path = round_.folder(run_dir, "pairs") / "pairs.jsonl"

    def flags(resume: bool) -> dict:
        return {
            "prompts": str(prompts_path),
            "out": str(pairs_path),
            "resume": resume,
            "overwrite": not resume,
        }

    settings = {"model": round_.model, "seed": config.seed, **config.pairs}
    stage = _command_stage(
        round_.name("pairs"),
        pairs_path.parent,
        round_.upstream(upstream),
        build_pairs,
        PairsConfig,
        settings,
        flags,
        round_.inputs,
        "pairs",
    )
    return stage, pairs_path


def _train_stage(
    config: RunConfig, run_dir: Path, pairs_path: Path, upstream: Stage, round_: _Round | None = None
) -> tuple[Stage, Path]:
    from mipo.training import TrainConfig, train

    round_ = round_ or _Round(1, config.model)
    model_dir = round_.folder(run_dir, "train") / "model"

    def flags(resume: bool) -> dict:
        resume = resume and model_dir.exists()  # killed before the first checkpoint: start again
        return {"pairs": str(pairs_path), "out": str(model_dir), "resume": resume, "overwrite": not resume}

    settings = {"model": round_.model, "seed": config.seed, **config.train}
    if config.rounds > 1 and not settings.get("full"):
        # The next round samples from and trains on full weights (a LoRA adapter trains on merged ones
        # only). Every round merges, the last too, so raising ``rounds`` later keeps the finished rounds.
        settings["merge"] = True
    stage = _command_stage(
        round_.name("train"),
        model_dir.parent,
        upstream,
        train,
        TrainConfig,
        settings,
        flags,
        round_.inputs,
        "train",
    )
    return stage, model_dir


def _round_stages(config: RunConfig, run_dir: Path, prompts: Stage, prompts_path: Path) -> list[Stage]:
    """Pairs and train stages of every round; the last stage's folder holds the model to evaluate."""
    stages: list[Stage] = []
    round_ = _Round(1, config.model)
    for number in range(1, config.rounds + 1):
        pairs, pairs_path = _pairs_stage(config, run_dir, prompts_path, prompts, round_)
        trained, model_dir = _train_stage(config, run_dir, pairs_path, pairs, round_)
        stages += [pairs, trained]
        # A LoRA round's next model is its merged weights (a new adapter trains on full weights only).
        next_model = model_dir if config.train.get("full") else model_dir / "merged"
        round_ = _Round(number + 1, str(next_model), trained)
    return stages


def _eval_stage(config: RunConfig, run_dir: Path, index: int, model_dir: Path, upstream: Stage) -> Stage:
    """One entry of ``eval``: the trained model against its baseline (the base model unless named)."""
    from mipo.evaluation import EvalConfig, evaluate

    entry = config.eval[index]
    name = str(entry.get("name") or entry["task"]).replace(":", "-").replace("/", "-")
    folder = run_dir / "eval" / name

    def flags(resume: bool) -> dict:
        return {"model": str(model_dir), "out": str(folder), "overwrite": True, "resume": resume}

    settings = {"baseline": config.model, **{k: v for k, v in entry.items() if k != "name"}}
    return _command_stage(
        f"eval:{name}",
        folder,
        upstream,
        evaluate,
        EvalConfig,
        settings,
        flags,
        _eval_inputs,
        f"eval[{index}]",
    )


def _eval_inputs(config: EvalConfig) -> dict[str, Any]:
    """What an evaluation reads besides the trained model: other models, item files, a prompts file."""
    models = {"baseline": config.baseline, "reference": config.reference}
    inputs = {role: weights_identity(name) for role, name in models.items() if name}
    for task in config.task_names:
        source = task.rpartition(":")[2]  # file:X, judge:X, judge:file:X: a file's content is an input
        if ":" in task and Path(source).is_file():
            inputs[task] = input_identity(source)
    if any(task.startswith("judge") for task in config.task_names):  # the judge's weights or endpoint
        inputs["judge"] = config.judge_url or weights_identity(config.judge)
        inputs["judge_model"] = config.judge
        if Path(config.judge_template).is_file():
            inputs["judge_template"] = input_identity(config.judge_template)
    if config.prompts:
        inputs["prompts"] = input_identity(config.prompts)
    return inputs


def _report_stage(config: RunConfig, run_dir: Path, upstream: list[Stage]) -> Stage:
    """Reads everything; cheap, so it reruns whenever anything upstream (or its title) changed."""
    from mipo.config import from_dict
    from mipo.report import ReportConfig, build_report

    report_config = from_dict(ReportConfig, dict(config.report), source="report")

    def run_report(folder: Path, resume: bool) -> None:
        build_report(run_dir, title=config.title, examples=report_config.examples)

    settings = {"title": config.title, **config.report}
    return Stage("report", run_dir / "report", settings, [s.key for s in upstream], run_report)


def build_stages(config: RunConfig) -> list[Stage]:
    """The run as a chain of stages; each one's key covers its settings and everything upstream."""
    run_dir = Path(config.run_dir)
    prompts, prompts_path = _prompts_stage(config, run_dir)
    rounds = _round_stages(config, run_dir, prompts, prompts_path)
    trained = rounds[-1]
    model_dir = trained.folder / "model"
    evals = [_eval_stage(config, run_dir, i, model_dir, trained) for i in range(len(config.eval))]
    stages = [prompts, *rounds, *evals]
    return [*stages, _report_stage(config, run_dir, stages)]


def run_pipeline(config: RunConfig) -> Path:
    """Run every stage of ``config`` in order (skipping finished ones); return the report's path."""
    from mipo.config import to_dict

    run_dir = Path(config.run_dir)
    stages = build_stages(config)  # every setting checked before anything is written
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "run_config.json", to_dict(config))
    except OSError as e:
        raise MipoError(f"run_dir {run_dir}: cannot write there ({e.strerror or e})") from None
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
