"""The eval stage: a model (and a baseline, paired) on tasks, judges and the context effect (``mipo eval``)."""

from mipo.evaluation.runner import evaluate
from mipo.evaluation.settings import EvalConfig, ScoringSettings

__all__ = ["EvalConfig", "ScoringSettings", "evaluate"]
