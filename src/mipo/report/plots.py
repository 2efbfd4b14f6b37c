"""The report's figures (matplotlib, written as PNG files beside the report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
    """Grouped bars with their intervals: with and without the user's context (and with another user's,
    where measured), base vs MIPO.

    ``scores`` is a ``context_effect`` entry's ``scores`` (``model_with``, ``baseline_without``, ...)."""
    roles = [
        (role, label) for role, label in (("baseline", "base"), ("model", "MIPO")) if f"{role}_with" in scores
    ]
    if not roles:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / len(roles)
    sides = [
        (side, text)
        for side, text in (
            ("with", "with the user's context"),
            ("without", "without it"),
            ("wrong", "another user's context"),
        )
        if all(f"{role}_{side}" in scores for role, _ in roles)
    ]
    for i, (role, label) in enumerate(roles):
        arms = [scores[f"{role}_{side}"] for side, _ in sides]
        means = [arm["mean"] for arm in arms]
        errors = [
            [m - arm["ci"][0] for m, arm in zip(means, arms)],
            [arm["ci"][1] - m for m, arm in zip(means, arms)],
        ]
        xs = [j + i * width for j in range(len(sides))]
        ax.bar(xs, means, width=width, yerr=errors, capsize=4, label=label, color=f"C{i}")
    ax.set_xticks([j + width * (len(roles) - 1) / 2 for j in range(len(sides))])
    ax.set_xticklabels([text for _, text in sides])
    ax.set(title=title, ylabel="score (mean, with interval)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
