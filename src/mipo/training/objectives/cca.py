"""CCA (Condition Contrastive Alignment; Chen et al., ICLR 2025, arXiv 2410.09347, thu-ml/CCA): unpaired, per
row, the chosen reply y+ raised under its own prompt x and the same y+ lowered under the negative prompt x',
relative to the frozen reference: ``-log σ(β D(y+|x)) - λ log σ(-β D(y+|x'))``, D = log π_θ - log π_ref summed
over the reply's tokens (β = ``--beta``, λ = ``--negative_weight``). The maths:
``mipo.training.objectives._contrastive.cca_loss``."""

from __future__ import annotations

from mipo.training.objectives.base import OBJECTIVES, Objective
from mipo.training.objectives.infonce import CONTRASTIVE_DEFAULTS, pairs_with_negative_prompts

OBJECTIVES.register(
    "cca",
    Objective(
        config_class="mipo.training.objectives._contrastive_trainer:CCAConfig",
        trainer_class="mipo.training.objectives._contrastive_trainer:CCATrainer",
        prepare_rows=pairs_with_negative_prompts,
        description="CCA: the chosen reply raised under x and lowered under the negative prompt x', against the reference",
        defaults=CONTRASTIVE_DEFAULTS,
        pair_fields=("negative_prompt",),
    ),
)
