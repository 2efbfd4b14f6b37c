"""``mipo run config.yaml``: prompts -> pairs -> train -> eval -> report, in one run folder.

Each stage writes its artifact and ``stage.json`` (its resolved settings and a key). The key hashes the
stage's settings, the identity of what it reads (a prompts file's sha256, a model folder's weight files),
the keys of the stages it reads and mipo's version, so rerunning the same command skips finished stages,
resumes an interrupted one, and a changed setting reruns that stage and those after it only. A stage
resumes only an output of its own key; any other is deleted before it runs again.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.core.errors import ConfigError, MipoError
from mipo.core.files import atomic_write_json
from mipo.core.fingerprint import file_sha256, input_identity, weights_identity

if TYPE_CHECKING:
    from mipo.evaluation.settings import EvalConfig

from mipo.run.config import RunConfig, as_config_keys, load_run_config
from mipo.run.stages import Stage, run_stage, stage_plan

log = logging.getLogger(__name__)


def _model_inputs(config: Any) -> dict[str, Any]:
    """The identity of the weights a pairs or train stage loads (a model folder's files are in its key)."""
    return {"model": weights_identity(config.model)}


def _finished_output(command_settings: Any) -> bool:
    """The command's output is whole: pairs.jsonl, train_summary.json and results.json are written last."""
    out = Path(command_settings.out)
    return out.is_file() or (out / "train_summary.json").is_file() or (out / "results.json").is_file()


def _prompts_stage(config: RunConfig, run_dir: Path) -> tuple[Stage, Path]:
    """A built-in task's train prompts, or the user's file (its content is part of the key)."""
    from mipo.core.config import from_dict

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
    from mipo.core.config import from_dict

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
    from mipo.pairs.build import build_pairs
    from mipo.pairs.config import PairsConfig

    round_ = round_ or _Round(1, config.model)
    pairs_path = round_.folder(run_dir, "pairs") / "pairs.jsonl"

    def flags(resume: bool) -> dict:
        return {
            "prompts": str(prompts_path),
            "out": str(pairs_path),
            "resume": resume,
            "overwrite": not resume,
        }

    settings = {"model": round_.model, "seed": config.seed, "dtype": config.dtype, **config.pairs}
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
    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    round_ = round_ or _Round(1, config.model)
    model_dir = round_.folder(run_dir, "train") / "model"

    def flags(resume: bool) -> dict:
        resume = resume and model_dir.exists()  # killed before the first checkpoint: start again
        return {"pairs": str(pairs_path), "out": str(model_dir), "resume": resume, "overwrite": not resume}

    settings = {"model": round_.model, "seed": config.seed, "dtype": config.dtype, **config.train}
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
    from mipo.evaluation.runner import evaluate
    from mipo.evaluation.settings import EvalConfig

    entry = config.eval[index]
    name = str(entry.get("name") or entry["task"]).replace(":", "-").replace("/", "-")
    folder = run_dir / "eval" / name

    def flags(resume: bool) -> dict:
        return {"model": str(model_dir), "out": str(folder), "overwrite": True, "resume": resume}

    settings = {
        "baseline": config.model,
        "dtype": config.dtype,
        **{k: v for k, v in entry.items() if k != "name"},
    }
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
    from mipo.core.config import from_dict
    from mipo.report.writer import ReportConfig, build_report

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
    from mipo.core.config import to_dict
    from mipo.core.processes import refuse_several_processes

    refuse_several_processes("run")
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
        help="the run's YAML file (keys: run_dir, model, seed, dtype, prompts, pairs, train, eval, report, title)",
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
