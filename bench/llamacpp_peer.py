"""The peer a CPU user would pick: llama.cpp (through ``llama-cpp-python``) sampling many sequences at once.

All prompts share one context (``n_seq_max`` sequences, a unified KV cache): the prompts are prefilled in
large batches, then every decode step is one batch holding the next token of each live sequence, the way
llama.cpp's own parallel examples and server slots batch work. Sampling (temperature, top-p) is done here
from the logits llama.cpp returns, the same rule as mipo's engine. Imported by ``bench/generation.py``.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np

_QUIET = None  # the silent log callback handed to llama.cpp


def sample_top_p(
    logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator
) -> np.ndarray:
    """One token per row of ``logits`` (rows, vocab): greedy at temperature 0, else top-p sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    z = logits / temperature
    z -= z.max(-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(-1, keepdims=True)
    k = min(64, probs.shape[-1])
    top = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    top_probs = np.take_along_axis(probs, top, -1)
    order = np.argsort(-top_probs, -1)
    top, top_probs = np.take_along_axis(top, order, -1), np.take_along_axis(top_probs, order, -1)
    kept = np.where(np.cumsum(top_probs, -1) - top_probs < top_p, top_probs, 0.0)
    cumulative = np.cumsum(kept, -1)
    draws = rng.random(len(kept))[:, None] * cumulative[:, -1:]
    choice = np.minimum((cumulative <= draws).sum(-1), (kept > 0).sum(-1) - 1)
    return np.take_along_axis(top, choice[:, None], -1)[:, 0]


def generate(
    gguf_path: str,
    prompts: list[list[int]],
    stops: set[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    threads: int,
    seed: int = 0,
) -> tuple[int, float]:
    """``(new tokens, seconds)`` for all ``prompts`` (token ids) decoded together; load time excluded."""
    import llama_cpp as L

    global _QUIET
    L.llama_backend_init()
    _QUIET = L.llama_log_callback(lambda level, text, data: None)  # kept alive: llama.cpp calls it later
    L.llama_log_set(_QUIET, ctypes.c_void_p(0))
    model = L.llama_model_load_from_file(gguf_path.encode(), L.llama_model_default_params())
    n_seq, longest = len(prompts), max(len(p) for p in prompts)
    params = L.llama_context_default_params()
    params.n_ctx = n_seq * (longest + max_new_tokens)
    params.n_batch = params.n_ubatch = 512
    params.n_seq_max = n_seq
    params.n_threads = params.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, params)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    batch = L.llama_batch_init(max(512, n_seq), 0, n_seq)
    rng = np.random.default_rng(seed)
    try:
        start = time.perf_counter()
        logits = _prefill(L, ctx, batch, prompts, n_vocab)
        positions = [len(p) for p in prompts]
        live, new_tokens = list(range(n_seq)), 0
        for _ in range(max_new_tokens):
            tokens = sample_top_p(logits, temperature, top_p, rng)
            keep = [k for k, t in enumerate(tokens) if int(t) not in stops]
            new_tokens += len(keep)
            live, tokens = [live[k] for k in keep], [int(tokens[k]) for k in keep]
            if not live:
                break
            batch.n_tokens = 0
            for seq, token in zip(live, tokens):
                _add(batch, token, positions[seq], seq, True)
                positions[seq] += 1
            if L.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            logits = np.stack([_logits(L, ctx, i, n_vocab) for i in range(len(live))])
        return new_tokens, time.perf_counter() - start
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        L.llama_model_free(model)


def _add(batch, token: int, pos: int, seq: int, want_logits: bool) -> None:
    i = batch.n_tokens
    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
    batch.seq_id[i][0], batch.logits[i] = seq, want_logits
    batch.n_tokens += 1


def _logits(L, ctx, i: int, n_vocab: int) -> np.ndarray:
    return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy()


def _prefill(L, ctx, batch, prompts: list[list[int]], n_vocab: int) -> np.ndarray:
    """Every prompt's tokens in batches of up to 512; returns each sequence's last-token logits."""
    last = [None] * len(prompts)
    pending: list[tuple[int, int]] = []  # (sequence, its position in the batch) for last prompt tokens
    batch.n_tokens = 0

    def flush() -> None:
        if L.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed in the prefill")
        for seq, index in pending:
            last[seq] = _logits(L, ctx, index, n_vocab)
        pending.clear()
        batch.n_tokens = 0

    for seq, ids in enumerate(prompts):
        for pos, token in enumerate(ids):
            is_last = pos == len(ids) - 1
            if is_last:
                pending.append((seq, batch.n_tokens))
            _add(batch, token, pos, seq, is_last)
            if batch.n_tokens == 512:
                flush()
    if batch.n_tokens:
        flush()
    return np.stack(last)
