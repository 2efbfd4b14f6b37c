"""SIGKILL at points drawn by a seeded random draw over a run's progress, then ``--resume`` (or a plain rerun
of ``mipo run``): the final artifact is the one of an uninterrupted run (issue 13). The real CLI runs in a
subprocess on the tiny model; a kill gives it no chance to clean up. docs/reliability.md quotes the seeds and
the numbers of kill points of this file (``mipo train``'s is in test_training.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from test_reliability import args, perturbed_copy, write_prompts

SRC = Path(__file__).parents[1] / "src"
KILL_POINTS = 3  # per command; docs/reliability.md quotes this number


def same_environment(**env: str) -> dict[str, str]:
    """Every run of a comparison, killed or not, gets one thread: a float sum split over another number of
    threads rounds otherwise, and near-tied logits of the tiny random model then pick other tokens on some
    CPUs (AVX-512 EPYC). A resume under another thread count is refused (docs/reliability.md)."""
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}


def run_to_end(argv: list, **env: str) -> None:
    """Run ``mipo ARGV`` in a subprocess with the killed runs' environment, to the end."""
    proc = subprocess.run(
        [sys.executable, "-m", "mipo", *map(str, argv)], env=same_environment(**env), capture_output=True
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


def run_killed_at(argv: list, progress: Callable[[], int], target: int, **env: str) -> bool:
    """Run ``mipo ARGV`` and SIGKILL it once ``progress()`` reaches ``target``; False if it finished first."""
    env = same_environment(**env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mipo", *map(str, argv)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while proc.poll() is None:
        if progress() >= target:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)  # a kill lands within a few ms of its point: a tiny step takes tens
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    return False


def lines(*patterns: tuple[Path, str]) -> int:
    """Lines flushed so far in the files matching each ``(folder, glob)``: what a kill leaves behind."""
    return sum(path.read_bytes().count(b"\n") for folder, glob in patterns for path in folder.glob(glob))


# --- mipo pairs, mipo sample ------------------------------------------------------------------------------


@pytest.mark.parametrize("command,units", [("pairs", 2), ("sample", 1)])
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_bytes(
    command, units, tmp_path, tiny_model_dir, cli
):
    n = 16
    prompts = write_prompts(tmp_path / "p.jsonl", n=n)
    full = tmp_path / "full.jsonl"
    run_to_end(args(command, tiny_model_dir, prompts, full, "--temperature", "1"))
    out = tmp_path / "killed.jsonl"
    # pairs flush a cached response and a row per prompt, sample a row: kill somewhere inside that.
    targets = sorted(random.Random(f"kill-{command}").sample(range(1, units * n), KILL_POINTS))
    kills = 0
    for k, target in enumerate(targets):
        resume = ["--resume"] if k else []
        argv = args(command, tiny_model_dir, prompts, out, "--temperature", "1", *resume)
        kills += run_killed_at(argv, lambda: lines((out.parent, out.name + ".*partial")), target)
        if out.exists():
            break
    assert kills >= 1
    if not out.exists():
        run_to_end(args(command, tiny_model_dir, prompts, out, "--temperature", "1", "--resume"))
    assert out.read_bytes() == full.read_bytes()
    assert not list(tmp_path.glob("killed.jsonl.*"))


# --- mipo eval ---------------------------------------------------------------------------------------------


EVAL_ITEMS, EVAL_SEEDS = 4, "1,2"


def eval_args(model: Path, baseline: Path, out: Path, *extra: str) -> list:
    """Two tasks x two roles x two seeds x 4 items, batches of 2: 32 rows, saved as each batch ends."""
    return [
        "eval", "--task", "prefs,gsm8k", "--model", model, "--baseline", baseline, "--out", out,
        "--limit", str(EVAL_ITEMS), "--seeds", EVAL_SEEDS, "--temperature", "1", "--batch-size", "2",
        "--max-new-tokens", "4", "--n-bootstrap", "200", "--workers", "1", "--no-progress",
        "--no-distillation-gap", *extra,  # the gap generates nothing and is computed once, at the end
    ]  # fmt: skip


def numbers(results: Path) -> dict:
    """What results.json reports, less when it was written and the command line's --out/--resume."""
    data = json.loads(results.read_text())
    return {k: v for k, v in data.items() if k not in ("created", "config")}


def test_eval_sigkill_at_random_points_then_resume_gives_the_uninterrupted_results(
    tmp_path, tiny_model_dir, cli, monkeypatch
):
    baseline = perturbed_copy(tiny_model_dir, tmp_path / "baseline")
    whole = tmp_path / "whole"
    # each run computes its own baseline
    run_to_end(eval_args(tiny_model_dir, baseline, whole), MIPO_CACHE=str(tmp_path / "cache-whole"))
    out, cache = tmp_path / "killed", str(tmp_path / "cache-killed")
    # 2 tasks (and prefs again without its contexts and with another user's) x 2 roles x 2 seeds
    total = (2 + 2) * 2 * 2 * EVAL_ITEMS
    targets = sorted(random.Random("kill-eval").sample(range(1, total), KILL_POINTS))
    kills = 0
    for k, target in enumerate(targets):
        argv = eval_args(tiny_model_dir, baseline, out, *(["--resume"] if k else []))
        kills += run_killed_at(argv, lambda: lines((out / "partial", "*.partial")), target, MIPO_CACHE=cache)
        assert (out / "partial" / "fingerprint.json").is_file() or (out / "results.json").exists()
        if (out / "results.json").exists():
            break
    assert kills >= 1
    if not (out / "results.json").exists():
        run_to_end(eval_args(tiny_model_dir, baseline, out, "--resume"), MIPO_CACHE=cache)
    assert numbers(out / "results.json") == numbers(whole / "results.json")
    examples = sorted(p.name for p in (whole / "examples").iterdir())
    assert examples == sorted(p.name for p in (out / "examples").iterdir()) and len(examples) == 8
    for name in examples:
        assert (out / "examples" / name).read_bytes() == (whole / "examples" / name).read_bytes(), name
    assert not (out / "partial").exists()


# --- mipo run: prompts -> pairs -> train -> eval -> report, killed inside pairs and inside train -----------

RUN_CONFIG = """\
title: kills
model: {model}
seed: 0
prompts: {{task: prefs, limit: 8, profiles_per_question: 1}}
pairs: {{strategy: random, max_new_tokens: 4, temperature: 1.0, chunk_size: 2, workers: 1, progress: false}}
train: {{max_steps: 3, save_steps: 1, batch_size: 2, max_length: 64}}
eval:
  - {{task: prefs, limit: 4, max_new_tokens: 4, temperature: 1.0, batch_size: 2, n_bootstrap: 200,
      workers: 1, progress: false}}
report: {{examples: 1}}
"""
PAIRS_UNITS = 2 * 8  # a cached response and a row per prompt


def run_progress(run_dir: Path) -> int:
    """Pairs flushed (all of them once pairs.jsonl exists), then training steps logged."""
    pairs = run_dir / "pairs"
    done = (pairs / "pairs.jsonl").exists()
    flushed = PAIRS_UNITS if done else lines((pairs, "pairs.jsonl.*partial"))
    return flushed + lines((run_dir / "train" / "model", "metrics.jsonl"))


def test_run_sigkill_in_pairs_and_in_train_then_rerun_gives_the_uninterrupted_results(
    tmp_path, tiny_model_dir, cli, monkeypatch
):
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG.format(model=tiny_model_dir))
    # not siblings: mipo run would copy the finished stages of a sibling run folder instead of running them
    whole, run_dir = tmp_path / "a" / "whole", tmp_path / "b" / "killed"
    run_to_end(["run", config, f"run_dir={whole}"], MIPO_CACHE=str(tmp_path / "cache-whole"))
    cache = str(tmp_path / "cache-killed")
    draw = random.Random("kill-run")
    targets = sorted(draw.sample(range(1, PAIRS_UNITS), 2)) + [PAIRS_UNITS + draw.randrange(1, 3)]
    for target, stage in zip(targets, ["pairs", "pairs", "train"]):
        argv = ["run", config, f"run_dir={run_dir}"]
        assert run_killed_at(argv, lambda: run_progress(run_dir), target, MIPO_CACHE=cache)
        state = json.loads((run_dir / stage / "stage.json").read_text())
        assert state["finished"] is False  # the kill landed inside this stage
    run_to_end(["run", config, f"run_dir={run_dir}"], MIPO_CACHE=cache)
    for artifact in ("prompts/prompts.jsonl", "pairs/pairs.jsonl", "eval/prefs/examples/prefs.model.jsonl"):
        assert (run_dir / artifact).read_bytes() == (whole / artifact).read_bytes(), artifact
    losses = [
        [r["loss"] for r in map(json.loads, (d / "train/model/metrics.jsonl").open())]
        for d in (run_dir, whole)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and len(losses[0]) == 3
    scores = [
        json.loads((d / "eval/prefs/results.json").read_text())["tasks"]["prefs"] for d in (run_dir, whole)
    ]
    for part in ("model", "baseline", "difference"):  # the trained model's path differs, its numbers may not
        assert scores[0][part] == scores[1][part], part


def test_run_killed_after_a_command_finished_but_before_its_stage_did_goes_on(
    tmp_path, tiny_model_dir, cli, monkeypatch
):
    """The narrowest window of a kill in ``mipo run``: pairs.jsonl (or train_summary.json) written, stage.json
    not yet marked finished. The rerun takes the finished output instead of refusing to resume it forever."""
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG.format(model=tiny_model_dir))
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert cli("run", config, f"run_dir={run_dir}")[0] == 0
    kept = ["pairs/pairs.jsonl", "train/model/adapter_model.safetensors", "eval/prefs/results.json"]
    before = {name: (run_dir / name).read_bytes() for name in kept}
    for stage in ("pairs", "train", "eval/prefs"):
        state_file = run_dir / stage / "stage.json"
        state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "finished": False}))
    code, _, err = cli("run", config, f"run_dir={run_dir}")
    assert code == 0, err
    assert {name: (run_dir / name).read_bytes() for name in kept} == before  # taken as they were, not redone
    assert json.loads((run_dir / "train" / "stage.json").read_text())["finished"] is True
