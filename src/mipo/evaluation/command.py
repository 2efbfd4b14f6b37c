"""``mipo eval``: the command line, and ``--export-train``."""

from __future__ import annotations

import argparse
import dataclasses

from mipo.core.errors import ConfigError
from mipo.evaluation.judges.settings import JudgeSettings
from mipo.evaluation.runner import evaluate
from mipo.evaluation.settings import EvalConfig, ScoringSettings

EXPORT_FLAGS = ("profiles_per_question", "export_seed", "every_profile")  # --export-train's own settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from mipo.core.config import add_config_arguments
    from mipo.tasks.export import PromptExportConfig

    parser.add_argument("--config", help="a YAML file of settings (flags override it)")
    shared = tuple(f.name for f in dataclasses.fields(ScoringSettings))
    judge_flags = tuple(f.name for f in dataclasses.fields(JudgeSettings))
    add_config_arguments(parser, EvalConfig, skip=shared + judge_flags)  # --task and --mc-mode first
    add_config_arguments(parser, ScoringSettings)
    judge = parser.add_argument_group("pairwise judge (--task judge:SOURCE, judge-check; docs/judges.md)")
    add_config_arguments(judge, JudgeSettings)
    group = parser.add_argument_group(
        "writing train prompts instead (mipo.tasks.export; --task, --limit, --train-split and "
        "--preference-types apply)"
    )
    group.add_argument(
        "--export-train",
        metavar="FILE",
        help="write the task's train prompt records (JSONL, for mipo pairs) to this file and stop",
    )
    add_config_arguments(
        group,
        PromptExportConfig,
        skip=tuple(f for f in PromptExportConfig.__dataclass_fields__ if f not in EXPORT_FLAGS),
    )


def main(args: argparse.Namespace) -> int:
    from mipo.core.config import resolve
    from mipo.formats.results import print_results

    if args.export_train:
        return run_export_train(args)
    if any(getattr(args, name) not in (None, False) for name in EXPORT_FLAGS):
        raise ConfigError(
            "--profiles-per-question, --export-seed and --every-profile apply only with --export-train"
        )
    config = resolve(EvalConfig, args, yaml_path=args.config)
    print_results(evaluate(config))
    return 0


def run_export_train(args: argparse.Namespace) -> int:
    """``mipo eval --task prefs --export-train FILE``: ``mipo.tasks.export.export_prompts`` from eval's flags."""
    from mipo.core.config import from_dict, load_yaml
    from mipo.tasks.export import PromptExportConfig, export_prompts, exportable_tasks

    if args.task is not None and args.task not in exportable_tasks():
        raise ConfigError(f"--export-train works with one task: {' or '.join(exportable_tasks())}")
    known = PromptExportConfig.__dataclass_fields__
    values = {k: v for k, v in (load_yaml(args.config) if args.config else {}).items() if k in known}
    values.update({k: v for k, v in vars(args).items() if k in known and k != "out" and v is not None})
    config = from_dict(PromptExportConfig, {**values, "out": args.export_train}, source="--export-train")
    path = export_prompts(config)
    print(f"wrote {sum(1 for _ in path.open(encoding='utf-8'))} train prompt records to {path}")
    return 0
