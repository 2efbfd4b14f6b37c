"""mipo train on the tiny model: files written, cache reuse, resume, SFT, full weights, DDP, and every error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORDS = "the cat sat on a mat while dogs ran over green hills and birds sang songs of joy in spring".split()


def _text(rng, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def write_pairs(path: Path, count: int = 8, *, conversational: bool = True) -> Path:
    import random

    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(count):
            prompt, chosen, rejected = _text(rng, 8), _text(rng, 12), _text(rng, 10)
            if conversational:
                row = {
                    "id": i,
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "strategy": "random",
                    "negative_prompt": [{"role": "user", "content": "other"}],
                    "model": "tiny",
                    "seed": 0,
                    "generation": {"temperature": 0.1},
                }
            else:
                row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture()
def ref_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setattr("mipo.ref_cache.cache_dir", lambda: folder)
    return folder


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


FAST = ["--batch-size", "4", "--max-length", "64", "--save-steps", "2"]


def test_lora_run_writes_model_folder_and_reuses_reference_cache(tmp_path, tiny_model_dir, cli, ref_cache):
    from transformers import AutoModelForCausalLM

    from mipo.models import load_model
    from mipo.training import TrainConfig, train

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    settings = tmp_path / "train.yaml"
    settings.write_text("beta: 0.2\ndpo:\n  warmup_steps: 1\n  lr_scheduler_type: constant_with_warmup\n")
    out = tmp_path / "run"
    code, stdout, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--config", settings,
        "--max-steps", "2", "--merge", *FAST,
    )  # fmt: skip
    assert code == 0, err
    assert "2 steps" in stdout
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "curves.png"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    metrics = rows(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [1, 2]
    for key in ("epoch", "loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "learning_rate"):
        assert key in metrics[0]
    assert metrics[0]["tokens_per_second"] > 0
    assert metrics[0]["loss"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference at step 1
    used = json.loads((out / "train_config.json").read_text())
    dpo = used["dpo_config"]
    assert (dpo["beta"], dpo["warmup_steps"], dpo["max_steps"]) == (0.2, 1, 2)
    assert dpo["precompute_ref_log_probs"] is True and dpo["gradient_checkpointing"] is False
    assert used["reference_log_probs"]["hit"] is False
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["final_loss"] == metrics[-1]["loss"]

    model, _ = load_model(str(out), device="cpu")  # the adapter folder loads like a model
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    import torch

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.allclose(model(ids).logits, merged(ids).logits, atol=1e-5)

    # A second run on the same pairs reuses the cached reference log-probs and trains to the same numbers.
    again = train(
        TrainConfig(
            model=str(tiny_model_dir), pairs=str(pairs), out=str(tmp_path / "again"), beta=0.2, max_steps=2,
            batch_size=4, max_length=64, dpo={"warmup_steps": 1, "lr_scheduler_type": "constant_with_warmup"},
        )
    )  # fmt: skip
    assert json.loads((again / "train_config.json").read_text())["reference_log_probs"]["hit"] is True
    for first, second in zip(metrics, rows(again / "metrics.jsonl"), strict=True):
        assert second["loss"] == pytest.approx(first["loss"], abs=1e-6)
        assert second["rewards/margins"] == pytest.approx(first["rewards/margins"], abs=1e-6)
    assert len(list(ref_cache.glob("ref_logps/*.json"))) == 1


class Interrupt(Exception):
    pass


def test_resumed_run_reaches_the_same_loss(tmp_path, tiny_model_dir, ref_cache):
    from transformers import TrainerCallback

    from mipo.training import TrainConfig, train

    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)

    def config(out: str, **kw) -> TrainConfig:
        return TrainConfig(
            model=str(tiny_model_dir), pairs=str(pairs), out=str(tmp_path / out), max_steps=4, save_steps=2,
            batch_size=4, max_length=64, **kw,
        )  # fmt: skip

    whole = rows(train(config("whole")) / "metrics.jsonl")

    class StopAtThree(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Interrupt  # after the step-2 checkpoint, before the step-4 one

    with pytest.raises(Interrupt):
        train(config("cut"), callbacks=[StopAtThree()])
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "cut" / "train_summary.json").exists()
    resumed = train(config("cut", resume=True))
    summary = json.loads((resumed / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    cut = rows(resumed / "metrics.jsonl")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    for a, b in zip(whole, cut, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)


def test_sft_objective_trains_on_chosen(tmp_path, tiny_model_dir, cli, ref_cache):
    pairs = write_pairs(tmp_path / "pairs.jsonl", conversational=False)  # TRL's standard (string) format
    out = tmp_path / "sft"
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--objective", "sft", "--max-steps", "1",
        *FAST,
    )  # fmt: skip
    assert code == 0, err
    metrics = rows(out / "metrics.jsonl")
    assert metrics[0]["loss"] > 0 and "rewards/margins" not in metrics[0]
    assert "sft_config" in json.loads((out / "train_config.json").read_text())
    assert (out / "adapter_config.json").is_file()


def test_full_fine_tuning_writes_full_weights(tmp_path, tiny_model_dir, cli, ref_cache):
    from transformers import AutoModelForCausalLM

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "full"
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--full", "--max-steps", "1",
        "--learning-rate", "1e-3", *FAST,
    )  # fmt: skip
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(out)
    assert rows(out / "metrics.jsonl")[0]["loss"] == pytest.approx(0.693147, abs=1e-4)


def test_ddp_two_cpu_processes(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "ddp"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        "MIPO_CACHE": str(tmp_path / "c"),
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    # accelerate's --cpu launches one process (multi-CPU there means MPI); --multi_gpu is its torchrun launcher,
    # which on CPUs runs the processes over gloo.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mipo", "train", "--model", str(tiny_model_dir),
        "--pairs", str(pairs), "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--max-length", "64",
        "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = rows(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [1, 2]
    # Each step takes 2 pairs on each of the 2 processes: 4 of the 8 pairs, half an epoch (one process: a quarter).
    assert metrics[0]["epoch"] == 0.5
    assert metrics[0]["loss"] == pytest.approx(0.693147, abs=1e-4)
    assert (out / "adapter_model.safetensors").is_file()
    assert done.stdout.count("2 steps") == 1  # only the main process prints


# ---- errors: one line, exit code 2, nothing written ----


def _bad_pairs(tmp_path: Path) -> Path:
    path = write_pairs(tmp_path / "bad.jsonl", 3)
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    del row["chosen"]
    lines[1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_field", "bad.jsonl:2: field 'chosen': missing"),
        ("empty", "empty.jsonl: no pairs: the file is empty"),
        ("no_model", "unknown model 'no-such-model'"),
        ("full_with_lora", "--full fine-tunes all weights: drop the LoRA options --lora-r"),
        ("exists", "already exists; pass --resume to continue it or --overwrite to replace it"),
        ("unknown_dpo_key", "dpo: unknown DPOConfig field(s) ['no_such_field']"),
        ("wrong_type", "bad2.jsonl:1: field 'chosen': expected a list of messages"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path, tiny_model_dir, cli, case, expected):
    good = write_pairs(tmp_path / "pairs.jsonl", 2)
    out = tmp_path / "out"
    args = ["train", "--model", str(tiny_model_dir), "--pairs", str(good), "--out", str(out)]
    if case == "missing_field":
        args[4] = str(_bad_pairs(tmp_path))
    elif case == "empty":
        (tmp_path / "empty.jsonl").write_text("")
        args[4] = str(tmp_path / "empty.jsonl")
    elif case == "no_model":
        args[2] = "no-such-model"
    elif case == "full_with_lora":
        args += ["--full", "--lora-r", "8"]
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "unknown_dpo_key":
        args += ["--dpo", "no_such_field=1"]
    elif case == "wrong_type":
        (tmp_path / "bad2.jsonl").write_text(
            json.dumps({"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}) + "\n"
        )
        args[4] = str(tmp_path / "bad2.jsonl")
    code, _, err = cli(*args)
    assert code == 2
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1, err
    if case == "exists":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists()


def test_read_pairs_accepts_both_formats_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mipo.train_data import read_pairs

    chat = read_pairs(write_pairs(tmp_path / "chat.jsonl", 3))
    assert chat[0]["chosen"][0]["role"] == "assistant" and set(chat[0]) == {"prompt", "chosen", "rejected"}
    plain = read_pairs(write_pairs(tmp_path / "plain.jsonl", 3, conversational=False))
    assert isinstance(plain[0]["prompt"], str)
    pq.write_table(
        pa.Table.from_pylist([json.loads(x) for x in (tmp_path / "chat.jsonl").read_text().splitlines()]),
        tmp_path / "p.parquet",
    )
    assert read_pairs(tmp_path / "p.parquet") == chat
