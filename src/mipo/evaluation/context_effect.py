"""Did it personalize, or only change style? The context effect, from four paired score lists.

Every item with a user context is answered twice by each model, with and without the context, and each
reply is scored against the item's stated preferences. For model M against the baseline B, per item i:

- *gain*           = M_with(i) − B_with(i)                         (what an adherence table shows)
- *generic shift*  = M_without(i) − B_without(i)                   (the change when nobody's context is read)
- *context effect* = (M_with(i) − M_without(i)) − (B_with(i) − B_without(i))   (a difference of differences)

A gain is personalization only where the context effect is above zero: the direction of the change
depends on the user's context. A model that answers everyone more briefly follows more "keep it short"
preferences with or without the context: its gain shows up as a generic shift and its context effect is 0.
Intervals are paired bootstraps over items and p-values sign-flip tests (``mipo.core.stats``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mipo.core.stats import mean_ci, paired_difference
from mipo.evaluation.content_effect import content_effect

ARMS = ("model_with", "model_without", "baseline_with", "baseline_without")
WRONG_ARMS = ("model_own", "model_wrong", "baseline_own", "baseline_wrong")


def context_effect(
    model_with: Sequence[float],
    model_without: Sequence[float],
    baseline_with: Sequence[float],
    baseline_without: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores with/without context per model, and gain, generic shift and context effect with CIs.

    The four lists are per-item scores aligned item by item (the same items in the same order).
    """
    arms = {"model_with": model_with, "model_without": model_without}
    arms |= {"baseline_with": baseline_with, "baseline_without": baseline_without}
    sizes = {name: len(values) for name, values in arms.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"context_effect: the four score lists differ in length: {sizes}")
    stats = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    model_lift = [w - wo for w, wo in zip(model_with, model_without)]
    baseline_lift = [w - wo for w, wo in zip(baseline_with, baseline_without)]
    return {
        "scores": {name: mean_ci(values, **stats) for name, values in arms.items()},
        "gain": paired_difference(model_with, baseline_with, **stats),
        "generic_shift": paired_difference(model_without, baseline_without, **stats),
        "context_effect": paired_difference(model_lift, baseline_lift, **stats),
        "n": sizes["model_with"],
    }


def per_type_context_effect(
    rows: dict[str, Sequence[dict[str, Any]]],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    min_n: int = 2,
) -> dict[str, dict[str, Any]]:
    """The context effect per preference type, from per-item example rows of the four arms.

    ``rows[arm]`` is a list of example rows aligned item by item, each with
    ``preferences: [{"type": ..., "followed": bool}, ...]`` in the same order in every arm. The unit is
    one stated preference of one item; types with fewer than ``min_n`` of them are left out.
    """
    followed: dict[str, dict[str, list[float]]] = {}
    for arm_rows in zip(*(rows[arm] for arm in ARMS)):
        for prefs in zip(*(row.get("preferences") or [] for row in arm_rows)):
            kind = prefs[0]["type"]
            per_arm = followed.setdefault(kind, {arm: [] for arm in ARMS})
            for arm, pref in zip(ARMS, prefs):
                per_arm[arm].append(float(bool(pref.get("followed"))))
    return {
        kind: context_effect(
            *(values[arm] for arm in ARMS), confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        for kind, values in sorted(followed.items())
        if len(values["model_with"]) >= min_n
    }


def summarize(
    arms: dict[str, dict[int, Sequence[dict[str, Any]]]],
    *,
    wrong: dict[str, dict[int, Sequence[dict[str, Any]]]] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``context_effect`` entry of ``results.json`` from example rows: ``arms[arm][seed]`` is one row
    per item (``score``, and ``preferences`` for per-type rates), items aligned across arms and seeds.

    With all four arms: :func:`context_effect`, per preference type, and the verdict. With only the
    model's two arms (no baseline): its scores with and without the context and their paired difference
    (``lift``); nothing tells personalization from a generic shift then, and the verdict says so.
    ``wrong`` holds the wrong-context control (``mipo.evaluation.content_effect``): ``{role}_own`` and
    ``{role}_wrong``, aligned with each other (the items that had another user's context to take); it adds
    the ``*_wrong`` scores and the ``content_effect`` (the model's own ``content_lift`` without a baseline).
    """
    stats = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    scores = {arm: _item_scores(by_seed) for arm, by_seed in arms.items()}
    own_wrong = {arm: _item_scores(by_seed) for arm, by_seed in (wrong or {}).items()}
    baseline = "baseline_with" in scores or "baseline_own" in own_wrong
    summary: dict[str, Any] = {"scores": {}}
    if scores and not baseline:
        summary["lift"] = paired_difference(scores["model_with"], scores["model_without"], **stats)
    elif scores:
        summary = context_effect(*(scores[arm] for arm in ARMS), **stats)
        flat = {arm: [row for s in sorted(arms[arm]) for row in arms[arm][s]] for arm in ARMS}
        if any(row.get("preferences") for row in flat["model_with"]):
            summary["per_preference"] = per_type_context_effect(flat, **stats)
    summary["scores"] = {arm: mean_ci(values, **stats) for arm, values in scores.items()}
    if own_wrong:
        for role in ("model", "baseline") if baseline else ("model",):
            if not scores:  # answered without the context too: their "with" score is the context effect's
                summary["scores"][f"{role}_with"] = mean_ci(own_wrong[f"{role}_own"], **stats)
            summary["scores"][f"{role}_wrong"] = mean_ci(own_wrong[f"{role}_wrong"], **stats)
        if baseline:
            summary["content_effect"] = content_effect(*(own_wrong[arm] for arm in WRONG_ARMS), **stats)
            summary.setdefault(
                "gain", paired_difference(own_wrong["model_own"], own_wrong["baseline_own"], **stats)
            )
        else:
            summary["content_lift"] = paired_difference(
                own_wrong["model_own"], own_wrong["model_wrong"], **stats
            )
        summary["n_wrong_context"] = len(own_wrong["model_own"])
    summary.setdefault("n", len(scores["model_with"]) if scores else len(own_wrong["model_own"]))
    summary["verdict"] = verdict(summary) if baseline else _no_baseline_verdict(summary)
    return summary


def _no_baseline_verdict(summary: dict[str, Any]) -> str:
    parts = []
    if summary.get("lift"):
        parts.append(f"{_signed(summary['lift'], 3)} more with the user's context than without")
    if summary.get("content_lift"):
        parts.append(f"{_signed(summary['content_lift'], 3)} more with it than with another user's context")
    return (
        f"no baseline: the model scores {' and '.join(parts)}; pass --baseline to tell personalization from "
        "a generic shift"
    )


def _item_scores(by_seed: dict[int, Sequence[dict[str, Any]]]) -> list[float]:
    """Each item's score averaged over seeds."""
    seeds = sorted(by_seed)
    return [sum(by_seed[s][i]["score"] for s in seeds) / len(seeds) for i in range(len(by_seed[seeds[0]]))]


def verdict(summary: dict[str, Any], *, digits: int = 3) -> str:
    """One line that says which moved: what the context says (content effect), its presence (context
    effect) or every reply alike (generic shift). A gain is personalization when the content effect is clear
    of zero; without the wrong-context control, when the context effect is."""
    parts = ("context_effect", "generic_shift", "gain", "content_effect")
    text = {name: _signed(summary[name], digits) for name in parts if summary.get(name)}
    effect, shift, content = (
        summary.get(name) for name in ("context_effect", "generic_shift", "content_effect")
    )
    shifted = f"; with a generic shift of {text['generic_shift']}" if shift and _excludes_zero(shift) else ""
    if content and content["ci"][0] > 0:
        also = f", context effect {text['context_effect']}" if effect else ""
        return f"gain is personalization: content effect {text['content_effect']}{also}{shifted}"
    if content and content["ci"][1] < 0:
        return (
            "the model tells the user's context from another user's less than the baseline: content effect "
            f"{text['content_effect']}"
        )
    if effect and effect["ci"][0] > 0 and content:
        return (
            f"the gain comes with any user's context, not with what it says: context effect "
            f"{text['context_effect']}, content effect {text['content_effect']} (own vs another user's context)"
        )
    if effect and effect["ci"][0] > 0:
        return f"gain is personalization: context effect {text['context_effect']}{shifted}"
    if effect and effect["ci"][1] < 0:
        return f"the model reads the user's context less than the baseline: context effect {text['context_effect']}"
    measured = ", ".join(
        f"{name.replace('_', ' ')} {text[name]}" for name in parts[:1] + parts[3:] if name in text
    )
    if shift and _excludes_zero(shift):
        return (
            f"gain is a generic shift: the model changed the same way without the user's context "
            f"(generic shift {text['generic_shift']}, {measured})"
        )
    if _excludes_zero(summary["gain"]):
        named = [
            f"the {name.replace('_', ' ')} ({text[name]})"
            for name in parts
            if name in text and name != "gain"
        ]
        if len(named) == 1:
            return f"gain of {text['gain']} not attributed: {named[0]} is not clear of zero"
        listed = (
            f"neither {named[0]} nor {named[1]}"
            if len(named) == 2
            else f"none of {', '.join(named[:-1])} and {named[-1]}"
        )
        return f"gain of {text['gain']} not attributed: {listed} is clear of zero"
    return f"no measured change: gain {text['gain']}, {measured}"


def arm_item_scores(eval_dir: str | Path, task: str) -> dict[str, dict[str, float]] | None:
    """``{arm: {item id: score averaged over seeds}}`` of one finished evaluation folder, read from its
    example files (with the context: ``examples``; without: ``context_effect.examples``); None when that
    task was not answered without the context by both models."""
    eval_dir = Path(eval_dir)
    entry = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))["tasks"].get(task) or {}
    without = (entry.get("context_effect") or {}).get("examples") or {}
    if set(without) != {"model", "baseline"}:
        return None
    files = {f"{role}_with": entry["examples"][role] for role in without}
    files |= {f"{role}_without": path for role, path in without.items()}
    scores = {}
    for arm, path in files.items():
        by_id: dict[str, list[float]] = {}
        for line in (eval_dir / path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                by_id.setdefault(str(row["id"]), []).append(float(row["score"]))
        scores[arm] = {item: sum(v) / len(v) for item, v in by_id.items()}
    kept = set(scores["model_without"])  # items without a context were not answered again
    return {arm: {item: v for item, v in values.items() if item in kept} for arm, values in scores.items()}


def pooled_context_effect(eval_dirs: Iterable[str | Path], task: str = "prefs", **stats: Any) -> dict | None:
    """The context effect of several runs of one recipe (e.g. one per seed) on the same items: each item's
    four scores averaged over the runs, then :func:`context_effect` and its verdict (``scripts/
    results_table.py``). Runs without the no-context replies are left out; None when none has them."""
    runs = [scores for d in eval_dirs if (scores := arm_item_scores(d, task)) is not None]
    if not runs:
        return None
    ids = sorted(runs[0]["model_without"])
    if any(sorted(run[arm]) != ids for run in runs for arm in ARMS):
        raise ValueError(f"{task}: the runs scored different items; cannot pool their context effect")
    pooled = [[sum(run[arm][i] for run in runs) / len(runs) for i in ids] for arm in ARMS]
    summary = context_effect(*pooled, **stats)
    summary["runs"] = len(runs)
    summary["verdict"] = verdict(summary)
    return summary


def _excludes_zero(part: dict[str, Any]) -> bool:
    low, high = part["ci"]
    return low > 0 or high < 0


def _signed(part: dict[str, Any], digits: int) -> str:
    low, high = part["ci"]
    return f"{part['mean']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
