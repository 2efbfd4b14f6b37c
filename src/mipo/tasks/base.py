"""What every evaluation task shares: the item and task types, the task registry, and small helpers.

A task is a list of ``Item`` records plus a ``score(item, response)`` function. Each task is one module of
this package that registers a builder under its name (``@register_task("gsm8k", ...)``); code outside mipo
registers the same way, or through an entry point in the group ``mipo.tasks``. A name may take an argument
after a colon (``file:PATH``): the builder receives it as ``options.argument``.

Task modules import from here, never from ``mipo.tasks`` itself, so the package and its modules do not
import each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.core.errors import ConfigError
from mipo.core.registry import Registry
from mipo.prompts.records import CONTEXT_MODES, PromptRecord, to_conversation

if TYPE_CHECKING:
    from mipo.tasks.export import PromptExportConfig

__all__ = [
    "CONTEXT_MODES",
    "TASKS",
    "Item",
    "Task",
    "TaskEntry",
    "TaskOptions",
    "build_messages",
    "load_task",
    "package_file",
    "register_task",
    "response_text",
    "split_task_list",
    "stable_unit",
    "task_list_help",
]


@dataclass
class Item(PromptRecord):
    """One evaluation item: a prompt record (``answer`` is the gold answer where there is one) plus the
    ``choices`` of a multiple-choice question."""

    choices: list[str] | None = None

    @classmethod
    def from_record(cls, record: PromptRecord, **changes: Any) -> Item:
        values = {f.name: getattr(record, f.name) for f in fields(PromptRecord)}
        return cls(**{**values, **changes})

    def messages(self, context_mode: str = "system") -> list[dict[str, str]]:
        """The chat messages a model answers, built as ``mipo pairs`` builds them for training."""
        return to_conversation(self, context_mode=context_mode)


@dataclass
class Task:
    """Items and their scorer. ``score`` returns ``{score, extracted, verdict, ...}`` for one response."""

    name: str
    kind: str  # "generate" (free reply, scored), "choice" (multiple choice), or "pmi"
    items: list[Item]
    score: Callable[[Item, str], dict[str, Any]] | None
    metric: str
    source: str  # where the items came from (package file, Hub id, user file)


@dataclass(frozen=True)
class TaskOptions:
    """What a task builder may use; ``argument`` is the text after ``name:`` (``file:PATH`` -> PATH)."""

    argument: str | None = None
    train_split: float = 0.2  # gsm8k's held-apart share (prefs borrows questions from it)
    prompts: str | None = None  # pmi: held-out prompts (a file or a task name)
    preference_types: list[str] | None = None  # prefs: only these preference types


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: its builder, one line for ``--help``, and what it takes after a colon."""

    build: Callable[[TaskOptions], Task]
    summary: str
    argument: str | None = None  # e.g. "PATH": the task is named ``name:PATH``
    argument_optional: bool = False  # ``name`` alone works too (e.g. a dataset: a local copy after the colon)
    # the task's train prompts for ``mipo.tasks.export`` (tasks that hold questions apart for MIPO)
    train_prompts: Callable[[PromptExportConfig], list[dict[str, Any]]] | None = None


TASKS: Registry[TaskEntry] = Registry("evaluation task", "mipo.tasks")


def register_task(
    name: str,
    summary: str,
    *,
    argument: str | None = None,
    argument_optional: bool = False,
    train_prompts: Callable[[PromptExportConfig], list[dict[str, Any]]] | None = None,
) -> Callable[[Callable[[TaskOptions], Task]], Callable[[TaskOptions], Task]]:
    """``@register_task("name", "one line")`` on a function ``build(options) -> Task``."""

    def decorator(build: Callable[[TaskOptions], Task]) -> Callable[[TaskOptions], Task]:
        TASKS.register(name, TaskEntry(build, summary, argument, argument_optional, train_prompts))
        return build

    return decorator


def task_list_help() -> str:
    """The task names as a user types them: ``arc-easy, ..., file:PATH``."""
    return ", ".join(_spelling(name, TASKS.get(name)) for name in TASKS.names())


def _spelling(name: str, entry: TaskEntry) -> str:
    if entry.argument is None:
        return name
    return f"{name}[:{entry.argument}]" if entry.argument_optional else f"{name}:{entry.argument}"


def split_task_list(text: str) -> list[str]:
    """``"prefs,file:a,b.jsonl,gsm8k"`` -> ``["prefs", "file:a,b.jsonl", "gsm8k"]``: a comma starts a new
    task only before a registered name, so a ``file:`` path may hold commas."""
    names: list[str] = []
    for piece in text.split(","):
        head = piece.strip().partition(":")[0]
        if names and head not in TASKS:
            names[-1] += "," + piece
        else:
            names.append(piece)
    return [n.strip() for n in names if n.strip()]


def load_task(
    name: str,
    *,
    limit: int | None = None,
    train_split: float = 0.2,
    prompts: str | None = None,
    preference_types: list[str] | None = None,
) -> Task:
    """The task called ``name`` (``name`` or ``name:ARGUMENT``), cut to its first ``limit`` items."""
    head, colon, argument = name.partition(":")
    entry = TASKS.get(head) if head in TASKS else None
    if entry is None or (colon and entry.argument is None):
        raise ConfigError(f"unknown task '{name}': choose from {task_list_help()}")
    if entry.argument is not None and not argument and not entry.argument_optional:
        raise ConfigError(f"task '{head}' takes {entry.argument}: write {head}:{entry.argument}")
    options = TaskOptions(argument or None, train_split, prompts, preference_types)
    task = entry.build(options)
    if limit is not None:
        task.items = task.items[:limit]
    if not task.items:
        raise ConfigError(f"task '{name}' has no items")
    return task


def build_messages(
    prompt: str, context: str | None = None, system: str | None = None, *, context_mode: str = "system"
) -> list[dict[str, str]]:
    """Chat messages for a prompt, built exactly as ``mipo pairs`` builds them for training
    (``mipo.prompts.records.to_conversation``): the context as a system message, or before the question (``prefix``).
    """
    record = PromptRecord(id="", prompt=prompt, context=context.strip() if context else None, system=system)
    return to_conversation(record, context_mode=context_mode)


def stable_unit(text: str) -> float:
    """A number in [0, 1) fixed by ``text``: deterministic splits that do not move when a set grows."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:13], 16) / 16**13


def package_file(module: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing it (None when absent)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.exists() else None


def response_text(value: Any) -> str | None:
    """The text of a pairs file's ``chosen``/``rejected`` (a string or a list of assistant messages)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return value[-1].get("content")
    return None
