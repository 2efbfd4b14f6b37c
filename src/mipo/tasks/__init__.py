"""Evaluation tasks: items to answer, and how to score an answer.

A task is a list of ``Item`` records plus a ``score(item, response)`` function. Built-in tasks:

- ``prefs``: personalization with verifiable preferences (``mipo.tasks.prefs``)
- ``gsm8k``: math word problems, exact final number (``mipo.tasks.math``)
- ``arc-easy``, ``arc-challenge``, ``mmlu``: multiple choice (``mipo.tasks.multiple_choice``)
- ``pmi``: the MIPO objective on held-out prompts (scored in ``mipo.pmi``)
- ``file:PATH``: the user's own math or multiple-choice items (``mipo.tasks.user_file``)

``build_messages`` is the one place that turns a record's ``prompt``/``context``/``system`` into chat
messages; ``mipo pairs`` and ``mipo eval`` share it so a model is trained and evaluated on the same format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo.errors import ConfigError, InputError
from mipo.prompts import CONTEXT_MODES  # noqa: F401  (re-exported: evaluation uses it)

BUILTIN_TASKS = ("prefs", "gsm8k", "arc-easy", "arc-challenge", "mmlu", "pmi")
PMI_PROMPT_TASKS = ("prefs", "gsm8k", "arc-easy", "arc-challenge", "mmlu")  # pmi: `prompts` may name one


def build_messages(
    prompt: str, context: str | None = None, system: str | None = None, *, context_mode: str = "system"
) -> list[dict[str, str]]:
    """Chat messages for an item, built exactly as ``mipo pairs`` builds them for training
    (``mipo.prompts.to_conversation``): the context as a system message, or before the question (``prefix``).
    """
    from mipo.prompts import PromptRecord, to_conversation

    record = PromptRecord(id="", prompt=prompt, context=context.strip() if context else None, system=system)
    return to_conversation(record, context_mode=context_mode)


@dataclass
class Item:
    """One evaluation item. ``answer`` is the gold answer (a number as text, a letter) where there is one."""

    id: str
    prompt: str
    context: str | None = None
    system: str | None = None
    answer: Any = None
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    messages_override: list[dict[str, str]] | None = None  # a conversation given as-is (pairs files)

    def messages(self, context_mode: str = "system") -> list[dict[str, str]]:
        if self.messages_override is not None:
            return self.messages_override
        return build_messages(self.prompt, self.context, self.system, context_mode=context_mode)


@dataclass
class Task:
    """Items and their scorer. ``score`` returns ``{score, extracted, verdict, ...}`` for one response."""

    name: str
    kind: str  # "generate" (free reply, scored), "choice" (multiple choice), or "pmi"
    items: list[Item]
    score: Callable[[Item, str], dict[str, Any]] | None
    metric: str
    source: str  # where the items came from (package file, Hub id, user file)


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


def load_task(
    name: str,
    *,
    limit: int | None = None,
    train_split: float = 0.2,
    prompts: str | None = None,
    preference_types: list[str] | None = None,
) -> Task:
    """The task called ``name`` (see the module docstring), cut to its first ``limit`` items."""
    if name == "prefs":
        from mipo.tasks import prefs

        task = prefs.task(train_split=train_split, types=preference_types)
    elif name == "gsm8k":
        from mipo.tasks import math

        task = math.task(train_split=train_split)
    elif name in ("arc-easy", "arc-challenge", "mmlu"):
        from mipo.tasks import multiple_choice

        task = multiple_choice.task(name)
    elif name == "pmi":
        task = pmi_task(prompts, train_split=train_split, preference_types=preference_types)
    elif name.startswith("file:"):
        from mipo.tasks import user_file

        task = user_file.task(name[len("file:") :])
    else:
        raise ConfigError(
            f"unknown task '{name}': choose from {', '.join(BUILTIN_TASKS)}, or file:PATH for your own items"
        )
    if limit is not None:
        task.items = task.items[:limit]
    if not task.items:
        raise ConfigError(f"task '{name}' has no items")
    return task


def pmi_task(
    prompts: str | None, *, train_split: float = 0.2, preference_types: list[str] | None = None
) -> Task:
    """Held-out prompts for the PMI measurement: a prompts/pairs file, or the test items of a built-in task
    (``prefs`` when ``prompts`` is not given; a file of that name wins over the task)."""
    name = prompts or "prefs"
    if name in PMI_PROMPT_TASKS and not Path(name).exists():
        items = load_task(name, train_split=train_split, preference_types=preference_types).items
        source = f"{name} test items"
    else:
        items = read_prompt_items(name)
        source = name
    return Task("pmi", "pmi", items, None, "mean PMI (nats)", source)


def read_prompt_items(path: str | Path) -> list[Item]:
    """Prompt records ``{id?, prompt, context?, system?}`` or pairs rows (``prompt`` as chat messages,
    with ``chosen``/``rejected``), one JSON object a line.
    """
    from mipo.files import read_jsonl

    path = Path(path)
    items = []
    for line, row in read_jsonl(path):
        prompt = row.get("prompt")
        item_id = str(row.get("id", f"line-{line}"))
        meta = {k: row[k] for k in ("chosen", "rejected") if k in row}
        if isinstance(prompt, list):
            if not prompt or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in prompt
            ):
                raise InputError(
                    path, "expected chat messages with 'role' and 'content'", line=line, field="prompt"
                )
            user = [m["content"] for m in prompt if m["role"] == "user"]
            items.append(Item(item_id, user[-1] if user else "", meta=meta, messages_override=prompt))
        elif isinstance(prompt, str) and prompt.strip():
            for key in ("context", "system"):
                if row.get(key) is not None and not isinstance(row[key], str):
                    raise InputError(path, "expected text", line=line, field=key)
            items.append(Item(item_id, prompt, row.get("context"), row.get("system"), meta=meta))
        else:
            raise InputError(
                path, "missing or empty (expected text or chat messages)", line=line, field="prompt"
            )
    if not items:
        raise InputError(path, "no records")
    return items


def response_text(value: Any) -> str | None:
    """The text of a pairs file's ``chosen``/``rejected`` (a string or a list of assistant messages)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return value[-1].get("content")
    return None
