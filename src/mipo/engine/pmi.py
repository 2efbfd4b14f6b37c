"""The MIPO objective, measured: pointwise mutual information between a prompt and a response.

For a prompt x with response y and K other prompts x'_1..x'_K, under a reference model π_ref:

    pmi(x, y) = log π_ref(y | x) − log( (1/K) Σ_k π_ref(y | x'_k) )
              = log π_ref(y | x) − (logsumexp_k log π_ref(y | x'_k) − log K)

The second term estimates the marginal log π_ref(y) by the response's likelihood under other prompts.
MIPO's DPO pairs raise this quantity; ``mipo pmi`` (``mipo.evaluation.pmi_command``) and ``mipo eval --task pmi``
measure whether a trained model's responses carry more information about their prompt than the base model's.

``log π(y | x)`` comes from ``mipo.engine.scoring.sequence_logprobs``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mipo.engine.scoring import Conversation, sequence_logprobs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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


def context_pmi_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    with_context: Sequence[Conversation],
    without_context: Sequence[Conversation],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Per example ``{pmi, logp, logp_without_context}``: the *context* PMI
    ``log π(y | x, c) − log π(y | x)`` of ``responses[i]``, where ``with_context[i]`` is the prompt x with
    the user's context c and ``without_context[i]`` the same prompt without it.

    This is the mutual information between a user's context and the reply that ``incomplete`` negatives
    target (the rejected reply answers x alone), beside the topic PMI against other prompts above.
    """
    n = len(responses)
    if not len(with_context) == len(without_context) == n:
        raise ValueError(f"{len(with_context)}/{len(without_context)} conversations against {n} responses")
    flat = sequence_logprobs(
        model,
        tokenizer,
        [*with_context, *without_context],
        [*responses, *responses],
        batch_size=batch_size,
        progress=progress,
        desc="context pmi",
    )
    return [
        {"pmi": flat[i] - flat[n + i], "logp": flat[i], "logp_without_context": flat[n + i]} for i in range(n)
    ]
