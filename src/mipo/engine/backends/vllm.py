"""``vllm``: vLLM's engine (``vllm.LLM.generate`` on mipo's own prompt tokens), for GPUs, tensor/data parallel.

A LoRA adapter folder (what ``mipo train`` writes by default) is served as vLLM intends: the engine loads
the adapter's base with ``enable_lora=True`` and each call names the adapter in a ``LoRARequest``, so one
engine answers for the base model and for the adapter (``VLLMEngine.for_model``: ``mipo eval``'s model and
baseline). The engine's settings are the stage's ``vllm`` mapping under vLLM's own names, over mipo's defaults
(``mipo.engine.backends.vllm_settings``). ``close`` shuts the engine down and gives its GPU memory back;
the stages call it when they end, so the next stage of ``mipo run`` finds the card free.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mipo.core.errors import MipoError
from mipo.core.processes import world_size
from mipo.engine.backends import BACKENDS, release_gpu_memory
from mipo.engine.backends.vllm_settings import VLLM_MISSING, engine_arguments, vllm_installed

log = logging.getLogger(__name__)


class VLLMEngine:
    """One model served by a ``vllm.LLM``: the base model, or a LoRA adapter on it (``adapter``)."""

    def __init__(self, llm: Any, tokenizer: Any, stops: list[int], base: str, adapter: Any = None):
        self.llm = llm
        self.tokenizer = tokenizer  # mipo's chat tokenizer: prompts are encoded as the hf engine encodes them
        self.stops = stops  # the hf engine's end-of-reply tokens: eos and the chat template's end of turn
        self.base = base  # the folder or Hub id the engine loaded
        self.adapter = adapter  # a vllm LoRARequest, or None for the base model itself

    @property
    def context_length(self) -> int | None:
        return self.llm.llm_engine.model_config.max_model_len

    def for_model(self, name: str) -> VLLMEngine | None:
        """An engine for ``name`` on this same ``vllm.LLM`` (its base, or an adapter on its base of a rank it
        serves); None where a new engine has to load."""
        from mipo.engine.models import load_tokenizer, resolve_model

        if self.llm is None:
            return None
        source = resolve_model(name)
        base, rank = adapter_of(source)
        if base is None:
            return (
                VLLMEngine(self.llm, load_tokenizer(name), self.stops, self.base)
                if source == self.base
                else None
            )
        lora = self.llm.llm_engine.vllm_config.lora_config
        if resolve_model(base) != self.base or lora is None or lora.max_lora_rank < rank:
            return None
        return VLLMEngine(self.llm, load_tokenizer(name), self.stops, self.base, lora_request(source))

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
        progress: bool = False,
        **unused: Any,  # batch_size, workers: vLLM schedules its own batches
    ) -> list[list[str]]:
        """As the hf engine: each sample is its own request, seeded by the run's seed, the prompt's tokens and
        the sample's number (``row_seed``), stopped at the same tokens; replies come back in input order."""
        from vllm import SamplingParams

        from mipo.engine.generation import GenerationStats, encode_conversations, row_seed

        stats = stats if stats is not None else GenerationStats()
        encoded = encode_conversations(self.tokenizer, conversations)
        rows = [(i, s) for i in range(len(encoded)) for s in range(num_samples)]
        prompts = [{"prompt_token_ids": encoded[i]} for i, _ in rows]
        params = [
            SamplingParams(
                n=1,
                temperature=max(temperature, 0.0),
                top_p=top_p if temperature > 0 else 1.0,
                max_tokens=max_new_tokens,
                seed=row_seed(seed, encoded[i], s) % 2**63,  # a torch.Generator's seed: a signed 64-bit int
                stop_token_ids=self.stops,
                skip_special_tokens=True,
            )
            for i, s in rows
        ]
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=progress, lora_request=self.adapter)
        stats.seconds += time.perf_counter() - start
        results: list[list[str]] = [[""] * num_samples for _ in conversations]
        for (i, s), out in zip(rows, outputs, strict=True):
            reply = out.outputs[0]
            stats.new_tokens += len(reply.token_ids)
            results[i][s] = reply.text.strip()
        stats.prompts += len(conversations)
        stats.prompt_tokens += sum(len(p["prompt_token_ids"]) for p in prompts)
        return results

    def close(self) -> None:
        """Shut the engine down and give its GPU memory back (every engine sharing its ``vllm.LLM`` closes)."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        engine_core = getattr(llm.llm_engine, "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()  # vLLM's v1 engine runs its core in a child process
        del llm
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        if world_size() == 1:  # under accelerate launch the process group is accelerate's, not vLLM's
            destroy_distributed_environment()
        release_gpu_memory()


def adapter_of(source: str) -> tuple[str | None, int]:
    """``(base model, LoRA rank)`` of an adapter folder; ``(None, 0)`` for full weights or a Hub id."""
    from mipo.engine.models import adapter_base

    base = adapter_base(source)
    if base is None:
        return None, 0
    return base, int(json.loads((Path(source) / "adapter_config.json").read_text()).get("r", 8))


# vLLM caches an adapter under its integer id: each adapter folder gets its own, for the life of the process.
LORA_IDS: dict[str, int] = {}


def lora_request(adapter: str) -> Any:
    from vllm.lora.request import LoRARequest

    lora_id = LORA_IDS.setdefault(str(adapter), len(LORA_IDS) + 1)
    return LoRARequest(lora_name=str(adapter), lora_int_id=lora_id, lora_path=str(adapter))


def pin_device() -> None:
    """Under ``accelerate launch``, start this process's engine on its own GPU (LOCAL_RANK), not on GPU 0. (In one
    process vLLM picks its GPUs itself: ``CUDA_VISIBLE_DEVICES`` chooses them, not ``--device``.)"""
    import torch

    if world_size() > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


@BACKENDS.register("vllm")
def load(
    model: Any,
    *,
    device: str | None = None,
    seed: int = 0,
    engine_settings: dict[str, Any] | None = None,
    max_new_tokens: int = 256,
    dtype: str | None = None,
) -> VLLMEngine:
    """``model``: a built-in name, a folder (full weights or a LoRA adapter) or a Hub id. ``engine_settings``:
    the stage's ``vllm`` mapping, over mipo's defaults (``vllm_settings.engine_arguments``). ``device`` is not
    vLLM's to take: ``CUDA_VISIBLE_DEVICES`` chooses its GPUs (``pin_device``). ``dtype``: ``--dtype``; other
    than ``auto`` it is vLLM's ``dtype`` unless the ``vllm`` mapping names one."""
    if not vllm_installed():
        raise MipoError(VLLM_MISSING)
    from transformers import AutoConfig, GenerationConfig
    from vllm import LLM

    from mipo.engine.models import load_tokenizer, resolve_model
    from mipo.engine.stops import reply_end_ids

    source = resolve_model(model)
    base_name, rank = adapter_of(source)
    base = resolve_model(base_name) if base_name else source
    config = AutoConfig.from_pretrained(base)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        eos = GenerationConfig.from_pretrained(base).eos_token_id
    except OSError:  # no generation_config.json: the model config's eos
        eos = getattr(text_config, "eos_token_id", None)
    tokenizer = load_tokenizer(model)
    if dtype not in (None, "auto"):
        engine_settings = {"dtype": dtype, **(engine_settings or {})}
    arguments = engine_arguments(
        engine_settings or {},
        model_maximum=getattr(text_config, "max_position_embeddings", None),
        max_new_tokens=max_new_tokens,
        lora_rank=rank if base_name else None,
    )
    pin_device()
    log.info("vLLM engine for %s: %s", base, arguments)
    llm = LLM(model=base, seed=seed, **arguments)
    adapter = lora_request(source) if base_name else None
    return VLLMEngine(llm, tokenizer, reply_end_ids(eos, tokenizer), base, adapter)
