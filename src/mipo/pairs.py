"""``mipo pairs``: MIPO preference pairs from a prompt set.

For each prompt x the model's own response is *chosen*; its response to a negative prompt x' (made by the
negative strategy, ``mipo.strategies``) is *rejected*. Rows are TRL's conversational format with an explicit
prompt: ``{id, prompt: [messages], chosen: [assistant], rejected: [assistant], negative_prompt, strategy, ...}``.

Work goes in chunks of generation units (a conversation and its samples). Each chunk's responses are
flushed to ``OUT.responses-RANK.partial`` and the pairs whose responses are all known are flushed to the
output's partial file, so a killed run resumes (``--resume``) without regenerating or repeating anything.
Under ``accelerate launch`` (or ``torchrun``) chunk c runs on process ``c % world``; process 0 merges
all processes' responses into the one output. A chunk's samples do not depend on which process ran it,
so 1 and N processes write the same pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo.config import add_config_arguments, option, require, resolve
from mipo.errors import InputError, MipoError, OutputExistsError
from mipo.generation import GenerationJob, GenerationStats
from mipo.prompts import PromptRecord, to_conversation
from mipo.strategies import STRATEGIES, NegativeError

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]

SELECTIONS = ("first", "pmi")
REJECTED_REPLIES = ("lowest", "negative")
SCORE_BATCH = 8  # sequences per scoring forward pass: (8, reply tokens, vocabulary) logits stay small


@dataclass
class PairsConfig(GenerationJob):
    strategy: str = option(
        "random", "how the negative prompt x' is made (mipo.strategies)", choices=STRATEGIES
    )
    group_field: str | None = option(None, "record field whose value keeps x' in x's group (random)")
    drop_system: bool = option(False, "incomplete: also remove the system text from x'")
    samples: int = option(1, "responses (positives) per prompt")
    negatives: int = option(1, "negatives per positive: samples*negatives pairs per prompt")
    marginal_prompt: str = option("", "marginal: the text of the neutral user turn x' (default: empty)")
    select: str = option(
        "first",
        "first: every sample makes pairs; pmi: of the --samples candidates, the one with the highest PMI "
        "against the negative prompts (log π(y|x) − log mean π(y|x')) is chosen",
        choices=SELECTIONS,
    )
    rejected: str = option(
        "negative",
        "--select pmi: the rejected reply is the negative prompt's reply (negative) or the lowest-PMI "
        "candidate (lowest)",
        choices=REJECTED_REPLIES,
    )

    def __post_init__(self) -> None:
        problems = self.problems(counts=("samples", "negatives"))
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.select not in SELECTIONS:
            problems.append(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.rejected not in REJECTED_REPLIES:
            problems.append(f"rejected must be one of {', '.join(REJECTED_REPLIES)}, got {self.rejected!r}")
        if self.select == "pmi" and self.samples < 2:
            problems.append(
                f"--select pmi ranks candidates: --samples must be at least 2, got {self.samples}"
            )
        if self.select == "pmi" and self.backend != "hf":
            problems.append("--select pmi scores replies with the model itself: it needs --backend hf")
        require(problems)

    def fingerprint(self) -> dict[str, Any]:
        """As ``GenerationJob.fingerprint``; ``rejected`` only counts with ``--select pmi`` (it changes
        nothing otherwise), and ``select: first`` is left out, so runs from before these settings resume."""
        settings = super().fingerprint()
        if self.select == "first":
            settings.pop("select", None)
            settings.pop("rejected", None)
        return settings


@dataclass
class PairsSummary:
    path: Path
    pairs: int = 0
    prompts: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    stats: GenerationStats = field(default_factory=GenerationStats)

    def line(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        return (
            f"wrote {self.pairs} pairs from {self.prompts} prompts to {self.path}; dropped: {dropped}; "
            f"{self.stats.new_tokens} new tokens at {self.stats.tokens_per_second:.1f} tokens/s"
        )


@dataclass
class _Plan:
    """What to generate (units: key -> conversation) and how units make pairs."""

    records: list[PromptRecord]
    conversations: dict[str, Conversation]
    order: list[str]  # unit keys in generation order
    negatives: dict[str, list[str]]  # record id -> the unit keys of its negatives
    skipped: int = 0
    no_negative: int = 0
    # False with --select pmi --rejected lowest: negative prompts are only scored against, never answered
    answer_negatives: bool = True


@dataclass
class _Output:
    """Process 0's writer of the pairs file, and the ids of the prompts whose pairs are written."""

    writer: Any  # mipo.files.RowWriter on process 0, None on the others
    done_ids: set[str]
    engine: Any = None  # scores the candidates of --select pmi (an hf engine: model and tokenizer)


def build_pairs(config: PairsConfig) -> Path:
    """Generate MIPO pairs for ``config.prompts`` and write them to ``config.out``; returns that path."""
    return run_pairs(config).path


def run_pairs(config: PairsConfig) -> PairsSummary:
    out = Path(config.out)
    rank, world, barrier = _processes()
    job = config.fingerprint()
    _check_output(out, config, job, rank, barrier)
    records = config.load_records(group_field=config.group_field)
    engine = _load_engine(config)
    plan = _plan(records, config, engine)
    summary = PairsSummary(path=out, dropped={"too long for the model": plan.skipped})
    output = _open_output(out, config, job, rank, world)
    output.engine = engine
    try:
        cached = _generate_chunks(plan, engine, config, output, rank, world, summary)
        if world > 1:
            barrier()
            if rank != 0:
                return summary
            cached.update(_read_caches(out))
        _finish(output, plan, cached, config, summary)
    except BaseException:
        if output.writer is not None:
            output.writer.abort()
        raise
    for path in _cache_paths(out):
        path.unlink()
    log.debug(summary.line())
    return summary


def _load_engine(config: PairsConfig):
    from mipo.backends import load_engine

    device = config.device
    if device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = str(_partial_state().device)
    return load_engine(config.backend, config.model, device=device, seed=config.seed)


def _open_output(out: Path, config: PairsConfig, job: dict[str, Any], rank: int, world: int) -> _Output:
    writer, done_ids = None, set()
    if rank == 0:
        from mipo.files import RowWriter

        writer = RowWriter(out, resume=config.resume, overwrite=config.overwrite, fingerprint=job)
        done_ids = {row.get("prompt_id", row["id"]) for row in writer.existing}
    if world > 1:
        done_ids = _broadcast(done_ids)
    return _Output(writer, done_ids)


def _generate_chunks(
    plan: _Plan, engine, config: PairsConfig, output: _Output, rank: int, world: int, summary: PairsSummary
) -> dict[str, list[str]]:
    """Generate this process's chunks of the units not known yet; returns every known unit's responses."""
    from tqdm.auto import tqdm

    from mipo.files import output_error

    out = Path(config.out)
    cached = _read_caches(out)
    needed = _needed_units(plan, output.done_ids)
    # Chunks are cut from the whole plan, not from what is left, so a resumed chunk keeps its seed and rows.
    chunks = [plan.order[c : c + config.chunk_size] for c in range(0, len(plan.order), config.chunk_size)]
    bar = tqdm(
        total=sum(len(ch) for c, ch in enumerate(chunks) if c % world == rank),
        desc=f"generating (process {rank})" if world > 1 else "generating",
        unit="conv",
        disable=not config.progress,
    )
    cache_path = _cache_path(out, rank)
    try:
        cache_file = cache_path.open("a", encoding="utf-8")
    except OSError as e:
        raise output_error(cache_path, e) from None
    with cache_file:
        for c, chunk in enumerate(chunks):
            if c % world != rank:
                continue
            missing = [k for k in chunk if k in needed and k not in cached]
            for samples in sorted({_unit_samples(k, config) for k in missing}):
                keys = [k for k in missing if _unit_samples(k, config) == samples]
                conversations = [plan.conversations[k] for k in keys]
                responses = _generate(engine, conversations, config, samples, summary)
                cached.update(zip(keys, responses))
                _append_responses(cache_file, cache_path, keys, responses)
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{summary.stats.tokens_per_second:.0f}")
            if output.writer is not None and world == 1:
                _emit(output, plan, cached, config, summary)
    bar.close()
    return cached


def _needed_units(plan: _Plan, done_ids: set[str]) -> set[str]:
    """The units whose responses the prompts not written yet need."""
    needed = set()
    for r in plan.records:
        if r.id not in done_ids:
            needed.update(_required_keys(plan, r.id))
    return needed


def _required_keys(plan: _Plan, record_id: str) -> list[str]:
    """The units a record's pairs are made of: its own replies, and its negatives' when they are answered."""
    return [_positive_key(record_id), *(plan.negatives[record_id] if plan.answer_negatives else [])]


def _unit_samples(key: str, config: PairsConfig) -> int:
    """Replies a unit needs: every sample of a prompt; with --select pmi, a new negative prompt's reply is
    a rejected reply or nothing, never a candidate, so one is enough."""
    if config.select == "pmi" and not key.endswith("\t+"):
        return 1
    return config.samples


def _append_responses(cache_file, cache_path: Path, keys: list[str], responses: list[list[str]]) -> None:
    from mipo.files import output_error

    try:
        for key, texts in zip(keys, responses):
            cache_file.write(json.dumps({"key": key, "responses": texts}, ensure_ascii=False) + "\n")
        cache_file.flush()
    except OSError as e:
        with contextlib.suppress(OSError):  # the retried flush of a full disk fails again
            cache_file.close()
        raise output_error(cache_path, e, kept=True) from None


def _finish(
    output: _Output, plan: _Plan, cached: dict[str, list[str]], config: PairsConfig, summary: PairsSummary
) -> None:
    """Write the last pairs and move the output into place; never finish a short output."""
    _emit(output, plan, cached, config, summary)
    missing_ids = [r.id for r in plan.records if r.id not in output.done_ids]
    if missing_ids:  # cannot happen unless a cache file was removed mid-run
        raise MipoError(
            f"{len(missing_ids)} prompts have no responses (e.g. {missing_ids[0]}); rerun with --resume"
        )
    summary.pairs = output.writer.count
    summary.prompts = len(plan.records)
    summary.dropped["with no negative (too few sentences)"] = plan.no_negative
    output.writer.close()


def _processes() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier): one process, or those of ``accelerate launch`` / ``torchrun``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    state = _partial_state()
    return state.process_index, state.num_processes, state.wait_for_everyone


def _partial_state():
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate only joins the processes (with gloo) when told it runs on the CPU.
    return PartialState(cpu=not torch.cuda.is_available())


def _broadcast(value: Any) -> Any:
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _check_output(
    out: Path, config: PairsConfig, job: dict[str, Any], rank: int, barrier: Callable[[], None]
) -> None:
    """Refuse to replace an input or a finished output, to restart over an interrupted run unless asked, or
    to resume another job's run (the fingerprint is written with the partial file, by ``RowWriter``)."""
    from mipo.files import check_output_not_input, fingerprint_path, remove_leftovers
    from mipo.fingerprint import check_resume

    check_output_not_input(out, prompts=config.prompts)
    if out.exists() and not config.overwrite:
        if rank == 0:
            remove_leftovers(out, _cache_paths(out))
        raise OutputExistsError(out, resume=config.resume)
    leftovers = [p for p in [out.with_name(out.name + ".partial")] if p.exists()] + _cache_paths(out)
    if leftovers and not (config.resume or config.overwrite):
        raise MipoError(
            f"{leftovers[0]} holds an interrupted run; pass --resume to continue it or --overwrite to start again"
        )
    if leftovers and config.resume:
        check_resume(fingerprint_path(out), job, what=str(out))
    if config.overwrite and rank == 0:
        for path in leftovers:
            path.unlink()
    barrier()


def _cache_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.responses-{rank}.partial")


def _cache_paths(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.responses-*.partial")) if out.parent.is_dir() else []


def _read_caches(out: Path) -> dict[str, list[str]]:
    """Responses of earlier chunks (of any process); a line cut by a kill is ignored and redone."""
    from mipo.files import read_complete_lines

    cached: dict[str, list[str]] = {}
    for path in _cache_paths(out):
        rows, _ = read_complete_lines(path)
        cached.update((row["key"], row["responses"]) for row in rows)
    return cached


def _positive_key(record_id: str) -> str:
    return f"{record_id}\t+"


def _plan(records: list[PromptRecord], config: PairsConfig, engine) -> _Plan:
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
    _drop_unfit_negatives(plan, fits)
    return plan


def _conversation(record: PromptRecord, config: PairsConfig) -> Conversation:
    return to_conversation(record, context_mode=config.context_mode)


def _fit_check(engine, config: PairsConfig) -> Callable[[list[Conversation]], list[bool]]:
    """Whether each conversation leaves room for ``max_new_tokens`` in the model's context."""
    from mipo.generation import encode_conversations

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
) -> _Plan:
    """One unit per record (its chosen responses) and per new negative prompt; a negative given as an index
    reuses that record's unit. Units go in generation order (``_generation_order``)."""
    conversations: dict[str, Conversation] = {}
    negative_keys: dict[str, list[str]] = {}
    own_units: dict[str, list[str]] = {}  # record id -> its positive and its new negative units
    # An x' met before (``marginal``: one for all) is generated once: its replies, seeded by its tokens, are
    # the same in every unit anyway.
    unit_of: dict[str, str] = {}  # a negative conversation, as JSON -> the unit that generates it
    for record, record_negatives in zip(records, negatives):
        positive = _positive_key(record.id)
        conversations[positive] = _conversation(record, config)
        own_units[record.id] = [positive]
        negative_keys[record.id] = []
        for q, negative in enumerate(record_negatives):
            if isinstance(negative, int):
                negative_keys[record.id].append(_positive_key(records[negative].id))
                continue
            conversation = _conversation(negative, config)
            text = json.dumps(conversation, sort_keys=True)
            if text in unit_of:
                negative_keys[record.id].append(unit_of[text])
                continue
            key = unit_of[text] = f"{record.id}\t-{q}"
            conversations[key] = conversation
            own_units[record.id].append(key)
            negative_keys[record.id].append(key)
    order = [key for i in _generation_order(negatives) for key in own_units[records[i].id]]
    return _Plan(list(records), conversations, order, negative_keys)


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


def _drop_unfit_negatives(plan: _Plan, fits: Callable[[list[Conversation]], list[bool]]) -> None:
    """Drop the prompts with a negative prompt longer than the context, then those left with no negative."""
    new_units = [k for k in plan.order if not k.endswith("\t+")]
    unfit = {k for k, ok in zip(new_units, fits([plan.conversations[k] for k in new_units])) if not ok}
    too_long = {r.id for r in plan.records if unfit.intersection(plan.negatives[r.id])}
    plan.skipped += len(too_long)
    fitting = [r for r in plan.records if r.id not in too_long]
    plan.records = [r for r in fitting if plan.negatives[r.id]]
    plan.no_negative = len(fitting) - len(plan.records)
    needed = _needed_units(plan, set())
    plan.order = [k for k in plan.order if k in needed]


def _generate(
    engine, conversations: list[Conversation], config: PairsConfig, samples: int, summary: PairsSummary
):
    return engine.generate(
        conversations,
        num_samples=samples,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,  # replies are seeded one by one: the same in any chunk, batch, process or worker
        batch_size=config.batch_size,
        progress=False,
        stats=summary.stats,
        workers=config.workers,
    )


def _emit(
    output: _Output, plan: _Plan, cached: dict[str, list[str]], config: PairsConfig, summary: PairsSummary
) -> None:
    """Write the pairs of every prompt whose responses are all known and that is not written yet."""
    ready = [
        r
        for r in plan.records
        if r.id not in output.done_ids and all(k in cached for k in _required_keys(plan, r.id))
    ]
    if config.select == "pmi":
        _emit_pmi_ranked(output, plan, cached, config, summary, ready)
        return
    for record in ready:
        keys = [_positive_key(record.id), *plan.negatives[record.id]]
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
                    _pair_row(row_id, record, plan, keys[0], negative_key, chosen, rejected, config)
                )


def _emit_pmi_ranked(
    output: _Output,
    plan: _Plan,
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
        replies[record.id] = [*cached[_positive_key(record.id)], *(cached[k][0] for k in negatives)]
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
                row_id, record, plan, _positive_key(record.id), negative_key, texts[best], texts[r], config
            )
            row |= {"chosen_pmi": scores[record.id][best], "rejected_pmi": scores[record.id][r]}
            row["candidate_pmi"] = candidates
            output.writer.write(row)


def _pmi_of_replies(
    engine, plan: _Plan, records: list[PromptRecord], replies: dict[str, list[str]]
) -> dict[str, list[float]]:
    """Each reply's PMI against its record's negative prompts, ``log π(y|x) − log mean_k π(y|x'_k)``
    (``mipo.pmi``), from one batched ``sequence_logprobs`` call; a repeated (prompt, reply) is scored once."""
    from mipo.pmi import pmi_from_logprobs
    from mipo.scoring import sequence_logprobs

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
        prompt = plan.conversations[_positive_key(record.id)]
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
    plan: _Plan,
    positive_key: str,
    negative_key: str,
    chosen: str,
    rejected: str,
    config: PairsConfig,
) -> dict[str, Any]:
    return {
        "id": row_id,
        "prompt_id": record.id,
        "prompt": plan.conversations[positive_key],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "negative_prompt": plan.conversations[negative_key],
        "strategy": config.strategy,
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
        },
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    add_config_arguments(parser, PairsConfig)


def main(args: argparse.Namespace) -> int:
    config = resolve(PairsConfig, args, yaml_path=args.config)
    summary = run_pairs(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.line())
    return 0
