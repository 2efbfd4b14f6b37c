"""The context effect: a difference of differences, and the verdict line that names what moved."""

from __future__ import annotations

import pytest

from mipo.evaluation.context_effect import context_effect, per_type_context_effect, verdict


def test_generic_shift_has_no_context_effect():
    # The model follows +0.5 more with AND without the context: all of it is a change of style.
    base_with, base_without = [0.5, 0.0, 0.5, 0.0] * 5, [0.0, 0.0, 0.5, 0.0] * 5
    model_with = [x + 0.5 for x in base_with]
    model_without = [x + 0.5 for x in base_without]
    s = context_effect(model_with, model_without, base_with, base_without, n_resamples=500)
    assert s["gain"]["mean"] == pytest.approx(0.5)
    assert s["generic_shift"]["mean"] == pytest.approx(0.5)
    assert s["context_effect"]["mean"] == pytest.approx(0.0)
    assert s["context_effect"]["ci"] == pytest.approx([0.0, 0.0])
    assert s["scores"]["model_with"]["mean"] == pytest.approx(0.75)
    assert verdict(s).startswith("gain is a generic shift: the model changed the same way without")


def test_personalization_is_a_positive_difference_of_differences():
    # Hand-computed: lifts model (1, 1, 0, 1), baseline (0, 0, 0, 1) -> differences (1, 1, 0, 0), mean 0.5.
    model_with, model_without = [1, 1, 0, 1] * 5, [0, 0, 0, 0] * 5
    base_with, base_without = [0, 0, 0, 1] * 5, [0, 0, 0, 0] * 5
    s = context_effect(model_with, model_without, base_with, base_without, n_resamples=2000)
    assert s["context_effect"]["mean"] == pytest.approx(0.5)
    assert s["generic_shift"]["mean"] == pytest.approx(0.0)
    assert s["context_effect"]["ci"][0] > 0 and s["context_effect"]["p_value"] < 0.01
    assert s["n"] == 20
    line = verdict(s)
    assert line.startswith("gain is personalization: context effect +0.500 [")
    assert "generic shift" not in line


def test_no_change_and_unequal_lengths():
    same = [0.0, 1.0, 0.5, 0.25] * 4
    s = context_effect(same, same, same, same, n_resamples=200)
    assert verdict(s).startswith("no measured change")
    with pytest.raises(ValueError, match="differ in length"):
        context_effect([1.0], [1.0, 0.0], [1.0], [1.0])


def test_per_type_pairs_each_stated_preference_across_the_four_arms():
    def row(*followed):
        kinds = ("max_words", "keyword")
        return {"preferences": [{"type": k, "followed": f} for k, f in zip(kinds, followed)]}

    rows = {
        "model_with": [row(True, True), row(True, False), row(True, True)],
        "model_without": [row(True, False), row(True, False), row(True, False)],
        "baseline_with": [row(False, False), row(False, False), row(False, True)],
        "baseline_without": [row(False, False), row(False, False), row(False, False)],
    }
    out = per_type_context_effect(rows, n_resamples=200)
    # max_words: the model follows it with and without context (a generic shift, no context effect).
    assert out["max_words"]["generic_shift"]["mean"] == pytest.approx(1.0)
    assert out["max_words"]["context_effect"]["mean"] == pytest.approx(0.0)
    # keyword: lifts model (1, 0, 1), baseline (0, 0, 1) -> context effect 1/3.
    assert out["keyword"]["context_effect"]["mean"] == pytest.approx(1 / 3)
    assert out["keyword"]["n"] == 3


def _eval_folder(folder, arms):
    """An evaluation folder as `mipo eval` writes it: results.json naming the four example files."""
    import json

    (folder / "examples").mkdir(parents=True)
    paths = {}
    for arm, scores in arms.items():
        role, _, side = arm.partition("_")
        name = f"examples/prefs.{role}{'.no-context' if side == 'without' else ''}.jsonl"
        ids = [f"q{i}" for i in range(len(scores))]
        if side == "with":  # an item without a context: answered once, never without it
            ids, scores = [*ids, "plain"], [*scores, 1.0]
        (folder / name).write_text(
            "".join(json.dumps({"id": i, "score": s}) + "\n" for i, s in zip(ids, scores))
        )
        paths[arm] = name
    entry = {
        "examples": {"model": paths["model_with"], "baseline": paths["baseline_with"]},
        "context_effect": {
            "examples": {"model": paths["model_without"], "baseline": paths["baseline_without"]}
        },
    }
    (folder / "results.json").write_text(json.dumps({"tasks": {"prefs": entry}}))
    return folder


def test_the_context_effect_of_several_runs_pools_each_item_over_the_runs(tmp_path):
    from mipo.evaluation.context_effect import pooled_context_effect

    # Two seeds of one recipe. Per item, averaged over the seeds: model with (1, 1, 0.5, 1), without
    # (0, 0.5, 0, 0); baseline with (0, 0.5, 0, 1), without (0, 0, 0, 0) -> differences (1, 0, 0.5, 0).
    first = _eval_folder(
        tmp_path / "s1",
        {"model_with": [1, 1, 0, 1], "model_without": [0, 1, 0, 0], "baseline_with": [0, 1, 0, 1],
         "baseline_without": [0, 0, 0, 0]},
    )  # fmt: skip
    second = _eval_folder(
        tmp_path / "s2",
        {"model_with": [1, 1, 1, 1], "model_without": [0, 0, 0, 0], "baseline_with": [0, 0, 0, 1],
         "baseline_without": [0, 0, 0, 0]},
    )  # fmt: skip
    (tmp_path / "old").mkdir()  # a run from before the context effect: left out
    (tmp_path / "old" / "results.json").write_text('{"tasks": {"prefs": {"examples": {}}}}')
    pooled = pooled_context_effect([first, second, tmp_path / "old"], n_resamples=200)
    assert pooled["runs"] == 2 and pooled["n"] == 4  # the item without a context is not counted
    assert pooled["context_effect"]["mean"] == pytest.approx(0.375)
    assert pooled["generic_shift"]["mean"] == pytest.approx(0.125)
    assert pooled["gain"]["mean"] == pytest.approx(0.5)
    assert pooled["verdict"] == verdict(pooled)
    assert pooled_context_effect([tmp_path / "old"]) is None
