"""A stand-in for the ``vllm`` package (not installed here, and it needs a GPU): records what mipo asks of it.

``install(monkeypatch)`` puts ``vllm``, ``vllm.lora.request`` and ``vllm.distributed.parallel_state`` in
``sys.modules`` and returns the ``Recorder`` that every stub ``LLM`` reports to. A reply names what it was
generated from (``seed=S prompt=N lora=PATH``), so a test can tell which request each reply answers.
The names and arguments are vLLM's own (checked against vllm-project/vllm at 99d7eb5d): ``LLM(model=...,
seed=..., **engine_args)``, ``LLM.generate(prompts, sampling_params, *, use_tqdm, lora_request)`` with
``{"prompt_token_ids": [...]}`` prompts, ``SamplingParams(n, temperature, top_p, max_tokens, seed,
stop_token_ids, skip_special_tokens)``, ``LoRARequest(lora_name, lora_int_id, lora_path)``.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorder:
    engines: list[StubLLM] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # "start N", "generate N", "shutdown N", "destroy ..."


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if (
            self.temperature < 1e-5 and self.n > 1
        ):  # vLLM's own check (SamplingParams._verify_greedy_sampling)
            raise ValueError("n must be 1 when using greedy sampling")


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""


def install(monkeypatch) -> Recorder:
    recorder = Recorder()

    class LLM(StubLLM):
        def __init__(self, model: str, **engine_args: Any):
            super().__init__(recorder, model, engine_args)

    vllm = _module("vllm", LLM=LLM, SamplingParams=SamplingParams)
    request = _module("vllm.lora.request", LoRARequest=LoRARequest)
    parallel_state = _module(
        "vllm.distributed.parallel_state",
        destroy_model_parallel=lambda: recorder.events.append("destroy model parallel"),
        destroy_distributed_environment=lambda: recorder.events.append("destroy distributed"),
    )
    for module in (vllm, request, parallel_state, _module("vllm.lora"), _module("vllm.distributed")):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return recorder


class StubLLM:
    def __init__(self, recorder: Recorder, model: str, engine_args: dict[str, Any]):
        self.recorder, self.model, self.engine_args = recorder, model, engine_args
        self.number = len(recorder.engines)
        self.calls: list[dict[str, Any]] = []
        self.alive = True
        lora = None
        if engine_args.get("enable_lora"):
            lora = types.SimpleNamespace(max_lora_rank=engine_args.get("max_lora_rank", 16))
        self.llm_engine = types.SimpleNamespace(
            model_config=types.SimpleNamespace(max_model_len=engine_args.get("max_model_len")),
            vllm_config=types.SimpleNamespace(lora_config=lora),
            engine_core=types.SimpleNamespace(shutdown=self._shutdown),
        )
        recorder.engines.append(self)
        recorder.events.append(f"start {self.number}")

    def _shutdown(self) -> None:
        self.alive = False
        self.recorder.events.append(f"shutdown {self.number}")

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        assert self.alive, "generate on an engine that was shut down"
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        if lora_request is not None:
            assert self.engine_args.get("enable_lora"), "a LoRARequest to an engine without enable_lora"
        self.calls.append({"prompts": prompts, "params": params, "lora_request": lora_request})
        self.recorder.events.append(f"generate {self.number}")
        lora = lora_request.lora_path if lora_request is not None else None
        outputs = []
        for prompt, p in zip(prompts, params):
            text = f"seed={p.seed} prompt={len(prompt['prompt_token_ids'])} lora={lora}"
            reply = types.SimpleNamespace(text=f" {text} ", token_ids=list(range(min(p.max_tokens, 5))))
            outputs.append(types.SimpleNamespace(outputs=[reply] * p.n))
        return outputs


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    return module
