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
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
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
            out.append(f"<figure><img alt='{html.escape(b.text)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(b.text)}</figcaption></figure>")
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


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mipo", "torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


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
        axes[1].plot(steps, [v if v is not None else float("nan") for v in margins], marker="o", ms=3, color="C2")
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
        ax.hist(values, bins=bins, range=(lo, hi) if hi > lo else None, alpha=0.5, color=f"C{i}",
                label=f"{name} (mean {mean:.2f})")
        ax.axvline(mean, color=f"C{i}", lw=1.5, ls="--")
    ax.set(title=title, xlabel=xlabel, ylabel="responses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grouped_bars(groups: dict[str, dict[str, float]], path: Path, *, title: str, ylabel: str) -> Path | None:
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
        ax.bar(xs, [groups[model].get(c, float("nan")) for c in categories], width=width, label=model,
               color=f"C{i}")
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(categories))])
    ax.set_xticklabels(categories, rotation=40, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel, ylim=(0, 1.05))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
