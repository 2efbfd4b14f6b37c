"""Log-probabilities of responses under a model: the one place mipo scores a reply after a prompt.

``log π(y | x)`` is the sum of the token log-probabilities of the response (with the chat template's
end-of-turn token) after the chat-formatted prompt. PMI (``mipo.pmi``), multiple choice by log-likelihood
(``mipo eval --mc-mode loglik``) and evaluation use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Conversation = list[dict[str, str]]


def encode_response(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, response: str
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids)``: the chat-formatted prompt and the assistant turn that follows it.

    The two are tokenized apart, as generation produced them, so a response has the same tokens after
    every prompt (a requirement of the marginal estimate).
    """
    prompt_text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(
        [*conversation, {"role": "assistant", "content": response}], tokenize=False
    )
    if full_text.startswith(prompt_text):
        # The template's own end-of-turn; whitespace after it is not something the model generated.
        suffix = full_text[len(prompt_text) :].rstrip()
    else:
        suffix = response + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    return prompt_ids, response_ids


def sequence_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "scoring",
) -> list[float]:
    """``log π(response_i | conversation_i)`` for each pair: the sum of the response's token log-probs."""
    import torch
    from tqdm.auto import tqdm

    if len(conversations) != len(responses):
        raise ValueError(f"{len(conversations)} conversations against {len(responses)} responses")
    encoded = []
    for conversation, response in zip(conversations, responses):
        prompt_ids, response_ids = encode_response(tokenizer, conversation, response)
        encoded.append((prompt_ids, response_ids))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals = [0.0] * len(encoded)
    done_tokens = 0
    bar = tqdm(total=len(order), desc=desc, unit="seq", disable=not progress)
    for first in range(0, len(order), batch_size):
        idx = order[first : first + batch_size]
        lengths = [len(encoded[i][0]) + len(encoded[i][1]) for i in idx]
        width = max(lengths)
        # Left padding aligns every response at the end, so only the last positions' logits are needed.
        keep = max(len(encoded[i][1]) for i in idx) + 1
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = encoded[i][0] + encoded[i][1]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(model.device),
                attention_mask=attention.to(model.device),
                position_ids=positions.to(model.device),
                logits_to_keep=keep,
            ).logits  # (B, keep, V): predictions for the last `keep - 1` tokens, plus one past the end
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, keep-1, V)
        targets = input_ids[:, width - keep + 1 :].to(logp.device)  # (B, keep-1)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, keep-1)
        for row, i in enumerate(idx):
            n = len(encoded[i][1])
            totals[i] = float(token_logp[row, keep - 1 - n :].sum())
            done_tokens += n
        bar.update(len(idx))
        bar.set_postfix(resp_tok=done_tokens)
    bar.close()
    return totals
