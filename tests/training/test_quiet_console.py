"""The console of a model load and a training step holds mipo's lines and progress bars, no library noise:
transformers' "The following layers were not sharded" (its tensor-parallel plan check, run at every load once
the ``transformers.modeling_utils`` logger had a level of its own) and the FutureWarnings for the old gradient
checkpointing names that PEFT and TRL call. The training runs in a subprocess: pytest captures warnings, a
user's terminal does not."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

from test_training import FAST, write_pairs

from mipo.cli import LIBRARY_VERBOSITY, configure_logging

PROGRESS_BAR = re.compile(r"\d+%\|")
NOISE = ("not sharded", "Warning", "deprecated", "[transformers]", "keep_end")


def noise(stderr: str) -> list[str]:
    """The lines that are neither mipo's log lines nor progress bars."""
    lines = stderr.replace("\r", "\n").splitlines()
    return [
        line
        for line in lines
        if line.strip()
        and not line.startswith(("INFO mipo.", "WARNING mipo."))
        and not PROGRESS_BAR.search(line)
    ]


def test_a_training_run_prints_only_mipos_lines_and_progress_bars(tmp_path, tiny_model_dir):
    """The model load, the reference pass (fresh cache), a LoRA step with activation checkpointing (where TRL
    and PEFT call the old names) and the merge; then the adapter and merged folders load quietly too."""
    from mipo.engine.models import load_model

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mipo", "train", "--model", str(tiny_model_dir), "--pairs", str(pairs)]
    command += ["--out", str(out), "--device", "cpu", "--max-steps", "1", "--merge", *FAST]
    command += ["--activation_checkpointing", "true"]
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
        "MIPO_CACHE": str(tmp_path / "cache"),
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    for variable in ("PYTHONWARNINGS", *LIBRARY_VERBOSITY):
        env.pop(variable, None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert noise(done.stderr) == [], done.stderr[-3000:]
    assert "INFO mipo.training.trainer: trained 1 steps" in done.stderr

    # In-process, with the CLI's logging: stderr has no noise and no FutureWarning is raised.
    levels = {name: logging.getLogger(name).level for name in ("transformers", "transformers.modeling_utils")}
    try:
        configure_logging(verbose=False)
        for folder in (out, out / "merged"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                load_model(str(folder), device="cpu")
            assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == [], folder
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_load_model_prints_no_sharding_report(tiny_model_dir, capfd):
    from mipo.engine.models import load_model

    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    try:
        configure_logging(verbose=False)
        assert logger.level == logging.NOTSET  # its own level (WARNING) would run transformers' TP plan check
        load_model(str(tiny_model_dir), device="cpu")
        err = capfd.readouterr().err
    finally:
        logger.setLevel(level)
    assert not any(word in err for word in NOISE), err


def test_verbose_shows_the_libraries_info(monkeypatch):
    names = ("transformers", "datasets", "peft")
    levels = {name: logging.getLogger(name).level for name in names}
    for variable in LIBRARY_VERBOSITY:  # restored at teardown, set or not
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    try:
        configure_logging(verbose=True)
        assert all(logging.getLogger(name).level == logging.INFO for name in names)
        assert all(os.environ[variable] == "info" for variable in LIBRARY_VERBOSITY)  # read at a later import
        configure_logging(verbose=False)
        assert all(logging.getLogger(name).level == logging.WARNING for name in names)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_the_old_checkpointing_name_is_passed_under_the_new_one(tmp_path):
    """A user's ``gradient_checkpointing`` (transformers 5's deprecated name) reaches TRL as
    ``activation_checkpointing``, over mipo's device default, and building the config warns nothing."""
    from mipo.training.config import TrainConfig, trl_settings

    def settings(dpo: dict, device: str) -> dict:
        config = TrainConfig(pairs="pairs.jsonl", out=str(tmp_path / "run"), dpo=dpo)
        found = trl_settings(config, config.training_objective(), tmp_path / "run", device)
        return {k: v for k, v in found.items() if k.endswith("_checkpointing")}

    assert settings({}, "cpu") == {"activation_checkpointing": False}
    assert settings({}, "cuda") == {"activation_checkpointing": True}
    assert settings({"gradient_checkpointing": True}, "cpu") == {"activation_checkpointing": True}
    assert settings({"gradient_checkpointing": False}, "cuda") == {"activation_checkpointing": False}
    config = TrainConfig(pairs="pairs.jsonl", out=str(tmp_path / "run"), dpo={"gradient_checkpointing": True})
    objective = config.training_objective()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = objective.config()(**trl_settings(config, objective, tmp_path / "run", "cpu"))
    assert args.activation_checkpointing is True
