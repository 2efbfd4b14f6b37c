"""``incomplete``: x' is the same prompt without its ``context`` (and without its system text with
``--drop-system``): the rejected reply is the model's default reply to the bare question."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mipo.pairs.strategies import STRATEGIES, NegativeError, require_context
from mipo.prompts.records import PromptRecord


def incomplete_negative(record: PromptRecord, *, drop_system: bool = False) -> PromptRecord:
    """The same prompt with its context removed (and its system text, if ``drop_system``)."""
    if not record.context:
        raise NegativeError("no context to remove (strategy 'incomplete' needs one)", field="context")
    prompt = record.prompt
    if drop_system and isinstance(prompt, list):
        prompt = [m for m in prompt if m["role"] != "system"]
    return replace(record, prompt=prompt, context=None, system=None if drop_system else record.system)


@STRATEGIES.register("incomplete")
def incomplete(
    records: Sequence[PromptRecord], rng: random.Random, k: int, settings: Any
) -> list[list[PromptRecord]]:
    require_context(records)
    drop_system = bool(getattr(settings, "drop_system", False))
    # The k negatives are one prompt: sampled k times, they give k different rejected replies.
    return [[incomplete_negative(r, drop_system=drop_system)] * k for r in records]
