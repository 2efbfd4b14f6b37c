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
    monkeypatch.setattr("mipo.training.ref_cache.cache_dir", lambda: folder)
    return folder


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


FAST = ["--batch-size", "4", "--max-length", "64", "--save-steps", "2"]


def test_lora_run_writes_model_folder_and_reuses_reference_cache(tmp_path, tiny_model_dir, cli, ref_cache):
    from transformers import AutoModelForCausalLM

    from mipo.engine.models import load_model
    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

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

    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

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


def test_a_full_fine_tune_trained_in_bf16_is_saved_in_bf16(tmp_path, tiny_model_dir, cli, ref_cache):
    """fp32 master weights under bf16 autocast (what a GPU gets by default; --bf16 asks for it on a CPU) are
    written in bf16: half the size, and what vLLM serves."""
    from safetensors import safe_open

    out = tmp_path / "full"
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", write_pairs(tmp_path / "pairs.jsonl"), "--out", out,
        "--full", "--max-steps", "1", "--bf16", *FAST,
    )  # fmt: skip
    assert code == 0, err
    with safe_open(out / "model.safetensors", framework="pt") as weights:
        assert {str(weights.get_tensor(name).dtype) for name in weights.keys()} == {"torch.bfloat16"}


def test_ddp_two_cpu_processes(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "ddp"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
        "MIPO_CACHE": str(tmp_path / "c"),
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    # accelerate's --cpu launches one process (multi-CPU there means MPI); --multi_gpu is its torchrun launcher,
    # which on CPUs runs the processes over gloo.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mipo", "train", "--model", str(tiny_model_dir),
        "--pairs", str(pairs), "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--max-length", "64",
        "--device", "cpu", "--dtype", "float32",
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
        (
            "gpu_index",
            "--device cuda:1: mipo train takes cpu or cuda; choose the GPU with CUDA_VISIBLE_DEVICES",
        ),
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
    elif case == "gpu_index":  # the Trainer took cuda:0 whatever the index said
        args += ["--device", "cuda:1"]
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

    from mipo.formats.pairs_file import read_pairs

    chat = read_pairs(write_pairs(tmp_path / "chat.jsonl", 3))
    assert chat[0]["chosen"][0]["role"] == "assistant" and set(chat[0]) == {"prompt", "chosen", "rejected"}
    plain = read_pairs(write_pairs(tmp_path / "plain.jsonl", 3, conversational=False))
    assert isinstance(plain[0]["prompt"], str)
    pq.write_table(
        pa.Table.from_pylist([json.loads(x) for x in (tmp_path / "chat.jsonl").read_text().splitlines()]),
        tmp_path / "p.parquet",
    )
    assert read_pairs(tmp_path / "p.parquet") == chat


# ---- nothing lost (issue 13): overwrite removes only what a mipo run wrote; resume checks what it resumes ----


def _one_line_error(cli, *args) -> str:
    code, _, err = cli(*args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_overwrite_refuses_a_folder_mipo_did_not_write(tmp_path, tiny_model_dir, cli):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    proj = tmp_path / "proj"
    (proj / "checkpoints").mkdir(parents=True)  # looked like a mipo run to the old check
    (proj / "data").mkdir()
    (proj / "data" / "corpus.txt").write_text("years of work")
    (proj / "thesis.tex").write_text("x")
    err = _one_line_error(
        cli, "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", proj, "--overwrite", *FAST
    )
    assert "not written by a mipo training run (no mipo_run.json)" in err
    assert (proj / "thesis.tex").read_text() == "x"
    assert (proj / "data" / "corpus.txt").read_text() == "years of work"
    assert (proj / "checkpoints").is_dir()


def test_an_output_that_holds_an_input_is_refused_before_anything_is_touched(tmp_path, tiny_model_dir, cli):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    pairs = write_pairs(run / "pairs.jsonl", 2)
    before = pairs.read_bytes()
    err = _one_line_error(
        cli, "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", run, "--overwrite", *FAST
    )
    assert f"--pairs {pairs} is inside --out {run}" in err
    assert pairs.read_bytes() == before

    model = tmp_path / "runA"
    shutil.copytree(tiny_model_dir, model)
    files = sorted(p.name for p in model.iterdir())
    other = write_pairs(tmp_path / "other.jsonl", 2)
    err = _one_line_error(
        cli, "train", "--model", model, "--pairs", other, "--out", model, "--overwrite", *FAST
    )
    assert f"--model {model} is inside --out {model}" in err
    assert sorted(p.name for p in model.iterdir()) == files


def test_overwrite_replaces_only_the_runs_own_files_and_only_once_it_succeeded(
    tmp_path, tiny_model_dir, cli, ref_cache
):
    from transformers import TrainerCallback

    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    out = tmp_path / "run"
    args = ["train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--max-steps", "1", *FAST]
    code, _, err = cli(*args)
    assert code == 0, err
    marker = json.loads((out / "mipo_run.json").read_text())
    assert {"adapter_model.safetensors", "train_summary.json", "metrics.jsonl"} <= set(marker["entries"])
    (out / "notes.md").write_text("my notes")  # the user's, not the run's
    adapter = (out / "adapter_model.safetensors").read_bytes()

    class Fail(Exception):
        pass

    class FailAtFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise Fail

    config = TrainConfig(
        model=str(tiny_model_dir), pairs=str(pairs), out=str(out), overwrite=True, max_steps=1, batch_size=4,
        max_length=64, learning_rate=1e-2,
    )  # fmt: skip
    with pytest.raises(Fail):
        train(config, callbacks=[FailAtFirstStep()])
    assert (out / "adapter_model.safetensors").read_bytes() == adapter  # the old artifact is whole
    assert (out / "train_summary.json").is_file()

    code, _, err = cli(*args, "--overwrite", "--learning-rate", "1e-2")
    assert code == 0, err
    assert (out / "notes.md").read_text() == "my notes"
    assert (out / "adapter_model.safetensors").read_bytes() != adapter
    assert json.loads((out / "train_config.json").read_text())["dpo_config"]["learning_rate"] == 1e-2
    assert not any(p.name.startswith(".run.") for p in tmp_path.iterdir())  # the staging folder is gone


def test_resume_refuses_another_job_and_a_finished_run(tmp_path, tiny_model_dir, cli, ref_cache, capsys):
    from transformers import TrainerCallback

    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "cut"

    class StopAtThree(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Interrupt

    with pytest.raises(Interrupt):
        train(
            TrainConfig(
                model=str(tiny_model_dir), pairs=str(pairs), out=str(out), max_steps=4, save_steps=2,
                batch_size=4, max_length=64,
            ),
            callbacks=[StopAtThree()],
        )  # fmt: skip
    capsys.readouterr()  # the interrupted run's progress bars
    base = ["train", "--model", tiny_model_dir, "--out", out, "--max-steps", "4", "--save-steps", "2"]
    base += ["--batch-size", "4", "--max-length", "64", "--resume"]
    err = _one_line_error(cli, *base, "--pairs", pairs, "--beta", "0.3")
    assert "cannot resume the training in" in err and "settings.beta: 0.1 -> 0.3" in err
    other = write_pairs(tmp_path / "other.jsonl", 17)
    err = _one_line_error(cli, *base, "--pairs", other)
    assert "pairs: sha256:" in err
    cut = out / "checkpoints" / "checkpoint-3"  # a checkpoint a kill cut before its trainer_state.json
    cut.mkdir()
    (cut / "adapter_model.safetensors").write_bytes(b"half")
    code, _, err = cli(*base, "--pairs", pairs)
    assert code == 0, err
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"].endswith("checkpoint-2")
    assert [r["step"] for r in rows(out / "metrics.jsonl")] == [1, 2, 3, 4]
    err = _one_line_error(cli, *base, "--pairs", pairs)
    assert "this training run is finished" in err and "pass --resume" not in err
    err = _one_line_error(cli, *base[:-1], "--pairs", pairs)  # neither --resume nor --overwrite
    assert "holds a finished training run; pass --overwrite to train it again" in err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--dpo", "beta=abc"], "dpo: beta must be float, got 'abc'"),
        (["--dpo", "warmup_steps=soon"], "dpo: warmup_steps must be float, got 'soon'"),
        (["--save_total_limit", "many"], "dpo: save_total_limit must be int or null, got 'many'"),
        (
            ["--dpo", "lr_scheduler_kwargs=3"],
            "dpo: lr_scheduler_kwargs must be mapping or str or null, got 3",
        ),
        (
            ["--objective", "dpoo"],
            "unknown training objective 'dpoo'; known: cca, dpo, guidance, infonce, sami, sft",
        ),
        (
            ["--out", "/proc/mipo-test/run"],
            "--out /proc/mipo-test/run: cannot create it (No such file or directory)",
        ),
        (["--objective", "sft", "--dpo", "precompute_ref_log_probs=true"], "unknown SFTConfig field(s)"),
    ],
)
def test_wrongly_typed_trainer_fields_are_refused_before_any_folder(
    tmp_path, tiny_model_dir, cli, flags, expected
):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    out = tmp_path / "out"
    err = _one_line_error(cli, "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, *flags)
    assert expected in err, err
    assert not out.exists()


# ---- configs in TRL's vocabulary (issue 12) ----


def test_trl_names_are_flags_and_yaml_keys(tmp_path, tiny_model_dir, cli, ref_cache):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    settings = tmp_path / "train.yaml"
    settings.write_text(
        "weight_decay: 0.01\nepochs: 3\ndpo: {adam_beta2: 0.99}\n"
    )  # an old name, TRL's, a mapping
    out = tmp_path / "run"
    code, stdout, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--config", settings,
        "--per_device_train_batch_size", "2", "--num_train_epochs", "1", "--max_steps", "2", "--max_length", "64",
        "--warmup_steps", "1", "--lr_scheduler_type", "constant_with_warmup", "--learning_rate", "1e-4",
        "--use_liger_kernel", "false", "--logging_first_step",
    )  # fmt: skip
    assert code == 0, err
    assert "2 steps" in stdout
    used = json.loads((out / "train_config.json").read_text())["dpo_config"]
    assert used["per_device_train_batch_size"] == 2 and used["num_train_epochs"] == 1.0
    assert (used["max_steps"], used["warmup_steps"], used["lr_scheduler_type"]) == (
        2,
        1,
        "constant_with_warmup",
    )
    assert (used["learning_rate"], used["weight_decay"], used["adam_beta2"]) == (1e-4, 0.01, 0.99)
    assert used["logging_first_step"] is True and used["use_liger_kernel"] is False


def test_train_help_shows_real_defaults_and_every_trl_field(cli, capsys):
    import dataclasses

    from trl import DPOConfig, SFTConfig

    with pytest.raises(SystemExit) as done:
        cli("train", "--help")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # as one line, whatever the terminal width
    assert "LoRA rank (default: 16)" in text and "(default: None)" not in text
    assert "(prompt, chosen, rejected) (required)" in text and "metrics) (required)" in text
    assert "peak learning rate (default: 2e-4 with LoRA, 5e-7 with --full)" in text
    assert "--per_device_train_batch_size" in text and "--batch-size" in text
    assert "--no-overwrite" not in text and "--no-full" not in text and "--no-ref-cache" in text
    for config_class in (DPOConfig, SFTConfig):
        for field in dataclasses.fields(config_class):
            if field.init and field.name != "output_dir":
                assert f"--{field.name}" in text, field.name


def test_old_names_and_python_keywords_still_work():
    from mipo.core.config import from_dict
    from mipo.training.config import TrainConfig

    old = from_dict(
        TrainConfig, {"pairs": "p", "out": "o", "epochs": 2, "batch_size": 4, "grad_accumulation": 3}
    )
    new = TrainConfig(pairs="p", out="o", epochs=2, batch_size=4, grad_accumulation=3)
    for config in (old, new):
        assert (config.num_train_epochs, config.per_device_train_batch_size) == (2, 4)
        assert config.gradient_accumulation_steps == 3
    unset = from_dict(TrainConfig, {"pairs": "p", "out": "o", "lora_r": None, "batch_size": None})
    assert (unset.lora_r, unset.per_device_train_batch_size) == (16, 8)  # null, as old configs wrote "unset"
    moved = TrainConfig(pairs="p", out="o", dpo={"beta": 0.3, "warmup_steps": 5})
    assert moved.beta == 0.3 and moved.dpo == {"warmup_steps": 5}
    with pytest.raises(Exception, match="set beta either as a flag or in dpo, not both"):
        TrainConfig(pairs="p", out="o", beta=0.2, dpo={"beta": 0.3})


def test_sigkill_at_seeded_points_then_resume_reaches_the_same_losses(tmp_path, tiny_model_dir, ref_cache):
    """Kill `mipo train` (SIGKILL, no cleanup) at points drawn by a seeded random draw over its steps, resume
    each time; the metrics match an uninterrupted run's. A kill can land inside a checkpoint's writing."""
    import random
    import signal
    import time

    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    pairs = write_pairs(tmp_path / "pairs.jsonl", 12)
    settings = ["--max-steps", "6", "--save-steps", "1", "--batch-size", "2", "--max-length", "64"]
    whole = train(
        TrainConfig(
            model=str(tiny_model_dir), pairs=str(pairs), out=str(tmp_path / "whole"), max_steps=6, save_steps=1,
            batch_size=2, max_length=64,
        )
    )  # fmt: skip
    expected = [r["loss"] for r in rows(whole / "metrics.jsonl")]
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "mipo", "train", "--model", str(tiny_model_dir), "--pairs", str(pairs)]
    command += [
        "--out",
        str(out),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        *settings,
    ]  # auto: fp32 in-process
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "MIPO_CACHE": str(ref_cache)}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    kill_points = sorted(random.Random(13).sample(range(1, 6), 2))  # after this many metrics rows
    for attempt, point in enumerate(kill_points):
        process = subprocess.Popen(
            command + (["--resume"] if attempt else []),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= point:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
        assert not (out / "train_summary.json").exists()
    done = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(out / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == pytest.approx(expected, abs=1e-5)


def test_a_full_disk_while_training_is_one_line_and_the_run_resumes(tmp_path, tiny_model_dir, ref_cache):
    import errno

    from transformers import TrainerCallback

    from mipo.core.errors import MipoError
    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "run"

    class DiskFullAtThree(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise OSError(
                    errno.ENOSPC, "No space left on device", str(out / "checkpoints" / "checkpoint-3")
                )

    def config(**kw) -> TrainConfig:
        return TrainConfig(
            model=str(tiny_model_dir), pairs=str(pairs), out=str(out), max_steps=4, save_steps=2, batch_size=4,
            max_length=64, **kw,
        )  # fmt: skip

    with pytest.raises(
        MipoError, match="checkpoint-3: No space left on device; the checkpoints written so far"
    ):
        train(config(), callbacks=[DiskFullAtThree()])
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    summary = json.loads((train(config(resume=True)) / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
