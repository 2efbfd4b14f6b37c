"""``mipo pairs``: MIPO preference pairs from a prompt set.

For each prompt x the model's own response is *chosen*; its response to a negative prompt x' (made by the
negative strategy, ``mipo.pairs.strategies``) is *rejected*. Rows are TRL's conversational format with an explicit
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
import logging
import os
from pathlib import Path

from mipo.core.config import add_config_arguments, resolve
from mipo.engine.backends import close_engine
from mipo.engine.cad import cad_settings
from mipo.pairs.config import Conversation, PairsConfig, PairsSummary
from mipo.pairs.output import (
    append_responses,
    check_output,
    open_output,
    partial_state,
    process_group,
    read_caches,
    reply_cache_path,
    reply_cache_paths,
)
from mipo.pairs.plan import Plan, check_negatives, make_plan, needed_units, unit_contrast, unit_samples
from mipo.pairs.rows import Output, emit_pairs, finish_pairs

log = logging.getLogger(__name__)


def build_pairs(config: PairsConfig) -> Path:
    """Generate MIPO pairs for ``config.prompts`` and write them to ``config.out``; returns that path."""
    return run_pairs(config).path


def run_pairs(config: PairsConfig) -> PairsSummary:
    out = Path(config.out)
    rank, world, barrier = process_group()
    job = config.fingerprint()
    check_output(out, config, job, rank, barrier)
    records = config.load_records(group_field=config.group_field)
    check_negatives(records, config)
    engine = _load_engine(config)
    try:
        plan = make_plan(records, config, engine)
        summary = PairsSummary(path=out, dropped={"too long for the model": plan.skipped})
        output = open_output(out, config, job, rank, world)
        output.engine = engine
        try:
            cached = _generate_chunks(plan, engine, config, output, rank, world, summary)
            if world > 1:
                barrier()
                if rank != 0:
                    return summary
                cached.update(read_caches(out))
            finish_pairs(output, plan, cached, config, summary)
        except BaseException:
            if output.writer is not None:
                output.writer.abort()
            raise
    finally:
        close_engine(engine)  # a vLLM engine gives its GPU memory back before the next stage
    for path in reply_cache_paths(out):
        path.unlink()
    log.debug(summary.line())
    return summary


def _load_engine(config: PairsConfig):
    from mipo.engine.backends import load_engine
    from mipo.engine.backends.vllm_settings import engine_options

    device = config.device
    if device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = str(partial_state().device)
    return load_engine(
        config.backend,
        config.model,
        device=device,
        seed=config.seed,
        dtype=config.dtype,
        **engine_options(config),
    )


def _generate_chunks(
    plan: Plan, engine, config: PairsConfig, output: Output, rank: int, world: int, summary: PairsSummary
) -> dict[str, list[str]]:
    """Generate this process's chunks of the units not known yet; returns every known unit's responses."""
    from tqdm.auto import tqdm

    from mipo.core.files import output_error

    out = Path(config.out)
    cached = read_caches(out)
    needed = needed_units(plan, output.done_ids)
    # Chunks are cut from the whole plan, not from what is left, so a resumed chunk keeps its seed and rows.
    chunks = [plan.order[c : c + config.chunk_size] for c in range(0, len(plan.order), config.chunk_size)]
    bar = tqdm(
        total=sum(len(ch) for c, ch in enumerate(chunks) if c % world == rank),
        desc=f"generating (process {rank})" if world > 1 else "generating",
        unit="conv",
        disable=not config.progress,
    )
    cache_path = reply_cache_path(out, rank)
    try:
        cache_file = cache_path.open("a", encoding="utf-8")
    except OSError as e:
        raise output_error(cache_path, e) from None
    with cache_file:
        for c, chunk in enumerate(chunks):
            if c % world != rank:
                continue
            missing = [k for k in chunk if k in needed and k not in cached]
            # A call decodes units alike: the same number of samples, all with CAD (``cad``'s chosen) or none.
            kinds = sorted({(unit_samples(k, config), unit_contrast(plan, k) is not None) for k in missing})
            for samples, contrasted in kinds:
                keys = [
                    k
                    for k in missing
                    if (unit_samples(k, config), unit_contrast(plan, k) is not None) == (samples, contrasted)
                ]
                conversations = [plan.conversations[k] for k in keys]
                contrasts = [unit_contrast(plan, k) for k in keys] if contrasted else None
                responses = _generate(engine, conversations, config, samples, summary, contrasts)
                cached.update(zip(keys, responses))
                append_responses(cache_file, cache_path, keys, responses)
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{summary.stats.tokens_per_second:.0f}")
            if output.writer is not None and world == 1:
                emit_pairs(output, plan, cached, config, summary)
    bar.close()
    return cached


def _generate(
    engine,
    conversations: list[Conversation],
    config: PairsConfig,
    samples: int,
    summary: PairsSummary,
    contrasts: list[Conversation] | None = None,
):
    """Replies to ``conversations``; with ``contrasts`` (``cad``'s chosen replies), context-aware decoding
    of each conversation against its contrast (the same prompt without its context)."""
    cad = {}
    if contrasts is not None:
        cad = cad_settings(config.cad_alpha, config.cad_plausibility, config.cad_lift_once)
        cad |= {"without_context": contrasts}
    return engine.generate(
        conversations,
        **cad,
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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    add_config_arguments(parser, PairsConfig)


def main(args: argparse.Namespace) -> int:
    config = resolve(PairsConfig, args, yaml_path=args.config)
    summary = run_pairs(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.line())
    return 0
