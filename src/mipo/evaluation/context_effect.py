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

ARMS = ("model_with", "model_without", "baseline_with", "baseline_without")


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
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``context_effect`` entry of ``results.json`` from example rows: ``arms[arm][seed]`` is one row
    per item (``score``, and ``preferences`` for per-type rates), items aligned across arms and seeds.

    With all four arms: :func:`context_effect`, per preference type, and the verdict. With only the
    model's two arms (no baseline): its scores with and without the context and their paired difference
    (``lift``); nothing tells personalization from a generic shift then, and the verdict says so.
    """
    stats = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    scores = {arm: _item_scores(by_seed) for arm, by_seed in arms.items()}
    if set(arms) != set(ARMS):
        with_, without = scores["model_with"], scores["model_without"]
        lift = paired_difference(with_, without, **stats)
        return {
            "scores": {arm: mean_ci(values, **stats) for arm, values in scores.items()},
            "lift": lift,
            "n": len(with_),
            "verdict": (
                f"no baseline: the model scores {_signed(lift, 3)} more with the user's context than without; "
                "pass --baseline to tell personalization from a generic shift"
            ),
        }
    summary = context_effect(*(scores[arm] for arm in ARMS), **stats)
    flat = {arm: [row for s in sorted(arms[arm]) for row in arms[arm][s]] for arm in ARMS}
    if any(row.get("preferences") for row in flat["model_with"]):
        summary["per_preference"] = per_type_context_effect(flat, **stats)
    summary["verdict"] = verdict(summary)
    return summary


def _item_scores(by_seed: dict[int, Sequence[dict[str, Any]]]) -> list[float]:
    """Each item's score averaged over seeds."""
    seeds = sorted(by_seed)
    return [sum(by_seed[s][i]["score"] for s in seeds) / len(seeds) for i in range(len(by_seed[seeds[0]]))]


def verdict(summary: dict[str, Any], *, digits: int = 3) -> str:
    """One line that says which moved: the context effect (personalization) or a generic shift."""
    effect, shift, gain = summary["context_effect"], summary["generic_shift"], summary["gain"]
    text = {
        name: _signed(part, digits) for name, part in (("effect", effect), ("shift", shift), ("gain", gain))
    }
    if effect["ci"][0] > 0:
        extra = f"; with a generic shift of {text['shift']}" if _excludes_zero(shift) else ""
        return f"gain is personalization: context effect {text['effect']}{extra}"
    if effect["ci"][1] < 0:
        return f"the model reads the user's context less than the baseline: context effect {text['effect']}"
    if _excludes_zero(shift):
        return (
            f"gain is a generic shift: the model changed the same way without the user's context "
            f"(generic shift {text['shift']}, context effect {text['effect']})"
        )
    if _excludes_zero(gain):
        return (
            f"gain of {text['gain']} not attributed: neither the context effect ({text['effect']}) "
            f"nor the generic shift ({text['shift']}) is clear of zero"
        )
    return f"no measured change: gain {text['gain']}, context effect {text['effect']}"


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
