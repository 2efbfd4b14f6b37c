"""Moved: the trainer callbacks and the loss/margin plot are in ``mipo.trainer_callbacks``."""

from mipo.trainer_callbacks import MetricsCallback, QuietProgressCallback, plot_curves  # noqa: F401  # moved: mipo.trainer_callbacks
