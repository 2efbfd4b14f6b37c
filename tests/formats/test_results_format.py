"""How results are written for people: one module behind `mipo eval`, `mipo demo`, the report and the
docs' tables, so a value with its interval reads the same everywhere."""

from __future__ import annotations

import json

from mipo.formats.results import (
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


EFFECT = {
    "n": 74,
    "scores": {
        "model_with": {"mean": 0.227, "ci": [0.155, 0.304]},
        "model_without": {"mean": 0.077, "ci": [0.04, 0.12]},
        "baseline_with": {"mean": 0.142, "ci": [0.083, 0.207]},
        "baseline_without": {"mean": 0.074, "ci": [0.04, 0.11]},
    },
    "gain": {"mean": 0.085, "ci": [0.029, 0.149], "p_value": 0.007},
    "generic_shift": {"mean": 0.003, "ci": [-0.03, 0.035], "p_value": 0.9},
    "context_effect": {"mean": 0.082, "ci": [0.018, 0.151], "p_value": 0.02},
    "verdict": "gain is personalization: context effect +0.082 [+0.018, +0.151]",
}


def test_the_eval_table_shows_the_context_effect_and_its_verdict():
    with_effect = json.loads(json.dumps(PREFS))
    with_effect["tasks"]["prefs"]["context_effect"] = EFFECT
    lines = results_table(with_effect).splitlines()
    at = lines.index("prefs: with and without the user's context (n=74 items)")
    assert lines[at + 1 : at + 6] == [
        "  model     with 0.227 [0.155, 0.304]   without 0.077 [0.040, 0.120]",
        "  baseline  with 0.142 [0.083, 0.207]   without 0.074 [0.040, 0.110]",
        "  generic shift  +0.003 [-0.030, +0.035]  p 0.900  (model - baseline, without context)",
        "  context effect +0.082 [+0.018, +0.151]  p 0.020  ((model - baseline) with minus without, paired "
        "per item)",
        "  verdict: gain is personalization: context effect +0.082 [+0.018, +0.151]",
    ]
    assert lines[-1].startswith("model: runs/x/model")  # the models line stays last
    assert "context" not in results_table(PREFS)  # --no-context-effect: nothing of it is printed


GAP = {
    "alpha": 1.0,
    "along": "the baseline's replies with the context (seed 0, temperature 0)",
    "n": 74,
    "kl": {
        "model": {"mean": 0.0131, "ci": [0.0112, 0.0152]},
        "baseline": {"mean": 0.0254, "ci": [0.0221, 0.0290]},
        "difference": {"mean": -0.0123, "ci": [-0.0150, -0.0098], "p_value": 0.0001},
    },
    "gap_closed": {"mean": 0.484, "ci": [0.41, 0.55]},
    "decisions": {
        "model": {"mean": 0.31, "ci": [0.22, 0.4]},
        "baseline": {"mean": 0.0, "ci": [0, 0]},
        "n": 60,
    },
    "decision_points": {"count": 350, "tokens": 5000, "share": 0.07},
    "compares": "runs/x/model, an adapter of smollm2-135m, against context-aware decoding (A = 1) of smollm2-135m",
}


def test_the_eval_table_shows_the_content_effect_and_the_distillation_gap():
    entry = json.loads(json.dumps(PREFS))
    effect = json.loads(json.dumps(EFFECT))
    effect["scores"] |= {"model_wrong": {"mean": 0.2, "ci": [0.13, 0.28]}}
    effect["scores"] |= {"baseline_wrong": {"mean": 0.12, "ci": [0.07, 0.18]}}
    effect["content_effect"] = {"mean": 0.005, "ci": [-0.05, 0.06], "p_value": 0.85}
    entry["tasks"]["prefs"] |= {"context_effect": effect, "distillation_gap": GAP}
    lines = results_table(entry).splitlines()
    at = lines.index("prefs: with and without the user's context (n=74 items)")
    assert lines[at + 1] == (
        "  model     with 0.227 [0.155, 0.304]   without 0.077 [0.040, 0.120]   another user's 0.200 [0.130, 0.280]"
    )
    assert (
        "  content effect +0.005 [-0.050, +0.060]  p 0.850  ((model - baseline) own minus another user's context, "
        "paired)"
    ) in lines
    at = lines.index(
        "prefs: distillation gap to CAD (A = 1) of the baseline, along the baseline's replies with the context "
        "(seed 0, temperature 0) (n=74 items)"
    )
    assert lines[at + 1 : at + 5] == [
        "  KL(CAD || .)    model 0.0131 [0.0112, 0.0152]   baseline 0.0254 [0.0221, 0.0290]  (nats per reply token)",
        "  gap closed      +0.484 [+0.410, +0.550]  (1 - KL(model) / KL(baseline))",
        "  CAD's decisions 0.310 [0.220, 0.400] taken by the model, 0.000 [0.000, 0.000] by the baseline (350 "
        "positions on 60 items, 7.0% of 5000 reply tokens)",
        f"  compares: {GAP['compares']}",
    ]
    skipped = json.loads(json.dumps(PREFS))
    skipped["tasks"]["prefs"]["distillation_gap"] = {"skipped": "no --baseline (the teacher is ...)"}
    assert "prefs: distillation gap: not measured: no --baseline (the teacher is ...)" in results_table(
        skipped
    )


def test_the_demo_summary_shows_the_context_effect_and_the_context_pmi(tmp_path):
    from mipo.demo import summary_table

    prefs = json.loads(json.dumps(PREFS))
    prefs["tasks"]["prefs"]["context_effect"] = EFFECT
    pmi = {
        "n": 10,
        "metric": "mean context PMI",
        "kind": "pmi",
        "against": "context",
        "model": {"mean": 1.5, "ci": [0.5, 2.5]},
        "baseline": {"mean": 1.0, "ci": [0.2, 1.8]},
        "difference": {"mean": 0.5, "ci": [-0.1, 1.1], "p_value": 0.12},
    }
    for name, results in (("prefs", prefs), ("pmi-context", {"settings": {}, "tasks": {"pmi": pmi}})):
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "results.json").write_text(json.dumps(results))
    lines = summary_table(tmp_path).splitlines()
    assert lines[:3] == [
        "task             n  base [95% CI]            MIPO [95% CI]            MIPO - base [95% CI]       p",
        "pmi (context)   10  1.000 [0.200, 1.800]     1.500 [0.500, 2.500]     0.500 [-0.100, 1.100]      0.120",
        "prefs           74  0.142 [0.083, 0.207]     0.227 [0.155, 0.304]     0.086 [0.029, 0.149]       0.007",
    ]
    assert "prefs: with and without the user's context (n=74 items)" in lines
    assert lines[-1] == "  verdict: gain is personalization: context effect +0.082 [+0.018, +0.151]"
