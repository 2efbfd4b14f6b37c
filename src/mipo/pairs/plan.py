"""Which replies a pairs run needs: each record's negative prompt, the generation units (prompt, samples) and
their order, shared where two pairs need the same reply."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from mipo.core.errors import InputError
from mipo.pairs.config import Conversation, PairsConfig
from mipo.pairs.strategies import STRATEGIES, NegativeError, chosen_contrast
from mipo.prompts.records import PromptRecord, to_conversation

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What to generate (units: key -> conversation) and how units make pairs."""

    records: list[PromptRecord]
    conversations: dict[str, Conversation]
    order: list[str]  # unit keys in generation order
    negatives: dict[str, list[str]]  # record id -> the unit keys of its negatives
    skipped: int = 0
    no_negative: int = 0
    # False with --select pmi --rejected lowest: negative prompts are only scored against, never answered
    answer_negatives: bool = True
    # record id -> the prompt its chosen replies are contrasted with by CAD (``cad``); empty: plain decoding
    contrasts: dict[str, Conversation] = field(default_factory=dict)
    # unit key -> whether its prompt carries a user context (a pair row's ``negative_context``)
    has_context: dict[str, bool] = field(default_factory=dict)


def needed_units(plan: Plan, done_ids: set[str]) -> set[str]:
    """The units whose responses the prompts not written yet need."""
    needed = set()
    for r in plan.records:
        if r.id not in done_ids:
            needed.update(required_keys(plan, r.id))
    return needed


def required_keys(plan: Plan, record_id: str) -> list[str]:
    """The units a record's pairs are made of: its own replies, and its negatives' when they are answered."""
    return [positive_unit_key(record_id), *(plan.negatives[record_id] if plan.answer_negatives else [])]


def unit_samples(key: str, config: PairsConfig) -> int:
    """Replies a unit needs: every sample of a prompt; with --select pmi, a new negative prompt's reply is
    a rejected reply or nothing, never a candidate, so one is enough."""
    if config.select == "pmi" and not key.endswith("\t+"):
        return 1
    return config.samples


def positive_unit_key(record_id: str) -> str:
    return f"{record_id}\t+"


def unit_contrast(plan: Plan, key: str) -> Conversation | None:
    """The prompt a unit's replies are contrasted with by context-aware decoding: a ``cad`` record's chosen
    replies; None for a unit decoded plainly."""
    return plan.contrasts.get(key[:-2]) if key.endswith("\t+") else None


def check_negatives(records: list[PromptRecord], config: PairsConfig) -> None:
    """Draw the strategy's negatives once before the model loads, so a record that cannot get one (no
    context for ``incomplete`` or ``cad``) is a one-line error naming its line before any loading."""
    _draw_negatives(records, config)


def make_plan(records: list[PromptRecord], config: PairsConfig, engine) -> Plan:
    """Keep the prompts that fit the model, draw their negatives, and lay out the units to generate."""
    fits = _fit_check(engine, config)
    kept = [r for r, ok in zip(records, fits([_conversation(r, config) for r in records])) if ok]
    if len(kept) < len(records):
        log.warning(
            "skipping %d prompts longer than the model's context (with max_new_tokens)",
            len(records) - len(kept),
        )
    negatives = _draw_negatives(kept, config)
    plan = _units(kept, negatives, config)
    plan.answer_negatives = not (config.select == "pmi" and config.rejected == "lowest")
    plan.skipped += len(records) - len(kept)
    contrast = chosen_contrast(STRATEGIES.get(config.strategy))
    if contrast is not None:
        plan.contrasts = {r.id: _conversation(contrast(r), config) for r in kept}
    _drop_unfit_negatives(plan, fits)
    return plan


def _conversation(record: PromptRecord, config: PairsConfig) -> Conversation:
    return to_conversation(record, context_mode=config.context_mode)


def _fit_check(engine, config: PairsConfig) -> Callable[[list[Conversation]], list[bool]]:
    """Whether each conversation leaves room for ``max_new_tokens`` in the model's context."""
    from mipo.engine.generation import encode_conversations

    context_length = engine.context_length

    def fits(conversations: list[Conversation]) -> list[bool]:
        if context_length is None:
            return [True] * len(conversations)
        lengths = [len(ids) for ids in encode_conversations(engine.tokenizer, conversations)]
        return [n + config.max_new_tokens <= context_length for n in lengths]

    return fits


def _draw_negatives(records: list[PromptRecord], config: PairsConfig) -> list[list[PromptRecord | int]]:
    """The strategy's negatives for each record; a record that cannot get one is an error naming its line."""
    strategy = STRATEGIES.get(config.strategy)
    try:
        return strategy(records, random.Random(config.seed), config.negatives, config)
    except NegativeError as e:
        line = records[e.index].line if e.index is not None and records else None
        field_name = config.context_field if e.field == "context" else config.prompt_field
        message = f"{e} (strategy '{config.strategy}')"
        raise InputError(str(config.prompts), message, line=line, field=field_name) from None


def _units(
    records: list[PromptRecord], negatives: list[list[PromptRecord | int]], config: PairsConfig
) -> Plan:
    """One unit per record (its chosen responses) and per new negative prompt; a negative given as an index
    reuses that record's unit. Units go in generation order (``_generation_order``)."""
    conversations: dict[str, Conversation] = {}
    has_context: dict[str, bool] = {}
    negative_keys: dict[str, list[str]] = {}
    own_units: dict[str, list[str]] = {}  # record id -> its positive and its new negative units
    # An x' met before (``marginal``: one for all) is generated once: its replies, seeded by its tokens, are
    # the same in every unit anyway.
    unit_of: dict[str, str] = {}  # a negative conversation, as JSON -> the unit that generates it
    for record, record_negatives in zip(records, negatives):
        positive = positive_unit_key(record.id)
        conversations[positive] = _conversation(record, config)
        has_context[positive] = bool(record.context)
        own_units[record.id] = [positive]
        negative_keys[record.id] = []
        for q, negative in enumerate(record_negatives):
            if isinstance(negative, int):
                negative_keys[record.id].append(positive_unit_key(records[negative].id))
                continue
            conversation = _conversation(negative, config)
            text = json.dumps(conversation, sort_keys=True)
            if text in unit_of:
                negative_keys[record.id].append(unit_of[text])
                continue
            key = unit_of[text] = f"{record.id}\t-{q}"
            conversations[key] = conversation
            has_context[key] = bool(negative.context)
            own_units[record.id].append(key)
            negative_keys[record.id].append(key)
    order = [key for i in _generation_order(negatives) for key in own_units[records[i].id]]
    return Plan(list(records), conversations, order, negative_keys, has_context=has_context)


def _generation_order(negatives: list[list[PromptRecord | int]]) -> list[int]:
    """Records in order, except that a record whose first negative reuses another record's response is
    followed by that record (along the chain): a prompt's negative is generated soon after it."""
    order, seen = [], set()
    for start in range(len(negatives)):
        i: int | None = start
        while i is not None and i not in seen:  # a duplicate text joins its first occurrence's chain
            seen.add(i)
            order.append(i)
            first = negatives[i][0] if negatives[i] else None
            i = first if isinstance(first, int) else None
    return order


def _drop_unfit_negatives(plan: Plan, fits: Callable[[list[Conversation]], list[bool]]) -> None:
    """Drop the prompts with a negative prompt longer than the context, then those left with no negative."""
    new_units = [k for k in plan.order if not k.endswith("\t+")]
    unfit = {k for k, ok in zip(new_units, fits([plan.conversations[k] for k in new_units])) if not ok}
    too_long = {r.id for r in plan.records if unfit.intersection(plan.negatives[r.id])}
    plan.skipped += len(too_long)
    fitting = [r for r in plan.records if r.id not in too_long]
    plan.records = [r for r in fitting if plan.negatives[r.id]]
    plan.no_negative = len(fitting) - len(plan.records)
    needed = needed_units(plan, set())
    plan.order = [k for k in plan.order if k in needed]
