"""The maths and data of the objectives that score a pair's replies under its prompt and its negative prompt:
the paper's InfoNCE and SAMI (over the 2x2 matrix of a pair), CCA, and the batches of ``guidance``.

For a pair with prompt x, negative prompt x' (``negative_prompt``, written by ``mipo pairs``), chosen reply
y+ (the reply to x) and rejected reply y- (the reply to x'), the matrix holds log π(reply | prompt):

    L = [[log π(y+|x),  log π(y-|x) ],      rows: prompts x, x'
         [log π(y+|x'), log π(y-|x')]]      columns: replies y+, y-

each the sum (or the mean) of the reply's token log-probs. The diagonal is the true (prompt, reply) matching.

- InfoNCE (the paper's code): for each reply, cross-entropy over "which prompt produced it":
  ``(CE(L[:, 0] / T, x) + CE(L[:, 1] / T, x')) / 2``; no reference model.
- SAMI (Fränken et al.): the same over the columns plus over the rows ("which reply belongs to this prompt"):
  ``(mean_rows CE + mean_columns CE) / 2``.

- CCA (Chen et al., ICLR 2025, arXiv 2410.09347): unpaired, per row, with the reference π_ref (the starting
  model) and D(y|p) = log π(y|p) - log π_ref(y|p) summed over the reply's tokens: y+ raised under its own prompt
  x and lowered under x': ``-log σ(β D(y+|x)) - λ log σ(-β D(y+|x'))``.

The losses are small pure functions (``infonce_loss``, ``sami_loss``, ``cca_loss``) checked by hand in the tests.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

REDUCTIONS = ("sum", "mean")
# the order of a pair's four sequences in an InfoNCE/SAMI batch: (prompt, reply) for rows x, x' and columns y+, y-
SEQUENCES = (("prompt", "chosen"), ("prompt", "rejected"), ("negative_prompt", "chosen"), ("negative_prompt", "rejected"))  # fmt: skip


def sequence_log_probs(
    token_logps: torch.Tensor, completion_mask: torch.Tensor, reduction: str
) -> torch.Tensor:
    """(N, T) token log-probs and reply mask -> (N,) the reply's log-prob: summed, or averaged over its tokens."""
    totals = (token_logps * completion_mask).sum(dim=-1)
    if reduction == "sum":
        return totals
    return totals / completion_mask.sum(dim=-1).clamp(min=1)


def infonce_loss(matrix: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, 2, 2) log-prob matrices -> (B,) losses: per column (reply), cross-entropy of its own prompt."""
    column_ce = -F.log_softmax(matrix / temperature, dim=1).diagonal(dim1=1, dim2=2)  # (B, 2 replies)
    return column_ce.mean(dim=-1)


def sami_loss(matrix: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, 2, 2) log-prob matrices -> (B,) losses: the mean of the row and the column cross-entropies."""
    logits = matrix / temperature
    row_ce = -F.log_softmax(logits, dim=2).diagonal(dim1=1, dim2=2)  # (B, 2 prompts)
    column_ce = -F.log_softmax(logits, dim=1).diagonal(dim1=1, dim2=2)  # (B, 2 replies)
    return (row_ce.mean(dim=-1) + column_ce.mean(dim=-1)) / 2


def cca_loss(
    policy: torch.Tensor, reference: torch.Tensor, beta: float, negative_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 2) summed log-probs of y+ under (x, x'), the policy's and the reference's -> (B,) losses, and the
    rewards β D(y+|x) and β D(y+|x') (DPO's ``chosen`` and ``rejected`` rewards, the rejected side being the
    same reply under the negative prompt). ``negative_weight`` is CCA's λ."""
    rewards = beta * (policy - reference)  # (B, 2)
    chosen, rejected = rewards[:, 0], rewards[:, 1]
    losses = -F.logsigmoid(chosen) - negative_weight * F.logsigmoid(-rejected)
    return losses, chosen, rejected


def pair_metrics(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a step logs, per pair (B,), under DPO's names, with the paper's MI reward as the reward:
    r(x, y) = log π(y|x) - log π(y|x'), the PMI of the reply with x against the negative prompt.

    ``rewards/chosen`` = r(x, y+) = L00 - L10; ``rewards/rejected`` = r(x, y-) = L01 - L11; ``rewards/margins``
    their difference (the log-odds of the diagonal, L00 + L11 - L01 - L10); ``rewards/accuracies``: the share
    with a positive margin. ``logps/chosen`` = L00 and ``logps/rejected`` = L01, as in DPO (under x).
    """
    chosen = matrix[:, 0, 0] - matrix[:, 1, 0]
    rejected = matrix[:, 0, 1] - matrix[:, 1, 1]
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > rejected).float(),
        "logps/chosen": matrix[:, 0, 0],
        "logps/rejected": matrix[:, 0, 1],
    }


def encode_prompt_and_replies(
    tokenizer: Any, prompt: Any, replies: list[Any]
) -> tuple[list[int], list[list[int]]]:
    """The prompt's tokens and each reply's tokens after it, tokenized apart (``mipo.engine.scoring``), so that a
    reply has the same tokens after x and after x' (a column of the matrix compares like with like)."""
    from mipo.engine.scoring import encode_response

    if isinstance(prompt, str):  # TRL's standard format: no chat template, the reply ends with EOS
        eos = tokenizer.eos_token or ""
        return (
            tokenizer(prompt, add_special_tokens=False)["input_ids"],
            [tokenizer(r + eos, add_special_tokens=False)["input_ids"] for r in replies],
        )
    reply_ids = []
    prompt_ids: list[int] = []
    for reply in replies:
        prompt_ids, ids = encode_response(tokenizer, prompt, reply[0]["content"])
        reply_ids.append(ids)
    return prompt_ids, reply_ids


def tokenize_pair(row: dict[str, Any], tokenizer: Any, max_length: int | None) -> dict[str, Any]:
    """A pair -> its prompt and reply token ids. Replies are cut to fit after the longer prompt, the same
    length under both prompts; ``keep`` is False when a prompt leaves no room for a reply token."""
    prompt_ids, (chosen_ids, rejected_ids) = encode_prompt_and_replies(
        tokenizer, row["prompt"], [row["chosen"], row["rejected"]]
    )
    negative_ids, _ = encode_prompt_and_replies(tokenizer, row["negative_prompt"], [row["chosen"]])
    room = None if max_length is None else max_length - max(len(prompt_ids), len(negative_ids))
    if room is not None:
        chosen_ids, rejected_ids = chosen_ids[: max(room, 0)], rejected_ids[: max(room, 0)]
    return {
        "prompt_ids": prompt_ids,
        "negative_prompt_ids": negative_ids,
        "chosen_ids": chosen_ids,
        "rejected_ids": rejected_ids,
        "length": max(len(prompt_ids), len(negative_ids)) + max(len(chosen_ids), len(rejected_ids)),
        "keep": bool(chosen_ids) and bool(rejected_ids),
    }


def collate_pairs(
    rows: list[dict[str, Any]], pad_token_id: int, sequences: tuple[tuple[str, str], ...] = SEQUENCES
) -> dict[str, torch.Tensor]:
    """Rows -> one right-padded batch of S = len(``sequences``) (prompt, reply) sequences per pair, in that
    order (S*B, T); ``completion_mask`` marks each sequence's reply tokens."""
    token_ids, reply_lengths = [], []
    for row in rows:
        for prompt, reply in sequences:
            token_ids.append(row[f"{prompt}_ids"] + row[f"{reply}_ids"])
            reply_lengths.append(len(row[f"{reply}_ids"]))
    width = max(len(s) for s in token_ids)
    input_ids = torch.full((len(token_ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    completion_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for i, (ids, reply_length) in enumerate(zip(token_ids, reply_lengths)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        completion_mask[i, len(ids) - reply_length : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
