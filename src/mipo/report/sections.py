"""The report's sections, top to bottom: each reads the run folder and returns its blocks (none when it has nothing
to show). A new section is one function added to ``SECTIONS``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mipo import versions
from mipo.formats.results import (
    DASH,
    ci_label,
    comparison_rows,
    confidence_of,
    format_ci,
    format_number,
    format_p,
    shared_ci_label,
)
from mipo.report.folder import RunFolder, read_rows, task_entries
from mipo.report.plots import plot_context_effect, plot_distributions, plot_grouped_bars
from mipo.report.render import Block


def headline_blocks(run: RunFolder) -> list[Block]:
    """What was trained, then one sentence per task: base -> MIPO, the difference and whether it is measured."""
    strategy = (run.config.get("pairs") or {}).get("strategy", "random")
    blocks = [
        Block(
            "p",
            f"Model `{run.config.get('model', '?')}` trained with {run.objective} on {run.pairs_written} MIPO "
            f"pairs (`{strategy}` negatives), evaluated against the base model on the same items and seeds.",
        )
    ]
    for _, results, task, entry in task_entries(run):
        diff = entry.get("difference")
        if not (diff and entry.get("baseline") and entry.get("model")):
            continue
        low, high = diff.get("ci") or [None, None]
        verdict = (
            "the interval excludes zero"
            if low is not None and (low > 0 or high < 0)
            else "the interval includes zero: no measured difference"
        )
        blocks.append(
            Block(
                "p",
                f"**{task}**: base {format_number(entry['baseline']['mean'])} → MIPO "
                f"{format_number(entry['model']['mean'])}, difference {format_number(diff['mean'])} "
                f"({ci_label(confidence_of(results))} [{format_number(low)}, {format_number(high)}], "
                f"p {format_p(diff.get('p_value'))}, n = {entry.get('n')}); {verdict}.",
            )
        )
    for _, _, task, entry in task_entries(run):
        if (entry.get("context_effect") or {}).get("verdict"):
            blocks.append(
                Block("p", f"**{task}, personalization or style?** {entry['context_effect']['verdict']}.")
            )
        gap = entry.get("distillation_gap") or {}
        if gap.get("kl"):
            blocks.append(
                Block("p", f"**{task}, how much of CAD did training absorb?** {_gap_sentence(gap)}.")
            )
    return blocks


def _gap_sentence(gap: dict[str, Any]) -> str:
    kl = gap["kl"]
    decisions = gap["decisions"].get("model")
    taken = f"; it takes {format_ci(decisions)} of CAD's decisions" if decisions else ""
    return (
        f"KL(CAD A = {gap['alpha']:g} ‖ model) {format_number(kl['model']['mean'], 4)} nats per reply token "
        f"against the base model's {format_number(kl['baseline']['mean'], 4)}: gap closed "
        f"{format_ci(gap['gap_closed'], signed=True)}{taken}"
    )


def results_blocks(run: RunFolder) -> list[Block]:
    """The results table: one row per task, both models and their paired difference with intervals."""
    rows = comparison_rows(run.results)
    if not rows:
        return [Block("h2", "Results"), Block("p", "No evaluation has finished yet.")]
    label = shared_ci_label(run.results)
    headers = ["task", "metric", "n", f"base [{label}]", f"MIPO [{label}]", f"MIPO − base [{label}]", "p"]
    return [
        Block("h2", "Results"),
        Block(
            "table",
            headers=headers,
            rows=[[r.task, r.metric, r.n, r.baseline, r.model, r.difference, r.p] for r in rows],
        ),
        Block(
            "p",
            "Intervals are percentile bootstrap intervals over items; the difference is "
            "paired item by item, its p-value from a sign-flip test.",
        ),
    ]


def context_effect_blocks(run: RunFolder) -> list[Block]:
    """Per task answered with and without the user's context: the plot, the table and the verdict."""
    blocks = []
    for name, results, task, entry in task_entries(run):
        effect = entry.get("context_effect")
        if not effect:
            continue
        label = ci_label(confidence_of(results))
        blocks.append(Block("h2", f"Personalization or a change of style? ({task})"))
        blocks.append(
            Block(
                "p",
                f"Each model answered the {effect.get('n')} items again without the user's context, and with "
                "another user's context (a profile whose preference differs), scored against the same stated "
                "preferences. The *generic shift* is MIPO − base without the context (a change of style for "
                "everyone); the *context effect* is MIPO − base with the context minus the same without it, "
                "paired per item; the *content effect* is MIPO − base with the user's own context minus the same "
                "with another user's: only it shows that the model reads what the context says, not just that "
                "there is one.",
            )
        )
        fig = plot_context_effect(
            effect.get("scores", {}),
            run.figure_path(f"context-effect-{name}.png"),
            title=f"{task}: with vs without context",
        )
        if fig:
            blocks.append(
                Block(
                    "figure", f"Scores with and without the user's context, base vs MIPO ({label})", path=fig
                )
            )
        blocks.append(
            Block("table", headers=["", f"value [{label}]", "p"], rows=_context_effect_rows(effect))
        )
        if effect.get("verdict"):
            blocks.append(Block("p", f"**Verdict**: {effect['verdict']}."))
        blocks += _distillation_gap_blocks(entry.get("distillation_gap") or {}, label)
        per_type = effect.get("per_preference") or {}
        if per_type:
            rows = [
                [
                    t,
                    str(v["n"]),
                    format_ci(v["generic_shift"], signed=True),
                    format_ci(v["context_effect"], signed=True),
                ]
                for t, v in per_type.items()
            ]
            headers = ["preference", "n", f"generic shift [{label}]", f"context effect [{label}]"]
            blocks.append(Block("table", headers=headers, rows=rows))
    return blocks


def _distillation_gap_blocks(gap: dict[str, Any], label: str) -> list[Block]:
    """The distillation gap beside the verdict: the KL to CAD for both models, the gap closed, CAD's decisions."""
    if "skipped" in gap:
        return [Block("p", f"Distillation gap: not measured: {gap['skipped']}.")]
    if not gap.get("kl"):
        return []
    decisions, points = gap["decisions"], gap["decision_points"]
    rows = [
        ["KL(CAD ‖ MIPO), nats per reply token", format_ci(gap["kl"]["model"], 4), ""],
        ["KL(CAD ‖ base), the starting gap", format_ci(gap["kl"]["baseline"], 4), ""],
        [
            "MIPO − base",
            format_ci(gap["kl"]["difference"], 4, signed=True),
            format_p(gap["kl"]["difference"].get("p_value")),
        ],
        ["gap closed, 1 − KL(MIPO) / KL(base)", format_ci(gap["gap_closed"], signed=True), ""],
        ["CAD's decisions taken by MIPO", format_ci(decisions.get("model")), ""],
    ]
    return [
        Block(
            "p",
            f"**Distillation gap** to context-aware decoding (A = {gap['alpha']:g}) of the base model, along "
            f"{gap['along']}, over {gap['n']} items: {points['count']} of {points['tokens']} reply tokens "
            f"({points['share']:.1%}) are CAD's decisions (its top token is not the base model's). "
            f"Compares: {gap['compares']}.",
        ),
        Block("table", headers=["", f"value [{label}]", "p"], rows=rows),
    ]


def _context_effect_rows(effect: dict[str, Any]) -> list[list[str]]:
    names = {"model": "MIPO", "baseline": "base"}
    sides = {"with": "with context", "without": "without context", "wrong": "with another user's context"}
    rows = []
    for arm, value in effect.get("scores", {}).items():
        role, _, side = arm.partition("_")
        rows.append([f"{names.get(role, role)} {sides.get(side, side)}", format_ci(value), ""])
    for key, label in (
        ("gain", "gain (MIPO − base, with context)"),
        ("generic_shift", "generic shift (MIPO − base, without context)"),
        ("context_effect", "context effect (difference of differences)"),
        ("content_effect", "content effect (own vs another user's context, difference of differences)"),
        ("lift", "MIPO with − without context"),
        ("content_lift", "MIPO with its own − another user's context"),
    ):
        if effect.get(key):
            rows.append([label, format_ci(effect[key], signed=True), format_p(effect[key].get("p_value"))])
    return rows


def judge_blocks(run: RunFolder) -> list[Block]:
    """Each judge task's win rate, and beside it how far to trust the judge (its agreement with the code
    checkers of ``prefs``): a judge's win rate is never shown alone."""
    from mipo.formats.results import UNCHECKED, summary_line

    blocks = []
    for _, _, task, entry in task_entries(run):
        if "judge" not in entry and "judge_check" not in entry:
            continue
        check = entry.get("judge_check")
        lines = [summary_line(entry["judge"])] if "judge" in entry else []
        lines.append(f"judge-check: {check['note'] if check else UNCHECKED}")
        blocks += [Block("h2", f"LLM judge ({task})"), *(Block("p", line) for line in lines)]
    return blocks


def preference_blocks(run: RunFolder) -> list[Block]:
    """Per task with preference types: a bar chart and a table of each type's rate, base vs MIPO."""
    blocks = []
    for name, _, task, entry in task_entries(run):
        per = {
            role: {t: v["mean"] for t, v in (entry.get(role) or {}).get("per_preference", {}).items()}
            for role in ("baseline", "model")
        }
        if not per["model"]:
            continue
        blocks.append(Block("h2", f"Preference types ({task})"))
        fig = plot_grouped_bars(
            {"base": per["baseline"], "MIPO": per["model"]},
            run.figure_path(f"preferences-{name}.png"),
            title="stated preferences followed",
            ylabel="fraction followed",
        )
        if fig:
            blocks.append(
                Block("figure", "Fraction of each stated preference followed, base vs MIPO", path=fig)
            )
        counts = entry["model"]["per_preference"]
        rows = [
            [
                t,
                str(counts[t]["n"]),
                format_number(per["baseline"].get(t)),
                format_number(per["model"][t]),
                format_number(per["model"][t] - per["baseline"][t]) if t in per["baseline"] else DASH,
            ]
            for t in sorted(per["model"])
        ]
        blocks.append(Block("table", headers=["preference", "n", "base", "MIPO", "MIPO − base"], rows=rows))
    return blocks


def objective_blocks(run: RunFolder) -> list[Block]:
    """Per PMI evaluation: what is measured, and the distributions of both models' PMI."""
    blocks = []
    for name, results, _, entry in task_entries(run):
        if entry.get("kind") != "pmi":
            continue
        k = results.get("settings", {}).get("k", "?")
        if entry.get("against") == "context":
            heading, formula = "The objective: context PMI", "log π(y|x,c) − log π(y|x)"
            text = (
                "For each held-out prompt x with a user context c, a response y sampled from each model is "
                f"scored under the base model as `{formula}`: how much more likely the reply is when the "
                "user's context is read (the mutual information `incomplete` negatives target)."
            )
        else:
            heading, formula = (
                "The objective: pointwise mutual information",
                "log π(y|x) − log mean_k π(y|x'_k)",
            )
            text = (
                "For each held-out prompt x, a response y sampled from each model is scored under the base "
                f"model as `{formula}` over other prompts x'_k (k = {k}). MIPO should raise it."
            )
        blocks += [Block("h2", heading), Block("p", text)]
        fig = plot_distributions(
            {
                "base": (entry.get("baseline") or {}).get("values", []),
                "MIPO": (entry.get("model") or {}).get("values", []),
            },
            run.figure_path(f"pmi-{name}.png"),
            title="PMI of responses under the base model",
            xlabel=f"{formula}  (nats)",
        )
        if fig:
            blocks.append(Block("figure", "PMI of base and MIPO responses (dashed: means)", path=fig))
    return blocks


def training_blocks(run: RunFolder) -> list[Block]:
    """The loss (and, for DPO, reward margin) curve, and the training run's summary."""
    blocks = [Block("h2", "Training")]
    steps = [m for m in run.metrics if "loss" in m and "step" in m]
    if steps:
        from mipo.formats.metrics import plot_curves

        fig = plot_curves(steps, run.figure_path("training.png"))
        what = "loss and reward margin" if any("rewards/margins" in m for m in steps) else "loss"
        blocks.append(Block("figure", f"{run.objective} {what} per logging step", path=fig))
    summary = run.train_summary
    if summary:
        row = [
            str(summary.get("steps", DASH)),
            format_number(summary.get("seconds"), 0),
            format_number(summary.get("tokens_per_second"), 0),
            format_number(summary.get("final_loss")),
            format_number(summary.get("final_margins")),
        ]
        headers = ["steps", "seconds", "tokens/s", "final loss", "final margin"]
        blocks.append(Block("table", headers=headers, rows=[row]))
    return blocks


def _paired_examples(folder: Path, entry: dict[str, Any]) -> list[tuple[dict, dict]]:
    """``(base row, MIPO row)`` for every item and seed both models answered, most different scores first."""
    paths = entry.get("examples") or {}
    if "model" not in paths or "baseline" not in paths:
        return []
    base_rows = {(r.get("id"), r.get("seed")): r for r in read_rows(folder / paths["baseline"])}
    pairs = [
        (base_rows[(r.get("id"), r.get("seed"))], r)
        for r in read_rows(folder / paths["model"])
        if (r.get("id"), r.get("seed")) in base_rows and r.get("response")
    ]
    # Show where the models differ most first, so the reader sees what changed.
    pairs.sort(key=lambda br: -abs((br[1].get("score") or 0) - (br[0].get("score") or 0)))
    return pairs


def example_blocks(run: RunFolder) -> list[Block]:
    """A few prompts with the base and MIPO responses side by side (prefs first: that is what MIPO targets)."""
    if run.examples == 0:
        return []
    for _, (folder, results) in sorted(run.evaluations.items(), key=lambda kv: "prefs" not in kv[0]):
        for task, entry in results.get("tasks", {}).items():
            pairs = _paired_examples(folder, entry)
            if not pairs:
                continue
            rows = [
                [
                    "\n\n".join(f"[{m['role']}] {m['content']}" for m in mipo.get("prompt") or []),
                    f"{base.get('response', '')}\n\n(score {format_number(base.get('score'), 2)})",
                    f"{mipo.get('response', '')}\n\n(score {format_number(mipo.get('score'), 2)})",
                ]
                for base, mipo in pairs[: run.examples]
            ]
            return [
                Block("h2", f"Examples ({task})"),
                Block(
                    "p",
                    "Items where the two models' scores differ most; scores are the fraction of stated "
                    "preferences followed (or the task's metric).",
                ),
                Block("sidebyside", headers=["prompt", "base model", "MIPO model"], rows=rows),
            ]
    return []


def settings_blocks(run: RunFolder) -> list[Block]:
    """What was run: the run's settings, training's resolved config, each evaluation's, times, versions."""
    config = run.config
    rows = [
        ["model", str(config.get("model", ""))],
        ["seed", str(config.get("seed", ""))],
        ["prompts", json.dumps(config.get("prompts", {}))],
        ["pairs", json.dumps(config.get("pairs", {}))],
        ["pairs written", str(run.pairs_written)],
        ["train", json.dumps(config.get("train", {}))],
    ]
    resolved = {k: v for k, v in run.train_config.items() if v not in (None, {}, [], "")}
    if resolved:
        rows.append(["train (resolved)", json.dumps(resolved)])
    for name, (_, results) in run.evaluations.items():
        rows.append([f"eval {name}", json.dumps(results.get("settings", {}))])
    for stage, state in sorted(run.stages.items()):
        if state and "seconds" in state:
            rows.append([f"time: {stage}", f"{state['seconds']:.0f} s"])
    rows.extend([f"version: {k}", v] for k, v in versions().items())
    return [Block("h2", "What was run"), Block("table", headers=["setting", "value"], rows=rows)]


# The report, top to bottom: each section reads the run folder and returns its blocks (none when it has
# nothing to show). A new section is one function added here.
SECTIONS: tuple[Callable[[RunFolder], list[Block]], ...] = (
    headline_blocks,
    results_blocks,
    context_effect_blocks,
    judge_blocks,
    preference_blocks,
    objective_blocks,
    training_blocks,
    example_blocks,
    settings_blocks,
)
