"""Two processes (gloo, CPU) where only the main one finds the reference log-probs in its cache: it decides
for both and sends them the numbers, so no process waits forever for another and both train from the same
reference (a first step's loss of ln 2: the LoRA policy equals its reference)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import rows, write_pairs

# Each process gets its own $MIPO_CACHE (as two nodes would): process 0 the filled one, process 1 an empty one.
LAUNCHED = """
import os, sys
os.environ["MIPO_CACHE"] = sys.argv[1] if os.environ["RANK"] == "0" else sys.argv[2]
from mipo.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_only_the_main_process_finds_the_reference_cache_and_nothing_hangs(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    train = [
        "train",
        "--model",
        str(tiny_model_dir),
        "--pairs",
        str(pairs),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
    ]
    train += ["--max-length", "64", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    filled, empty = tmp_path / "filled", tmp_path / "empty"
    first = subprocess.run(
        [sys.executable, "-m", "mipo", *train, "--out", str(tmp_path / "one")],
        env={**env, "MIPO_CACHE": str(filled)}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(list(filled.glob("ref_logps/*.json"))) == 1
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533", str(script),
        str(filled), str(empty), *train, "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["reference_cache_hit"] is True
    assert not empty.exists() or not list(empty.glob("ref_logps/*.json"))  # process 1 computed nothing
    # both processes read the reference the main one sent: at step 1 the policy equals it on all 4 pairs
    assert rows(tmp_path / "two" / "metrics.jsonl")[0]["loss"] == pytest.approx(0.693147, abs=1e-4)
