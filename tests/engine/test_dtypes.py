"""``--dtype``: what ``auto`` picks on each kind of CPU and GPU, bf16 runs of every stage on the tiny model
(bf16 runs on any CPU, slower where it is emulated), log-probs summed in fp32, and the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mipo.engine import dtypes
from mipo.engine.dtypes import native_bf16_unit as real_native_bf16_unit  # the autouse fixture replaces it

# What torch 2.13 reports on each kind of x86 CPU: (AMX tiles, AVX512-BF16, get_cpu_capability()).
CPUS = {
    "AVX2 (Zen 2/3, Haswell-Skylake client)": (False, False, "AVX2"),
    "AVX512 without bf16 (Skylake-SP, Ice Lake)": (False, False, "AVX512"),
    "AVX512-BF16 (Zen 4, Cooper Lake)": (False, True, "AVX512"),
    "AMX (Sapphire Rapids and later)": (True, True, "AVX512"),
}


@pytest.mark.parametrize("cpu", CPUS)
def test_auto_picks_bf16_only_where_the_cpu_computes_it(cpu, monkeypatch):
    import torch

    amx, avx512_bf16, capability = CPUS[cpu]
    monkeypatch.setattr(dtypes, "native_bf16_unit", real_native_bf16_unit)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    # oneDNN says yes on AVX-512 CPUs that only emulate bf16: never asked
    monkeypatch.setattr(torch.backends.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    name, reason = dtypes.auto_dtype("cpu")
    if amx or avx512_bf16:
        assert name == "bfloat16"
        assert reason == f"the CPU computes bf16 in hardware: {'AMX' if amx else 'AVX512-BF16'}"
    else:
        assert name == "float32" and "no bf16 unit" in reason and "emulated" in reason
    assert dtypes.dtype_name("auto", "cpu") == name and dtypes.dtype_name("float32", "cpu") == "float32"
    assert dtypes.torch_dtype(None, "cpu") == getattr(torch, name)


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_on_a_gpu_counts_only_native_bf16(native, expected, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # a V100 or T4: bf16 "supported" only through emulation
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation
    )
    assert dtypes.auto_dtype("cuda:0")[0] == expected


def test_bad_dtypes_are_refused_with_the_choices(monkeypatch):
    import torch

    assert dtypes.dtype_problems("float64", "cpu") == [
        "--dtype must be one of auto, float32, bfloat16, got 'float64'"
    ]
    assert "got 'fp8'" in dtypes.dtype_problems("fp8", None)[0]
    (half,) = dtypes.dtype_problems("float16", "cpu")
    assert half.startswith("--dtype float16 on a CPU is refused (slow there and it overflows)")
    assert dtypes.dtype_problems("bfloat16", "cpu", "vllm") == []  # vLLM on a CPU: its own choice
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    (vllm,) = dtypes.dtype_problems("bfloat16", "cuda", "vllm")
    assert "--dtype bfloat16 with --backend vllm: this GPU has no native bf16" in vllm
    assert dtypes.dtype_problems("float16", "cuda", "vllm") == []


def write_prompts(path: Path, n: int = 4) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": f"What is {i} plus {i}?", "context": "I like short answers."}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("command", ["sample", "pairs", "train", "eval", "pmi", "run"])
def test_an_unknown_dtype_is_one_line_before_any_model_loads(
    command, cli, tmp_path, tiny_model_dir, monkeypatch
):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("mipo.engine.models.load_model", no_loading)
    monkeypatch.setattr("mipo.engine.models.load_tokenizer", no_loading)
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out"
    args = {
        "sample": ["--prompts", prompts, "--out", tmp_path / "s.jsonl", "--dtype", "float64"],
        "pairs": ["--prompts", prompts, "--out", tmp_path / "p2.jsonl", "--dtype", "float64"],
        "train": ["--pairs", prompts, "--out", out, "--dtype", "float64"],
        "eval": ["--task", "prefs", "--out", out, "--dtype", "float64"],
        "pmi": ["--prompts", prompts, "--dtype", "float64"],
    }
    if command == "run":
        config = tmp_path / "run.yaml"
        config.write_text(f"run_dir: {tmp_path / 'r'}\nprompts: {{file: {prompts}}}\ndtype: float64\n")
        code, _, err = cli("run", config)
    else:
        code, _, err = cli(command, "--model", tiny_model_dir, *args[command])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    flag = "'dtype'" if command == "run" else "--dtype"  # the run's YAML key, or the stage's flag
    assert f"{flag} must be one of auto, float32, bfloat16, got 'float64'" in lines[0]
    assert not out.exists() and not (tmp_path / "r").exists()


def test_float16_on_a_cpu_is_refused_with_the_reason(cli, tmp_path, tiny_model_dir):
    prompts = write_prompts(tmp_path / "p.jsonl")
    code, _, err = cli(
        "sample", "--model", tiny_model_dir, "--prompts", prompts, "--out", tmp_path / "o.jsonl",
        "--dtype", "float16", "--device", "cpu",
    )  # fmt: skip
    assert code == 2 and "--dtype float16 on a CPU is refused (slow there and it overflows)" in err


def test_version_text(capsys):
    from mipo.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mipo ") and "torch " in lines[1]
    # the autouse fixture makes this CPU one without a bf16 unit
    assert (
        lines[2].startswith("--dtype auto on ") and ": float32 (" in lines[2] and "no bf16 unit" in lines[2]
    )


@pytest.mark.parametrize("share_prompts", [True, False], ids=["one-prompt-copy", "a-row-per-reply"])
def test_log_probs_of_a_bf16_model_are_summed_in_fp32(share_prompts, tiny_model_dir):
    """A bf16 model's summed log-prob is within 0.01 nats per token of the same weights run in fp32: the
    log-softmax and the sum run in fp32 (summed in bf16, 40 tokens near -10.8 each would be off by up to
    1 nat: bf16 has 8 bits of mantissa, a spacing of 2 at 432)."""
    import torch

    from mipo.engine.models import load_model
    from mipo.engine.scoring import sequence_logprobs

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype=torch.bfloat16)
    prompts = [[{"role": "user", "content": f"Say something about the number {i}."}] for i in range(3)]
    replies = [" ".join(["the cat sat on a mat"] * (3 + 2 * i)) for i in range(3)]
    bf16 = sequence_logprobs(model, tokenizer, prompts, replies, batch_size=3, share_prompts=share_prompts)
    fp32 = sequence_logprobs(
        model.float(), tokenizer, prompts, replies, batch_size=3, share_prompts=share_prompts
    )
    for reply, low, full in zip(replies, bf16, fp32, strict=True):
        tokens = len(tokenizer(reply, add_special_tokens=False).input_ids)
        assert full < -5 * tokens  # a random model: about -10.8 nats a token
        assert abs(low - full) < 0.01 * tokens, (low, full, tokens)
