"""Guidance distillation (``--objective guidance``): per token of the chosen replies, KL(q_t ‖ π_θ(.|x, y<t))
towards context-aware decoding's distribution q_t = softmax((1 + A) l(.|x, y<t) - A l(.|x', y<t)) from the
frozen reference (A = ``--cad-alpha``, x' = the negative prompt); ``--preserve W`` keeps the model's behaviour
under x' along x''s own reply on the pairs whose x' has no user context (``negative_context`` false or absent:
``incomplete``, ``cad``, ``mixed``'s ``incomplete`` rows); ``--decision_weight w`` weighs the positions where the
teacher's top token is not the policy's. The maths: ``mipo.training.objectives._guidance``; the trainer: ``_guidance_trainer``."""

from __future__ import annotations

from typing import Any

from mipo.training.objectives.base import OBJECTIVES, Objective, TrainingRun
from mipo.training.objectives.infonce import CONTRASTIVE_DEFAULTS


def require_negative_replies(run: TrainingRun) -> None:
    """``--preserve`` trains along the negative prompt's own reply (the pairs' rejected reply, as ``mipo pairs``
    writes it) where that prompt has no user context: a file whose rejected replies are something else, or
    whose every negative prompt carries a context, is refused before any model loads."""
    if run.trl_settings.get("preserve", 0) > 0:
        from mipo.formats.pairs_file import (
            require_negatives_without_context,
            require_rejected_answers_negative_prompt,
        )

        require_rejected_answers_negative_prompt(run.config.pairs, needed_by="--preserve")
        require_negatives_without_context(run.config.pairs, needed_by="--preserve")


def pairs_with_preserve_weights(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pair with ``preserve``: 1 where its negative prompt has no user context (the preservation term
    applies: keep what the model does without the context), 0 where it carries one (``other-context``: another
    user's context, whose behaviour the distillation itself changes)."""
    return [
        {
            **{k: v for k, v in pair.items() if k != "negative_context"},
            "preserve": 0.0 if pair.get("negative_context") else 1.0,
        }
        for pair in pairs
    ]


OBJECTIVES.register(
    "guidance",
    Objective(
        config_class="mipo.training.objectives._guidance_trainer:GuidanceConfig",
        trainer_class="mipo.training.objectives._guidance_trainer:GuidanceTrainer",
        prepare_rows=pairs_with_preserve_weights,
        description="token-level distillation of context-aware decoding (x against the negative prompt x')",
        defaults=CONTRASTIVE_DEFAULTS,
        before_trainer=require_negative_replies,
        pair_fields=("negative_prompt",),
        pair_flags=("negative_context",),
    ),
)
