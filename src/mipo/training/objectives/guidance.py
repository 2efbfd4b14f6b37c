"""Guidance distillation (``--objective guidance``): per token of the chosen replies, KL(q_t ‖ π_θ(.|x, y<t))
towards context-aware decoding's distribution q_t = softmax((1 + A) l(.|x, y<t) - A l(.|x', y<t)) from the
frozen reference (A = ``--cad-alpha``, x' = the negative prompt); ``--preserve W`` keeps the model's behaviour
under x' along x''s own reply, ``--decision_weight w`` weighs the positions where the teacher's top token is not
the policy's. The maths: ``mipo.training.objectives._guidance``; the trainer: ``_guidance_trainer``."""

from __future__ import annotations

from mipo.training.objectives.base import OBJECTIVES, Objective, TrainingRun
from mipo.training.objectives.infonce import CONTRASTIVE_DEFAULTS, pairs_with_negative_prompts


def require_negative_replies(run: TrainingRun) -> None:
    """``--preserve`` trains along the negative prompt's own reply (the pairs' rejected reply, as ``mipo pairs``
    writes it): a file whose rejected replies are something else is refused before any model loads."""
    if run.trl_settings.get("preserve", 0) > 0:
        from mipo.formats.pairs_file import require_rejected_answers_negative_prompt

        require_rejected_answers_negative_prompt(run.config.pairs, needed_by="--preserve")


OBJECTIVES.register(
    "guidance",
    Objective(
        config_class="mipo.training.objectives._guidance_trainer:GuidanceConfig",
        trainer_class="mipo.training.objectives._guidance_trainer:GuidanceTrainer",
        prepare_rows=pairs_with_negative_prompts,
        description="token-level distillation of context-aware decoding (x against the negative prompt x')",
        defaults=CONTRASTIVE_DEFAULTS,
        before_trainer=require_negative_replies,
        pair_fields=("negative_prompt",),
    ),
)
