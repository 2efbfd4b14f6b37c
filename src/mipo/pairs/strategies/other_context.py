"""``other-context``: x' is the same question with another record's (different) ``context``: a contrast
between users of the same question rather than with the bare question."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mipo.pairs.strategies import STRATEGIES, NegativeError, require_context
from mipo.pairs.strategies._derangement import cyclic_derangement
from mipo.prompts.records import PromptRecord


def other_context_negatives(
    records: Sequence[PromptRecord], *, seed: int = 0, count: int = 1, rng: random.Random | None = None
) -> list[list[PromptRecord]]:
    """For each record, ``count`` copies of it carrying the (different) context of another record."""
    for i, r in enumerate(records):
        if not r.context:
            raise NegativeError("no context (strategy 'other-context' needs one)", index=i, field="context")
    try:
        picks = cyclic_derangement(
            [r.context for r in records], groups=[r.group for r in records], seed=seed, count=count, rng=rng
        )
    except NegativeError as e:
        raise NegativeError(str(e).replace("prompt", "context"), index=e.index, field="context") from None
    return [[replace(r, context=records[j].context) for j in js] for r, js in zip(records, picks)]


@STRATEGIES.register("other-context")
def other_context(
    records: Sequence[PromptRecord], rng: random.Random, k: int, settings: Any
) -> list[list[PromptRecord]]:
    require_context(records)
    return other_context_negatives(records, count=k, rng=rng)
