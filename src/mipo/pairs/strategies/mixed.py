"""``mixed``: each record gets both of ``incomplete``'s and ``other-context``'s negatives (``--negatives`` of
each, so 2 x k pairs per record): x' is the question without the context in one pair and the question with
another user's context in the other. A contrast with no context teaches what a context does; one with another
user's context teaches what *this* context says. Each row's ``strategy`` names the strategy that made its
negative prompt (``incomplete`` or ``other-context``, see ``negative_strategies``), and its
``negative_context`` whether that prompt carries a context, which ``--objective guidance --preserve`` reads."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mipo.pairs.strategies import STRATEGIES
from mipo.pairs.strategies.incomplete import incomplete
from mipo.pairs.strategies.other_context import other_context
from mipo.prompts.records import PromptRecord


@STRATEGIES.register("mixed")
def mixed(
    records: Sequence[PromptRecord], rng: random.Random, k: int, settings: Any
) -> list[list[PromptRecord]]:
    without = incomplete(records, rng, k, settings)
    others = other_context(records, rng, k, settings)
    return [a + b for a, b in zip(without, others)]


# a record's negatives, by position: k of incomplete's, then k of other-context's
mixed.negative_strategies = lambda k: ["incomplete"] * k + ["other-context"] * k
