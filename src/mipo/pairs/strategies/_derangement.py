"""The cyclic derangement shared by ``random`` (over prompts) and ``other-context`` (over contexts)."""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

from mipo.pairs.strategies import NegativeError


def cyclic_derangement(
    keys: Sequence[Hashable],
    *,
    groups: Sequence[Hashable] | None = None,
    seed: int = 0,
    count: int = 1,
    rng: random.Random | None = None,
) -> list[list[int]]:
    """For each item, ``count`` indices of items with a different key (and the same group).

    The distinct keys of a group are shuffled into a cycle (with ``rng``, else a generator seeded by
    ``seed``); the item with the key at cycle position p gets the keys at positions p+1 ... p+count. So every
    distinct key is used as often as any other (each one exactly ``count`` times), and the item picked for a
    key is its first occurrence.
    """
    groups = list(groups) if groups is not None else [None] * len(keys)
    rng = rng if rng is not None else random.Random(seed)
    by_group: dict[Hashable, list[Hashable]] = {}
    first_index: dict[tuple[Hashable, Hashable], int] = {}
    for i, (key, group) in enumerate(zip(keys, groups)):
        if (group, key) not in first_index:
            first_index[(group, key)] = i
            by_group.setdefault(group, []).append(key)
    successors: dict[tuple[Hashable, Hashable], list[int]] = {}
    for group, distinct in by_group.items():
        if len(distinct) <= count:
            where = f" in group {group!r}" if group is not None else ""
            raise NegativeError(
                f"{len(distinct)} distinct prompt(s){where}: need at least {count + 1} for "
                f"{count} negative(s) each",
                index=first_index[(group, distinct[0])],
            )
        cycle = list(distinct)
        rng.shuffle(cycle)
        for p, key in enumerate(cycle):
            successors[(group, key)] = [
                first_index[(group, cycle[(p + s) % len(cycle)])] for s in range(1, count + 1)
            ]
    return [successors[(group, key)] for key, group in zip(keys, groups)]
