"""The MIPO objective, measured: pointwise mutual information between a prompt and a response.

For a prompt x with response y and K other prompts x'_1..x'_K, under a reference model π_ref:

    pmi(x, y) = log π_ref(y | x) − log( (1/K) Σ_k π_ref(y | x'_k) )
              = log π_ref(y | x) − (logsumexp_k log π_ref(y | x'_k) − log K)

The second term estimates the marginal log π_ref(y) by the response's likelihood under other prompts.
MIPO's DPO pairs raise this quantity; ``mipo pmi`` (and ``mipo eval --task pmi``) measure whether a
trained model's responses carry more information about their prompt than the base model's.

``log π(y | x)`` is the sum of the token log-probabilities of the response (with the chat template's
end-of-turn token) after the chat-formatted prompt.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]


def logsumexp(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=float)
    top = float(array.max())
    if math.isinf(top):
        return top
    return top + math.log(float(np.exp(array - top).sum()))


def pmi_from_logprobs(logp_own: Sequence[float], logp_others: Sequence[Sequence[float]]) -> list[float]:
    """``log π(y|x) − log mean_k π(y|x'_k)`` per example: ``logp_own`` is (N,), ``logp_others`` (N, K)."""
    if len(logp_own) != len(logp_others):
        raise ValueError(f"{len(logp_own)} own log-probs against {len(logp_others)} rows of others")
    out = []
    for own, others in zip(logp_own, logp_others):
        if len(others) == 0:
            raise ValueError("each example needs at least one other prompt")
        out.append(float(own) - (logsumexp(others) - math.log(len(others))))
    return out


def choose_other_prompts(keys: Sequence[str], k: int, *, seed: int = 0) -> list[list[int]]:
    """For each prompt, ``k`` indices of *different* prompts (never itself nor a duplicate of it), seeded.

    ``keys`` identify prompts (e.g. their chat text); fewer than ``k`` distinct others is an error.
    """
    distinct = len(set(keys))
    if k < 1:
        raise ValueError("k must be at least 1")
    if distinct - 1 < k:
        raise ValueError(f"k={k} other prompts needed but only {distinct} distinct prompts; lower k")
    rng = random.Random(seed)
    chosen = []
    for i, key in enumerate(keys):
        picks: list[int] = []
        while len(picks) < k:
            j = rng.randrange(len(keys))
            if j != i and keys[j] != key and j not in picks:
                picks.append(j)
        chosen.append(picks)
    return chosen


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


def pmi_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    responses: Sequence[str],
    others: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Per example ``{pmi, logp, logp_marginal}`` of ``responses[i]`` given ``conversations[i]``.

    ``others[i]`` are the indices of the K other prompts whose likelihood of ``responses[i]`` estimates
    the marginal (see ``choose_other_prompts``).
    """
    flat_conversations, flat_responses = [], []
    for i, response in enumerate(responses):
        for j in (i, *others[i]):
            flat_conversations.append(conversations[j])
            flat_responses.append(response)
    flat = sequence_logprobs(
        model,
        tokenizer,
        flat_conversations,
        flat_responses,
        batch_size=batch_size,
        progress=progress,
        desc="pmi",
    )
    rows, at = [], 0
    for i in range(len(responses)):
        own, other = flat[at], flat[at + 1 : at + 1 + len(others[i])]
        at += 1 + len(others[i])
        value = pmi_from_logprobs([own], [other])[0]
        rows.append({"pmi": value, "logp": own, "logp_marginal": own - value})
    return rows


# --- the `mipo pmi` command: a shortcut for `mipo eval --task pmi` ---------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from mipo.config import add_config_arguments
    from mipo.evaluation import EvalConfig

    parser.description = (
        "Measure the MIPO objective: mean log π_ref(y|x) − log mean_k π_ref(y|x'_k) of the model's "
        "responses y, against K other prompts x', under a reference model (default: the base model)."
    )
    parser.add_argument("--config", help="a YAML file of settings (flags override it)")
    parser.add_argument(
        "--pairs",
        dest="prompts",
        metavar="FILE",
        help="a pairs file (from mipo pairs): measure on its prompts",
    )
    add_config_arguments(
        parser, EvalConfig, skip=("task", "export_train", "mc_mode", "profiles_per_question", "export_seed")
    )


def main(args: argparse.Namespace) -> int:
    from mipo.config import load_yaml, resolve
    from mipo.evaluation import EvalConfig, evaluate, print_results

    if args.out is None and not (args.config and "out" in load_yaml(args.config)):
        args.out = "runs/pmi"
    config = resolve(EvalConfig, args, yaml_path=args.config, overrides={"task": "pmi"})
    results_path = evaluate(config)
    print_results(results_path)
    return 0
