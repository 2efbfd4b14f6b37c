"""The ``hf`` backend's engine: sample responses for many chat conversations, batched, with a bare decode loop.

``generate_responses`` runs it (``mipo.engine.backends.hf`` wraps it as an engine; other backends live in
``mipo.engine.backends``). Why a decode loop of our own rather than ``model.generate``, and what it does to be fast
on a CPU: docs/benchmarks.md ("The decode loop"). Greedy decoding (``temperature=0``) gives the same tokens
as ``model.generate(do_sample=False)`` (tested).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.core.config import option
from mipo.core.errors import ConfigError
from mipo.engine.backends import BACKENDS
from mipo.engine.backends.vllm_settings import vllm_problems
from mipo.engine.cad import context_aware_logits, require_cad_arguments
from mipo.engine.dtypes import DTYPE_HELP, dtype_problems
from mipo.engine.kv_cache import preallocated_cache
from mipo.engine.models import DEFAULT_MODEL
from mipo.engine.stops import stop_token_ids
from mipo.engine.token_choice import pick_tokens
from mipo.prompts.records import CONTEXT_MODES

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Conversation = list[dict[str, str]]  # chat messages: [{"role": "user", "content": "..."}]


@dataclass
class GenerationJob:
    """Settings shared by the stages that answer a prompt file with this engine (`mipo pairs`, `mipo sample`):
    where the prompt records come from, how to sample, where the rows go."""

    model: str = option(DEFAULT_MODEL, "model that answers: a built-in name, a folder or a Hub id")
    prompts: str | None = option(None, "prompt records: JSONL, CSV, Parquet, a datasets folder or a Hub id")
    out: str | None = option(None, "output file (.jsonl or .parquet)")
    prompt_field: str = option("prompt", "record field holding the prompt (text or chat messages)")
    context_field: str = option("context", "record field holding the user's context")
    id_field: str = option("id", "record field holding the id (default: the line number)")
    system_field: str = option("system", "record field holding a system text")
    split: str = option("train", "split of a datasets folder or Hub dataset")
    limit: int | None = option(None, "use only the first N prompt records")
    context_mode: str = option(
        "system", "where the context goes: system message or prefix of the user turn", choices=CONTEXT_MODES
    )
    temperature: float = option(0.1, "sampling temperature (0 = greedy)")
    top_p: float = option(0.9, "nucleus sampling mass")
    max_new_tokens: int = option(256, "longest response, in tokens")
    seed: int = option(0, "seed for sampling (and for the choice of negatives)")
    batch_size: int = option(64, "rows decoded together (hf backend)")
    chunk_size: int = option(128, "prompts generated between flushes to disk")
    backend: str = option("hf", "generation engine (mipo.engine.backends)", choices=BACKENDS)
    vllm: dict = option({}, "backend vllm: vllm.LLM's engine settings, under vLLM's names (docs/gpu.md)")
    device: str | None = option(None, "torch device (default: cuda if available, else cpu)")
    dtype: str = option("auto", DTYPE_HELP)
    workers: int | None = option(
        None, "hf on a CPU: decode workers of one thread each (default: one per core; 1 = this process only)"
    )
    resume: bool = option(False, "continue an interrupted run from its partial files")
    overwrite: bool = option(False, "replace an existing output")
    progress: bool = option(True, "show a progress bar")

    def problems(self, counts: tuple[str, ...] = ()) -> list[str]:
        """Every invalid setting; subclasses add theirs and call ``require``."""
        problems = []
        if not self.prompts:
            problems.append("prompts is required (--prompts FILE)")
        if not self.out:
            problems.append("out is required (--out FILE.jsonl)")
        elif Path(self.out).suffix not in (".jsonl", ".parquet"):
            problems.append(f"out must end in .jsonl or .parquet, got {self.out!r}")
        if self.context_mode not in CONTEXT_MODES:
            problems.append(f"context_mode must be one of {', '.join(CONTEXT_MODES)}")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be at least 1, got {self.limit} (--limit N)")
        for name in ("max_new_tokens", "batch_size", "chunk_size", *counts):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.temperature < 0:
            problems.append("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        if self.resume and self.overwrite:
            problems.append("pass --resume or --overwrite, not both")
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        return (
            problems
            + dtype_problems(self.dtype, self.device, self.backend)
            + vllm_problems(self.vllm, self.backend)
        )

    def load_records(self, **fields: Any) -> list[Any]:
        """The prompt records this job answers (``mipo.prompts.records.load_prompts`` with the job's field names)."""
        from mipo.prompts.records import load_prompts

        return load_prompts(
            self.prompts,
            prompt_field=self.prompt_field,
            context_field=self.context_field,
            id_field=self.id_field,
            system_field=self.system_field,
            split=self.split,
            limit=self.limit,
            **fields,
        )

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the rows written: the model's weights, the prompts file's digest and every
        setting except where the rows go, how the run is shown and empty vllm settings (``mipo.core.fingerprint``).
        """
        from dataclasses import asdict

        from mipo.core.fingerprint import fingerprint, input_identity, weights_identity
        from mipo.engine.environment import reply_environment
        from mipo.engine.models import resolve_model

        skipped = NOT_IN_FINGERPRINT if self.vllm else (*NOT_IN_FINGERPRINT, "vllm")
        settings = {k: v for k, v in asdict(self).items() if k not in skipped}
        settings["model"] = weights_identity(resolve_model(self.model))
        settings["prompts"] = input_identity(self.prompts)
        settings["environment"] = reply_environment(self.device, self.workers, self.backend, self.dtype)
        return fingerprint(**settings)


# Settings that are not the rows' own: where they go and how the run is shown; the device, the workers and
# the dtype enter as part of the environment (``mipo.engine.environment``), resolved.
NOT_IN_FINGERPRINT = ("out", "resume", "overwrite", "progress", "device", "workers", "dtype")


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    padding_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def generate_responses(
    model: PreTrainedModel | Any,
    tokenizer: PreTrainedTokenizerBase | None,
    conversations: list[Conversation],
    *,
    num_samples: int = 1,
    temperature: float = 0.1,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    stats: GenerationStats | None = None,
    backend: str = "hf",
    drop_finished: bool = True,
    workers: int | None = None,
    cad_alpha: float | None = None,
    without_context: list[Conversation] | None = None,
    cad_plausibility: float | None = None,
    cad_lift_once: bool = False,
) -> list[list[str]]:
    """Return ``num_samples`` responses per conversation, in input order. ``temperature=0`` is greedy.

    Each reply samples from its own random stream, seeded by ``seed``, the prompt's tokens and the sample's
    number: a reply does not depend on the other prompts of its batch or call, on the batch size, or on
    the number of ``workers`` (decode processes of one thread each on a CPU; default: one per core).

    ``cad_alpha`` (hf only): context-aware decoding, each token picked from ``(1 + α) log p(·|x, c) −
    α log p(·|x)``; ``without_context[i]`` is ``conversations[i]`` without its context; ``cad_plausibility`` τ
    keeps only tokens with ``p(v|x, c) >= τ max p(·|x, c)``; ``cad_lift_once`` lifts a token only until the
    reply has written it (``mipo.engine.cad.context_aware_logits``).

    ``backend`` other than ``hf``: ``model`` is what that backend loads (``mipo.engine.backends.load_engine``).
    """
    if num_samples < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ConfigError("num_samples, max_new_tokens and batch_size must be at least 1")
    require_cad_arguments(cad_alpha, backend, without_context, conversations, cad_plausibility, cad_lift_once)
    stats = stats if stats is not None else GenerationStats()
    if not conversations:
        return []
    sampling = {"num_samples": num_samples, "temperature": temperature, "top_p": top_p, "seed": seed}
    sampling |= {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "stats": stats}
    if backend != "hf":
        from mipo.engine.backends import close_engine, load_engine

        engine = load_engine(backend, model, seed=seed, max_new_tokens=max_new_tokens)
        try:
            return engine.generate(conversations, **sampling)
        finally:
            close_engine(engine)
    return _generate_hf(
        model,
        tokenizer,
        conversations,
        **sampling,
        progress=progress,
        drop_finished=drop_finished,
        workers=workers,
        cad_alpha=cad_alpha,
        without_context=without_context,
        cad_plausibility=cad_plausibility,
        cad_lift_once=cad_lift_once,
    )


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, conversations: list[Conversation]
) -> list[list[int]]:
    """Token ids of each conversation through the chat template, ending with the assistant's turn opening."""
    texts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _cache_kwarg(model: PreTrainedModel) -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name still works, with a warning).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _generate_hf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[Conversation],
    *,
    num_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    progress: bool,
    stats: GenerationStats,
    drop_finished: bool,
    workers: int | None,
    cad_alpha: float | None = None,
    without_context: list[Conversation] | None = None,
    cad_plausibility: float | None = None,
    cad_lift_once: bool = False,
) -> list[list[str]]:
    import torch
    from tqdm.auto import tqdm

    from mipo.engine.workers import default_workers, run_in_workers

    if tokenizer is None:
        raise ConfigError("backend 'hf' needs the model's tokenizer")
    encoded = encode_conversations(tokenizer, conversations)
    # Each sample is its own row; rows of similar length share a batch (less padding).
    rows = [(i, s) for i in range(len(encoded)) for s in range(num_samples)]
    rows.sort(key=lambda r: len(encoded[r[0]]))
    stops = torch.tensor(stop_token_ids(model, tokenizer), device=model.device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stops[0])
    settings = {"stops": stops, "pad_id": pad_id, "temperature": temperature, "top_p": top_p}
    settings |= {"max_new_tokens": max_new_tokens, "drop_finished": drop_finished, "cad_alpha": cad_alpha}
    settings |= {"cad_plausibility": cad_plausibility, "cad_lift_once": cad_lift_once}
    # A reply's seed comes from its prompt as given (with its context): CAD at α = 0 samples as plain decoding.
    jobs = [(encoded[i], row_seed(seed, encoded[i], s)) for i, s in rows]
    if cad_alpha is not None:
        plain = encode_conversations(tokenizer, without_context)
        jobs = [(ids, row, plain[i]) for (ids, row), (i, _) in zip(jobs, rows)]

    def decode_share(share: list, finished) -> list:
        share_stats = GenerationStats()
        out = []
        for first in range(0, len(share), batch_size):
            batch = share[first : first + batch_size]
            out += _decode_batch(model, batch, stats=share_stats, **settings)
            finished(len(batch))
        return [(tokens, share_stats.padding_tokens if k == 0 else 0) for k, tokens in enumerate(out)]

    start = time.perf_counter() - stats.seconds  # stats may carry earlier calls' time
    bar = tqdm(total=len(rows), desc="generating", unit="reply", disable=not progress)
    workers = workers if workers is not None else default_workers(str(model.device))
    decoded = run_in_workers(decode_share, jobs, workers, on_progress=bar.update)
    bar.close()
    results: list[list[str]] = [[""] * num_samples for _ in conversations]
    for (i, s), (row_tokens, padding) in zip(rows, decoded):
        stats.new_tokens += len(row_tokens)
        stats.padding_tokens += padding
        results[i][s] = tokenizer.decode(row_tokens, skip_special_tokens=True).strip()
    stats.prompts += len(conversations)
    stats.prompt_tokens += sum(len(job[0]) for job in jobs)
    stats.seconds = time.perf_counter() - start
    return results


def row_seed(seed: int, prompt_ids: list[int], sample: int) -> int:
    """The seed of one reply's random stream: the run's seed, the prompt's tokens and the sample's number."""
    import hashlib

    blob = f"{seed}|{sample}|{','.join(map(str, prompt_ids))}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


@dataclass
class _Side:
    """One left-padded batch decoding with its own KV cache: the prompts as given or, for context-aware
    decoding, the same prompts without their context. Both sides append the same chosen token each step."""

    cache: Any
    attention_mask: torch.Tensor  # (B, width + max_new_tokens): each step passes a view one column longer
    next_position: torch.Tensor  # (B, 1)
    width: int  # the longest prompt


def _prefill(
    model: PreTrainedModel, prompts: list[list[int]], pad_id: int, max_new_tokens: int, stats: GenerationStats
) -> tuple[_Side, torch.Tensor]:
    """Run the prompts through the model into a fresh cache; returns the side and its last logits (B, V)."""
    rows, width = len(prompts), max(len(p) for p in prompts)
    total = width + max_new_tokens
    input_ids, attention_mask = _left_padded(prompts, pad_id, total)
    stats.prompt_tokens += sum(len(p) for p in prompts)
    stats.padding_tokens += width * rows - sum(len(p) for p in prompts)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    # Left padding: positions count real tokens only, as generate() does.
    position_ids = (attention_mask[:, :width].cumsum(-1) - 1).clamp(min=0)
    cache = preallocated_cache(model, total)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask[:, :width],
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
        **{_cache_kwarg(model): cache},
    ).logits[:, -1, :]  # (B, V)
    return _Side(cache, attention_mask, position_ids[:, -1:] + 1, width), logits


def _advance(model: PreTrainedModel, side: _Side, chosen: torch.Tensor, steps: int) -> torch.Tensor:
    """Append ``chosen`` (B,) to the side's cache; returns the next logits (B, V)."""
    logits = model(
        input_ids=chosen.unsqueeze(-1),
        attention_mask=side.attention_mask[:, : side.width + steps],
        position_ids=side.next_position,
        use_cache=True,
        **{_cache_kwarg(model): side.cache},
    ).logits[:, -1, :]
    side.next_position = side.next_position + 1
    return logits


def _keep_rows(side: _Side, keep: torch.Tensor) -> None:
    side.cache.batch_select_indices(keep)
    side.attention_mask, side.next_position = side.attention_mask[keep], side.next_position[keep]


def _decode_batch(
    model: PreTrainedModel,
    batch: list[tuple],
    *,
    stops: torch.Tensor,
    pad_id: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    drop_finished: bool,
    stats: GenerationStats,
    cad_alpha: float | None = None,
    cad_plausibility: float | None = None,
    cad_lift_once: bool = False,
) -> list[list[int]]:
    """Decode one left-padded batch of ``(prompt ids, row seed)`` with the model's KV cache; returns each
    row's new tokens (stop token cut). With ``cad_alpha``, rows are ``(prompt ids, row seed, ids of the
    prompt without its context)`` and both prompts decode in lockstep (``context_aware_logits``)."""
    import numpy as np
    import torch

    streams = [np.random.default_rng(job[1]) for job in batch]  # one random stream per reply
    rows = len(batch)
    live = torch.arange(rows, device=model.device)  # batch row -> index into ``batch``
    # New tokens of every row, one column per step; -1 where a row wrote nothing (it had finished).
    new_tokens = torch.full((rows, max_new_tokens), -1, dtype=torch.long, device=model.device)
    steps = 0
    with torch.inference_mode():
        side, logits = _prefill(model, [job[0] for job in batch], pad_id, max_new_tokens, stats)
        sides, all_logits = [side], [logits]
        if cad_alpha is not None:
            plain, plain_logits = _prefill(model, [job[2] for job in batch], pad_id, max_new_tokens, stats)
            sides.append(plain)
            all_logits.append(plain_logits)
        done = torch.zeros(rows, dtype=torch.bool, device=model.device)  # finished rows still in the batch
        # --cad-lift-once: the tokens each row has written (no lift for them any more)
        written = torch.zeros_like(logits, dtype=torch.bool) if cad_lift_once else None
        for step in range(max_new_tokens):
            uniforms = (
                torch.tensor([g.random() for g in streams], dtype=torch.float64) if temperature > 0 else None
            )
            scores = (
                all_logits[0].float()
                if cad_alpha is None
                else context_aware_logits(
                    *all_logits, cad_alpha, plausibility=cad_plausibility, written=written
                )
            )
            chosen = pick_tokens(scores, temperature, top_p, uniforms)  # (B,)
            new_tokens[live, step] = chosen.masked_fill(done, -1)
            done = done | torch.isin(chosen, stops)
            if written is not None:
                written[torch.arange(len(chosen), device=chosen.device), chosen] = True
            steps = step + 1
            if steps == max_new_tokens or bool(done.all()):
                break
            # Dropping rows copies the cache: worth it once a quarter of the batch has finished.
            if drop_finished and int(done.sum()) * 4 >= len(done):
                keep = (~done).nonzero().squeeze(-1)
                for each in sides:
                    _keep_rows(each, keep)
                live, chosen, done = live[keep], chosen[keep], done[keep]
                written = written[keep] if written is not None else None
                streams = [streams[k] for k in keep.tolist()]
            # Finished rows left in the batch keep decoding; their tokens are ignored.
            all_logits = [_advance(model, each, chosen, steps) for each in sides]
    return [_cut_at_stop(row, stops) for row in new_tokens[:, :steps].tolist()]


def _left_padded(prompts: list[list[int]], pad_id: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids left-padded to the longest, and the attention mask for the whole run (``total`` columns,
    allocated once: each step passes a view one column longer)."""
    import torch

    rows, width = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention_mask = torch.ones((rows, total), dtype=torch.long)
    for r, p in enumerate(prompts):
        input_ids[r, width - len(p) :] = torch.tensor(p)
        attention_mask[r, : width - len(p)] = 0
    return input_ids, attention_mask


def _cut_at_stop(tokens: list[int], stops: torch.Tensor) -> list[int]:
    """A row's tokens up to (without) its first stop token or unwritten (-1) step."""
    stop_set = set(stops.tolist())
    for n, token in enumerate(tokens):
        if token < 0 or token in stop_set:
            return tokens[:n]
    return tokens
