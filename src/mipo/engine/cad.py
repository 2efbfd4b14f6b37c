"""Context-aware decoding (CAD; Shi et al., 2023): each token from ``(1 + A) log p(.|x, c) - A log p(.|x)``,
the prompt with its context contrasted with the same prompt without it. The hf engine decodes both sides in
lockstep (``mipo.engine.generation``); ``mipo sample`` and ``mipo eval`` take ``--cad-alpha``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def context_aware_logits(with_context: torch.Tensor, without: torch.Tensor, alpha: float) -> torch.Tensor:
    """Context-aware decoding (Shi et al., 2023): ``(1 + α) log p(·|x, c) − α log p(·|x)`` (B, V), which
    boosts the tokens the context makes likelier: the context PMI, raised at inference time.

    Computed as ``logits(x, c) + α (log p(·|x, c) − log p(·|x))``, which differs from it by a constant per
    row (the log-normaliser of ``p(·|x, c)``), so sampling and top-p see the same distribution; at α = 0 it
    is the plain logits bit for bit, so CAD at α = 0 decodes exactly as plain decoding."""
    import torch

    with_context = with_context.float()
    contrast = torch.log_softmax(with_context, dim=-1) - torch.log_softmax(without.float(), dim=-1)
    return with_context + alpha * contrast


def cad_problems(cad_alpha: float | None, backend: str, *, with_context: bool = True) -> list[str]:
    """What makes ``--cad-alpha`` unusable, before any model loads (``mipo sample`` and ``mipo eval``)."""
    if cad_alpha is None:
        return []
    problems = []
    if cad_alpha < 0:
        problems.append(f"--cad-alpha must be >= 0, got {cad_alpha}")
    if backend != "hf":
        problems.append(f"--cad-alpha runs in the hf engine's decode loop, not backend {backend!r}")
    if not with_context:
        problems.append(
            "--cad-alpha contrasts the prompt with and without its context: drop --no-with-context"
        )
    return problems


def require_contexts(records, path: str, context_field: str) -> None:
    """Context-aware decoding contrasts each prompt with and without its context: every record needs one."""
    from mipo.core.errors import InputError

    for record in records:
        if not record.context:
            message = "no context: --cad-alpha needs one in every record"
            raise InputError(path, message, line=record.line, field=context_field)


def cad_arguments(cad_alpha: float | None, records, context_mode: str) -> dict:
    """The engine's context-aware decoding arguments for ``records`` (``mipo sample`` and ``mipo eval``):
    none without --cad-alpha (or without records), so any engine then serves."""
    from mipo.prompts.records import to_conversation

    if cad_alpha is None or records is None:
        return {}
    plain = [to_conversation(r, context_mode=context_mode, with_context=False) for r in records]
    return {"cad_alpha": cad_alpha, "without_context": plain}
