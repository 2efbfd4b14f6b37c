"""Results written for people: a number, a value with its interval, a p-value, and the tables of results.json.

One module so that ``mipo eval``, ``mipo demo``, the report and ``scripts/results_table.py`` write the same
numbers the same way. A summary is what :mod:`mipo.core.stats` returns: ``{mean, ci: [low, high], n}``, and for
a paired difference also ``p_value``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASH = "–"  # what the report and the demo's table print for a number that was not measured
DEFAULT_CONFIDENCE = 0.95  # results.json files written before the level was recorded used this one

UNCHECKED = "no judge-check: add --task judge-check to measure how far to trust this judge"


def format_number(value: float | None, digits: int = 3, *, signed: bool = False, missing: str = DASH) -> str:
    """``0.412`` (``+0.412`` when ``signed``); ``missing`` for ``None``."""
    if value is None:
        return missing
    return f"{value:{'+' if signed else ''}.{digits}f}"


def format_ci(
    summary: dict[str, Any] | None, digits: int = 3, *, signed: bool = False, missing: str = DASH
) -> str:
    """``0.412 [0.351, 0.470]``: the mean and its interval; the mean alone when there is no interval,
    ``missing`` when there is no summary, ``n/a`` when a bound is not a number."""
    if not summary:
        return missing
    mean, ci = summary.get("mean"), summary.get("ci")
    if not ci:
        return format_number(mean, digits, signed=signed, missing=missing)
    low, high = ci
    if any(x is not None and math.isnan(x) for x in (mean, low, high)):
        return "n/a"
    return (
        f"{format_number(mean, digits, signed=signed, missing=missing)} "
        f"[{format_number(low, digits, signed=signed, missing=missing)}, "
        f"{format_number(high, digits, signed=signed, missing=missing)}]"
    )


def format_p(p: float | None, *, spec: str = ".3f", floor: float | None = 0.001, missing: str = DASH) -> str:
    """A p-value: ``< 0.001`` below ``floor`` (a resampled p-value is never exactly 0), else ``format(p, spec)``."""
    if p is None:
        return missing
    if floor is not None and p < floor:
        return f"< {floor:g}"
    return format(p, spec)


def confidence_of(results: dict[str, Any]) -> float:
    """The confidence level of the intervals in one ``results.json``."""
    return float((results.get("settings") or {}).get("confidence") or DEFAULT_CONFIDENCE)


def ci_label(confidence: float) -> str:
    """``95% CI`` for 0.95, ``90% CI`` for 0.9, ``99.5% CI`` for 0.995."""
    return f"{confidence * 100:g}% CI"


def shared_ci_label(results: Iterable[dict[str, Any]]) -> str:
    """The interval label for a table that holds several evaluations: their level, or plain ``CI`` when
    they differ."""
    levels = {confidence_of(r) for r in results}
    return ci_label(levels.pop()) if len(levels) == 1 else "CI"


def load_evaluations(run_dir: str | Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """``{eval name: (folder, results.json)}`` for every finished evaluation of a ``mipo run`` folder."""
    out = {}
    for results in sorted((Path(run_dir) / "eval").glob("*/results.json")):
        out[results.parent.name] = (results.parent, json.loads(results.read_text(encoding="utf-8")))
    return out


@dataclass
class ComparisonRow:
    """One task of one evaluation, base model against the trained model, every cell already written out."""

    task: str
    metric: str
    n: str
    baseline: str
    model: str
    difference: str
    p: str


def comparison_rows(evaluations: Iterable[dict[str, Any]]) -> list[ComparisonRow]:
    """One row per task of each ``results.json``: both scores and their paired difference with intervals."""
    rows = []
    for results in evaluations:
        for task, entry in results.get("tasks", {}).items():
            diff = entry.get("difference")
            rows.append(
                ComparisonRow(
                    task=task_label(task, entry),
                    metric=entry.get("metric", ""),
                    n=str(entry.get("n", "")),
                    baseline=format_ci(entry.get("baseline")),
                    model=format_ci(entry.get("model")),
                    difference=format_ci(diff),
                    p=format_p(diff.get("p_value") if diff else None),
                )
            )
    return rows


def task_label(task: str, entry: dict[str, Any]) -> str:
    """A task's name in tables: ``pmi (context)`` for the context PMI, so it reads apart from topic PMI."""
    return f"{task} (context)" if entry.get("against") == "context" else task


def comparison_table(evaluations: list[dict[str, Any]]) -> str:
    """The fixed-width before/after table ``mipo demo`` prints: one line per task."""
    label = shared_ci_label(evaluations)
    rows = comparison_rows(evaluations)
    width = max([8, *(len(row.task) for row in rows)])
    lines = [
        f"{'task':<{width}} {'n':>4}  {f'base [{label}]':<24} {f'MIPO [{label}]':<24} "
        f"{f'MIPO - base [{label}]':<26} p"
    ]
    for row in rows:
        lines.append(
            f"{row.task:<{width}} {row.n:>4}  {row.baseline:<24} {row.model:<24} {row.difference:<26} {row.p}"
        )
    return "\n".join(lines)


def context_effect_summary(evaluations: list[dict[str, Any]]) -> list[str]:
    """Under the demo's table: each task's context effect lines (with and without context, verdict)."""
    lines = []
    for results in evaluations:
        for task, entry in results.get("tasks", {}).items():
            if entry.get("context_effect"):
                lines += ["", *context_effect_lines(task, entry["context_effect"])]
            if entry.get("distillation_gap"):
                lines += ["", *distillation_gap_lines(task, entry["distillation_gap"])]
    return lines


def results_table(results: dict[str, Any]) -> str:
    """``mipo eval``'s plain-text table: one line per task (the model's score, the baseline's, their
    difference), then the per-preference rates, the pairs file's PMI and the models compared."""
    header = ["task", "n", "model", "baseline", "difference", "p"]
    lines = []
    for name, entry in results["tasks"].items():
        diff = entry.get("difference")
        lines.append(
            [
                task_label(name, entry),
                str(entry["n"]),
                format_ci(entry["model"], missing="-"),
                format_ci(entry.get("baseline"), missing="-"),
                format_ci(diff, missing="-"),
                format_p(diff["p_value"] if diff else None, spec=".3g", floor=None, missing="-"),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    template = "  ".join(f"{{:<{w}}}" for w in widths)
    text = [template.format(*header), template.format(*("-" * w for w in widths))]
    text += [template.format(*r) for r in lines]
    for name, entry in results["tasks"].items():
        text += _task_details(name, entry)
    text += judge_lines(results)
    text.append(_models_line(results["models"]))
    return "\n".join(text)


def _task_details(name: str, entry: dict[str, Any]) -> list[str]:
    """The lines under the table for one task: preferences followed by type, and the pairs file's PMI."""
    text = []
    if "per_preference" in entry["model"]:
        text.append(f"\n{name}: preferences followed, by type (model / baseline)")
        baseline_rates = (entry.get("baseline") or {}).get("per_preference", {})
        for ptype, v in entry["model"]["per_preference"].items():
            b = baseline_rates.get(ptype)
            text.append(
                f"  {ptype:<18} {v['mean']:.2f} (n={v['n']})" + (f"  /  {b['mean']:.2f}" if b else "")
            )
    if "pairs" in entry:
        p = entry["pairs"]
        text.append(
            f"\n{name}: pairs file  chosen {format_ci(p['chosen'])}  rejected {format_ci(p['rejected'])}"
        )
    if entry.get("context_effect"):
        text += ["", *context_effect_lines(name, entry["context_effect"])]
    if entry.get("distillation_gap"):
        text += ["", *distillation_gap_lines(name, entry["distillation_gap"])]
    return text


def context_effect_lines(name: str, effect: dict[str, Any], *, indent: str = "  ") -> list[str]:
    """The context effect of one task as text: both models with and without the user's context, the
    generic shift and the context effect (paired, with intervals and p-values), then the verdict."""
    scores = effect.get("scores", {})
    lines = [f"{name}: with and without the user's context (n={effect.get('n')} items)"]
    for role in ("model", "baseline"):
        arms = (("with", "with"), ("without", "without"), ("wrong", "another user's"))
        shown = [
            f"{label} {format_ci(scores[f'{role}_{arm}'])}"
            for arm, label in arms
            if f"{role}_{arm}" in scores
        ]
        if shown:
            lines.append(f"{indent}{role:<9} " + "   ".join(shown))
    parts = (
        ("generic shift", "generic_shift", "model - baseline, without context"),
        ("context effect", "context_effect", "(model - baseline) with minus without, paired per item"),
        ("content effect", "content_effect", "(model - baseline) own minus another user's context, paired"),
        ("with - without", "lift", "the model alone"),
        ("own - other's", "content_lift", "the model alone, own minus another user's context"),
    )
    for label, key, meaning in parts:
        if effect.get(key):
            lines.append(
                f"{indent}{label:<15}{format_ci(effect[key], signed=True)}  "
                f"p {format_p(effect[key].get('p_value'))}  ({meaning})"
            )
    if effect.get("verdict"):
        lines.append(f"{indent}verdict: {effect['verdict']}")
    return lines


def distillation_gap_lines(name: str, gap: dict[str, Any], *, indent: str = "  ") -> list[str]:
    """The distillation gap of one task as text: KL(CAD teacher || model) per reply token for both models, the
    gap closed, the share of CAD's decisions the model takes, and what the gap compares."""
    if "skipped" in gap:
        return [f"{name}: distillation gap: not measured: {gap['skipped']}"]
    kl, decisions, points = gap["kl"], gap["decisions"], gap["decision_points"]
    lines = [
        f"{name}: distillation gap to CAD (A = {gap['alpha']:g}) of the baseline, along {gap['along']} "
        f"(n={gap['n']} items)",
        f"{indent}KL(CAD || .)    model {format_ci(kl['model'], 4)}   baseline {format_ci(kl['baseline'], 4)}"
        "  (nats per reply token)",
        f"{indent}gap closed      {format_ci(gap['gap_closed'], signed=True)}  (1 - KL(model) / KL(baseline))",
    ]
    share = f"{points['share']:.1%} of {points['tokens']} reply tokens"
    if decisions.get("model"):
        lines.append(
            f"{indent}CAD's decisions {format_ci(decisions['model'])} taken by the model, "
            f"{format_ci(decisions['baseline'])} by the baseline ({points['count']} positions on "
            f"{decisions['n']} items, {share})"
        )
    else:
        lines.append(f"{indent}CAD's decisions none: CAD's top token is the baseline's everywhere ({share})")
    lines.append(f"{indent}compares: {gap['compares']}")
    return lines


def judge_lines(results: dict[str, Any]) -> list[str]:
    """The judge tasks' lines: each win rate, and beside it how far to trust the judge (its agreement with
    the ``prefs`` checkers, or a line saying it was not checked)."""
    text = []
    for name, entry in results["tasks"].items():
        if "judge" not in entry and "judge_check" not in entry:
            continue
        text.append(f"\n{name}:")
        if "judge" in entry:
            text.append(f"  {summary_line(entry['judge'])}")
        check = entry.get("judge_check")
        source = " (task judge-check)" if check and check.get("from") else ""
        text.append(f"  judge-check{source}: {check['note'] if check else UNCHECKED}")
    return text


def _models_line(models: dict[str, Any]) -> str:
    return (
        f"\nmodel: {models['model']['name']}"
        + (f"   baseline: {models['baseline']['name']}" if models["baseline"] else "")
        + (f"   pmi reference: {models['reference']['name']}" if models.get("reference") else "")
    )


def print_results(results_path: str | Path) -> None:
    """Print ``mipo eval``'s table for a ``results.json`` and where it is."""
    results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    print(results_table(results))
    print(f"\nresults: {results_path}")


def summary_line(summary: dict[str, Any]) -> str:
    """A one-line account of ``judge_pairwise``'s summary, for a printed table."""
    head = f"judge {summary['judge']} ({Path(summary['template']).name})"
    if summary["win_rate"] is None:
        return (
            f"{head}: no parseable verdict on {summary['pairs']} pairs ({summary['unparseable']} unparseable)"
        )
    words_model, words_baseline = summary["mean_words"]["model"], summary["mean_words"]["baseline"]
    return (
        f"{head}: win rate {format_ci(summary['win_rate'])} over {summary['n']} pairs "
        f"(W {summary['wins']} / L {summary['losses']} / T {summary['ties']}, "
        f"{summary['inconsistent']} of the ties from orders that disagree; "
        f"{summary['unparseable']} unparseable), sign test p={summary['sign_test_p']:.3g}; "
        f"length-controlled {format_ci(summary['lc_win_rate'])} "
        f"(mean words: model {words_model:.0f}, baseline {words_baseline:.0f})"
    )
