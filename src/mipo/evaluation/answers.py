"""One model's answers to every task: generated replies (per seed, resumable), multiple choice by log-likelihood,
and PMI scores."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mipo.core.errors import ConfigError
from mipo.evaluation.baseline_cache import partial_file
from mipo.evaluation.settings import EvalConfig, Job, Rows, ScoringSettings, wrong_context_role
from mipo.tasks import Task

log = logging.getLogger(__name__)


def run_model(config: EvalConfig, job: Job, task: Task, engine, role: str) -> dict[int, Rows]:
    """Per seed, one row per item: ``{id, seed, prompt, response, extracted, verdict, score, ...}``."""
    conversations = [item.messages(config.context_mode) for item in task.items]
    if task.kind == "choice" and config.mc_mode == "loglik":
        return {config.seeds[0]: score_choices_by_loglik(config, task, conversations, *hf_model(engine))}
    batches = length_sorted_batches(engine.tokenizer, conversations, config.batch_size)
    deterministic = config.sampling_temperature == 0
    return {
        seed: run_seed(
            config,
            task,
            conversations,
            batches,
            engine,
            role,
            seed,
            partial_file(job, task, role, seed),
        )
        for seed in (config.seeds[:1] if deterministic else config.seeds)
    }


def score_choices_by_loglik(config: EvalConfig, task: Task, conversations, model, tokenizer) -> Rows:
    """Multiple choice without sampling: each choice scored as the reply, the most likely one predicted."""
    from mipo.engine.scoring import sequence_logprobs
    from mipo.tasks.multiple_choice import loglik_prediction

    flat_conv = [c for item, c in zip(task.items, conversations) for _ in item.choices]
    flat_resp = [choice for item in task.items for choice in item.choices]
    logprobs = sequence_logprobs(
        model, tokenizer, flat_conv, flat_resp, batch_size=config.score_batch_size, progress=config.progress
    )
    rows, at = [], 0
    for item, conversation in zip(task.items, conversations):
        verdict = loglik_prediction(item, logprobs[at : at + len(item.choices)])
        at += len(item.choices)
        rows.append({"id": item.id, "seed": None, "prompt": conversation, "response": None, **verdict})
    return rows


def length_sorted_batches(tokenizer, conversations, batch_size: int) -> list[list[int]]:
    """Item indices sorted by prompt length, cut into batches that are saved as they end (``--resume``).
    Replies are seeded one by one, so the batches do not change them."""
    from mipo.engine.generation import encode_conversations

    lengths = [len(ids) for ids in encode_conversations(tokenizer, conversations)]
    order = sorted(range(len(conversations)), key=lambda i: lengths[i])
    return [order[first : first + batch_size] for first in range(0, len(order), batch_size)]


def run_seed(config, task: Task, conversations, batches, engine, role: str, seed: int, partial: Path) -> Rows:
    """Generate and score one seed, batch by batch; with ``config.resume`` saved batches are read back."""
    from tqdm.auto import tqdm

    from mipo.core.files import RowWriter
    from mipo.engine.generation import GenerationStats

    writer = RowWriter(partial, resume=config.resume, overwrite=True)
    done = {entry["index"]: entry["row"] for entry in writer.existing}
    stats = GenerationStats()
    bar = tqdm(
        total=sum(len(b) for b in batches),
        initial=sum(all(i in done for i in batch) * len(batch) for batch in batches),
        desc=f"{task.name}: {role}, seed {seed}",
        unit="item",
        disable=not config.progress,
    )
    for batch in batches:
        if all(i in done for i in batch):
            continue  # finished before an interruption
        # CAD: --model only, with the user's context or another user's (without one there is nothing to contrast)
        cad_items = [task.items[i] for i in batch] if role in ("model", wrong_context_role("model")) else None
        replies = generate(config, engine, [conversations[i] for i in batch], seed, stats, cad_items)
        for i, response in zip(batch, replies):
            done[i] = score_row(task, task.items[i], conversations[i], response, seed)
            writer.write({"index": i, "row": done[i]})
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
    bar.close()
    writer.abort()  # the partial rows stay until results.json is written
    return [done[i] for i in range(len(task.items))]


def generate(config, engine, conversations, seed: int, stats, cad_items=None) -> list[str]:
    """One batch of replies, one per conversation: the only place evaluation calls a generation engine."""
    from mipo.engine.cad import cad_arguments

    responses = engine.generate(
        conversations,
        **cad_arguments(
            getattr(config, "cad_alpha", None),
            cad_items,
            config.context_mode,
            getattr(config, "cad_plausibility", None),
            getattr(config, "cad_lift_once", False),
        ),
        temperature=config.sampling_temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
        batch_size=config.batch_size,
        progress=False,
        stats=stats,
        workers=config.workers,
    )
    return [samples[0] for samples in responses]


def score_row(task: Task, item, conversation, response: str, seed: int) -> dict[str, Any]:
    row = {"id": item.id, "seed": seed, "prompt": conversation, "response": response}
    if task.score is not None:
        row.update(task.score(item, response))
    if item.answer is not None:
        row["answer"] = item.answer
    return row


def other_prompts(config: ScoringSettings, task: Task) -> list[list[int]]:
    """The K other prompts of each item, fixed by the first seed (the same for every model compared)."""
    from mipo.engine.pmi import choose_other_prompts

    keys = [json.dumps(item.messages(config.context_mode), sort_keys=True) for item in task.items]
    try:
        return choose_other_prompts(keys, config.k, seed=config.seeds[0])
    except ValueError as e:
        raise ConfigError(f"pmi: {e} (or raise --limit)") from None


def score_pmi(config, task: Task, runs: dict[str, dict[int, Rows]], model, tokenizer, scored=frozenset()):
    """Fill each row's ``pmi`` under the reference model (roles in ``scored`` have it already); score the
    pairs file's responses when asked."""
    pmi_of = pmi_scorer(config, task, model, tokenizer)
    for role, by_seed in runs.items():
        if role in scored:
            continue
        for seed, rows in by_seed.items():
            log.info("pmi of the %s's responses (seed %s) under the reference", role, seed)
            for row, value in zip(rows, pmi_of([r["response"] for r in rows])):
                row.update(value, score=value["pmi"], extracted=None, verdict=None)
    if not config.score_pairs:
        return {}
    return {side: [v["pmi"] for v in pmi_of(texts)] for side, texts in pairs_responses(task).items()}


def pmi_scorer(config, task: Task, model, tokenizer) -> Callable[[list[str]], list[dict[str, float]]]:
    """Responses -> one ``{pmi, logp, ...}`` per item: against K other prompts, or against the context."""
    from mipo.engine.pmi import context_pmi_scores, pmi_scores
    from mipo.prompts.records import to_conversation

    conversations = [item.messages(config.context_mode) for item in task.items]
    settings = {"batch_size": config.score_batch_size, "progress": config.progress}
    if config.against == "context":
        bare = [
            to_conversation(item, context_mode=config.context_mode, with_context=False) for item in task.items
        ]
        return lambda responses: context_pmi_scores(
            model, tokenizer, conversations, bare, responses, **settings
        )
    others = other_prompts(config, task)
    return lambda responses: pmi_scores(model, tokenizer, conversations, responses, others, **settings)


def pairs_responses(task: Task) -> dict[str, list[str]]:
    """The chosen and rejected replies of a pairs file's rows (``--score-pairs``)."""
    from mipo.tasks import response_text

    texts = {
        side: [response_text(item.meta.get(side)) for item in task.items] for side in ("chosen", "rejected")
    }
    if any(t is None for side in texts.values() for t in side):
        raise ConfigError(
            "--score-pairs needs a pairs file with 'chosen' and 'rejected' on every row (--prompts/--pairs)"
        )
    return texts


class ModelSlot:
    """Holds one loaded engine at a time, so a 7B model and its baseline never share memory; an engine that
    serves the next model too (vLLM: a LoRA adapter and its base) is kept for it."""

    def __init__(
        self, device: str | None, backend: str = "hf", dtype: str | None = None, **engine_options: Any
    ):
        self.device, self.backend, self.dtype, self.name, self.loaded = device, backend, dtype, None, None
        self.engine_options = engine_options  # load_engine's options: the vllm settings, max_new_tokens

    def get(self, name: str):
        if name != self.name:
            from mipo.engine.backends import load_engine

            shared = self.loaded.for_model(name) if hasattr(self.loaded, "for_model") else None
            if shared is None:
                self.release()
                log.info("loading %s", name)
                shared = load_engine(
                    self.backend, name, device=self.device, dtype=self.dtype, **self.engine_options
                )
            self.loaded, self.name = shared, name
        return self.loaded

    def release(self) -> None:
        """Let the engine go, its memory with it (a vLLM engine is shut down)."""
        from mipo.engine.backends import close_engine, release_gpu_memory

        engine, self.loaded, self.name = self.loaded, None, None
        close_engine(engine)
        del engine
        release_gpu_memory()


def hf_model(engine) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a transformers engine: log-prob scoring (pmi, loglik) runs the model itself."""
    if not hasattr(engine, "model"):
        raise ConfigError(
            "pmi and --mc-mode loglik score log-probabilities with the model itself: use --backend hf"
        )
    return engine.model, engine.tokenizer
