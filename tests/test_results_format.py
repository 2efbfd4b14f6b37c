"""How results are written for people: one module behind `mipo eval`, `mipo demo`, the report and the
docs' tables, so a value with its interval reads the same everywhere."""

from __future__ import annotations

import json

from mipo.results_format import (
    ci_label,
    comparison_table,
    format_ci,
    format_number,
    format_p,
    load_evaluations,
    results_table,
    shared_ci_label,
)

PREFS = {
    "settings": {"confidence": 0.95},
    "models": {"model": {"name": "runs/x/model"}, "baseline": {"name": "smollm2-135m"}},
    "tasks": {
        "prefs": {
            "n": 74,
            "metric": "preferences followed",
            "model": {
                "mean": 0.227,
                "ci": [0.155, 0.304],
                "per_preference": {"lowercase": {"mean": 0.5, "n": 4}},
            },
            "baseline": {
                "mean": 0.142,
                "ci": [0.083, 0.207],
                "per_preference": {"lowercase": {"mean": 0.25, "n": 4}},
            },
            "difference": {"mean": 0.086, "ci": [0.029, 0.149], "p_value": 0.00731},
        }
    },
}


def test_a_value_with_its_interval():
    assert format_ci({"mean": 0.5, "ci": [0.25, 0.75]}) == "0.500 [0.250, 0.750]"
    assert format_ci({"mean": 1.28, "ci": [-7.6, 8.362]}, 1, signed=True) == "+1.3 [-7.6, +8.4]"
    assert format_ci({"mean": 0.5}) == "0.500"  # no interval: the mean alone
    assert format_ci(None) == "–" and format_ci({}, missing="-") == "-"
    assert format_ci({"mean": float("nan"), "ci": [0.0, 1.0]}) == "n/a"
    assert (
        format_number(None) == "–"
        and format_number(12.5, 0) == "12"
        and format_number(0.1, signed=True) == "+0.100"
    )


def test_p_values_are_never_printed_as_zero_unless_asked():
    assert format_p(0.0004) == "< 0.001" and format_p(0.25) == "0.250" and format_p(None) == "–"
    assert format_p(0.03125, spec=".3g", floor=None) == "0.0312"  # mipo eval's table
    assert format_p(0.0004, floor=None) == "0.000"  # docs/results.md's tables


def test_the_interval_label_follows_the_confidence_level():
    assert ci_label(0.95) == "95% CI" and ci_label(0.9) == "90% CI" and ci_label(0.995) == "99.5% CI"
    assert shared_ci_label([PREFS, {"settings": {}}]) == "95% CI"  # results from before the level was saved
    assert shared_ci_label([PREFS, {"settings": {"confidence": 0.9}}]) == "CI"


def test_the_demo_table_as_the_readme_shows_it(tmp_path):
    (tmp_path / "eval" / "prefs").mkdir(parents=True)
    (tmp_path / "eval" / "prefs" / "results.json").write_text(json.dumps(PREFS))
    evaluations = load_evaluations(tmp_path)
    assert list(evaluations) == ["prefs"] and evaluations["prefs"][0] == tmp_path / "eval" / "prefs"
    assert comparison_table([r for _, r in evaluations.values()]).splitlines() == [
        "task        n  base [95% CI]            MIPO [95% CI]            MIPO - base [95% CI]       p",
        "prefs      74  0.142 [0.083, 0.207]     0.227 [0.155, 0.304]     0.086 [0.029, 0.149]       0.007",
    ]
    lower = {**PREFS, "settings": {"confidence": 0.9}}
    assert comparison_table([lower]).startswith("task        n  base [90% CI]            MIPO [90% CI]  ")


def test_the_eval_table_lists_tasks_preference_types_and_models():
    text = results_table(PREFS)
    assert text.splitlines()[:3] == [
        "task   n   model                 baseline              difference            p      ",
        "-----  --  --------------------  --------------------  --------------------  -------",
        "prefs  74  0.227 [0.155, 0.304]  0.142 [0.083, 0.207]  0.086 [0.029, 0.149]  0.00731",
    ]
    assert "  lowercase          0.50 (n=4)  /  0.25" in text
    assert text.endswith("model: runs/x/model   baseline: smollm2-135m")
    alone = {**PREFS, "models": {"model": {"name": "m"}, "baseline": None}}
    alone["tasks"] = {"prefs": {**PREFS["tasks"]["prefs"], "baseline": None, "difference": None}}
    assert results_table(alone).splitlines()[2].split()[-3:] == ["-", "-", "-"]
