"""``--dtype bfloat16`` through every stage on the tiny model (on any CPU: emulated bf16 is slower, not
wrong): replies, pairs, LoRA and full training (1 step, whose margins are 0: the reference log-probs are
computed in the policy's dtype), evaluation; the dtype recorded where a result is, a resume under another
refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_reliability import args, interrupt_after_rows, one_error_line, write_prompts
from training.test_training import FAST, rows, write_pairs


@pytest.fixture()
def ref_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setattr("mipo.training.ref_cache.cache_dir", lambda: folder)
    return folder


@pytest.mark.parametrize("command", ["sample", "pairs"])
def test_replies_and_pairs_in_bf16(command, cli, tmp_path, tiny_model_dir):
    prompts = write_prompts(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "out.jsonl"
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--dtype", "bfloat16"))
    assert code == 0, err
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 4


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_a_resume_under_another_dtype_is_refused_naming_both(
    command, cli, tmp_path, tiny_model_dir, monkeypatch
):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    interrupt_after_rows(monkeypatch, 2)
    assert cli(*args(command, tiny_model_dir, prompts, out, "--dtype", "float32"))[0] == 130
    monkeypatch.undo()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")}
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--dtype", "bfloat16", "--resume"))
    line = one_error_line(err)
    assert code == 2 and "environment.dtype: float32 -> bfloat16" in line, line
    assert {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")} == before  # nothing lost
    # auto is fp32 here (the suite's fixture): the same job, resumed
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--dtype", "auto", "--resume"))
    assert code == 0, err


@pytest.mark.parametrize("method", ["lora", "full"])
def test_one_bf16_training_step_starts_at_zero_margin(method, cli, tmp_path, tiny_model_dir, ref_cache):
    """The reference log-probs are computed under the same bf16 autocast and weights as the policy's first
    step, so that step's policy equals its reference: loss log 2, margins 0 (to bf16 rounding)."""
    from safetensors.torch import load_file

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / method
    extra = ["--full", "--learning-rate", "1e-3"] if method == "full" else []
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--max-steps", "1",
        "--dtype", "bfloat16", *extra, *FAST,
    )  # fmt: skip
    assert code == 0, err
    first = rows(out / "metrics.jsonl")[0]
    assert first["loss"] == pytest.approx(0.693147, abs=2e-3)
    assert abs(first["rewards/margins"]) < 0.02
    used = json.loads((out / "train_config.json").read_text())
    assert used["dpo_config"]["bf16"] is True and used["train_config"]["dtype"] == "bfloat16"
    assert used["reference_log_probs"]["fields"]["mixed_precision"] == "bf16"
    import torch

    if method == "lora":  # a bf16 base, fp32 adapters (PEFT upcasts them), saved as trained
        weights = load_file(out / "adapter_model.safetensors")
        assert {w.dtype for w in weights.values()} == {torch.float32}
        assert used["reference_log_probs"]["fields"]["dtype"] == "torch.bfloat16"
    else:  # fp32 master weights under bf16 autocast, saved in bf16 (half the disk, what a GPU serves)
        assert used["reference_log_probs"]["fields"]["dtype"] == "torch.float32"
        weights = load_file(out / "model.safetensors")
        assert {w.dtype for w in weights.values()} == {torch.bfloat16}


def test_an_evaluation_in_bf16_records_its_dtype(cli, tmp_path, tiny_model_dir):
    out = tmp_path / "eval"
    code, _, err = cli(
        "eval", "--task", "prefs", "--model", tiny_model_dir, "--out", out, "--limit", "3",
        "--max-new-tokens", "6", "--no-progress", "--n-bootstrap", "200", "--dtype", "bfloat16",
    )  # fmt: skip
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["dtype"] == "bfloat16"
    code, _, err = cli(
        "eval", "--task", "prefs", "--model", tiny_model_dir, "--out", tmp_path / "e32", "--limit", "3",
        "--max-new-tokens", "6", "--no-progress", "--n-bootstrap", "200",
    )  # fmt: skip
    assert json.loads((tmp_path / "e32" / "results.json").read_text())["environment"]["dtype"] == "float32"
