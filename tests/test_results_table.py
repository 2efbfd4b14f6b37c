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
    assert "| 2.0 | not measured |" in text  # evaluated before the no-context replies existed
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


def _write_results(folder: Path, task: str, entry: dict) -> None:
    (folder / "eval" / task).mkdir(parents=True)
    (folder / "eval" / task / "results.json").write_text(json.dumps({"tasks": {task: entry}}))


def test_pmi_rows_show_their_prompts_and_task_and_only_prefs_runs_enter_the_correlation(table, tmp_path):
    def summary(mean):
        return {"mean": mean, "ci": [mean - 1, mean + 1], "n": 4}

    def difference(mean):
        return {**summary(mean), "p_value": 0.5}

    for seed, (pmi_diff, prefs_diff) in enumerate([(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]):
        folder = tmp_path / f"prefs-incomplete-s{seed}"
        _write_run(folder, [1.0, 0.0], [0.0, 0.0])
        _write_results(
            folder,
            "pmi",
            {
                "n": 20,
                "source": "prefs test items",
                "model": summary(50 + pmi_diff),
                "baseline": summary(50.0),
                "difference": difference(pmi_diff),
            },
        )
        results = json.loads((folder / "eval" / "prefs" / "results.json").read_text())
        results["tasks"]["prefs"]["difference"] = difference(prefs_diff)
        (folder / "eval" / "prefs" / "results.json").write_text(json.dumps(results))
    math = tmp_path / "gsm8k-random-s0"
    _write_results(
        math,
        "gsm8k",
        {
            "n": 200,
            "model": summary(0.01),
            "baseline": summary(0.015),
            "difference": difference(-0.005),
            "examples": {"model": "examples/gsm8k.model.jsonl", "baseline": "examples/gsm8k.baseline.jsonl"},
        },
    )
    (math / "eval" / "gsm8k" / "examples").mkdir()
    for role, scores in (("model", [1, 0, 0, 0]), ("baseline", [1, 1, 0, 0])):
        (math / "eval" / "gsm8k" / "examples" / f"gsm8k.{role}.jsonl").write_text(
            "".join(
                json.dumps({"id": f"g{i}", "score": v, "response": "The answer is 4."}) + "\n"
                for i, v in enumerate(scores)
            )
        )
    _write_results(
        math,
        "pmi",
        {
            "n": 40,
            "source": "gsm8k test items",
            "model": summary(90.0),
            "baseline": summary(80.0),
            "difference": difference(10.0),
            "examples": {"model": "examples/pmi.model.jsonl", "baseline": "examples/pmi.baseline.jsonl"},
        },
    )
    (math / "eval" / "pmi" / "examples").mkdir()
    for role, reply in (("model", "Janet sells 9 eggs"), ("baseline", "Two words")):
        (math / "eval" / "pmi" / "examples" / f"pmi.{role}.jsonl").write_text(
            json.dumps({"response": reply}) + "\n"
        )
    (math / "run_config.json").write_text("{}")
    lines, points = table.pmi_table(table.load_runs(tmp_path))
    row = next(line for line in lines if line.startswith("| gsm8k-random-s0"))
    assert (
        "| 40 gsm8k test items | 80.0 [79.0, 81.0] | 90.0 [89.0, 91.0] | +10.0 [+9.0, +11.0] | 2 → 4 | gsm8k -0.005"
        in row
    )
    assert sorted(points) == [(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]  # the math run is not a preferences point
    text = table.build(tmp_path)
    assert "over 3 runs" in text and "| pmi |" not in text  # pmi only in its own table
    assert (
        "| GSM8K, random | gsm8k | 4 | 0 | 0.500 [" in text and "| -0.250 [" in text
    )  # pooled from the items


def test_degenerate_replies_counts_short_and_repeating_ones(table, tmp_path):
    folder = tmp_path / "prefs-incomplete-s0"
    _write_run(folder, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    path = folder / "eval" / "prefs" / "examples" / "prefs.model.jsonl"
    replies = [
        "Too short to count.",  # 4 words
        "the cat sat " * 6,  # 18 words, 3 distinct 3-word sequences of 16
        "One two three four five six seven eight nine ten eleven twelve.",  # fine
    ]
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "score": 1.0, "response": r}) + "\n" for i, r in enumerate(replies)
        )
    )
    assert table.degenerate_replies(folder / "eval" / "prefs", "prefs", "model") == (1, 1)
    assert "| base model | - |" in "\n".join(table.sweep_table(table.load_runs(tmp_path)))


def _add_no_context_replies(folder: Path, model_scores=None) -> None:
    """The replies without the users' context that `mipo eval` writes beside the usual ones (all 0 here)."""
    eval_dir = folder / "eval" / "prefs"
    for role in ("model", "baseline"):
        scores = model_scores if role == "model" and model_scores else [0.0] * 4
        rows = [{"id": f"q{i}", "seed": 0, "score": s} for i, s in enumerate(scores)]
        (eval_dir / "examples" / f"prefs.{role}.no-context.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    results = json.loads((eval_dir / "results.json").read_text())
    results["tasks"]["prefs"]["context_effect"] = {
        "examples": {role: f"examples/prefs.{role}.no-context.jsonl" for role in ("model", "baseline")}
    }
    (eval_dir / "results.json").write_text(json.dumps(results))


def test_the_context_effect_column_pools_the_seeds_no_context_replies(table, tmp_path):
    for seed, lift in ((0, [1.0, 1.0, 0.0, 0.0]), (1, [1.0, 0.0, 1.0, 0.0])):
        folder = tmp_path / f"prefs-incomplete-s{seed}"
        _write_run(folder, lift, [0.0] * 4)
        _add_no_context_replies(folder)
    cell = table.context_effect_cell(table.load_runs(tmp_path)["prefs-incomplete"])
    # per item over the two seeds: model lift (1, 0.5, 0.5, 0), baseline none -> context effect 0.5
    assert cell.startswith("+0.500 [") and cell.endswith(": gain is personalization")


def test_the_context_effect_column_names_a_generic_shift_that_moved_too(table, tmp_path):
    # with context the model follows every preference and the base model none, at both seeds; without it
    # the model follows all at seed 0 and none at seed 1: per item half generic shift, half context effect
    for seed, without in ((0, [1.0] * 4), (1, [0.0] * 4)):
        folder = tmp_path / f"sweep-epochs4-s{seed}"
        _write_run(folder, [1.0] * 4, [0.0] * 4)
        _add_no_context_replies(folder, model_scores=without)
    cell = table.context_effect_cell(table.load_runs(tmp_path)["sweep-epochs4"])
    assert cell == (
        "+0.500 [+0.500, +0.500]: gain is personalization, with a generic shift of +0.500 [+0.500, +0.500]"
    )


def test_the_screen_ranks_recipes_by_context_effect_and_counts_every_rounds_training(table, tmp_path):
    # the default at seeds 0 and 1; a two-round recipe at seed 0 whose gain is all generic shift; a run
    # evaluated before the no-context replies existed (left out: its context effect is unknown)
    for seed in (0, 1):
        _write_run(tmp_path / f"prefs-incomplete-s{seed}", [1.0, 1.0, 0.0, 0.0], [0.0] * 4)
        _add_no_context_replies(tmp_path / f"prefs-incomplete-s{seed}")
    rounds = tmp_path / "screen-rounds2-s0"
    _write_run(rounds, [1.0, 1.0, 0.0, 0.0], [0.0] * 4)
    _add_no_context_replies(rounds, model_scores=[1.0, 1.0, 0.0, 0.0])
    for stage, seconds in (("train", 120), ("train-r2", 60)):
        (rounds / stage).mkdir()
        (rounds / stage / "stage.json").write_text(json.dumps({"seconds": seconds}))
    _write_run(tmp_path / "screen-mi4-s0", [1.0] * 4, [0.0] * 4)
    groups = table.load_runs(tmp_path)

    screen = "\n".join(table.screen_table(groups, {0}))
    default = next(line for line in screen.splitlines() if line.startswith("| incomplete, DPO (the default)"))
    assert "| 0 | 0.500 | +0.500 [" in default and "**+0.500 [" in default
    two = next(line for line in screen.splitlines() if "2 iterative rounds" in line)
    # with context +0.5, without context +0.5 as well: generic shift +0.5, context effect 0; 3 minutes
    assert "| 0.500 | +0.500 [" in two and "**+0.000 [" in two and two.endswith("| 3.0 |")
    assert "MI-ranked" not in screen
    confirmed = "\n".join(table.screen_table(groups))
    assert "| 0,1 |" in confirmed and "iterative rounds" not in confirmed  # one seed is not a confirmation


def test_restating_replies_counts_replies_that_open_with_their_prompts_words(table, tmp_path):
    folder = tmp_path / "screen-x-s0"
    _write_run(folder, [0.0, 0.0, 0.0], [0.0] * 3)
    eval_dir = folder / "eval" / "prefs"
    question = "Tommy is fundraising for his charity by selling brownies for $3 a slice."
    replies = [question + " So he raised $98.", "He raised $98 in all, from 43 brownies.", ""]
    rows = [
        {
            "id": f"q{i}",
            "seed": 0,
            "score": 0.0,
            "response": r,
            "prompt": [{"role": "user", "content": question}],
        }
        for i, r in enumerate(replies)
    ]
    (eval_dir / "examples" / "prefs.model.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert table.restating_replies(eval_dir, "prefs", "model") == 1


def test_echoing_replies_counts_replies_that_copy_four_words_of_the_users_context(table, tmp_path):
    folder = tmp_path / "screen-x-s0"
    _write_run(folder, [0.0] * 4, [0.0] * 4)
    eval_dir = folder / "eval" / "prefs"
    context = "Start your answer with the word 'Well'."
    replies = [
        "Well, it is 4.",  # follows it: one word of the context
        "Start your answer with Well: 4.",  # four words of it, spelled out
        "START YOUR ANSWER, WITH 4",  # case and punctuation do not hide the copy
        "The word is 4; answer with care.",  # shares words with it, never four in a row
    ]
    prompt = [
        {"role": "system", "content": context},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    rows = [
        {"id": f"q{i}", "seed": 0, "score": 0.0, "response": r, "prompt": prompt}
        for i, r in enumerate(replies)
    ]
    (eval_dir / "examples" / "prefs.model.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert table.echoing_replies(eval_dir, "prefs", "model") == 2
