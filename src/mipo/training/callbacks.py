"""Trainer callbacks: one ``metrics.jsonl`` row per logging step, and a PNG of loss and reward margins.

``MetricsCallback`` is a plain ``TrainerCallback``: it reads what TRL logs (loss, ``rewards/*``, learning
rate, the running ``num_tokens``) and adds ``tokens_per_second``: chosen plus rejected tokens (prompt and
response, no padding, all processes) per second of wall time since the previous logging step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

KEYS = (
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "kl",  # sami --kl_coef; guidance: KL(teacher || policy) per token
    "preserve_kl",  # guidance --preserve
    "decisions",  # guidance: the share of CAD's decisions the policy takes
    "unlikelihood",  # guidance --unlikelihood: of the repeated n-grams in the policy's own replies
    "own_repeating",  # guidance --unlikelihood: the share of its own replies that repeat an n-gram
    "own_context_loops",  # guidance --unlikelihood_pmi: the share whose repeats the context lifts
    "learning_rate",
    "grad_norm",
    "num_tokens",
)


class QuietProgressCallback(ProgressCallback):
    """Trainer's progress bar without its printing of every log dict to stdout (metrics.jsonl holds them)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


def use_quiet_progress(trainer) -> None:
    """The library logs, only the CLI prints: keep the bar, drop the Trainer's printing of each log dict."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgressCallback)


class MetricsCallback(TrainerCallback):
    """Append a row to ``path`` (flushed) at each logging step; on resume keep only rows up to ``resume_step``."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break  # cut by the kill
                if row.get("step", 0) <= resume_step:
                    self.rows.append(row)
        self._file = None
        self._last: tuple[float, float] | None = None  # (time, num_tokens) at the previous log

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), 0.0)
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
            for row in self.rows:
                self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return  # the end-of-training summary log, not a step
        now = time.perf_counter()
        tokens = float(logs.get("num_tokens", 0.0))
        last_time, last_tokens = self._last or (now, 0.0)
        if tokens < last_tokens:  # TRL's running count restarts at 0 on resume
            last_tokens = 0.0
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 4)}
        row.update({k: logs[k] for k in KEYS if k in logs})
        row["tokens_per_second"] = round((tokens - last_tokens) / max(now - last_time, 1e-9), 2)
        self._last = (now, tokens)
        self.rows.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self._file is not None:
            self._file.close()
            self._file = None
