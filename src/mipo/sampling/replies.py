"""``mipo sample``: the model's responses to a prompt set, one row per prompt (same engine as ``mipo pairs``).

Rows: ``{id, prompt: [messages], responses: [texts], response: the first, answer, model, seed, generation}``.
Rows are flushed chunk by chunk; ``--resume`` continues a killed run without repeating a row.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from mipo.core.config import add_config_arguments, option, require, resolve
from mipo.engine.cad import (
    CAD_SETTINGS,
    LIFT_ONCE_HELP,
    PLAUSIBILITY_HELP,
    cad_arguments,
    cad_problems,
    cad_settings,
    require_contexts,
)
from mipo.engine.generation import GenerationJob, GenerationStats

log = logging.getLogger(__name__)


@dataclass
class SampleConfig(GenerationJob):
    with_context: bool = option(True, "include each record's context in its prompt")
    samples: int = option(1, "responses per prompt")
    cad_alpha: float | None = option(
        None,
        "context-aware decoding: pick tokens from (1+A) log p(.|x,c) - A log p(.|x), A >= 0 (hf backend; "
        "every record needs a context)",
    )
    cad_plausibility: float | None = option(None, PLAUSIBILITY_HELP)
    cad_lift_once: bool = option(False, LIFT_ONCE_HELP)

    def __post_init__(self) -> None:
        problems = self.problems(counts=("samples",))
        problems += cad_problems(
            self.cad_alpha,
            self.backend,
            with_context=self.with_context,
            plausibility=self.cad_plausibility,
            lift_once=self.cad_lift_once,
        )
        require(problems)

    def fingerprint(self) -> dict:
        """As ``GenerationJob.fingerprint``; without --cad-alpha (--cad-plausibility, --cad-lift-once) the
        setting is left out, so runs from before it resume (``--cad-alpha 0`` is kept: it is a setting)."""
        settings = {k: v for k, v in super().fingerprint().items() if k not in CAD_SETTINGS}
        return settings | cad_settings(self.cad_alpha, self.cad_plausibility, self.cad_lift_once)


def sample(config: SampleConfig, *, stats: GenerationStats | None = None) -> Path:
    """Write one row per prompt of ``config.prompts`` with the model's response(s); returns the path."""
    from tqdm.auto import tqdm

    from mipo.core.files import RowWriter, check_output_not_input
    from mipo.core.processes import refuse_several_processes
    from mipo.engine.backends import close_engine, load_engine
    from mipo.engine.backends.vllm_settings import engine_options
    from mipo.prompts.records import to_conversation

    refuse_several_processes("sample")
    stats = stats if stats is not None else GenerationStats()
    check_output_not_input(config.out, prompts=config.prompts)
    records = config.load_records()
    if config.cad_alpha is not None:
        require_contexts(records, str(config.prompts), config.context_field)
    writer = RowWriter(
        config.out, resume=config.resume, overwrite=config.overwrite, fingerprint=config.fingerprint()
    )
    engine = None
    try:
        done = {str(row["id"]) for row in writer.existing}
        # Chunks are cut from all the records, not from those left, and a chunk cut by a kill is generated
        # again whole: a resumed chunk keeps its seed and its batches, so its rows are those of one run.
        chunks = [records[c : c + config.chunk_size] for c in range(0, len(records), config.chunk_size)]
        engine = load_engine(
            config.backend,
            config.model,
            device=config.device,
            seed=config.seed,
            dtype=config.dtype,
            **engine_options(config),
        )
        bar = tqdm(
            total=len(records), initial=len(done), desc="sampling", unit="prompt", disable=not config.progress
        )
        for chunk in chunks:
            if all(r.id in done for r in chunk):
                continue
            conversations = [
                to_conversation(r, context_mode=config.context_mode, with_context=config.with_context)
                for r in chunk
            ]
            responses = engine.generate(
                conversations,
                **cad_arguments(
                    config.cad_alpha,
                    chunk,
                    config.context_mode,
                    config.cad_plausibility,
                    config.cad_lift_once,
                ),
                num_samples=config.samples,
                temperature=config.temperature,
                top_p=config.top_p,
                max_new_tokens=config.max_new_tokens,
                seed=config.seed,  # replies are seeded one by one: the same in any chunk or batch
                batch_size=config.batch_size,
                progress=False,
                stats=stats,
                workers=config.workers,
            )
            for record, conversation, texts in zip(chunk, conversations, responses):
                if record.id in done:
                    continue
                writer.write(_sample_row(record, conversation, texts, config))
            bar.update(sum(r.id not in done for r in chunk))
            bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
        bar.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        close_engine(engine)  # a vLLM engine gives its GPU memory back before the next stage
    path = writer.close()
    log.info("wrote %d rows to %s (%.1f tokens/s)", writer.count, path, stats.tokens_per_second)
    return path


def _sample_row(record, conversation, texts: list[str], config: SampleConfig) -> dict:
    return {
        "id": record.id,
        "prompt": conversation,
        "responses": texts,
        "response": texts[0],
        "answer": record.answer,
        "model": config.model,
        "seed": config.seed,
        "generation": {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "samples": config.samples,
            "backend": config.backend,
            **cad_settings(config.cad_alpha, config.cad_plausibility, config.cad_lift_once),
        },
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    add_config_arguments(parser, SampleConfig)


def main(args: argparse.Namespace) -> int:
    config = resolve(SampleConfig, args, yaml_path=args.config)
    stats = GenerationStats()
    path = sample(config, stats=stats)
    print(
        f"wrote {stats.prompts} prompts' responses to {path}; {stats.new_tokens} new tokens at {stats.tokens_per_second:.1f} tokens/s"
    )
    return 0
