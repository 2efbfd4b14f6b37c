"""``mipo demo``: the whole pipeline on the embedded SmolLM2-135M-Instruct, offline, on the CPU.

It runs the packaged ``configs/demo.yaml`` (personalization with ``incomplete`` negatives) through
``mipo run``, then prints the before/after table and the path of the report.
"""

from __future__ import annotations

import argparse
import time
from importlib.resources import files
from pathlib import Path

DEMO_CONFIG = files("mipo") / "configs" / "demo.yaml"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the whole MIPO pipeline on the embedded SmolLM2-135M-Instruct: export personalization prompts, "
        "build pairs with `incomplete` negatives, train a LoRA adapter with DPO, evaluate base vs MIPO "
        "(preference adherence with and without the user's context, the PMI objective against other prompts "
        "and against the user's context) and write a report. About 10-15 minutes on 2 idle CPU cores; rerunning "
        "skips what is finished."
    )
    parser.add_argument("--run-dir", default=None, help="where to write the run (default: runs/demo)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override a key of the demo config, e.g. train.epochs=1 model=HuggingFaceTB/SmolLM2-360M-Instruct",
    )
    parser.add_argument("--show-config", action="store_true", help="print the demo's config and exit")


def main(args: argparse.Namespace) -> int:
    from mipo.run.config import load_run_config
    from mipo.run.pipeline import run_pipeline

    if args.show_config:
        print(DEMO_CONFIG.read_text(encoding="utf-8"))
        return 0
    overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    config = load_run_config(Path(str(DEMO_CONFIG)), overrides)
    start = time.perf_counter()
    report = run_pipeline(config)
    print(summary_table(Path(config.run_dir)))
    print(
        f"\nfinished in {time.perf_counter() - start:.0f} s; report: {report} and {report.with_suffix('.html')}"
    )
    return 0


def summary_table(run_dir: Path) -> str:
    """The before/after table (base model, preferences in its prompt, vs MIPO, with the paired difference:
    prefs, topic PMI, context PMI), then the context effect: with vs without the user's context, and the
    verdict on whether the gain is personalization or a generic shift."""
    from mipo.formats.results import comparison_table, context_effect_summary, load_evaluations

    evaluations = [results for _, results in load_evaluations(run_dir).values()]
    return "\n".join([comparison_table(evaluations), *context_effect_summary(evaluations)])
