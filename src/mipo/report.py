"""The report stage: ``report.md`` and a self-contained ``report.html`` (plots embedded) from a run folder.

The report is built as a list of blocks (headings, paragraphs, tables, figures), rendered twice:
once as Markdown with the figures beside it as PNG files, once as one HTML file with the PNGs inlined.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo import versions
from mipo.files import atomic_write_text

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
    import re

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


def plot_training(metrics: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss and reward margins against step (rows of ``metrics.jsonl``)."""
    rows = [m for m in metrics if "loss" in m and "step" in m]
    if not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    steps = [m["step"] for m in rows]
    axes[0].plot(steps, [m["loss"] for m in rows], marker="o", ms=3)
    axes[0].set(title="training loss", xlabel="step")
    margins = [m.get("rewards/margins") for m in rows]
    if any(v is not None for v in margins):
        axes[1].plot(
            steps, [v if v is not None else float("nan") for v in margins], marker="o", ms=3, color="C2"
        )
        axes[1].axhline(0, color="#999", lw=0.8)
    axes[1].set(title="reward margin (chosen − rejected)", xlabel="step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fmt_ci(summary: dict[str, Any] | None, digits: int = 3) -> str:
    if not summary:
        return "–"
    ci = summary.get("ci")
    text = _fmt(summary.get("mean"), digits)
    return f"{text} [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]" if ci else text


def _fmt_p(p: float | None) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def load_evaluations(run_dir: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """``{eval name: (folder, results.json)}`` for every finished evaluation of the run."""
    out = {}
    for results in sorted((run_dir / "eval").glob("*/results.json")):
        out[results.parent.name] = (results.parent, json.loads(results.read_text(encoding="utf-8")))
    return out


def results_rows(evaluations: dict[str, tuple[Path, dict[str, Any]]]) -> list[list[str]]:
    """One row per task: baseline and MIPO scores with CIs, the paired difference with its CI and p-value."""
    rows = []
    for _, results in evaluations.values():
        for task, entry in results.get("tasks", {}).items():
            diff = entry.get("difference")
            rows.append(
                [
                    task,
                    entry.get("metric", ""),
                    str(entry.get("n", "")),
                    _fmt_ci(entry.get("baseline")),
                    _fmt_ci(entry.get("model")),
                    _fmt_ci(diff),
                    _fmt_p(diff.get("p_value") if diff else None),
                ]
            )
    return rows


def build_report(run_dir: str | Path, *, title: str = "", examples: int = 5) -> Path:
    """Write ``RUN/report/report.md``, its figures and ``RUN/report/report.html``; return the Markdown path."""
    run_dir = Path(run_dir)
    folder = run_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    config = read_json(run_dir / "run_config.json") or {}
    stages = {p.parent.name: read_json(p) for p in run_dir.glob("*/stage.json")}
    evaluations = load_evaluations(run_dir)
    model_dir = run_dir / "train" / "model"
    train_config = read_json(model_dir / "train_config.json") or {}
    train_summary = read_json(model_dir / "train_summary.json") or {}
    pairs_path = run_dir / "pairs" / "pairs.jsonl"
    pairs = read_rows(pairs_path)
    title = title or f"MIPO run: {run_dir.name}"
    strategy = (config.get("pairs") or {}).get("strategy", "random")
    blocks: list[Block] = [Block("h1", title)]

    # --- headline
    rows = results_rows(evaluations)
    headline = []
    for _, results in evaluations.values():
        for task, entry in results.get("tasks", {}).items():
            diff = entry.get("difference")
            if diff and entry.get("baseline") and entry.get("model"):
                ci = diff.get("ci") or [None, None]
                verdict = (
                    "the interval excludes zero"
                    if ci[0] is not None and (ci[0] > 0 or ci[1] < 0)
                    else "the interval includes zero: no measured difference"
                )
                headline.append(
                    f"**{task}**: base {_fmt(entry['baseline']['mean'])} → MIPO "
                    f"{_fmt(entry['model']['mean'])}, difference {_fmt(diff['mean'], 3)} "
                    f"(95% CI [{_fmt(ci[0])}, {_fmt(ci[1])}], p {_fmt_p(diff.get('p_value'))}, "
                    f"n = {entry.get('n')}); {verdict}."
                )
    blocks.append(
        Block(
            "p",
            f"Model `{config.get('model', '?')}` trained with DPO on {len(pairs)} MIPO pairs "
            f"(`{strategy}` negatives), evaluated against the base model on the same items "
            "and seeds.",
        )
    )
    blocks.extend(Block("p", h) for h in headline)

    # --- results
    blocks.append(Block("h2", "Results"))
    if rows:
        blocks.append(
            Block(
                "table",
                headers=[
                    "task",
                    "metric",
                    "n",
                    "base [95% CI]",
                    "MIPO [95% CI]",
                    "MIPO − base [95% CI]",
                    "p",
                ],
                rows=rows,
            )
        )
        blocks.append(
            Block(
                "p",
                "Intervals are percentile bootstrap intervals over items; the difference is "
                "paired item by item, its p-value from a sign-flip test.",
            )
        )
    else:
        blocks.append(Block("p", "No evaluation has finished yet."))

    # --- per preference type
    for name, (_, results) in evaluations.items():
        for task, entry in results.get("tasks", {}).items():
            per = {
                role: {t: v["mean"] for t, v in (entry.get(role) or {}).get("per_preference", {}).items()}
                for role in ("baseline", "model")
            }
            if not per["model"]:
                continue
            blocks.append(Block("h2", f"Preference types ({task})"))
            fig = plot_grouped_bars(
                {"base": per["baseline"], "MIPO": per["model"]},
                folder / f"preferences-{name}.png",
                title="stated preferences followed",
                ylabel="fraction followed",
            )
            if fig:
                blocks.append(
                    Block("figure", "Fraction of each stated preference followed, base vs MIPO", path=fig)
                )
            counts = (entry.get("model") or {}).get("per_preference", {})
            blocks.append(
                Block(
                    "table",
                    headers=["preference", "n", "base", "MIPO", "MIPO − base"],
                    rows=[
                        [
                            t,
                            str(counts[t]["n"]),
                            _fmt(per["baseline"].get(t)),
                            _fmt(per["model"].get(t)),
                            _fmt(per["model"][t] - per["baseline"][t]) if t in per["baseline"] else "–",
                        ]
                        for t in sorted(per["model"])
                    ],
                )
            )

    # --- objective
    for name, (_, results) in evaluations.items():
        for entry in results.get("tasks", {}).values():
            if entry.get("kind") != "pmi":
                continue
            blocks.append(Block("h2", "The objective: pointwise mutual information"))
            blocks.append(
                Block(
                    "p",
                    "For each held-out prompt x, a response y sampled from each model is scored "
                    "under the base model as `log π(y|x) − log mean_k π(y|x'_k)` over other "
                    f"prompts x'_k (k = {results.get('settings', {}).get('k', '?')}). MIPO "
                    "should raise it.",
                )
            )
            series = {
                "base": (entry.get("baseline") or {}).get("values", []),
                "MIPO": (entry.get("model") or {}).get("values", []),
            }
            fig = plot_distributions(
                series,
                folder / f"pmi-{name}.png",
                title="PMI of responses under the base model",
                xlabel="log π(y|x) − log mean_k π(y|x'_k)  (nats)",
            )
            if fig:
                blocks.append(Block("figure", "PMI of base and MIPO responses (dashed: means)", path=fig))

    # --- training
    blocks.append(Block("h2", "Training"))
    metrics = read_rows(model_dir / "metrics.jsonl")
    fig = plot_training(metrics, folder / "training.png")
    if fig:
        blocks.append(Block("figure", "DPO loss and reward margin per logging step", path=fig))
    if train_summary:
        blocks.append(
            Block(
                "table",
                headers=["steps", "seconds", "tokens/s", "final loss", "final margin"],
                rows=[
                    [
                        str(train_summary.get("steps", "–")),
                        _fmt(train_summary.get("seconds"), 0),
                        _fmt(train_summary.get("tokens_per_second"), 0),
                        _fmt(train_summary.get("final_loss")),
                        _fmt(train_summary.get("final_margins")),
                    ]
                ],
            )
        )

    # --- examples
    blocks.extend(example_blocks(evaluations, examples))

    # --- what was run
    blocks.append(Block("h2", "What was run"))
    settings_rows = [
        ["model", str(config.get("model", ""))],
        ["seed", str(config.get("seed", ""))],
        ["prompts", json.dumps(config.get("prompts", {}))],
        ["pairs", json.dumps(config.get("pairs", {}))],
        ["pairs written", str(len(pairs))],
        ["train", json.dumps(config.get("train", {}))],
    ]
    mtrain = train_config.get("train") or train_config.get("config") or {}
    if mtrain:
        settings_rows.append(
            ["train (resolved)", json.dumps({k: v for k, v in mtrain.items() if v not in (None, {}, [], "")})]
        )
    for name, (_, results) in evaluations.items():
        settings_rows.append([f"eval {name}", json.dumps(results.get("settings", {}))])
    for stage, state in sorted(stages.items()):
        if state and "seconds" in state:
            settings_rows.append([f"time: {stage}", f"{state['seconds']:.0f} s"])
    settings_rows.extend([f"version: {k}", v] for k, v in versions().items())
    blocks.append(Block("table", headers=["setting", "value"], rows=settings_rows))

    md_path = atomic_write_text(folder / "report.md", render_markdown(blocks, folder))
    atomic_write_text(folder / "report.html", render_html(blocks, title))
    log.info("wrote %s and %s", md_path, folder / "report.html")
    return md_path


def example_blocks(evaluations: dict[str, tuple[Path, dict[str, Any]]], count: int) -> list[Block]:
    """A few prompts with the base and MIPO responses side by side (prefs first: that is what MIPO targets)."""
    for _, (folder, results) in sorted(evaluations.items(), key=lambda kv: "prefs" not in kv[0]):
        for task, entry in results.get("tasks", {}).items():
            paths = entry.get("examples") or {}
            if "model" not in paths or "baseline" not in paths:
                continue
            mipo_rows = read_rows(folder / paths["model"])
            base_rows = {(r.get("id"), r.get("seed")): r for r in read_rows(folder / paths["baseline"])}
            chosen = [
                (base_rows[(r.get("id"), r.get("seed"))], r)
                for r in mipo_rows
                if (r.get("id"), r.get("seed")) in base_rows and r.get("response")
            ]
            if not chosen:
                continue
            # Show where the models differ most first, so the reader sees what changed.
            chosen.sort(key=lambda br: -abs((br[1].get("score") or 0) - (br[0].get("score") or 0)))
            rows = []
            for base, mipo in chosen[:count]:
                prompt = "\n\n".join(f"[{m['role']}] {m['content']}" for m in mipo.get("prompt") or [])
                rows.append(
                    [
                        prompt,
                        f"{base.get('response', '')}\n\n(score {_fmt(base.get('score'), 2)})",
                        f"{mipo.get('response', '')}\n\n(score {_fmt(mipo.get('score'), 2)})",
                    ]
                )
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
