"""The report stage: ``report.md`` and a self-contained ``report.html`` (plots embedded) from a run folder.

The run folder is read once (``RunFolder``); each section of the report (``SECTIONS``: headline, results,
the context effect, preference types, the PMI objective, training, examples, what was run) is a function
of it that returns blocks (headings, paragraphs, tables, figures). The blocks are rendered twice: once as
Markdown with the figures beside it as PNG files, once as one HTML file with the PNGs inlined.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo import versions
from mipo.config import option, require
from mipo.files import atomic_write_text
from mipo.results_format import (
    DASH,
    ci_label,
    comparison_rows,
    confidence_of,
    format_ci,
    format_number,
    format_p,
    load_evaluations,
    shared_ci_label,
)

log = logging.getLogger(__name__)


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "p" | "table" | "figure" | "pre" | "sidebyside"
    text: str = ""
    headers: list[str] | None = None
    rows: list[list[str]] | None = None
    path: Path | None = None


def render_markdown(blocks: list[Block], folder: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}\n")
        elif b.kind == "h2":
            out.append(f"## {b.text}\n")
        elif b.kind == "h3":
            out.append(f"### {b.text}\n")
        elif b.kind == "p":
            out.append(b.text + "\n")
        elif b.kind == "pre":
            out.append("```\n" + b.text.rstrip() + "\n```\n")
        elif b.kind in ("table", "sidebyside"):
            cells = [[c.replace("|", "\\|").replace("\n", "<br>") for c in r] for r in b.rows or []]
            out.append("| " + " | ".join(b.headers or []) + " |")
            out.append("|" + "---|" * len(b.headers or []))
            out.extend("| " + " | ".join(r) + " |" for r in cells)
            out.append("")
        elif b.kind == "figure" and b.path:
            out.append(f"![{b.text}]({b.path.relative_to(folder)})\n\n*{b.text}*\n")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.5}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.35em .7em;
text-align:left;vertical-align:top}th{background:#f5f5f7}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:.9em}
pre{background:#f5f5f7;padding:.8em;overflow-x:auto;font-size:.85em}
table.side td{width:33%;white-space:pre-wrap;font-size:.88em}
"""


def render_html(blocks: list[Block], title: str) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "pre":
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        elif b.kind in ("table", "sidebyside"):
            cls = " class='side'" if b.kind == "sidebyside" else ""
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers or [])
            body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in b.rows or [])
            out.append(f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "figure" and b.path:
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(
                f"<figure><img alt='{html.escape(b.text)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def _cell(text: str) -> str:
    stripped = text.replace(",", "").replace("−", "-").replace("+", "").strip()
    numeric = bool(stripped) and stripped.replace(".", "", 1).replace("-", "", 1).isdigit()
    return f"<td class='num'>{html.escape(text)}</td>" if numeric else f"<td>{_inline(text)}</td>"


def _inline(text: str) -> str:
    """`code` spans and **bold**, the two Markdown marks the report's prose uses."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_distributions(series: dict[str, list[float]], path: Path, *, title: str, xlabel: str) -> Path | None:
    """Overlaid histograms, one per model (e.g. PMI of base vs MIPO responses)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    lo = min(min(v) for v in series.values())
    hi = max(max(v) for v in series.values())
    bins = 30 if hi > lo else 1
    for i, (name, values) in enumerate(series.items()):
        mean = sum(values) / len(values)
        ax.hist(
            values,
            bins=bins,
            range=(lo, hi) if hi > lo else None,
            alpha=0.5,
            color=f"C{i}",
            label=f"{name} (mean {mean:.2f})",
        )
        ax.axvline(mean, color=f"C{i}", lw=1.5, ls="--")
    ax.set(title=title, xlabel=xlabel, ylabel="responses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grouped_bars(
    groups: dict[str, dict[str, float]], path: Path, *, title: str, ylabel: str
) -> Path | None:
    """One bar per model within each category (e.g. adherence per preference type)."""
    models = list(groups)
    categories = sorted({c for g in groups.values() for c in g})
    if not models or not categories:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(categories) * len(models)), 3.8))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        xs = [j + i * width for j in range(len(categories))]
        ax.bar(
            xs,
            [groups[model].get(c, float("nan")) for c in categories],
            width=width,
            label=model,
            color=f"C{i}",
        )
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(categories))])
    ax.set_xticklabels(categories, rotation=40, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel, ylim=(0, 1.05))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_context_effect(scores: dict[str, dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """Grouped bars with their intervals: with and without the user's context, base vs MIPO.

    ``scores`` is a ``context_effect`` entry's ``scores`` (``model_with``, ``baseline_without``, ...)."""
    roles = [
        (role, label) for role, label in (("baseline", "base"), ("model", "MIPO")) if f"{role}_with" in scores
    ]
    if not roles:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / len(roles)
    for i, (role, label) in enumerate(roles):
        arms = [scores[f"{role}_with"], scores[f"{role}_without"]]
        means = [arm["mean"] for arm in arms]
        errors = [
            [m - arm["ci"][0] for m, arm in zip(means, arms)],
            [arm["ci"][1] - m for m, arm in zip(means, arms)],
        ]
        xs = [j + i * width for j in range(2)]
        ax.bar(xs, means, width=width, yerr=errors, capsize=4, label=label, color=f"C{i}")
    ax.set_xticks([j + width * (len(roles) - 1) / 2 for j in range(2)])
    ax.set_xticklabels(["with the user's context", "without it"])
    ax.set(title=title, ylabel="score (mean, with interval)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class ReportConfig:
    """The ``report:`` mapping of a ``mipo run`` config."""

    examples: int = option(5, "how many prompts to show with both models' replies side by side")

    def __post_init__(self) -> None:
        require([] if self.examples >= 0 else [f"examples must be 0 or more, got {self.examples}"])


OBJECTIVE_NAMES = {"dpo": "DPO", "sft": "SFT on the chosen responses"}


@dataclass
class RunFolder:
    """What the report reads from a ``mipo run`` folder; each section of the report reads from this."""

    path: Path
    figures: Path  # the report's folder: figures are written beside report.md
    config: dict[str, Any]  # run_config.json
    stages: dict[str, Any]  # stage name -> its stage.json
    evaluations: dict[str, tuple[Path, dict[str, Any]]]  # eval name -> (folder, results.json)
    train_config: dict[str, Any]  # the resolved TrainConfig that training recorded in train_config.json
    train_summary: dict[str, Any]
    metrics: list[dict[str, Any]]  # metrics.jsonl: one row per logging step
    pairs_written: int
    examples: int  # how many side-by-side examples to show

    @property
    def objective(self) -> str:
        """The training objective's name as the report writes it (``DPO``, ``SFT on the chosen responses``)."""
        name = (
            self.train_config.get("objective") or (self.config.get("train") or {}).get("objective") or "dpo"
        )
        return OBJECTIVE_NAMES.get(name, name)

    def figure_path(self, name: str) -> Path:
        """Where a section writes a figure (beside report.md)."""
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / name

    @property
    def results(self) -> list[dict[str, Any]]:
        return [results for _, results in self.evaluations.values()]


def read_run_folder(run_dir: str | Path, *, examples: int = 5) -> RunFolder:
    run_dir = Path(run_dir)
    model_dir = run_dir / "train" / "model"
    pairs_path = run_dir / "pairs" / "pairs.jsonl"
    return RunFolder(
        path=run_dir,
        figures=run_dir / "report",
        config=read_json(run_dir / "run_config.json") or {},
        stages={p.parent.name: read_json(p) for p in run_dir.glob("*/stage.json")},
        evaluations=load_evaluations(run_dir),
        # training records {"train_config": the resolved TrainConfig, "<objective>_config": TRL's, ...}
        train_config=(read_json(model_dir / "train_config.json") or {}).get("train_config") or {},
        train_summary=read_json(model_dir / "train_summary.json") or {},
        metrics=read_rows(model_dir / "metrics.jsonl"),
        pairs_written=len(read_rows(pairs_path)),
        examples=examples,
    )


def _task_entries(run: RunFolder) -> Iterator[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """``(eval name, results.json, task name, task entry)`` for every task of every evaluation."""
    for name, (_, results) in run.evaluations.items():
        for task, entry in results.get("tasks", {}).items():
            yield name, results, task, entry


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
    for _, results, task, entry in _task_entries(run):
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
    for _, _, task, entry in _task_entries(run):
        if (entry.get("context_effect") or {}).get("verdict"):
            blocks.append(
                Block("p", f"**{task}, personalization or style?** {entry['context_effect']['verdict']}.")
            )
    return blocks


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
    for name, results, task, entry in _task_entries(run):
        effect = entry.get("context_effect")
        if not effect:
            continue
        label = ci_label(confidence_of(results))
        blocks.append(Block("h2", f"Personalization or a change of style? ({task})"))
        blocks.append(
            Block(
                "p",
                f"Each model answered the {effect.get('n')} items again without the user's context, scored "
                "against the same stated preferences. The *generic shift* is MIPO − base without the context "
                "(a change of style for everyone); the *context effect* is MIPO − base with the context minus "
                "the same without it, paired per item: only it shows that the model reads the user's context.",
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


def _context_effect_rows(effect: dict[str, Any]) -> list[list[str]]:
    names = {"model": "MIPO", "baseline": "base"}
    rows = []
    for arm, value in effect.get("scores", {}).items():
        role, _, side = arm.partition("_")
        rows.append([f"{names.get(role, role)} {side} context", format_ci(value), ""])
    for key, label in (
        ("gain", "gain (MIPO − base, with context)"),
        ("generic_shift", "generic shift (MIPO − base, without context)"),
        ("context_effect", "context effect (difference of differences)"),
        ("lift", "MIPO with − without context"),
    ):
        if effect.get(key):
            rows.append([label, format_ci(effect[key], signed=True), format_p(effect[key].get("p_value"))])
    return rows


def judge_blocks(run: RunFolder) -> list[Block]:
    """Each judge task's win rate, and beside it how far to trust the judge (its agreement with the code
    checkers of ``prefs``): a judge's win rate is never shown alone."""
    from mipo.judges import summary_line
    from mipo.tasks.judge import UNCHECKED

    blocks = []
    for _, _, task, entry in _task_entries(run):
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
    for name, _, task, entry in _task_entries(run):
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
    for name, results, _, entry in _task_entries(run):
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
        from mipo.trainer_callbacks import plot_curves

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


def build_report(run_dir: str | Path, *, title: str = "", examples: int = 5) -> Path:
    """Write ``RUN/report/report.md``, its figures and ``RUN/report/report.html``; return the Markdown path."""
    run = read_run_folder(run_dir, examples=examples)
    run.figures.mkdir(parents=True, exist_ok=True)
    title = title or f"MIPO run: {run.path.name}"
    blocks = [Block("h1", title)]
    for section in SECTIONS:
        blocks.extend(section(run))
    md_path = atomic_write_text(run.figures / "report.md", render_markdown(blocks, run.figures))
    atomic_write_text(run.figures / "report.html", render_html(blocks, title))
    log.info("wrote %s and %s", md_path, run.figures / "report.html")
    return md_path
