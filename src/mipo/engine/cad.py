"""Context-aware decoding (CAD; Shi et al., 2023): each token from ``(1 + A) log p(.|x, c) - A log p(.|x)``,
the prompt with its context contrasted with the same prompt without it. The hf engine decodes both sides in
lockstep (``mipo.engine.generation``); ``mipo sample`` and ``mipo eval`` take ``--cad-alpha``, ``mipo pairs`` its
``cad`` strategy, all three ``--cad-plausibility`` (the adaptive plausibility constraint of contrastive
decoding, Li et al., 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


LIFT_ONCE_HELP = (
    "context-aware decoding: the contrast lifts a token only until the reply has written it (a negative "
    "contrast stays): CAD otherwise lifts the user's start word or name at every position"
)
PLAUSIBILITY_HELP = (
    "context-aware decoding: only tokens with p(v|x,c) >= TAU * max p(.|x,c) may be chosen, TAU in (0, 1] "
    "(the adaptive plausibility constraint of contrastive decoding; default: none)"
)


def context_aware_logits(
    with_context: torch.Tensor,
    without: torch.Tensor,
    alpha: float,
    *,
    plausibility: float | None = None,
    written: torch.Tensor | None = None,
) -> torch.Tensor:
    """Context-aware decoding (Shi et al., 2023): ``(1 + α) log p(·|x, c) − α log p(·|x)`` (B, V), which
    boosts the tokens the context makes likelier: the context PMI, raised at inference time.

    Computed as ``logits(x, c) + α (log p(·|x, c) − log p(·|x))``, which differs from it by a constant per
    row (the log-normaliser of ``p(·|x, c)``), so sampling and top-p see the same distribution; at α = 0 it
    is the plain logits bit for bit, so CAD at α = 0 decodes exactly as plain decoding.

    ``plausibility`` τ in (0, 1] (Li et al., 2023, contrastive decoding): only tokens with
    ``p(v|x, c) >= τ · max p(·|x, c)`` may be chosen; the others get −inf. The contrast can otherwise lift a
    token the model itself finds implausible (a rare token that is rarer still without the context).

    ``written`` (B, V) bool, the tokens the reply has already written: the contrast lifts a token only until
    the reply has written it (at a written token only a negative contrast stays, which lowers it). Without
    it CAD lifts the user's start word or name at every position, and a reply says it again and again."""
    import torch

    with_context = with_context.float()
    log_probs = torch.log_softmax(with_context, dim=-1)  # (B, V)
    contrast = log_probs - torch.log_softmax(without.float(), dim=-1)  # the context's PMI with each token
    if written is not None:
        contrast = torch.where(written.to(contrast.device), contrast.clamp(max=0.0), contrast)
    scores = with_context + alpha * contrast
    if plausibility is None:
        return scores
    # log p(v) >= log τ + max log p: the head of p(.|x, c); its top token always stays.
    head = log_probs >= log_probs.max(dim=-1, keepdim=True).values + math.log(plausibility)
    return scores.masked_fill(~head, float("-inf"))


def cad_log_probs(
    with_context: torch.Tensor,
    without: torch.Tensor,
    alpha: float,
    *,
    plausibility: float | None = None,
    written: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, V) next-token logits (or log-probs) with and without the context -> (N, V) the log-probs CAD
    decodes from: the teacher of the ``guidance`` objective and of ``mipo eval``'s distillation gap (with
    ``plausibility``, -inf outside the head of p(.|x, c); with ``written``, no lift for a token the reply
    has already written)."""
    import torch

    return torch.log_softmax(
        context_aware_logits(with_context, without, alpha, plausibility=plausibility, written=written), dim=-1
    )


def written_before(tokens: torch.Tensor, lengths: Sequence[int], vocab_size: int) -> torch.Tensor:
    """(N,) the tokens of replies laid end to end (``lengths`` tokens each) -> (N, V) bool: at each position,
    the tokens its reply wrote before it (``context_aware_logits``'s ``written``)."""
    import torch

    written = torch.zeros(len(tokens), vocab_size, dtype=torch.uint8, device=tokens.device)
    start = 0
    for length in lengths:
        if length > 1:  # token s is written from position s + 1 on
            rows = torch.arange(start + 1, start + length, device=tokens.device)
            written[rows, tokens[start : start + length - 1]] = 1
            written[start : start + length] = written[start : start + length].cummax(dim=0).values
        start += length
    return written.bool()


def token_kl(target_log_probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(N, V) target log-probs and a model's logits (or log-probs) -> (N,) KL(target ‖ model) per position,
    in nats; a token the target gives no mass adds nothing (not 0 · ∞)."""
    import torch

    log_probs = torch.log_softmax(logits.float(), dim=-1)
    target = target_log_probs.exp()
    return torch.where(target > 0, target * (target_log_probs - log_probs), 0.0).sum(dim=-1)


def cad_problems(
    cad_alpha: float | None,
    backend: str,
    *,
    with_context: bool = True,
    plausibility: float | None = None,
    lift_once: bool = False,
) -> list[str]:
    """What makes ``--cad-alpha`` (and ``--cad-plausibility``, ``--cad-lift-once``) unusable, before any
    model loads (``mipo sample``, ``mipo eval``, ``mipo pairs --strategy cad``)."""
    problems = plausibility_problems(plausibility, cad_alpha)
    if cad_alpha is None:
        if lift_once:
            problems.append("--cad-lift-once changes context-aware decoding: add --cad-alpha A")
        return problems
    if cad_alpha < 0:
        problems.append(f"--cad-alpha must be >= 0, got {cad_alpha}")
    if backend != "hf":
        problems.append(f"--cad-alpha runs in the hf engine's decode loop, not backend {backend!r}")
    if not with_context:
        problems.append(
            "--cad-alpha contrasts the prompt with and without its context: drop --no-with-context"
        )
    return problems


def require_cad_arguments(
    cad_alpha: float | None,
    backend: str,
    without_context: list | None,
    conversations: list,
    plausibility: float | None = None,
    lift_once: bool = False,
) -> None:
    """``generate_responses``'s check of its context-aware decoding arguments (a caller's mistake, not a
    user's: the CLI's ``cad_problems`` say it in the user's words first)."""
    from mipo.core.errors import ConfigError

    if cad_alpha is not None and (backend != "hf" or without_context is None or cad_alpha < 0):
        raise ConfigError(
            "cad_alpha needs backend 'hf', a value >= 0 and each conversation without its context"
        )
    if plausibility is not None and cad_alpha is None:
        raise ConfigError("cad_plausibility constrains context-aware decoding: it needs cad_alpha")
    if lift_once and cad_alpha is None:
        raise ConfigError("cad_lift_once changes context-aware decoding: it needs cad_alpha")
    if without_context is not None and len(without_context) != len(conversations):
        raise ConfigError(f"{len(without_context)} conversations without context for {len(conversations)}")


def plausibility_problems(plausibility: float | None, cad_alpha: float | None) -> list[str]:
    if plausibility is None:
        return []
    if not 0 < plausibility <= 1:
        return [f"--cad-plausibility must be in (0, 1], got {plausibility}"]
    if cad_alpha is None:
        return ["--cad-plausibility constrains context-aware decoding: add --cad-alpha A"]
    return []


def require_contexts(records, path: str, context_field: str) -> None:
    """Context-aware decoding contrasts each prompt with and without its context: every record needs one."""
    from mipo.core.errors import InputError

    for record in records:
        if not record.context:
            message = "no context: --cad-alpha needs one in every record"
            raise InputError(path, message, line=record.line, field=context_field)


CAD_SETTINGS = ("cad_alpha", "cad_plausibility", "cad_lift_once")  # the keys ``cad_settings`` may write


def cad_settings(cad_alpha: float | None, plausibility: float | None = None, lift_once: bool = False) -> dict:
    """``{"cad_alpha": A, "cad_plausibility": TAU, "cad_lift_once": True}`` as set (nothing without
    --cad-alpha): what a row's ``generation``, a fingerprint and the engine's arguments record of
    context-aware decoding."""
    if cad_alpha is None:
        return {}
    settings = {"cad_alpha": cad_alpha}
    settings |= {"cad_plausibility": plausibility} if plausibility is not None else {}
    return settings | ({"cad_lift_once": True} if lift_once else {})


def cad_arguments(
    cad_alpha: float | None,
    records,
    context_mode: str,
    plausibility: float | None = None,
    lift_once: bool = False,
) -> dict:
    """The engine's context-aware decoding arguments for ``records`` (``mipo sample`` and ``mipo eval``):
    none without --cad-alpha (or without records), so any engine then serves."""
    from mipo.prompts.records import to_conversation

    if cad_alpha is None or records is None:
        return {}
    plain = [to_conversation(r, context_mode=context_mode, with_context=False) for r in records]
    return cad_settings(cad_alpha, plausibility, lift_once) | {"without_context": plain}
