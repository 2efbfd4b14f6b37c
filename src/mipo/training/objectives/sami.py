"""SAMI (Fränken et al.): row plus column cross-entropy over a pair's 2x2 matrix of log π(reply | prompt),
with an optional KL to the reference (``--kl_coef``). The maths: ``mipo.training.objectives._contrastive``."""

from __future__ import annotations

from mipo.training.objectives.base import OBJECTIVES, Objective
from mipo.training.objectives.infonce import (
    CONTRASTIVE_DEFAULTS,
    CONTRASTIVE_REFUSES_ZERO3,
    pairs_with_negative_prompts,
)

OBJECTIVES.register(
    "sami",
    Objective(
        config_class="mipo.training.objectives._contrastive_trainer:ContrastiveConfig",
        trainer_class="mipo.training.objectives._contrastive_trainer:SAMITrainer",
        prepare_rows=pairs_with_negative_prompts,
        description="SAMI: row plus column cross-entropy over the (x, x') x (y+, y-) log-prob matrix",
        defaults=CONTRASTIVE_DEFAULTS,
        pair_fields=("negative_prompt",),
        refuses_zero3=CONTRASTIVE_REFUSES_ZERO3,
    ),
)
