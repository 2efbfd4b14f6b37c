"""The stages on the ``vllm`` backend, with a stub vLLM (tests/vllm_stub.py): each stage shuts its engine
down before the next one starts, ``mipo eval`` serves a trained adapter and its base from one engine, and
whatever vLLM cannot do is refused in one line (exit 2) before any model loads."""

from __future__ import annotations

import importlib.util
import json

import pytest

FAST_EVAL = ["--limit", "3", "--max-new-tokens", "6", "--no-progress", "--n-bootstrap", "200"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))  # no baseline cached by another test


def write_prompts(path, n=4):
    rows = [{"id": f"q{i}", "prompt": f"Question {i}: what is {i} plus {i}?"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_error_line(err: str, command: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith(f"mipo {command}: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_pairs_on_vllm_writes_the_pairs_and_shuts_the_engine_down(stub_vllm, cli, tiny_model_dir, tmp_path):
    out = tmp_path / "pairs.jsonl"
    args = ["--model", tiny_model_dir, "--prompts", write_prompts(tmp_path / "p.jsonl"), "--out", out]
    code, stdout, err = cli(
        "pairs", *args, "--backend", "vllm", "--vllm", "enforce_eager=true", "--no-progress"
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(row["chosen"][0]["content"].startswith("seed=") for row in rows)
    (llm,) = stub_vllm.engines
    assert llm.engine_args["enforce_eager"] is True
    assert len(llm.calls) == 1 and len(llm.calls[0]["prompts"]) == 4  # one call for the chunk's 4 prompts
    assert stub_vllm.events[-3:] == ["shutdown 0", "destroy model parallel", "destroy distributed"]


def test_bad_vllm_inputs_are_one_line_exit_2_before_any_model_loads(
    stub_vllm, cli, tiny_model_dir, tmp_path, monkeypatch
):
    prompts = write_prompts(tmp_path / "p.jsonl")
    pairs = ["pairs", "--model", tiny_model_dir, "--prompts", prompts, "--out", tmp_path / "o.jsonl"]
    code, _, err = cli(*pairs, "--backend", "vllm", "--vllm", "gpu_memory_utilisation=0.5")
    assert code == 2
    assert "vllm: unknown setting 'gpu_memory_utilisation' (did you mean gpu_memory_utilization?)" in (
        one_error_line(err, "pairs")
    )
    eval_args = ["eval", "--model", tiny_model_dir, "--out", tmp_path / "e", "--backend", "vllm", *FAST_EVAL]
    code, _, err = cli(*eval_args, "--task", "pmi")
    assert code == 2 and "task 'pmi' scores log-probabilities with the model itself" in one_error_line(
        err, "eval"
    )
    code, _, err = cli(*eval_args, "--task", "arc-easy", "--mc-mode", "loglik")
    assert code == 2 and "--mc-mode loglik ranks choices by the model's log-probabilities" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    for command in (eval_args[:1] + eval_args[1:], ["sample", *pairs[1:]]):
        code, _, err = cli(*command)
        line = one_error_line(err, command[0])
        assert code == 2 and f"mipo {command[0]} runs in one process, but 2 were started (WORLD_SIZE)" in line
    run_config = tmp_path / "run.yaml"
    run_config.write_text(
        f"run_dir: {tmp_path / 'run'}\nprompts: {{file: {prompts}}}\neval: [{{task: gsm8k}}]\n"
    )
    code, _, err = cli("run", run_config)
    assert code == 2 and "mipo run runs in one process, but 2 were started" in one_error_line(err, "run")
    assert not stub_vllm.engines and not (tmp_path / "o.jsonl").exists() and not (tmp_path / "e").exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_backend_vllm_without_vllm_is_one_line_before_any_model_loads(cli, tiny_model_dir, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl")
    code, _, err = cli(
        "sample",
        "--model",
        tiny_model_dir,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "o.jsonl",
        "--backend",
        "vllm",
    )
    assert code == 2
    assert "backend 'vllm' needs vLLM, which is not installed: pip install 'mipo[vllm]'" in one_error_line(
        err, "sample"
    )


def test_mipo_run_on_vllm_frees_each_engine_before_the_next_stage(
    stub_vllm, cli, tiny_model_dir, tmp_path, monkeypatch
):
    """pairs (vLLM) -> train (a LoRA adapter) -> eval (vLLM): the pairs engine is shut down before training;
    eval serves the adapter and its base model from one engine, started with enable_lora."""
    import mipo.training.trainer as trainer

    started_training = []
    real_train = trainer.train
    monkeypatch.setattr(
        trainer, "train", lambda config: started_training.append(list(stub_vllm.events)) or real_train(config)
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run'}\nmodel: {tiny_model_dir}\n"
        f"prompts: {{file: {write_prompts(tmp_path / 'p.jsonl', n=6)}}}\n"
        "pairs: {backend: vllm, max_new_tokens: 8, progress: false, vllm: {enforce_eager: true}}\n"
        "train: {epochs: 1, batch_size: 2, max_length: 64}\n"
        "eval: [{task: gsm8k, limit: 3, max_new_tokens: 6, backend: vllm, vllm: {max_num_seqs: 8}, progress: false, n_bootstrap: 200}]\n"
    )
    code, _, err = cli("run", config)
    assert code == 0, err
    assert started_training == [
        ["start 0", "generate 0", "shutdown 0", "destroy model parallel", "destroy distributed"]
    ]
    pairs_engine, eval_engine = stub_vllm.engines
    assert eval_engine.model == str(tiny_model_dir) and eval_engine.engine_args["enable_lora"] is True
    adapter = str(tmp_path / "run" / "train" / "model")
    assert [c["lora_request"] and c["lora_request"].lora_path for c in eval_engine.calls] == [adapter, None]
    assert stub_vllm.events[-3:] == ["shutdown 1", "destroy model parallel", "destroy distributed"]
    results = json.loads((tmp_path / "run" / "eval" / "gsm8k" / "results.json").read_text())
    assert results["environment"]["backend"] == "vllm" and results["environment"]["vllm"] == {
        "max_num_seqs": 8
    }
    assert eval_engine.engine_args["max_num_seqs"] == 8


def test_the_recorded_versions_name_the_gpu_extras():
    """What every run records (and ``mipo --version`` lists): vllm and deepspeed too, "-" where not installed."""
    from mipo import versions

    found = versions()
    assert {"torch", "transformers", "trl", "peft", "accelerate", "vllm", "deepspeed"} <= set(found)
    assert found["vllm"] == "-" or found["vllm"][0].isdigit()
