"""SFT on the chosen responses alone: the paper's baseline, with TRL's ``SFTTrainer``."""

from __future__ import annotations

from typing import Any

from mipo.training.objectives.base import OBJECTIVES, Objective


def chosen_as_completions(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chosen responses alone, as TRL's prompt-completion rows."""
    return [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]


OBJECTIVES.register(
    "sft",
    Objective(
        config_class="trl:SFTConfig",
        trainer_class="trl:SFTTrainer",
        prepare_rows=chosen_as_completions,
        description="supervised fine-tuning on the chosen responses alone",
    ),
)
