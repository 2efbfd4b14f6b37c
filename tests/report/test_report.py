"""The report of a `mipo run` folder: what training and evaluation really wrote reaches the page."""

from __future__ import annotations

import json

from mipo.report.folder import read_run_folder
from mipo.report.render import Block
from mipo.report.sections import SECTIONS
from mipo.report.writer import build_report
from run_folders import _summary, write_run_folder


def test_the_report_shows_every_section_and_the_resolved_training_settings(tmp_path):
    run = write_run_folder(tmp_path / "run")
    text = build_report(run).read_text()
    for heading in [
        "## Results",
        "## Preference types (prefs)",
        "## Training",
        "## Examples (prefs)",
        "## What was run",
    ]:
        assert heading in text
    # training writes its resolved TrainConfig under "train_config": the report used to look for
    # "train"/"config" keys and never showed this row
    row = next(line for line in text.splitlines() if line.startswith("| train (resolved) |"))
    assert '"learning_rate": 0.0002' in row and '"objective": "dpo"' in row and "beta" not in row
    assert "| prefs | preferences followed | 4 | 0.200 [0.100, 0.300] | 0.600 [0.500, 0.700] |" in text
    assert "| time: train | 12 s |" in text
    assert (run / "report" / "training.png").is_file() and (
        run / "report" / "preferences-prefs.png"
    ).is_file()
    assert (run / "report" / "report.html").read_text().count("data:image/png;base64,") == 2


def test_the_report_names_the_confidence_level_and_objective_that_were_used(tmp_path):
    run = write_run_folder(tmp_path / "run", objective="sft", confidence=0.9, margins=False)
    text = build_report(run).read_text()
    # both used to be hard-coded: "95% CI" and "trained with DPO"
    assert "trained with SFT on the chosen responses on 3 MIPO pairs" in text and "DPO" not in text
    assert "(90% CI [0.300, 0.500], p < 0.001, n = 4)" in text
    assert "| base [90% CI] | MIPO [90% CI] | MIPO − base [90% CI] |" in text and "95%" not in text
    assert "*SFT on the chosen responses loss per logging step*" in text


def test_examples_sets_how_many_prompts_are_shown(tmp_path):
    run = write_run_folder(tmp_path / "run", items=6)

    def shown(examples: int) -> list[str]:
        text = build_report(run, examples=examples).read_text()
        return [line for line in text.splitlines() if line.startswith("| [user] question")]

    assert len(shown(5)) == 5
    assert [line.split("|")[1].strip() for line in shown(2)] == ["[user] question 1", "[user] question 3"]
    assert shown(0) == [] and "## Examples" not in build_report(run, examples=0).read_text()


def test_a_section_is_one_function_of_the_run_folder(tmp_path):
    # what a new block (e.g. the context effect) plugs into: each section reads the run folder only
    run = read_run_folder(write_run_folder(tmp_path / "run"))
    for section in SECTIONS:
        blocks = section(run)
        assert all(isinstance(b, Block) for b in blocks), section.__name__
    assert read_run_folder(tmp_path / "empty").evaluations == {}
    text = build_report(tmp_path / "empty").read_text()
    assert "No evaluation has finished yet." in text and "## Training" in text


def _rows(scores: list[float]) -> dict[int, list[dict]]:
    return {0: [{"score": s, "preferences": [{"type": "lowercase", "followed": s > 0}]} for s in scores]}


def test_the_report_gives_the_context_effect_its_plot_table_and_verdict_near_the_top(tmp_path):
    from mipo.evaluation.context_effect import summarize

    run = write_run_folder(tmp_path / "run", items=6)
    # MIPO follows more preferences only when it reads the user's context: a context effect of +0.5.
    arms = {
        "model_with": _rows([1, 1, 1, 0, 1, 1, 1, 1]),
        "model_without": _rows([0, 0, 1, 0, 0, 0, 1, 0]),
        "baseline_with": _rows([0, 1, 1, 0, 0, 0, 1, 0]),
        "baseline_without": _rows([0, 0, 1, 0, 0, 0, 1, 0]),
    }
    effect = summarize(arms, n_resamples=500)
    assert effect["context_effect"]["mean"] == 0.5 and effect["generic_shift"]["mean"] == 0.0
    results_path = run / "eval" / "prefs" / "results.json"
    results = json.loads(results_path.read_text())
    results["tasks"]["prefs"]["context_effect"] = effect
    results_path.write_text(json.dumps(results))

    text = build_report(run).read_text()
    verdict = effect["verdict"]
    assert verdict.startswith("gain is personalization: context effect +0.500 [")
    assert text.index(f"**prefs, personalization or style?** {verdict}.") < text.index("## Results")
    assert "## Personalization or a change of style? (prefs)" in text
    assert "| context effect (difference of differences) | +0.500 [" in text
    assert "| generic shift (MIPO − base, without context) | +0.000 [+0.000, +0.000] | 1.000 |" in text
    assert "| MIPO with context | 0.875 [" in text and "| base without context | 0.250 [" in text
    assert "| lowercase | 8 | +0.000 [+0.000, +0.000] | +0.500 [" in text  # per preference type
    assert (run / "report" / "context-effect-prefs.png").is_file()
    assert "context-effect-prefs.png" in text


def test_the_report_shows_the_content_effect_and_the_distillation_gap_beside_the_verdict(tmp_path):
    from mipo.evaluation.context_effect import summarize

    run = write_run_folder(tmp_path / "run", items=6)
    ones, zeros = [1.0] * 8, [0.0] * 8
    arms = {"model_with": ones, "model_without": zeros, "baseline_with": zeros, "baseline_without": zeros}
    # MIPO follows as well under another user's context: the gain comes with any context
    wrong = {"model_own": ones, "model_wrong": ones, "baseline_own": zeros, "baseline_wrong": zeros}
    effect = summarize(
        {k: _rows(v) for k, v in arms.items()}, wrong={k: _rows(v) for k, v in wrong.items()}, n_resamples=200
    )
    gap = {
        "alpha": 1.0,
        "along": "the baseline's replies with the context (seed 0, temperature 0)",
        "n": 8,
        "kl": {
            "model": _summary(0.0125, 0.01, 0.015),
            "baseline": _summary(0.025, 0.02, 0.03),
            "difference": _summary(-0.0125, -0.015, -0.01, p_value=0.004),
        },
        "gap_closed": _summary(0.5, 0.4, 0.6),
        "decisions": {"model": _summary(0.25, 0.1, 0.4), "baseline": _summary(0.0, 0.0, 0.0), "n": 5},
        "decision_points": {"count": 12, "tokens": 400, "share": 0.03},
        "compares": "m, an adapter of b, against context-aware decoding (A = 1) of b",
    }
    results_path = run / "eval" / "prefs" / "results.json"
    results = json.loads(results_path.read_text())
    results["tasks"]["prefs"] |= {"context_effect": effect, "distillation_gap": gap}
    results_path.write_text(json.dumps(results))

    text = build_report(run).read_text()
    assert effect["verdict"].startswith("the gain comes with any user's context, not with what it says")
    assert text.index(f"**prefs, personalization or style?** {effect['verdict']}.") < text.index("## Results")
    headline = "**prefs, how much of CAD did training absorb?** KL(CAD A = 1 ‖ model) 0.0125 nats per reply"
    assert text.index(headline) < text.index("## Results")
    assert "gap closed +0.500 [+0.400, +0.600]; it takes 0.250 [0.100, 0.400] of CAD's decisions" in text
    assert "| content effect (own vs another user's context, difference of differences) | +0.000 [" in text
    assert "| MIPO with another user's context | 1.000 [" in text
    assert "| gap closed, 1 − KL(MIPO) / KL(base) | +0.500 [+0.400, +0.600] |  |" in text
    assert "12 of 400 reply tokens (3.0%) are CAD's decisions" in text
    assert text.index("**Verdict**") < text.index("**Distillation gap**")


def test_the_report_explains_the_context_pmi(tmp_path):
    run = write_run_folder(tmp_path / "run")
    pmi = {
        "n": 4,
        "metric": "mean context PMI",
        "kind": "pmi",
        "against": "context",
        "model": _summary(0.5, 0.1, 0.9, values=[0.1, 0.5, 0.9, 0.5]),
        "baseline": _summary(0.2, 0.0, 0.4, values=[0.0, 0.2, 0.4, 0.2]),
        "difference": _summary(0.3, 0.1, 0.5, p_value=0.1),
    }
    (run / "eval" / "pmi-context").mkdir()
    (run / "eval" / "pmi-context" / "results.json").write_text(json.dumps({"tasks": {"pmi": pmi}}))
    text = build_report(run).read_text()
    assert "## The objective: context PMI" in text and "`log π(y|x,c) − log π(y|x)`" in text
    assert "| pmi (context) | mean context PMI | 4 |" in text
    assert (run / "report" / "pmi-pmi-context.png").is_file()
