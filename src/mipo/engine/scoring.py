"""Log-probabilities of responses under a model: the one place mipo scores a reply after a prompt.

``log π(y | x)`` is the sum of the token log-probabilities of the response (with the chat template's
end-of-turn token) after the chat-formatted prompt. PMI (``mipo.engine.pmi``), multiple choice by log-likelihood
(``mipo eval --mc-mode loglik``) and evaluation use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
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
    share_prompts: bool = True,
) -> list[float]:
    """``log π(response_i | conversation_i)`` for each pair: the sum of the response's token log-probs.

    With ``share_prompts`` (and a model that takes a custom attention mask), the replies that follow the same
    prompt are packed after one copy of it: the same log-probs, rounded differently, for fewer tokens. A
    reply's rounding then depends on the replies packed with it; ``share_prompts=False`` makes a score
    independent of the other pairs in the call (``mipo pairs --select pmi``: a resumed run's chunks must give
    an uninterrupted run's rows)."""
    from tqdm.auto import tqdm

    if len(conversations) != len(responses):
        raise ValueError(f"{len(conversations)} conversations against {len(responses)} responses")
    encoded = []
    for conversation, response in zip(conversations, responses):
        prompt_ids, response_ids = encode_response(tokenizer, conversation, response)
        encoded.append((prompt_ids, response_ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = tqdm(total=len(encoded), desc=desc, unit="seq", disable=not progress)
    if share_prompts and _prompts_shareable(model, encoded):
        totals = _shared_prompt_logprobs(model, encoded, pad_id, batch_size, bar)
        bar.close()
        return totals
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    totals = [0.0] * len(encoded)
    done_tokens = 0
    for first in range(0, len(order), batch_size):
        idx = order[first : first + batch_size]
        logp, targets = _left_padded_logprobs(model, [encoded[i] for i in idx], pad_id)  # (B, keep-1, V)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, keep-1)
        for row, i in enumerate(idx):
            n = len(encoded[i][1])
            totals[i] = float(token_logp[row, -n:].sum())
            done_tokens += n
        bar.update(len(idx))
        bar.set_postfix(resp_tok=done_tokens)
    bar.close()
    return totals


def reply_token_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """Each reply's next-token log-probabilities (fp32, ``(n_i, V)``): row t is ``log π(·|x, y<t)``, over the
    reply's ``n_i`` tokens (its end-of-turn included) as ``sequence_logprobs`` scores them. The whole
    distribution, not only the reply's token: for divergences between models or prompts (the distillation
    gap). A reply has the same tokens after every prompt, so the rows of two prompts align."""
    import torch

    if len(conversations) != len(responses):
        raise ValueError(f"{len(conversations)} conversations against {len(responses)} responses")
    encoded = [encode_response(tokenizer, c, r) for c, r in zip(conversations, responses)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(encoded)
    for first in range(0, len(order), batch_size):
        idx = order[first : first + batch_size]
        logp, _ = _left_padded_logprobs(model, [encoded[i] for i in idx], pad_id)  # (B, keep-1, V)
        for row, i in enumerate(idx):
            out[i] = logp[row, -len(encoded[i][1]) :].cpu()  # (n_i, V)
    return out


def _left_padded_logprobs(model, batch: list[tuple[list[int], list[int]]], pad_id: int):
    """One forward pass over (prompt, reply) pairs, left-padded: ``(log-probs (B, keep-1, V) in fp32,
    targets (B, keep-1))`` for the last ``keep - 1`` positions, which hold every reply's tokens."""
    import torch

    width = max(len(prompt) + len(reply) for prompt, reply in batch)
    # Left padding aligns every response at the end, so only the last positions' logits are needed.
    keep = max(len(reply) for _, reply in batch) + 1
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (prompt, reply) in enumerate(batch):
        ids = prompt + reply
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
    return logp, input_ids[:, width - keep + 1 :].to(logp.device)


# --- one copy of each prompt ------------------------------------------------------------------------

REPLY_TOKENS_PER_ROW = 1024  # a prompt with more replies than this holds is packed into several rows


def _prompts_shareable(model: PreTrainedModel, encoded: list[tuple[list[int], list[int]]]) -> bool:
    """Replies scored after the same prompt share one copy of it where the model takes a custom mask."""
    from mipo.engine.shared_prompt import MASKED_ATTENTION

    plain = type(model).__name__ != "PeftModelForCausalLM"  # TRL's fused head goes under PEFT, not over it
    implementation = getattr(model.config, "_attn_implementation", None)
    return plain and implementation in MASKED_ATTENTION and all(prompt for prompt, _ in encoded)


def packed_rows(encoded: list[tuple[list[int], list[int]]]) -> list[list[int]]:
    """Indices of the (prompt, reply) pairs grouped by prompt, a group cut at REPLY_TOKENS_PER_ROW."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt, _) in enumerate(encoded):
        groups.setdefault(tuple(prompt), []).append(i)
    rows = []
    for members in groups.values():
        row: list[int] = []
        size = 0
        for i in members:
            size += len(encoded[i][1]) + 1
            if row and size > REPLY_TOKENS_PER_ROW:
                rows.append(row)
                row, size = [], len(encoded[i][1]) + 1
            row.append(i)
        rows.append(row)
    return rows


def pack_replies(
    prompt: list[int], replies: list[list[int]]
) -> tuple[list[int], list[int], list[int], list[int]]:
    """One row: the prompt, then each reply (from the second on after a copy of the prompt's last token),
    as ``mipo.engine.shared_prompt`` packs a DPO pair. Returns ids, positions, branches and each reply's start."""
    last = len(prompt) - 1
    ids, positions = list(prompt), list(range(len(prompt)))
    branch, starts = [0] * last + [1], []
    for k, reply in enumerate(replies, start=1):
        if k > 1:  # the copy stands in for the prompt's last token on this reply's branch
            ids.append(prompt[-1])
            positions.append(last)
            branch.append(k)
        starts.append(len(ids))
        ids += reply
        positions += range(last + 1, last + 1 + len(reply))
        branch += [k] * len(reply)
    return ids, positions, branch, starts


def _shared_prompt_logprobs(model, encoded, pad_id: int, batch_size: int, bar) -> list[float]:
    """``sequence_logprobs`` with one copy of each prompt per row and the LM head on the reply tokens only
    (TRL's fused head: it computes no logits for the rest). Longest rows first."""
    import torch

    from mipo.engine.shared_prompt import attention_mask
    from mipo.engine.trl_internals import reply_positions_only

    _add_fused_lm_head(model)
    rows = packed_rows(encoded)
    packed = [pack_replies(encoded[r[0]][0], [encoded[i][1] for i in r]) for r in rows]
    order = sorted(range(len(rows)), key=lambda k: -len(packed[k][0]))
    totals = [0.0] * len(encoded)
    done_tokens = 0
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        width = max(len(packed[k][0]) for k in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        branch = torch.full((len(batch), width), -1, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for b, k in enumerate(batch):
            row_ids, row_positions, row_branch, starts = packed[k]
            ids[b, : len(row_ids)] = torch.tensor(row_ids)
            positions[b, : len(row_ids)] = torch.tensor(row_positions)
            branch[b, : len(row_ids)] = torch.tensor(row_branch)
            for i, start in zip(rows[k], starts):
                labels[b, start : start + len(encoded[i][1])] = torch.tensor(encoded[i][1])
        mask = attention_mask(branch, model.config._attn_implementation, model.dtype)
        with torch.inference_mode(), reply_positions_only():
            log_probs = model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=positions.to(model.device),
                labels=labels.to(model.device),
                fused_lm_head=True,
            ).log_probs.float()  # (rows, width - 1): position j scores token j + 1
        for b, k in enumerate(batch):
            for i, start in zip(rows[k], packed[k][3]):
                n = len(encoded[i][1])
                totals[i] = float(log_probs[b, start - 1 : start - 1 + n].sum())
                done_tokens += n
            bar.update(len(rows[k]))
        bar.set_postfix(resp_tok=done_tokens)
    return totals


def _add_fused_lm_head(model) -> None:
    """TRL's fused LM head on ``model`` (once): ``fused_lm_head=True`` returns the labels' log-probs; any
    other call (generation) is the model's own forward."""
    if getattr(model, "_mipo_fused_lm_head", False):
        return
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)
    model._mipo_fused_lm_head = True
