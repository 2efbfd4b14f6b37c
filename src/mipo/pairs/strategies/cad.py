"""``cad``: the chosen reply is the model's context-aware-decoding (CAD) reply to x with its context, each
token sampled at the pairs temperature from ``(1 + A) log p(.|x, c) - A log p(.|x)`` (``--cad-alpha A``,
``mipo.engine.cad``); the rejected reply is the model's plain reply to x without its context
(``--cad-rejected without-context``, the default: x' is ``incomplete``'s) or to x with it (``with-context``:
the same prompt and random stream as the chosen reply, so the pair differs only by CAD's tilt).

Every row's ``negative_prompt`` is x without its context, the prompt CAD contrasts with, whichever reply is
rejected: what InfoNCE/SAMI and the objectives that raise a reply under its prompt against its negative
prompt read."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mipo.pairs.strategies import STRATEGIES, require_context
from mipo.pairs.strategies.incomplete import incomplete_negative
from mipo.prompts.records import PromptRecord


def cad_contrast(record: PromptRecord) -> PromptRecord:
    """The prompt a chosen reply is contrasted with: the same prompt without its context."""
    return incomplete_negative(record)


@STRATEGIES.register("cad")
def cad(
    records: Sequence[PromptRecord], rng: random.Random, k: int, settings: Any
) -> list[list[PromptRecord]]:
    require_context(records)
    if getattr(settings, "cad_rejected", "without-context") == "with-context":
        # x itself, answered plainly: a unit of its own, apart from the chosen (CAD) replies to x.
        return [[record] * k for record in records]
    return [[cad_contrast(record)] * k for record in records]


cad.chosen_contrast = cad_contrast  # the chosen replies decode with CAD against this prompt (see the package)
