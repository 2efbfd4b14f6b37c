"""``mipo pmi``: measure the MIPO objective, a shortcut for ``mipo eval --task pmi`` with its own settings.

``PmiConfig`` holds what the measurement needs (no task list, no multiple-choice mode); ``main`` turns it
into the ``pmi`` task of ``mipo.evaluation.runner``. The maths are in ``mipo.engine.pmi``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from mipo.core.config import option
from mipo.evaluation.settings import EvalConfig, ScoringSettings


@dataclass
class PmiConfig(ScoringSettings):
    out: str = option("runs/pmi", "output folder: results.json and examples/*.jsonl")
    prompts: str | None = option(
        None,
        "held-out prompts: a pairs file (from mipo pairs) or prompt records, or a task name (prefs, gsm8k, "
        "...; see mipo eval --help) for its test items (default: prefs)",
        aliases=("--pairs",),
    )

    def eval_config(self) -> EvalConfig:
        """The same measurement as ``mipo eval --task pmi``."""
        return EvalConfig(task="pmi", **dataclasses.asdict(self))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from mipo.core.config import add_config_arguments

    parser.description = (
        "Measure the MIPO objective: mean log π_ref(y|x) − log mean_k π_ref(y|x'_k) of the model's "
        "responses y, against K other prompts x', under a reference model (default: the base model)."
    )
    parser.add_argument("--config", help="a YAML file of settings (flags override it)")
    add_config_arguments(parser, PmiConfig)


def main(args: argparse.Namespace) -> int:
    from mipo.core.config import resolve
    from mipo.evaluation.runner import evaluate
    from mipo.formats.results import print_results

    config = resolve(PmiConfig, args, yaml_path=args.config)
    print_results(evaluate(config.eval_config()))
    return 0
