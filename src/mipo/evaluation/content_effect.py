"""Does the model read the user's context, or react to any context? The wrong-context control.

Every item with a user context is also answered with *another user's* context: a profile of the same set
whose preference differs, drawn with a seed (``wrong_contexts``), the reply scored against the item's own
preference. For model M against the baseline B, per item i:

- *content effect* = (M_own(i) − B_own(i)) − (M_wrong(i) − B_wrong(i))

A model that shortens every reply that comes with a system message follows more "keep it short"
preferences under any user's context: its context effect is positive, its content effect is 0. Only a
content effect clear of zero says the gain depends on what the context says (``mipo.evaluation.
context_effect.verdict`` calls a gain personalization then).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from typing import Any

from mipo.core.stats import paired_difference
from mipo.tasks import Item, Task


def preference_key(item: Item) -> str:
    """What an item's user wants: its stated preferences (``prefs``: types and parameters), else its context."""
    preferences = (item.meta or {}).get("preferences")
    if preferences:
        return json.dumps(
            sorted([p.get("type"), p.get("params")] for p in preferences), sort_keys=True, default=str
        )
    return item.context or ""


def wrong_contexts(items: Sequence[Item], seed: int) -> list[int | None]:
    """For each item, the index of another item whose context it is answered with: drawn uniformly among the
    items with a context whose preference (``preference_key``) and context text both differ; None for an
    item without a context, or with no such other item. The same ``seed`` and items give the same draw."""
    rng = random.Random(f"wrong-context:{seed}")
    keys = [preference_key(item) if item.context else None for item in items]
    donors = []
    for i, item in enumerate(items):
        if not item.context:
            donors.append(None)
            continue
        candidates = [
            j
            for j, other in enumerate(items)
            if keys[j] is not None and keys[j] != keys[i] and other.context != item.context
        ]
        donors.append(rng.choice(candidates) if candidates else None)
    return donors


def with_wrong_context(task: Task, seed: int) -> tuple[Task, dict[str, str]]:
    """The task's items that carry a context and have a donor, each with the donor's context (its stated
    preferences kept: a task's ``score`` reads them from the item, never from the prompt); and
    ``{item id: donor id}``."""
    donors = wrong_contexts(task.items, seed)
    items, drawn = [], {}
    for item, donor in zip(task.items, donors):
        if donor is not None:
            items.append(dataclasses.replace(item, context=task.items[donor].context))
            drawn[str(item.id)] = str(task.items[donor].id)
    return dataclasses.replace(task, items=items), drawn


def content_effect(
    model_own: Sequence[float],
    model_wrong: Sequence[float],
    baseline_own: Sequence[float],
    baseline_wrong: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{mean, ci, p_value, n}`` of (model − baseline) with the own context minus the same with another
    user's context, paired per item (the four lists aligned item by item)."""
    sizes = {len(model_own), len(model_wrong), len(baseline_own), len(baseline_wrong)}
    if len(sizes) != 1:
        raise ValueError(f"content_effect: the four score lists differ in length: {sorted(sizes)}")
    model_lift = [own - wrong for own, wrong in zip(model_own, model_wrong)]
    baseline_lift = [own - wrong for own, wrong in zip(baseline_own, baseline_wrong)]
    return paired_difference(
        model_lift, baseline_lift, confidence=confidence, n_resamples=n_resamples, seed=seed
    )
