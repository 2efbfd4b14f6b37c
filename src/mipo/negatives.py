"""Negative strategies: for each prompt x, the prompts x' whose responses become the *rejected* side.

Pure functions over ``PromptRecord`` lists, seeded, no model:

- ``random_negatives``: x' is another prompt of the set, never x itself nor a duplicate of its text
  (a derangement over the distinct texts, within a group when groups are given). Its response is the one
  already sampled as chosen for x', so each prompt is generated once.
- ``incomplete_negative``: the same prompt without its ``context`` (and without its system text if asked).
- ``other_context_negatives``: the same question with another record's ``context``.
- ``drop_sentence_negatives``: the prompt with one sentence removed (never the last one, the question).
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable, Sequence
from dataclasses import replace

from mipo.prompts import PromptRecord

STRATEGIES = ("random", "incomplete", "other-context", "drop-sentence")


class NegativeError(ValueError):
    """A record (``index`` into the list) cannot get a negative; the caller turns it into an InputError."""

    def __init__(self, message: str, *, index: int | None = None, field: str | None = None):
        super().__init__(message)
        self.index, self.field = index, field


def cyclic_derangement(
    keys: Sequence[Hashable], *, groups: Sequence[Hashable] | None = None, seed: int = 0, count: int = 1
) -> list[list[int]]:
    """For each item, ``count`` indices of items with a different key (and the same group).

    The distinct keys of a group are shuffled into a cycle; the item with the key at cycle position p gets
    the keys at positions p+1 ... p+count. So every distinct key is used as often as any other (each one
    exactly ``count`` times), and the item picked for a key is its first occurrence.
    """
    groups = list(groups) if groups is not None else [None] * len(keys)
    rng = random.Random(seed)
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


def random_negatives(records: Sequence[PromptRecord], *, seed: int = 0, count: int = 1) -> list[list[int]]:
    """For each record, the indices of ``count`` other records whose responses are its rejected ones."""
    return cyclic_derangement(
        [r.prompt_text() for r in records], groups=[r.group for r in records], seed=seed, count=count
    )


def incomplete_negative(record: PromptRecord, *, drop_system: bool = False) -> PromptRecord:
    """The same prompt with its context removed (and its system text, if ``drop_system``)."""
    if not record.context:
        raise NegativeError("no context to remove (strategy 'incomplete' needs one)", field="context")
    prompt = record.prompt
    if drop_system and isinstance(prompt, list):
        prompt = [m for m in prompt if m["role"] != "system"]
    return replace(record, prompt=prompt, context=None, system=None if drop_system else record.system)


def other_context_negatives(
    records: Sequence[PromptRecord], *, seed: int = 0, count: int = 1
) -> list[list[PromptRecord]]:
    """For each record, ``count`` copies of it carrying the (different) context of another record."""
    for i, r in enumerate(records):
        if not r.context:
            raise NegativeError("no context (strategy 'other-context' needs one)", index=i, field="context")
    try:
        picks = cyclic_derangement(
            [r.context for r in records], groups=[r.group for r in records], seed=seed, count=count
        )
    except NegativeError as e:
        raise NegativeError(str(e).replace("prompt", "context"), index=e.index, field="context") from None
    return [[replace(r, context=records[j].context) for j in js] for r, js in zip(records, picks)]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def drop_sentence(text: str, rng: random.Random, *, avoid: Sequence[int] = ()) -> tuple[str, int] | None:
    """``text`` with one sentence (not the last, which asks the question) removed, and that sentence's index.

    ``None`` when there is no sentence left to drop (a single sentence, or all candidates in ``avoid``).
    """
    sentences = split_sentences(text)
    candidates = [k for k in range(len(sentences) - 1) if k not in avoid]
    if not candidates:
        return None
    k = rng.choice(candidates)
    return " ".join(sentences[:k] + sentences[k + 1 :]), k


def drop_sentence_negatives(
    records: Sequence[PromptRecord], *, seed: int = 0, count: int = 1
) -> list[list[PromptRecord]]:
    """For each record, up to ``count`` copies with a different sentence of its question dropped.

    A record whose question has fewer than ``count + 1`` sentences gets fewer (maybe no) negatives.
    """
    out = []
    for i, record in enumerate(records):
        rng = random.Random(f"{seed}:{i}")
        dropped: list[int] = []
        negatives = []
        for _ in range(count):
            result = drop_sentence(record.question, rng, avoid=dropped)
            if result is None:
                break
            text, k = result
            dropped.append(k)
            negatives.append(replace(record, prompt=_with_question(record.prompt, text)))
        out.append(negatives)
    return out


def _with_question(prompt, text: str):
    if isinstance(prompt, str):
        return text
    messages = [dict(m) for m in prompt]
    last_user = max(k for k, m in enumerate(messages) if m["role"] == "user")
    messages[last_user]["content"] = text
    return messages
