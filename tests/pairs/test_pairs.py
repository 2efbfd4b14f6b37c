"""``mipo pairs`` end to end on the tiny model: rows, strategies, errors, resume, processes, TRL training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mipo.core.errors import MipoError, OutputExistsError


def write_prompts(path: Path, n: int = 6, *, context: bool = True, **extra) -> Path:
    rows = []
    for i in range(n):
        row = {"id": f"q{i}", "prompt": f"Question {i}: what is {i} plus {i}? Answer briefly.", **extra}
        if context:
            row["context"] = f"About me: I am user {i % 3}; always answer in lowercase."
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def config(tiny_model_dir, prompts, out, **kw):
    from mipo.pairs.config import PairsConfig

    return PairsConfig(
        model=str(tiny_model_dir), prompts=str(prompts), out=str(out), max_new_tokens=8, progress=False, **kw
    )


def test_random_pairs_reuse_each_response_once_as_rejected(tmp_path, tiny_model_dir):
    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl")
    summary = run_pairs(config(tiny_model_dir, prompts, tmp_path / "pairs.jsonl", chunk_size=2))
    rows = read_rows(tmp_path / "pairs.jsonl")
    assert sorted(r["id"] for r in rows) == [f"q{i}" for i in range(6)] and summary.pairs == 6
    chosen = {r["id"]: r["chosen"][0]["content"] for r in rows}
    by_prompt = {json.dumps(r["prompt"]): r["id"] for r in rows}
    negatives_used = []
    for r in rows:
        assert r["prompt"][-1] == {
            "role": "user",
            "content": f"Question {r['id'][1:]}: what is {r['id'][1:]} plus {r['id'][1:]}? Answer briefly.",
        }
        assert (
            r["prompt"][0]["role"] == "system" and "About me" in r["prompt"][0]["content"]
        )  # default: system
        assert r["negative_prompt"] != r["prompt"] and r["chosen"][0]["role"] == "assistant"
        other = by_prompt[json.dumps(r["negative_prompt"])]
        assert r["rejected"] == [{"role": "assistant", "content": chosen[other]}]  # no second generation
        negatives_used.append(other)
        assert r["strategy"] == "random" and r["seed"] == 0
        assert r["generation"]["temperature"] == 0.1 and r["generation"]["top_p"] == 0.9
    assert sorted(negatives_used) == sorted(chosen)  # each response is rejected exactly once
    assert summary.stats.new_tokens > 0 and "tokens/s" in summary.line()
    assert not list(tmp_path.glob("*.partial"))


def test_incomplete_pairs_drop_identical_and_empty_ones(tmp_path, tiny_model_dir, monkeypatch):
    import mipo.engine.generation as generation
    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl", n=3)
    out = tmp_path / "pairs.jsonl"

    def scripted(model, tokenizer, conversations, **kwargs):
        # q0: same reply with and without context; q1: an empty reply without it; q2: different replies.
        replies = []
        for conv in conversations:
            with_context, n = conv[0]["role"] == "system", conv[-1]["content"].split()[1].rstrip(":")
            replies.append(
                [{"0": "same", "1": "yes" if with_context else "", "2": "a" if with_context else "b"}[n]]
            )
        return replies

    monkeypatch.setattr(generation, "generate_responses", scripted)
    summary = run_pairs(config(tiny_model_dir, prompts, out, strategy="incomplete"))
    rows = read_rows(out)
    assert [(r["id"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("q2", "a", "b")
    ]
    assert rows[0]["negative_prompt"] == [rows[0]["prompt"][-1]]  # the same question with no context
    assert summary.dropped["identical chosen and rejected"] == 1 and summary.dropped["empty response"] == 1
    assert "1 identical chosen and rejected, 1 empty response" in summary.line()


def test_mixed_pairs_say_which_strategy_made_each_negative_and_whether_it_has_a_context(
    tmp_path, tiny_model_dir
):
    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl", n=3)
    out = tmp_path / "pairs.jsonl"
    run_pairs(config(tiny_model_dir, prompts, out, strategy="mixed", temperature=1.0))
    rows = {r["id"]: r for r in read_rows(out)}
    assert sorted(rows) == [f"q{i}-0-{q}" for i in range(3) for q in (0, 1)]  # both negatives of each prompt
    for i in range(3):
        without, other = rows[f"q{i}-0-0"], rows[f"q{i}-0-1"]
        assert (without["strategy"], without["negative_context"]) == ("incomplete", False)
        assert without["negative_prompt"] == [without["prompt"][-1]]  # the question alone
        assert (other["strategy"], other["negative_context"]) == ("other-context", True)
        assert other["negative_prompt"][-1] == other["prompt"][-1]  # the same question...
        assert other["negative_prompt"][0]["content"] != other["prompt"][0]["content"]  # ...another context
    run_pairs(config(tiny_model_dir, prompts, tmp_path / "r.jsonl"))
    assert all(r["negative_context"] and r["strategy"] == "random" for r in read_rows(tmp_path / "r.jsonl"))


def test_samples_times_negatives_pairs_per_prompt(tmp_path, tiny_model_dir):
    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "pairs.parquet"
    run_pairs(config(tiny_model_dir, prompts, out, samples=2, negatives=2, temperature=1.0))
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4 * 2 * 2
    assert sorted({r["id"] for r in rows}) == sorted(
        f"q{i}-{s}-{q}" for i in range(4) for s in (0, 1) for q in (0, 1)
    )


def test_resume_after_a_kill_gives_the_uninterrupted_output(tmp_path, tiny_model_dir, monkeypatch):
    import mipo.engine.generation as generation
    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl", n=8)
    run_pairs(config(tiny_model_dir, prompts, tmp_path / "full.jsonl", chunk_size=2, temperature=1.0))
    real = generation.generate_responses
    calls = []

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_responses", dies_on_third_chunk)
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_pairs(config(tiny_model_dir, prompts, out, chunk_size=2, temperature=1.0))
    assert not out.exists() and 0 < len(read_rows(tmp_path / "pairs.jsonl.partial")) < 8
    with pytest.raises(MipoError, match="interrupted run; pass --resume"):
        run_pairs(config(tiny_model_dir, prompts, out, chunk_size=2, temperature=1.0))
    monkeypatch.setattr(generation, "generate_responses", real)
    run_pairs(config(tiny_model_dir, prompts, out, chunk_size=2, temperature=1.0, resume=True))
    resumed = sorted(read_rows(out), key=lambda r: r["id"])
    assert resumed == sorted(read_rows(tmp_path / "full.jsonl"), key=lambda r: r["id"])
    with pytest.raises(OutputExistsError):
        run_pairs(config(tiny_model_dir, prompts, out))
    run_pairs(config(tiny_model_dir, prompts, out, overwrite=True, limit=3))
    assert len(read_rows(out)) == 3


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, tiny_model_dir, cli):
    same = tmp_path / "same.jsonl"
    same.write_text('{"prompt": "Hi"}\n{"prompt": "Hi"}\n', encoding="utf-8")
    out = tmp_path / "pairs.jsonl"
    code, _, err = cli("pairs", "--model", tiny_model_dir, "--prompts", same, "--out", out)
    assert code == 2 and "1 distinct prompt(s)" in err and str(same) in err and "Traceback" not in err
    no_context = write_prompts(tmp_path / "nc.jsonl", n=3, context=False)
    code, _, err = cli(
        "pairs", "--model", tiny_model_dir, "--prompts", no_context, "--out", out, "--strategy", "incomplete"
    )
    assert code == 2 and f"{no_context}:1: field 'context': no context" in err
    code, _, err = cli("pairs", "--prompts", no_context, "--out", tmp_path / "x.txt")
    assert code == 2 and "out must end in .jsonl or .parquet" in err
    assert not out.exists()


def test_too_long_prompts_are_skipped_and_counted(tmp_path, tiny_model_dir, cli):
    prompts = write_prompts(tmp_path / "p.jsonl", n=3)
    with prompts.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "long", "prompt": "word " * 1100, "context": "c"}) + "\n")
    code, out, _ = cli(
        "pairs",
        "--model",
        tiny_model_dir,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "o.jsonl",
        "--max-new-tokens",
        "4",
        "--no-progress",
    )
    assert code == 0 and "wrote 3 pairs from 3 prompts" in out and "1 too long for the model" in out
    assert "long" not in {r["id"] for r in read_rows(tmp_path / "o.jsonl")}


def test_two_processes_split_the_prompts_and_merge_one_output(tmp_path, tiny_model_dir):
    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl", n=7)
    run_pairs(config(tiny_model_dir, prompts, tmp_path / "one.jsonl", chunk_size=2, temperature=1.0))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29517",
            "-m",
            "mipo",
            "pairs",
            "--model",
            str(tiny_model_dir),
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "two.jsonl"),
            "--max-new-tokens",
            "8",
            "--chunk-size",
            "2",
            "--temperature",
            "1.0",
            "--no-progress",
            "--dtype",  # as the in-process run's auto (the suite's fixture), on any CPU
            "float32",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("wrote 7 pairs") == 1  # only process 0 reports
    two = sorted(read_rows(tmp_path / "two.jsonl"), key=lambda r: r["id"])
    assert [r["id"] for r in two] == [f"q{i}" for i in range(7)]
    assert two == sorted(
        read_rows(tmp_path / "one.jsonl"), key=lambda r: r["id"]
    )  # same chunks, same samples
    assert not list(tmp_path.glob("two.jsonl.*"))


def test_pairs_train_one_dpo_step_with_trl_unchanged(tmp_path, tiny_model_dir):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "pairs.jsonl"
    run_pairs(config(tiny_model_dir, prompts, out))
    dataset = datasets.load_dataset("json", data_files=str(out), split="train")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0
