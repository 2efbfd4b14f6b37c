"""``random``: x' is another prompt of the set, never x itself nor a duplicate of its text (a derangement over
the distinct texts, within a group when ``--group-field`` is given). Its response is the one already sampled
as chosen for x', so each prompt is generated once."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mipo.pairs.strategies import STRATEGIES
from mipo.pairs.strategies._derangement import cyclic_derangement
from mipo.prompts.records import PromptRecord


def random_negatives(
    records: Sequence[PromptRecord], *, seed: int = 0, count: int = 1, rng: random.Random | None = None
) -> list[list[int]]:
    """For each record, the indices of ``count`` other records whose responses are its rejected ones."""
    return cyclic_derangement(
        [r.prompt_text() for r in records], groups=[r.group for r in records], seed=seed, count=count, rng=rng
    )


@STRATEGIES.register("random")
def random_prompt(
    records: Sequence[PromptRecord], rng: random.Random, k: int, settings: Any
) -> list[list[int]]:
    return random_negatives(records, count=k, rng=rng)
