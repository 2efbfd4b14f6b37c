"""The maths of the ``guidance`` objective: token-level distillation of context-aware decoding (CAD).

At every token t of a pair's chosen reply y+ (the model's own reply to x, or CAD's), the teacher is CAD's
next-token distribution from the frozen reference (the starting model):

    q_t = softmax((1 + A) l(.|x, y<t) - A l(.|x', y<t))        A = --cad-alpha, x' = the negative prompt

built by ``mipo.engine.cad.cad_log_probs`` from ``context_aware_logits``, the function CAD decodes with, so
that decoding, distillation and the distillation gap share one definition. The policy π_θ(.|x, y<t) is pulled towards it by KL(q_t ‖ π_θ) per token.
``--cad-plausibility TAU`` masks the teacher as ``mipo sample --cad-plausibility`` decodes: only the tokens with
p(v|x, y<t) >= TAU max p(.|x, y<t) keep mass (the adaptive plausibility constraint; without it the contrast can
lift a token the reference finds unlikely at every position, such as the user's start word again and again).
``--cad_lift_once`` lifts a token only until the reply has written it: at the positions after its first
occurrence only a negative contrast stays (the context may forbid a word everywhere; asking for it once is
asking once). CAD's contrast, the PMI of the context with the token, does not fall once the word is said, so
the plain teacher lifts the user's start word or name at every position and the model learns to loop.
``--preserve W`` adds W x KL(p_ref(.|x', y-<t) ‖ π_θ(.|x', y-<t)) along the negative prompt's own reply y-:
the model keeps what it does without the context.
``--unlikelihood W`` adds W x the unlikelihood of the policy's own repeats (Welleck et al., 2019,
sequence-level): along the policy's greedy replies to the pairs' prompts, regenerated as it trains, the tokens
of every 4-gram a reply has already written are pushed down by -log(1 - π_θ(y_t|x, y<t)). The teacher cannot
do this: along a distilled model's loops CAD's own top token is the loop's next token (docs/results.md).
With ``--unlikelihood_pmi M`` only the repeated tokens the context lifts are pushed down: those whose PMI with
the context under the reference, log p_ref(y_t|x, y<t) - log p_ref(y_t|x', y<t), exceeds M nats
(``context_loop_mask``): "Okay okay okay" after "start with 'Okay'", not the repeats the model writes anyway.

Every function takes (N, V) logits at N reply positions and is checked by hand in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mipo.engine.cad import cad_log_probs, token_kl


def decision_weighted_mean(
    values: torch.Tensor, decisions: torch.Tensor, decision_weight: float
) -> torch.Tensor:
    """(N,) per-token values -> their weighted mean, the positions where ``decisions`` is True weighing
    ``decision_weight`` and the others 1: sum(w_t v_t) / sum(w_t). Dividing by the weights' sum keeps the
    result a per-token mean (in nats per token; w = 1 gives the plain mean), whatever share of the tokens
    are decisions."""
    weights = torch.where(decisions, decision_weight, 1.0).to(values.dtype)
    return (weights * values).sum() / weights.sum().clamp(min=1e-12)


def guidance_loss(
    logits: torch.Tensor,
    with_context: torch.Tensor,
    without: torch.Tensor,
    alpha: float,
    decision_weight: float = 1.0,
    plausibility: float | None = None,
    written: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, V) policy logits under x, reference logits under x and under x' -> the loss (a scalar), the (N,)
    per-token KL(q_t ‖ π_θ) and the (N,) teacher's top tokens. The positions where the teacher's top token
    differs from the policy's weigh ``decision_weight`` (``decision_weighted_mean``). With ``plausibility``
    τ the teacher gives no mass to the tokens outside the head of p(.|x) (p < τ max p), as CAD decodes with
    ``--cad-plausibility``. With ``written`` (N, V), the tokens each position's reply has already written,
    the teacher lifts a token only until the reply has written it (``--cad_lift_once``)."""
    teacher = cad_log_probs(with_context, without, alpha, plausibility=plausibility, written=written)
    kl = token_kl(teacher, logits)
    teacher_top = teacher.argmax(dim=-1)
    decisions = teacher_top != logits.detach().argmax(dim=-1)
    return decision_weighted_mean(kl, decisions, decision_weight), kl, teacher_top


REPEAT_NGRAM = 4  # Welleck et al. (2019): the tokens of each 4-gram a reply has already written


def repeated_ngram_mask(ids: Sequence[int], n: int = REPEAT_NGRAM) -> list[bool]:
    """Per token of a reply: whether it belongs to an ``n``-gram that occurred earlier in the reply (all
    ``n`` tokens of the second and later occurrences), the candidates of sequence-level unlikelihood."""
    mask = [False] * len(ids)
    seen: set[tuple[int, ...]] = set()
    for i in range(len(ids) - n + 1):
        gram = tuple(ids[i : i + n])
        if gram in seen:
            mask[i : i + n] = [True] * n
        seen.add(gram)
    return mask


def target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, V) logits, (N,) tokens -> (N,) log p(token) at each position, in float32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]


def token_pmi(with_context: torch.Tensor, without: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, V) logits under x and under x', (N,) the reply's tokens -> (N,) each token's PMI with the context,
    log p(y_t|x, y<t) - log p(y_t|x', y<t), in nats."""
    return target_log_probs(with_context, targets) - target_log_probs(without, targets)


def context_loop_mask(repeats: Sequence[bool], pmi: Sequence[float], threshold: float) -> list[bool]:
    """Per token of a reply: whether it is a repeat (``repeated_ngram_mask``) that the context lifts, its PMI
    with the context above ``threshold`` nats: the loops a context causes, not the model's ordinary repeats."""
    return [repeat and value > threshold for repeat, value in zip(repeats, pmi, strict=True)]


def unlikelihood_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, V) policy logits, (N,) the reply's tokens, (N,) which to push down -> the mean over the masked
    positions of -log(1 - π(y_t)) (0 when none is masked); p is clamped below 1 so the loss stays finite."""
    losses = -torch.log1p(-target_log_probs(logits, targets).exp().clamp(max=1 - 1e-6))
    weights = mask.to(losses.dtype)
    return (weights * losses).sum() / weights.sum().clamp(min=1.0)
