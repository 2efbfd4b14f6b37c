"""scripts/results_table.py: seeds pooled item by item, per-seed numbers beside them, bad folders named."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(folder: Path, model_scores: list[float], base_scores: list[float], ids=None) -> None:
    """A run folder as `mipo run` leaves it: eval/prefs/results.json and its examples files."""
    ids = ids or [f"q{i}" for i in range(len(model_scores))]
    eval_dir = folder / "eval" / "prefs"
    (eval_dir / "examples").mkdir(parents=True)
    for role, scores in (("model", model_scores), ("baseline", base_scores)):
        rows = [
            {"id": i, "seed": 0, "score": s, "response": "one two", "preferences": []}
            for i, s in zip(ids, scores)
        ]
        (eval_dir / "examples" / f"prefs.{role}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    mean = sum(model_scores) / len(model_scores)
    summary = {
        "mean": mean,
        "ci": [mean, mean],
        "n": len(ids),
        "per_preference": {"lowercase": {"mean": mean, "n": 1}},
    }
    results = {
        "tasks": {
            "prefs": {
                "n": len(ids),
                "examples": {
                    "model": "examples/prefs.model.jsonl",
                    "baseline": "examples/prefs.baseline.jsonl",
                },
                "model": summary,
                "baseline": {**summary, "mean": 0.0},
                "difference": {"mean": mean, "ci": [0, 1], "p_value": 0.5, "n": len(ids)},
            }
        }
    }
    (eval_dir / "results.json").write_text(json.dumps(results))
    (folder / "run_config.json").write_text(json.dumps({"train": {"learning_rate": 2e-4, "epochs": 2}}))


def test_seeds_are_pooled_item_by_item(table, tmp_path):
    _write_run(tmp_path / "prefs-incomplete-s0", [1.0, 0.5, 0.0, 1.0], [0.0, 0.5, 0.0, 0.5])
    _write_run(tmp_path / "prefs-incomplete-s1", [0.0, 0.5, 1.0, 1.0], [0.0, 0.5, 0.0, 0.5])
    _write_run(tmp_path / "not-a-run", [1.0], [0.0])  # no -s<seed>: ignored
    entry = table.pooled(table.load_runs(tmp_path)["prefs-incomplete"], "prefs")
    assert entry["seeds"] == [0, 1] and entry["n"] == 4
    assert entry["per_seed_difference"] == pytest.approx([0.375, 0.375])
    assert entry["model"]["mean"] == pytest.approx(0.625)  # items: 0.5, 0.5, 0.5, 1.0
    assert entry["difference"]["mean"] == pytest.approx(0.375)
    assert entry["words"] == 2.0
    text = table.build(tmp_path)
    assert "| MIPO, incomplete negatives | 0,1 | 0.625" in text
    assert "+0.375 / +0.375" in text and "not-a-run" not in text
    # the exported copy (what docs/results/ keeps) rebuilds the same tables
    assert table.export(tmp_path, tmp_path / "kept") == 8
    assert table.build(tmp_path / "kept") == text


def test_seeds_that_scored_different_items_are_not_pooled(table, tmp_path):
    _write_run(tmp_path / "prefs-random-s0", [1.0, 0.0], [0.0, 0.0])
    _write_run(tmp_path / "prefs-random-s1", [1.0, 0.0], [0.0, 0.0], ids=["q0", "other"])
    with pytest.raises(SystemExit, match="scored different items"):
        table.pooled(table.load_runs(tmp_path)["prefs-random"], "prefs")


def test_no_finished_run_is_a_clear_error(table, tmp_path):
    with pytest.raises(SystemExit, match="no run folder with a finished evaluation"):
        table.build(tmp_path)
