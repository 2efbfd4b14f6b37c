"""Pair rows from generated replies: the first reply of each side, or (``--select pmi``) the replies ranked by their
pointwise mutual information with the prompt."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mipo.core.errors import MipoError
from mipo.pairs.config import Conversation, PairsConfig, PairsSummary
from mipo.pairs.plan import Plan, positive_unit_key, required_keys
from mipo.prompts.records import PromptRecord

SCORE_BATCH = 8  # sequences per scoring forward pass: (8, reply tokens, vocabulary) logits stay small


@dataclass
class Output:
    """Process 0's writer of the pairs file, and the ids of the prompts whose pairs are written."""

    writer: Any  # mipo.core.files.RowWriter on process 0, None on the others
    done_ids: set[str]
    engine: Any = None  # scores the candidates of --select pmi (an hf engine: model and tokenizer)


def finish_pairs(
    output: Output, plan: Plan, cached: dict[str, list[str]], config: PairsConfig, summary: PairsSummary
) -> None:
    """Write the last pairs and move the output into place; never finish a short output."""
    emit_pairs(output, plan, cached, config, summary)
    missing_ids = [r.id for r in plan.records if r.id not in output.done_ids]
    if missing_ids:  # cannot happen unless a cache file was removed mid-run
        raise MipoError(
            f"{len(missing_ids)} prompts have no responses (e.g. {missing_ids[0]}); rerun with --resume"
        )
    summary.pairs = output.writer.count
    summary.prompts = len(plan.records)
    summary.dropped["with no negative (too few sentences)"] = plan.no_negative
    output.writer.close()


def emit_pairs(
    output: Output, plan: Plan, cached: dict[str, list[str]], config: PairsConfig, summary: PairsSummary
) -> None:
    """Write the pairs of every prompt whose responses are all known and that is not written yet."""
    ready = [
        r
        for r in plan.records
        if r.id not in output.done_ids and all(k in cached for k in required_keys(plan, r.id))
    ]
    if config.select == "pmi":
        _emit_pmi_ranked(output, plan, cached, config, summary, ready)
        return
    for record in ready:
        keys = [positive_unit_key(record.id), *plan.negatives[record.id]]
        output.done_ids.add(record.id)
        several = config.samples * len(plan.negatives[record.id]) > 1
        for s, chosen in enumerate(cached[keys[0]]):
            for q, negative_key in enumerate(plan.negatives[record.id]):
                rejected = cached[negative_key][s]
                why_not = "empty response" if not chosen or not rejected else None
                if chosen == rejected and not why_not:
                    why_not = "identical chosen and rejected"
                if why_not:
                    summary.dropped[why_not] = summary.dropped.get(why_not, 0) + 1
                    continue
                row_id = f"{record.id}-{s}-{q}" if several else record.id
                output.writer.write(
                    _pair_row(row_id, record, plan, keys[0], negative_key, chosen, rejected, config, q)
                )


def _emit_pmi_ranked(
    output: Output,
    plan: Plan,
    cached: dict[str, list[str]],
    config: PairsConfig,
    summary: PairsSummary,
    ready: list[PromptRecord],
) -> None:
    """--select pmi: score every ready record's candidates (and rejected replies) in one batched pass, then
    write chosen = the highest-PMI candidate against rejected = the lowest or the negative prompt's reply."""
    replies = {}  # record id -> the replies to score: the candidates, then the negatives' replies
    for record in ready:
        negatives = plan.negatives[record.id] if config.rejected == "negative" else []
        replies[record.id] = [*cached[positive_unit_key(record.id)], *(cached[k][0] for k in negatives)]
    scores = _pmi_of_replies(output.engine, plan, ready, replies)
    for record in ready:
        output.done_ids.add(record.id)
        candidates = scores[record.id][: config.samples]
        texts = replies[record.id]
        ranked = sorted((i for i in range(config.samples) if texts[i]), key=lambda i: candidates[i])
        if not ranked:
            summary.dropped["empty response"] = summary.dropped.get("empty response", 0) + 1
            continue
        best = ranked[-1]
        if config.rejected == "lowest":
            rejected = [(plan.negatives[record.id][0], ranked[0])]
        else:
            rejected = [(k, config.samples + q) for q, k in enumerate(plan.negatives[record.id])]
        for q, (negative_key, r) in enumerate(rejected):
            if not texts[r] or texts[r] == texts[best]:
                why_not = "identical chosen and rejected" if texts[r] else "empty response"
                summary.dropped[why_not] = summary.dropped.get(why_not, 0) + 1
                continue
            row_id = f"{record.id}-{q}" if len(rejected) > 1 else record.id
            row = _pair_row(
                row_id,
                record,
                plan,
                positive_unit_key(record.id),
                negative_key,
                texts[best],
                texts[r],
                config,
                q,
            )
            row |= {"chosen_pmi": scores[record.id][best], "rejected_pmi": scores[record.id][r]}
            row["candidate_pmi"] = candidates
            output.writer.write(row)


def _pmi_of_replies(
    engine, plan: Plan, records: list[PromptRecord], replies: dict[str, list[str]]
) -> dict[str, list[float]]:
    """Each reply's PMI against its record's negative prompts, ``log π(y|x) − log mean_k π(y|x'_k)``
    (``mipo.engine.pmi``), from one batched ``sequence_logprobs`` call; a repeated (prompt, reply) is scored once."""
    from mipo.engine.pmi import pmi_from_logprobs
    from mipo.engine.scoring import sequence_logprobs

    slots: dict[tuple[str, str], int] = {}
    sequences: list[tuple[Conversation, str]] = []

    def slot(conversation: Conversation, reply: str) -> int:
        key = (json.dumps(conversation, sort_keys=True), reply)
        if key not in slots:
            slots[key] = len(sequences)
            sequences.append((conversation, reply))
        return slots[key]

    layout = {}  # record id -> per reply: (own slot, the negative prompts' slots)
    for record in records:
        prompt = plan.conversations[positive_unit_key(record.id)]
        negatives = [plan.conversations[k] for k in plan.negatives[record.id]]
        layout[record.id] = [(slot(prompt, y), [slot(x, y) for x in negatives]) for y in replies[record.id]]
    if not sequences:
        return {}
    logps = sequence_logprobs(
        engine.model,
        engine.tokenizer,
        [c for c, _ in sequences],
        [y for _, y in sequences],
        batch_size=SCORE_BATCH,
        share_prompts=False,  # a chunk's scores must not depend on the chunk (--resume gives the same rows)
    )
    return {
        record_id: pmi_from_logprobs(
            [logps[own] for own, _ in rows], [[logps[o] for o in others] for _, others in rows]
        )
        for record_id, rows in layout.items()
    }


def _pair_row(
    row_id: str,
    record: PromptRecord,
    plan: Plan,
    positive_key: str,
    negative_key: str,
    chosen: str,
    rejected: str,
    config: PairsConfig,
    position: int,
) -> dict[str, Any]:
    """One pair row; ``position`` is the negative's place among the record's (which strategy made it)."""
    return {
        "id": row_id,
        "prompt_id": record.id,
        "prompt": plan.conversations[positive_key],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        # cad: the prompt CAD contrasts with (x without its context), whichever reply is rejected
        "negative_prompt": plan.contrasts.get(record.id, plan.conversations[negative_key]),
        # whether negative_prompt carries a user context (what guidance --preserve reads): x' = x without its
        # context (incomplete, cad) or with another one (other-context)
        "negative_context": record.id not in plan.contrasts and plan.has_context[negative_key],
        "strategy": _negative_strategy(config, position),
        "model": config.model,
        "seed": config.seed,
        "generation": {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "samples": config.samples,
            "negatives": config.negatives,
            "backend": config.backend,
            "context_mode": config.context_mode,
            **({"select": config.select, "rejected": config.rejected} if config.select == "pmi" else {}),
            **(_cad_settings(config) if record.id in plan.contrasts else {}),
        },
    }


def _negative_strategy(config: PairsConfig, position: int) -> str:
    """The strategy that made the negative at ``position``: ``--strategy``, or for ``mixed`` the one it took."""
    from mipo.pairs.strategies import STRATEGIES, negative_strategies

    names = negative_strategies(config.strategy, STRATEGIES.get(config.strategy), config.negatives)
    return names[position] if position < len(names) else config.strategy


def _cad_settings(config: PairsConfig) -> dict[str, Any]:
    """How ``cad``'s chosen reply was decoded, and which reply was rejected."""
    from mipo.engine.cad import cad_settings

    return {"cad_alpha": config.cad_alpha, "cad_rejected": config.cad_rejected} | cad_settings(
        config.cad_alpha, config.cad_plausibility, config.cad_lift_once
    )
