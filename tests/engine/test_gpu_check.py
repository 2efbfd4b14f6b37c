"""scripts/gpu_check.py, the one command a GPU machine runs, runs here with --cpu (so it cannot rot): the
tiny model's checks pass and it reports every measure, one key=value line and the same as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_the_cpu_and_reports_every_check_and_measure(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for check in ("shared_prompt_fp32", "shared_prompt_bf16", "lora_dpo", "full_dpo", "hf_greedy"):
        assert results[check] is True, check
    assert (
        results["full_models_alive"] == 1
    )  # the full fine-tune's reference copy is gone when training starts
    for measure in (
        "train_tokens_s_mipo",
        "train_tokens_s_trl",
        "gen_tokens_s_mipo",
        "gen_tokens_s_generate",
    ):
        assert results[measure] > 0, measure
    (line,) = done.stdout.strip().splitlines()
    assert line.startswith("device=cpu ") and "train_vs_trl=" in line and "gen_vs_generate=" in line
