"""``vllm``: vLLM's engine (``vllm.LLM.chat`` with ``SamplingParams(n=...)``), for GPUs, tensor/data parallel."""

from __future__ import annotations

import time
from typing import Any

from mipo.core.errors import MipoError
from mipo.engine.backends import BACKENDS


def load_vllm(model: str, *, seed: int = 0, **engine_args: Any) -> Any:
    """A ``vllm.LLM`` for ``model`` (a folder or Hub id); a one-line error where vLLM is not installed."""
    try:
        from vllm import LLM
    except ImportError:
        raise MipoError(
            "backend 'vllm' needs vLLM, which is not installed: pip install 'mipo[vllm]' "
            "(Linux with a GPU), or use --backend hf"
        ) from None
    return LLM(model=model, seed=seed, **engine_args)


class VLLMEngine:
    def __init__(self, llm: Any, name: str | None = None):
        self.llm = llm
        self.name = name  # the model as the user named it, for its chat tokenizer
        self._tokenizer = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from mipo.engine.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.name) if self.name else self.llm.get_tokenizer()
        return self._tokenizer

    @property
    def context_length(self) -> int | None:
        return self.llm.llm_engine.model_config.max_model_len

    def generate(
        self,
        conversations,
        *,
        num_samples: int = 1,
        temperature: float = 0.1,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        seed: int = 0,
        stats=None,
        **unused: Any,  # batch_size, progress, workers: vLLM schedules its own batches
    ) -> list[list[str]]:
        from vllm import SamplingParams

        from mipo.engine.generation import GenerationStats

        stats = stats if stats is not None else GenerationStats()
        params = SamplingParams(
            n=num_samples,
            temperature=max(temperature, 0.0),
            top_p=top_p if temperature > 0 else 1.0,
            max_tokens=max_new_tokens,
            seed=seed,
        )
        start = time.perf_counter()
        outputs = self.llm.chat(conversations, params, use_tqdm=True)
        stats.seconds += time.perf_counter() - start
        stats.prompts += len(outputs)
        results = []
        for out in outputs:
            stats.new_tokens += sum(len(c.token_ids) for c in out.outputs)
            results.append([c.text.strip() for c in out.outputs])
        return results


@BACKENDS.register("vllm")
def load(model: Any, *, device: str | None = None, seed: int = 0) -> VLLMEngine:
    """``model``: a built-in name, folder or Hub id, or an already made ``vllm.LLM``."""
    if not isinstance(model, (str, bytes)):
        return VLLMEngine(model)
    from mipo.engine.models import resolve_model

    return VLLMEngine(load_vllm(resolve_model(model), seed=seed), name=model)
