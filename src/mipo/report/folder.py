"""What a report reads from a run folder: the run's config, each stage's state, the evaluations and the training log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo.formats.results import (
    load_evaluations,
)

log = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


OBJECTIVE_NAMES = {"dpo": "DPO", "sft": "SFT on the chosen responses"}


@dataclass
class RunFolder:
    """What the report reads from a ``mipo run`` folder; each section of the report reads from this."""

    path: Path
    figures: Path  # the report's folder: figures are written beside report.md
    config: dict[str, Any]  # run_config.json
    stages: dict[str, Any]  # stage name -> its stage.json
    evaluations: dict[str, tuple[Path, dict[str, Any]]]  # eval name -> (folder, results.json)
    train_config: dict[str, Any]  # the resolved TrainConfig that training recorded in train_config.json
    train_summary: dict[str, Any]
    metrics: list[dict[str, Any]]  # metrics.jsonl: one row per logging step
    pairs_written: int
    examples: int  # how many side-by-side examples to show

    @property
    def objective(self) -> str:
        """The training objective's name as the report writes it (``DPO``, ``SFT on the chosen responses``)."""
        name = (
            self.train_config.get("objective") or (self.config.get("train") or {}).get("objective") or "dpo"
        )
        return OBJECTIVE_NAMES.get(name, name)

    def figure_path(self, name: str) -> Path:
        """Where a section writes a figure (beside report.md)."""
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / name

    @property
    def results(self) -> list[dict[str, Any]]:
        return [results for _, results in self.evaluations.values()]


def read_run_folder(run_dir: str | Path, *, examples: int = 5) -> RunFolder:
    run_dir = Path(run_dir)
    model_dir = run_dir / "train" / "model"
    pairs_path = run_dir / "pairs" / "pairs.jsonl"
    return RunFolder(
        path=run_dir,
        figures=run_dir / "report",
        config=read_json(run_dir / "run_config.json") or {},
        stages={p.parent.name: read_json(p) for p in run_dir.glob("*/stage.json")},
        evaluations=load_evaluations(run_dir),
        # training records {"train_config": the resolved TrainConfig, "<objective>_config": TRL's, ...}
        train_config=(read_json(model_dir / "train_config.json") or {}).get("train_config") or {},
        train_summary=read_json(model_dir / "train_summary.json") or {},
        metrics=read_rows(model_dir / "metrics.jsonl"),
        pairs_written=len(read_rows(pairs_path)),
        examples=examples,
    )


def task_entries(run: RunFolder) -> Iterator[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """``(eval name, results.json, task name, task entry)`` for every task of every evaluation."""
    for name, (_, results) in run.evaluations.items():
        for task, entry in results.get("tasks", {}).items():
            yield name, results, task, entry
