"""The generation engine: sample responses for many chat conversations, batched.

``generate_responses`` is the one entry point used by ``mipo pairs``, ``mipo sample`` and ``mipo eval``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]  # chat messages: [{"role": "user", "content": "..."}]


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[Conversation],
    *,
    num_samples: int = 1,
    temperature: float = 0.1,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    stats: GenerationStats | None = None,
) -> list[list[str]]:
    """Return ``num_samples`` responses per conversation, in input order. ``temperature=0`` is greedy."""
    import torch
    from tqdm.auto import tqdm

    stats = stats if stats is not None else GenerationStats()
    prompts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations
    ]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(
        range(len(encoded)), key=lambda i: len(encoded[i])
    )  # similar lengths share a batch: less padding
    results: list[list[str]] = [[] for _ in conversations]
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    start = time.perf_counter()
    bar = tqdm(total=len(order), desc="generating", unit="prompt", disable=not progress)
    for b, first in enumerate(range(0, len(order), batch_size)):
        idx = order[first : first + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(model.device)
        torch.manual_seed(seed + b)
        with torch.inference_mode():
            out = model.generate(**batch, num_return_sequences=num_samples, **gen_kwargs)
        new = out[:, batch["input_ids"].shape[1] :]  # (B * num_samples, T_new)
        for row, tokens in enumerate(new):
            kept = tokens[tokens != tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else tokens
            stats.new_tokens += int(kept.numel())
            results[idx[row // num_samples]].append(
                tokenizer.decode(tokens, skip_special_tokens=True).strip()
            )
        stats.prompts += len(idx)
        stats.seconds = time.perf_counter() - start
        bar.update(len(idx))
        bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
    bar.close()
    return results
