"""InfoNCE (the paper's code): for each reply of a pair, cross-entropy over "which prompt produced it", x or the
negative prompt x'; no reference model. The maths: ``mipo.training.objectives._contrastive``."""

from __future__ import annotations

from typing import Any

from mipo.training.objectives.base import OBJECTIVES, Objective

# mipo's contrastive trainer copies a full model for its KL term and wraps LoRA adapters itself (without
# TRL's ZeRO-3 handling): neither works on parameters that ZeRO-3 has partitioned.
CONTRASTIVE_REFUSES_ZERO3 = (
    "its trainer copies the model and adds LoRA adapters without ZeRO-3's parameter gathering"
)

CONTRASTIVE_DEFAULTS = {
    "remove_unused_columns": False,  # the collator reads the token id columns the model's forward does not name
    "length_column_name": "length",
}


def pairs_with_negative_prompts(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return pairs  # {prompt, chosen, rejected, negative_prompt}: tokenized by the trainer


OBJECTIVES.register(
    "infonce",
    Objective(
        config_class="mipo.training.objectives._contrastive_trainer:ContrastiveConfig",
        trainer_class="mipo.training.objectives._contrastive_trainer:InfoNCETrainer",
        prepare_rows=pairs_with_negative_prompts,
        description="InfoNCE over which prompt (x or the negative x') produced each reply (the paper's code)",
        defaults=CONTRASTIVE_DEFAULTS,
        pair_fields=("negative_prompt",),
        refuses_zero3=CONTRASTIVE_REFUSES_ZERO3,
    ),
)
