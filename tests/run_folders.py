"""A `mipo run` folder written by hand, as the report reads it: shared by the report's and the pipeline's
tests (importable from any test: this folder is on pytest's path)."""

from __future__ import annotations

import json
from pathlib import Path


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _summary(mean: float, low: float, high: float, **extra) -> dict:
    return {"mean": mean, "ci": [low, high], "n": 4, **extra}


def write_run_folder(
    run: Path, *, objective: str = "dpo", confidence: float = 0.95, items: int = 4, margins: bool = True
) -> Path:
    """A run folder as `mipo run` leaves it: the files the report reads, in the layout and keys the stages
    write (train_config.json as training.train writes it, results.json as evaluation.evaluate writes it)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "run_config.json").write_text(
        json.dumps(
            {
                "model": "smollm2-135m",
                "seed": 0,
                "prompts": {"task": "prefs"},
                "pairs": {"strategy": "incomplete"},
                "train": {"epochs": 2, "objective": objective},
            }
        )
    )
    _jsonl(run / "pairs" / "pairs.jsonl", [{"id": str(i)} for i in range(3)])
    model_dir = run / "train" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "train_config.json").write_text(
        json.dumps(
            {
                "train_config": {"objective": objective, "learning_rate": 0.0002, "beta": None, "dpo": {}},
                "model_source": "smollm2-135m",
                f"{objective}_config": {"learning_rate": 0.0002},
                "versions": {},
            }
        )
    )
    (model_dir / "train_summary.json").write_text(
        json.dumps({"steps": 2, "seconds": 10.0, "final_loss": 0.5})
    )
    _jsonl(
        model_dir / "metrics.jsonl",
        [
            {"step": s, "loss": 0.7 - 0.1 * s, **({"rewards/margins": 0.1 * s} if margins else {})}
            for s in (1, 2)
        ],
    )
    (run / "train" / "stage.json").write_text(
        json.dumps({"stage": "train", "finished": True, "seconds": 12.0})
    )
    eval_dir = run / "eval" / "prefs"
    for role, score in (("model", 1.0), ("baseline", 0.0)):
        _jsonl(
            eval_dir / "examples" / f"prefs.{role}.jsonl",
            [
                {
                    "id": f"q{i}",
                    "seed": 0,
                    "prompt": [{"role": "user", "content": f"question {i}"}],
                    "response": f"{role} reply {i}",
                    "score": score if i % 2 else 0.5,
                }
                for i in range(items)
            ],
        )
    per_pref = {"lowercase": {"mean": 0.5, "n": 4}}
    results = {
        "settings": {"confidence": confidence, "k": 4},
        "models": {"model": {"name": "m"}, "baseline": {"name": "b"}},
        "tasks": {
            "prefs": {
                "n": items,
                "metric": "preferences followed",
                "kind": "prefs",
                "examples": {
                    "model": "examples/prefs.model.jsonl",
                    "baseline": "examples/prefs.baseline.jsonl",
                },
                "model": _summary(0.6, 0.5, 0.7, per_preference=per_pref),
                "baseline": _summary(0.2, 0.1, 0.3, per_preference={"lowercase": {"mean": 0.25, "n": 4}}),
                "difference": _summary(0.4, 0.3, 0.5, p_value=0.0004),
            }
        },
    }
    (eval_dir / "results.json").write_text(json.dumps(results))
    return run
