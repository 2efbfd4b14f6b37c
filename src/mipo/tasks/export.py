"""Write a task's train prompts (the questions it holds apart for MIPO) as prompt records for ``mipo pairs``.

``export_prompts(PromptExportConfig(task="prefs", out="train.jsonl"))`` writes one JSON object a line,
``{id, prompt, context?, meta}``, with no answers; the same questions are never evaluated by the task.
A task offers train prompts by registering ``train_prompts`` (see ``mipo.tasks.base.register_task``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mipo.core.config import option, require
from mipo.prompts.records import write_records
from mipo.tasks.base import TASKS


def exportable_tasks() -> list[str]:
    """The registered tasks that hold train prompts apart."""
    return [name for name in TASKS.names() if TASKS.get(name).train_prompts is not None]


@dataclass
class PromptExportConfig:
    task: str = option(
        "prefs", "the task whose train prompts to write (prefs, gsm8k, or a dataset: prism[:FOLDER], ...)"
    )
    out: str | None = option(None, "the JSONL file to write", required=True)
    limit: int | None = option(None, "prefs: the first N train questions; gsm8k: the first N records")
    profiles_per_question: int = option(1, "prefs: user profiles drawn per train question")
    export_seed: int = option(0, "prefs: seed of the train profiles")
    every_profile: bool = option(
        False,
        "prefs, ifeval: cross every train question with every profile drawn for the train questions "
        "(limit x limit x profiles_per_question prompts): the same questions and profiles, recombined",
    )
    train_split: float = option(0.2, "gsm8k: share of questions held apart as MIPO prompts")
    preference_types: list = option([], "prefs: only these preference types (default: all)")

    def __post_init__(self) -> None:
        problems = []
        if not self.out:
            problems.append("out: name the file to write")
        if self.limit is not None and self.limit < 1:
            problems.append("limit must be at least 1")
        if self.profiles_per_question < 1:
            problems.append("profiles_per_question must be at least 1")
        if self.every_profile and self.task.partition(":")[0] not in ("prefs", "ifeval"):
            problems.append(f"every_profile: {self.task!r} draws no user profiles (prefs and ifeval do)")
        if not 0 <= self.train_split < 1:
            problems.append("train_split must be in [0, 1)")
        if self.task.partition(":")[0] not in exportable_tasks():  # prism:FOLDER names its local copy
            problems.append(
                f"task: {self.task!r} has no train prompts to export (choose {' or '.join(exportable_tasks())})"
            )
        from mipo.tasks.prefs import PREFERENCE_TYPES

        unknown = [t for t in self.preference_types if t not in PREFERENCE_TYPES]
        if unknown:
            problems.append(f"preference_types: unknown {', '.join(unknown)}")
        require(problems)


def export_prompts(config: PromptExportConfig) -> Path:
    """Write the train prompt records of ``config.task`` to ``config.out``; return the path."""
    records = TASKS.get(config.task.partition(":")[0]).train_prompts(config)
    return write_records(config.out, records)
