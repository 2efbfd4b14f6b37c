"""The ``vllm`` backend against a stub vLLM (tests/vllm_stub.py): adapters served as LoRA requests, the
engine settings under vLLM's names, per-row seeds and stop tokens as the hf engine's, shut-down, refusals."""

from __future__ import annotations

import json

import pytest

from mipo.core.errors import ConfigError

CONVERSATIONS = [[{"role": "user", "content": q}] for q in ("What is 2+2?", "Name a colour.", "Hi")]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter of rank 12 on the tiny model, saved as ``mipo train`` saves one (no tokenizer files)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=12, target_modules=["q_proj"])
    )
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_model_dir
    )
    return folder


def load(model, **options):
    from mipo.engine.backends import load_engine

    return load_engine("vllm", str(model), **{"max_new_tokens": 32, **options})


def test_an_adapter_is_served_on_its_base_with_a_lora_request_and_the_base_shares_the_engine(
    stub_vllm, tiny_model_dir, adapter_dir
):
    engine = load(adapter_dir)
    (llm,) = stub_vllm.engines
    assert llm.model == str(tiny_model_dir)  # the base, not the adapter folder
    assert llm.engine_args["enable_lora"] is True
    assert llm.engine_args["max_lora_rank"] == 16  # rank 12 served under vLLM's next accepted rank
    replies = engine.generate(CONVERSATIONS, max_new_tokens=8)
    assert all(r[0].endswith(f"lora={adapter_dir}") for r in replies)
    request = llm.calls[0]["lora_request"]
    assert request.lora_path == str(adapter_dir)

    base = engine.for_model(str(tiny_model_dir))  # mipo eval's baseline: the same engine, no adapter
    assert base is not None and base.llm is llm and len(stub_vllm.engines) == 1
    assert all(r[0].endswith("lora=None") for r in base.generate(CONVERSATIONS, max_new_tokens=8))
    assert llm.calls[1]["lora_request"] is None
    # the other way round: an engine started for the base model has no LoRA, so the adapter needs its own
    assert load(tiny_model_dir).for_model(str(adapter_dir)) is None


def test_two_adapters_on_one_base_are_two_lora_ids(stub_vllm, adapter_dir, tmp_path):
    """vLLM caches an adapter under its id: a second adapter under the first one's id would be served the first."""
    import shutil

    other = tmp_path / "other-adapter"
    shutil.copytree(adapter_dir, other)
    first = load(adapter_dir)
    second = first.for_model(str(other))
    assert second is not None and second.llm is first.llm
    first.generate(CONVERSATIONS[:1])
    second.generate(CONVERSATIONS[:1])
    ids = [call["lora_request"].lora_int_id for call in stub_vllm.engines[0].calls]
    assert len(set(ids)) == 2
    assert first.for_model(str(adapter_dir)).adapter.lora_int_id == ids[0]  # the same folder keeps its id


def test_engine_settings_pass_through_under_vllms_names_over_defaults_that_fit_the_card(
    stub_vllm, tiny_model_dir, monkeypatch
):
    import torch

    import mipo.engine.backends.vllm_settings as vllm_settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    load(tiny_model_dir)
    defaults = stub_vllm.engines[0].engine_args
    # the tiny model's maximum (1024) is below the prompt budget + max_new_tokens (4096 + 32)
    assert defaults == {"seed": 0, "dtype": "bfloat16", "gpu_memory_utilization": 0.85, "max_model_len": 1024}
    monkeypatch.setattr(vllm_settings, "PROMPT_BUDGET", 100)
    settings = {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.5, "enforce_eager": True}
    engine = load(tiny_model_dir, engine_settings=settings)
    assert stub_vllm.engines[1].engine_args == {
        "seed": 0,
        "dtype": "bfloat16",
        "max_model_len": 132,
        **settings,
    }
    assert engine.context_length == 132  # what mipo pairs measures prompts against
    # emulated bf16 (a V100 or T4) is not chosen: fp16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    load(tiny_model_dir)
    assert stub_vllm.engines[2].engine_args["dtype"] == "float16"
    # --dtype is vLLM's dtype, unless the vllm mapping names one
    load(tiny_model_dir, dtype="float32")
    assert stub_vllm.engines[3].engine_args["dtype"] == "float32"
    load(tiny_model_dir, dtype="float32", engine_settings={"dtype": "bfloat16"})
    assert stub_vllm.engines[4].engine_args["dtype"] == "bfloat16"


def test_each_reply_has_its_own_seed_and_stops_where_the_hf_engine_stops(stub_vllm, tiny_model_dir):
    from mipo.engine.generation import encode_conversations, row_seed, stop_token_ids
    from mipo.engine.models import load_model

    engine = load(tiny_model_dir)
    replies = engine.generate(
        CONVERSATIONS, num_samples=2, temperature=0.7, top_p=0.8, max_new_tokens=8, seed=3
    )
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    encoded = encode_conversations(tokenizer, CONVERSATIONS)
    # in input order, sample by sample, each from the seed the hf engine gives that row
    assert replies == [
        [f"seed={row_seed(3, ids, s) % 2**63} prompt={len(ids)} lora=None" for s in range(2)]
        for ids in encoded
    ]
    call = stub_vllm.engines[0].calls[0]
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [ids for ids in encoded for _ in range(2)]
    params = call["params"]
    assert {p.n for p in params} == {1} and len({p.seed for p in params}) == 6
    assert all(p.stop_token_ids == stop_token_ids(model, tokenizer) for p in params)
    assert {(p.temperature, p.top_p, p.max_tokens) for p in params} == {(0.7, 0.8, 8)}
    # a reply does not depend on the other conversations of the call
    assert engine.generate(CONVERSATIONS[1:2], num_samples=2, seed=3) == replies[1:2]
    # greedy with several samples: one request each at temperature 0 (vLLM refuses n > 1 when greedy)
    greedy = engine.generate(CONVERSATIONS[:1], num_samples=2, temperature=0)
    assert len(greedy[0]) == 2 and stub_vllm.engines[0].calls[-1]["params"][0].temperature == 0


def test_close_shuts_the_engine_down_and_pins_each_process_to_its_own_gpu(
    stub_vllm, tiny_model_dir, monkeypatch
):
    import torch

    load(tiny_model_dir).close()
    assert stub_vllm.events == ["start 0", "shutdown 0", "destroy model parallel", "destroy distributed"]
    pinned = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "set_device", pinned.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    engine = load(tiny_model_dir)
    assert pinned == [1]  # accelerate launch's second process: GPU 1, not GPU 0
    assert stub_vllm.engines[1].engine_args["distributed_executor_backend"] == "external_launcher"
    engine.close()  # the process group is accelerate's: vLLM's distributed environment is left to it
    assert stub_vllm.events[-2:] == ["shutdown 1", "destroy model parallel"]


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"tensor_paralel_size": 2},
            "vllm: unknown setting 'tensor_paralel_size' (did you mean tensor_parallel_size?)",
        ),
        ({"model": "x"}, "vllm: model is set by mipo from --model: remove it from vllm"),
        (
            {"tensor_parallel_size": 0},
            "vllm: tensor_parallel_size must be a whole number of at least 1, got 0",
        ),
    ],
)
def test_bad_vllm_settings_are_refused_before_any_model_loads(stub_vllm, tmp_path, settings, message):
    from mipo.pairs.config import PairsConfig

    with pytest.raises(ConfigError) as error:
        PairsConfig(prompts="p.jsonl", out=str(tmp_path / "o.jsonl"), backend="vllm", vllm=settings)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not stub_vllm.engines


def test_tensor_parallel_beyond_the_gpus_and_vllm_settings_for_hf_are_refused(
    stub_vllm, tmp_path, monkeypatch
):
    import torch

    from mipo.evaluation.settings import EvalConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ConfigError, match=r"tensor_parallel_size 3 needs 3 GPUs, this machine has 2: set vllm: "
    ):
        EvalConfig(backend="vllm", vllm={"tensor_parallel_size": 3})
    EvalConfig(backend="vllm", vllm={"tensor_parallel_size": 2})
    with pytest.raises(
        ConfigError, match="vllm: settings for the vllm backend, but backend is 'hf': add --backend"
    ):
        EvalConfig(vllm={"tensor_parallel_size": 2})
