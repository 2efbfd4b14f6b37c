"""Training objectives, one module each (``dpo``, ``sft``): see ``base.py`` and docs/extending/objectives.md."""

from mipo.training.objectives.base import OBJECTIVES, Objective, TrainingRun

__all__ = ["OBJECTIVES", "Objective", "TrainingRun"]
