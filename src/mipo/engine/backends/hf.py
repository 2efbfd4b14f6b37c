"""``hf``: a ``transformers`` model with mipo's own decode loop (``mipo.engine.generation``), on the CPU or a GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mipo.engine.backends import BACKENDS


@dataclass
class HFEngine:
    model: Any  # a transformers PreTrainedModel, in eval mode
    tokenizer: Any

    @property
    def context_length(self) -> int | None:
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text_config, "max_position_embeddings", None)

    def generate(self, conversations, **sampling) -> list[list[str]]:
        from mipo.engine import generation

        return generation.generate_responses(self.model, self.tokenizer, conversations, **sampling)


@BACKENDS.register("hf")
def load(model: str, *, device: str | None = None, seed: int = 0, dtype: str | None = None) -> HFEngine:
    from mipo.engine.dtypes import torch_dtype
    from mipo.engine.models import default_device, load_model

    device = device or default_device()
    return HFEngine(*load_model(model, device=device, dtype=torch_dtype(dtype, device) if dtype else None))
