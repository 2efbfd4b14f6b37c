"""``drop-sentence``: x' is the prompt with one sentence of its question removed (never the last one, which
asks the question): for math word problems, the reply to a problem missing a fact."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mipo.pairs.strategies import STRATEGIES
from mipo.prompts.records import PromptRecord

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

    A record whose question has fewer than ``count + 1`` sentences gets fewer (maybe no) negatives. Each
    record draws from its own generator (``seed`` and its index), so its negatives do not depend on the others.
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


@STRATEGIES.register("drop-sentence")
def drop_sentence_strategy(
    records: Sequence[PromptRecord], rng: random.Random, k: int, settings: Any
) -> list[list[PromptRecord]]:
    # Seeded per record from the run's seed, not drawn from ``rng``: a record's negatives stay those of
    # earlier mipo versions with the same --seed (and do not depend on the other records).
    return drop_sentence_negatives(records, seed=getattr(settings, "seed", 0), count=k)
