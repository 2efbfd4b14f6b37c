"""``mipo pairs``: MIPO preference pairs from a prompt set.

For each prompt x the model's own response is *chosen*; its response to a negative prompt x' (see
``mipo.negatives``) is *rejected*. Rows are TRL's conversational format with an explicit prompt:
``{id, prompt: [messages], chosen: [assistant], rejected: [assistant], negative_prompt, strategy, ...}``.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo.config import add_config_arguments, option, require, resolve
from mipo.errors import InputError, MipoError, OutputExistsError
from mipo.generation import GenerationJob, GenerationStats
from mipo.negatives import STRATEGIES, NegativeError
from mipo.prompts import PromptRecord, to_conversation

log = logging.getLogger(__name__)


@dataclass
class PairsConfig(GenerationJob):
    strategy: str = option("random", "how the negative prompt x' is made", choices=STRATEGIES)
    group_field: str | None = option(None, "record field whose value keeps x' in x's group (random)")
    drop_system: bool = option(False, "incomplete: also remove the system text from x'")
    samples: int = option(1, "responses (positives) per prompt")
    negatives: int = option(1, "negatives per positive: samples*negatives pairs per prompt")

    def __post_init__(self) -> None:
        problems = self.problems(counts=("samples", "negatives"))
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        require(problems)


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
    conversations: dict[str, list[dict[str, str]]]
    order: list[str]  # unit keys in generation order
    negatives: dict[str, list[str]]  # record id -> the unit keys of its negatives
    skipped: int = 0
    no_negative: int = 0


def build_pairs(config: PairsConfig) -> Path:
    """Generate MIPO pairs for ``config.prompts`` and write them to ``config.out``; returns that path."""
    return run_pairs(config).path


def run_pairs(config: PairsConfig) -> PairsSummary:
    from mipo.prompts import load_prompts

    out = Path(config.out)
    rank, world, barrier = _processes()
    job = config.fingerprint()
    _check_output(out, config, job, rank, barrier)
    records = load_prompts(
        config.prompts,
        prompt_field=config.prompt_field,
        context_field=config.context_field,
        id_field=config.id_field,
        system_field=config.system_field,
        group_field=config.group_field,
        split=config.split,
        limit=config.limit,
    )
    model, tokenizer = _load(config, rank)
    plan = _plan(records, config, tokenizer, _context_length(model, config))
    cached = _read_caches(out)
    summary = PairsSummary(path=out, dropped={"too long for the model": plan.skipped})
    writer = None
    done_ids: set[str] = set()
    if rank == 0:
        from mipo.files import RowWriter

        writer = RowWriter(out, resume=config.resume, overwrite=config.overwrite, fingerprint=job)
        done_ids = {row.get("prompt_id", row["id"]) for row in writer.existing}
    if world > 1:
        done_ids = _broadcast(done_ids)
    needed = set()
    for r in plan.records:
        if r.id not in done_ids:
            needed.add(_positive_key(r.id))
            needed.update(plan.negatives[r.id])
    # Chunks are cut from the whole plan, not from what is left, so a resumed chunk keeps its seed and rows.
    chunks = [plan.order[c : c + config.chunk_size] for c in range(0, len(plan.order), config.chunk_size)]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=sum(len(ch) for c, ch in enumerate(chunks) if c % world == rank),
        desc=f"generating (process {rank})" if world > 1 else "generating",
        unit="conv",
        disable=not config.progress,
    )
    cache_path = _cache_path(out, rank)
    from mipo.files import output_error

    try:
        cache_file = cache_path.open("a", encoding="utf-8")
    except OSError as e:
        raise output_error(cache_path, e) from None
    with cache_file:
        for c, chunk in enumerate(chunks):
            if c % world != rank:
                continue
            missing = [k for k in chunk if k in needed and k not in cached]
            if missing:
                responses = _generate(
                    model, tokenizer, [plan.conversations[k] for k in missing], config, c, summary
                )
                try:
                    for key, texts in zip(missing, responses):
                        cached[key] = texts
                        line = json.dumps({"key": key, "responses": texts}, ensure_ascii=False)
                        cache_file.write(line + "\n")
                    cache_file.flush()
                except OSError as e:
                    with contextlib.suppress(OSError):  # the retried flush of a full disk fails again
                        cache_file.close()
                    raise output_error(cache_path, e, kept=True) from None
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{summary.stats.tokens_per_second:.0f}")
            if writer is not None and world == 1:
                _emit(writer, plan, cached, done_ids, config, summary)
    bar.close()
    if world > 1:
        barrier()
        if rank != 0:
            return summary
        cached.update(_read_caches(out))
    _emit(writer, plan, cached, done_ids, config, summary)
    missing_ids = [r.id for r in plan.records if r.id not in done_ids]
    if missing_ids:  # cannot happen unless a cache file was removed mid-run; never finish a short output
        writer.abort()
        raise MipoError(
            f"{len(missing_ids)} prompts have no responses (e.g. {missing_ids[0]}); rerun with --resume"
        )
    summary.pairs = writer.count
    summary.prompts = len(plan.records)
    summary.dropped["with no negative (too few sentences)"] = plan.no_negative
    writer.close()
    for path in _cache_paths(out):
        path.unlink()
    log.debug(summary.line())
    return summary


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
    to resume another job's run; record this job's fingerprint beside its partial files."""
    from mipo.files import check_output_not_input, fingerprint_path, output_error
    from mipo.fingerprint import check_resume, write_fingerprint

    check_output_not_input(out, prompts=config.prompts)
    if out.exists() and not config.overwrite:
        raise OutputExistsError(out, resume=config.resume)
    leftovers = [p for p in [out.with_name(out.name + ".partial")] if p.exists()] + _cache_paths(out)
    if leftovers and not (config.resume or config.overwrite):
        raise MipoError(
            f"{leftovers[0]} holds an interrupted run; pass --resume to continue it or --overwrite to start again"
        )
    resuming = bool(leftovers) and config.resume
    if resuming:
        check_resume(fingerprint_path(out), job, what=str(out))
    if rank == 0:
        if config.overwrite:
            for path in leftovers:
                path.unlink()
        if not resuming:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                write_fingerprint(fingerprint_path(out), job)
            except OSError as e:
                raise output_error(out, e) from None
    barrier()


def _cache_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.responses-{rank}.partial")


def _cache_paths(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.responses-*.partial")) if out.parent.is_dir() else []


def _read_caches(out: Path) -> dict[str, list[str]]:
    """Responses of earlier chunks (of any process); a line cut by a kill is ignored and redone."""
    cached: dict[str, list[str]] = {}
    for path in _cache_paths(out):
        with path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError:
                    break
                cached[row["key"]] = row["responses"]
    return cached


def _load(config: PairsConfig, rank: int):
    if config.backend == "vllm":
        from mipo.generation import load_vllm
        from mipo.models import load_tokenizer, resolve_model

        return load_vllm(resolve_model(config.model), seed=config.seed), load_tokenizer(config.model)
    from mipo.models import load_model

    device = config.device
    if device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = str(_partial_state().device)
    return load_model(config.model, device=device)


def _context_length(model: Any, config: PairsConfig) -> int | None:
    if config.backend == "vllm":
        return model.llm_engine.model_config.max_model_len
    model_config = model.config
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return getattr(text_config, "max_position_embeddings", None)


def _positive_key(record_id: str) -> str:
    return f"{record_id}\t+"


def _plan(records: list[PromptRecord], config: PairsConfig, tokenizer, context_length: int | None) -> _Plan:
    from mipo.generation import encode_conversations
    from mipo.negatives import (
        drop_sentence_negatives,
        incomplete_negative,
        other_context_negatives,
        random_negatives,
    )

    def conversation(record: PromptRecord) -> list[dict[str, str]]:
        return to_conversation(record, context_mode=config.context_mode)

    def fits(conversations: list[list[dict[str, str]]]) -> list[bool]:
        if context_length is None:
            return [True] * len(conversations)
        lengths = [len(ids) for ids in encode_conversations(tokenizer, conversations)]
        return [n + config.max_new_tokens <= context_length for n in lengths]

    source = str(config.prompts)
    if config.strategy in ("incomplete", "other-context"):
        for r in records:
            if not r.context:
                raise InputError(
                    source,
                    f"no context: strategy '{config.strategy}' needs one in every record",
                    line=r.line,
                    field=config.context_field,
                )
    ok = fits([conversation(r) for r in records])
    kept = [r for r, good in zip(records, ok) if good]
    skipped = len(records) - len(kept)
    if skipped:
        log.warning("skipping %d prompts longer than the model's context (with max_new_tokens)", skipped)
    try:
        if config.strategy == "random":
            picks = random_negatives(kept, seed=config.seed, count=config.negatives)
            negative_records = None
        elif config.strategy == "incomplete":
            negative_records = [
                [incomplete_negative(r, drop_system=config.drop_system)] * config.negatives for r in kept
            ]
        elif config.strategy == "other-context":
            negative_records = other_context_negatives(kept, seed=config.seed, count=config.negatives)
        else:
            negative_records = drop_sentence_negatives(kept, seed=config.seed, count=config.negatives)
    except NegativeError as e:
        line = kept[e.index].line if e.index is not None and kept else None
        field_name = {"context": config.context_field}.get(e.field or "", config.prompt_field)
        raise InputError(source, f"strategy '{config.strategy}': {e}", line=line, field=field_name) from None
    conversations: dict[str, list[dict[str, str]]] = {}
    negatives: dict[str, list[str]] = {}
    order: list[str] = []
    if negative_records is None:
        for r in kept:
            conversations[_positive_key(r.id)] = conversation(r)
        for r, js in zip(kept, picks):
            negatives[r.id] = [_positive_key(kept[j].id) for j in js]
        order = [_positive_key(kept[i].id) for i in _cycle_order(picks)]
    else:
        negative_conversations = []
        for r, negs in zip(kept, negative_records):
            conversations[_positive_key(r.id)] = conversation(r)
            order.append(_positive_key(r.id))
            keys = []
            for q, neg in enumerate(negs):
                key = f"{r.id}\t-{q}"
                conversations[key] = conversation(neg)
                negative_conversations.append(key)
                keys.append(key)
                order.append(key)
            negatives[r.id] = keys
        # A negative prompt longer than the context (other-context) drops its prompt too.
        too_long = {
            k
            for k, good in zip(
                negative_conversations, fits([conversations[k] for k in negative_conversations])
            )
            if not good
        }
        if too_long:
            bad_ids = {k.split("\t")[0] for k in too_long}
            skipped += len(bad_ids)
            kept = [r for r in kept if r.id not in bad_ids]
            order = [k for k in order if k.split("\t")[0] not in bad_ids]
        with_negative = [r for r in kept if negatives[r.id]]
        keep_ids = {r.id for r in with_negative}
        order = [k for k in order if k.split("\t")[0] in keep_ids]
        return _Plan(
            with_negative,
            conversations,
            order,
            negatives,
            skipped=skipped,
            no_negative=len(kept) - len(with_negative),
        )
    return _Plan(kept, conversations, order, negatives, skipped=skipped)


def _cycle_order(picks: list[list[int]]) -> list[int]:
    """Records along their negatives' cycles, so a prompt's negative is generated soon after it."""
    order, seen = [], set()
    for start in range(len(picks)):
        i = start
        while i not in seen:  # a duplicate text joins its first occurrence's cycle, and stops there
            seen.add(i)
            order.append(i)
            i = picks[i][0]
    return order


def _generate(model, tokenizer, conversations, config: PairsConfig, chunk: int, summary: PairsSummary):
    from mipo.generation import generate_responses

    return generate_responses(
        model,
        tokenizer,
        conversations,
        num_samples=config.samples,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed * 100_003 + chunk,  # per chunk, so a chunk's samples do not depend on the process
        batch_size=config.batch_size,
        progress=False,
        stats=summary.stats,
        backend=config.backend,
    )


def _emit(
    writer,
    plan: _Plan,
    cached: dict[str, list[str]],
    done_ids: set[str],
    config: PairsConfig,
    summary: PairsSummary,
) -> None:
    """Write the pairs of every prompt whose responses are all known and that is not written yet."""
    for record in plan.records:
        if record.id in done_ids:
            continue
        keys = [_positive_key(record.id), *plan.negatives[record.id]]
        if not all(k in cached for k in keys):
            continue
        done_ids.add(record.id)
        chosen_texts = cached[keys[0]]
        several = config.samples * len(plan.negatives[record.id]) > 1
        for s, chosen in enumerate(chosen_texts):
            for q, negative_key in enumerate(plan.negatives[record.id]):
                rejected = cached[negative_key][s]
                if not chosen or not rejected:
                    summary.dropped["empty response"] = summary.dropped.get("empty response", 0) + 1
                    continue
                if chosen == rejected:
                    summary.dropped["identical chosen and rejected"] = (
                        summary.dropped.get("identical chosen and rejected", 0) + 1
                    )
                    continue
                writer.write(
                    {
                        "id": f"{record.id}-{s}-{q}" if several else record.id,
                        "prompt_id": record.id,
                        "prompt": plan.conversations[keys[0]],
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
                        },
                    }
                )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    add_config_arguments(parser, PairsConfig)


def main(args: argparse.Namespace) -> int:
    config = resolve(PairsConfig, args, yaml_path=args.config)
    summary = run_pairs(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.line())
    return 0
