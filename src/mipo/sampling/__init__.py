"""The model's replies to a prompt set, one row per prompt (``mipo sample``)."""

from mipo.sampling.replies import SampleConfig, sample

__all__ = ["SampleConfig", "sample"]
