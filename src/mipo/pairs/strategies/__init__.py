"""Negative strategies: how the negative prompt x' of each prompt x is made, one module per strategy.

Every strategy has one signature, ``strategy(records, rng, k, settings) -> negatives``:

- ``records``: the prompt records (``mipo.prompts.records.PromptRecord``) that get pairs;
- ``rng``: a ``random.Random`` seeded with the run's ``--seed``, for every random choice;
- ``k``: how many negatives each record should get (``--negatives``); fewer (even none) drops the record's
  missing pairs, as ``drop-sentence`` does for a one-sentence question;
- ``settings``: the run's ``PairsConfig``, for a strategy with options of its own (``--drop-system``);
- returns, for each record, a list of its negatives, each either a ``PromptRecord`` (a new prompt x', whose
  response is generated) or an ``int``: the index in ``records`` of another record, whose chosen response is
  reused as this record's rejected one (``random``: one generation serves two pairs).

A strategy whose *chosen* replies are decoded with context-aware decoding (``cad``) sets the attribute
``chosen_contrast``: a function from a record to the prompt its chosen reply is contrasted with (the prompt
without its context); ``chosen_contrast(strategy)`` reads it (None: the chosen replies decode plainly).

A strategy that combines others (``mixed``) sets ``negative_strategies``: ``k`` -> the name of the strategy that
makes each of a record's negatives, by position; each pair row's ``strategy`` field says it
(``negative_strategies(name, strategy, k)``).

A record that cannot get a negative raises ``NegativeError`` (with its index and the field at fault);
``mipo pairs`` turns it into a one-line error naming the file, line and field. A strategy registers itself:
``@STRATEGIES.register("name")``; see docs/extending/strategies.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mipo.core.registry import Registry

if TYPE_CHECKING:
    from mipo.prompts.records import PromptRecord

# records, rng, k, settings -> for each record its negatives: new PromptRecords, or indices into ``records``
Strategy = Callable[[Sequence["PromptRecord"], random.Random, int, Any], list[list[Any]]]

STRATEGIES: Registry[Strategy] = Registry("negative strategy", "mipo.pairs.strategies")


class NegativeError(ValueError):
    """A record (``index`` into the list) cannot get a negative; the caller turns it into an InputError."""

    def __init__(self, message: str, *, index: int | None = None, field: str | None = None):
        super().__init__(message)
        self.index, self.field = index, field


def require_context(records: Sequence[PromptRecord]) -> None:
    """Strategies that change the context need one in every record."""
    for i, record in enumerate(records):
        if not record.context:
            raise NegativeError("no context: every record needs one", index=i, field="context")


def chosen_contrast(strategy: Strategy) -> Callable[[PromptRecord], PromptRecord] | None:
    """The prompt ``strategy``'s chosen replies are contrasted with by context-aware decoding (``cad``: the
    prompt without its context), or None: its chosen replies decode plainly."""
    return getattr(strategy, "chosen_contrast", None)


def negative_strategies(name: str, strategy: Strategy, k: int) -> list[str]:
    """The strategy that made each of a record's negatives, by position (``name`` itself unless the strategy
    combines others)."""
    names = getattr(strategy, "negative_strategies", None)
    return names(k) if names is not None else [name] * k
