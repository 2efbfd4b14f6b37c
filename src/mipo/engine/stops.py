"""Where a reply ends, for every engine: the model's eos token(s) and the chat template's end-of-turn tokens.

The ``hf`` decode loop stops a row at any of them (``mipo.engine.generation``), and the ``vllm`` backend passes
the same ids as ``SamplingParams(stop_token_ids=...)``, so both engines end a reply at the same token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# End-of-turn tokens of common chat templates: generation stops at any that the tokenizer knows.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def stop_token_ids(model: PreTrainedModel | Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that end a reply: the model's eos token(s) and the chat template's end-of-turn token."""
    return reply_end_ids(getattr(model.generation_config, "eos_token_id", None), tokenizer)


def reply_end_ids(eos: int | list[int] | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """``eos`` (a model's generation config's token or tokens), the tokenizer's eos and the chat template's
    end-of-turn tokens."""
    ids: set[int] = set()
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(ids)
