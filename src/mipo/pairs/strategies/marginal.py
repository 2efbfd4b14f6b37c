"""``marginal``: x' carries nothing of the user: one neutral user turn (empty by default), the same for every
prompt. The rejected reply is then a sample of what the model says to anyone, the "truly marginal" negative
of the paper's revision, and PMI against it is ``log π(y | x) - log π(y | neutral turn)``.

x' has no system text and no context (both are part of what a user brings). Its text is the ``PairsConfig``
setting ``marginal_prompt`` when the config has one, else ``NEUTRAL_PROMPT``. Every record's x' is the same
conversation, and replies are seeded by the prompt's tokens (``mipo.engine.generation.row_seed``), so every pair
gets the same rejected reply for a given sample number.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mipo.pairs.strategies import STRATEGIES
from mipo.prompts.records import PromptRecord

NEUTRAL_PROMPT = ""  # an empty user turn: no question, no context, no system text


def marginal_negative(text: str = NEUTRAL_PROMPT) -> PromptRecord:
    """The neutral prompt x': a single user turn ``text``."""
    return PromptRecord(id="marginal", prompt=[{"role": "user", "content": text}])


@STRATEGIES.register("marginal")
def marginal(
    records: Sequence[PromptRecord], rng: random.Random, k: int, settings: Any
) -> list[list[PromptRecord]]:
    text = getattr(settings, "marginal_prompt", None)
    negative = marginal_negative(NEUTRAL_PROMPT if text is None else text)
    # The k negatives are one prompt, as with ``incomplete``.
    return [[negative] * k for _ in records]
