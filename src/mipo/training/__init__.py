"""The train stage: DPO (or another objective, ``objectives/``) on a pairs file with TRL (``mipo train``)."""

from mipo.training.config import TrainConfig
from mipo.training.trainer import train

__all__ = ["TrainConfig", "train"]
