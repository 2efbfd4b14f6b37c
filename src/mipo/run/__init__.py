"""The whole pipeline from one YAML config (``mipo run``): prompts, pairs, train, eval, report, resumable."""

from mipo.run.config import RunConfig, load_run_config
from mipo.run.pipeline import run_pipeline

__all__ = ["RunConfig", "load_run_config", "run_pipeline"]
