"""Win rates from per-pair outcomes: plain with a bootstrap interval and a sign test, and length-controlled.

The length-controlled win rate follows AlpacaEval 2: judges prefer longer replies, so a model can win by
writing more. A logistic regression of the pair's outcome (1 win, 1/2 tie, 0 loss) on the length difference
(model minus baseline, in words, divided by its standard deviation; not centred, so 0 means "same length")
with an intercept gives the win probability as a function of the difference; the length-controlled win rate
is that probability at a difference of 0, ``sigmoid(intercept)``. (AlpacaEval also squashes the difference
with ``tanh`` and adds an instruction-difficulty term; with one baseline and few items the plain regression
is what can be fitted.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mipo.judges.verdicts import LOSS, OUTCOME_SCORES, TIE, UNPARSEABLE, WIN
from mipo.stats import mean_ci, percentile_interval

SLOPE_RIDGE = 1e-6  # keeps the length coefficient finite when the outcomes separate perfectly by length
LC_RESAMPLES = 1000  # each resample refits the regression: fewer than for a mean


def sign_test_p_value(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties left out): is the win share 1/2?"""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[intercept, slope]`` of a logistic regression of soft labels ``y`` in [0, 1] on ``x``, by Newton's
    method with step halving (the loss is convex; the tiny ridge on the slope makes it strictly so)."""
    design = np.stack([np.ones_like(x), x], axis=1)  # (n, 2)
    ridge = np.array([0.0, SLOPE_RIDGE])

    def loss(w: np.ndarray) -> float:
        z = design @ w
        # -[y log s(z) + (1-y) log(1-s(z))] = log(1 + e^z) - y z, computed stably
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(ridge * w**2))

    w = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) + ridge * w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + np.diag(ridge) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        current = loss(w)
        while loss(w - step) > current + 1e-12 and np.abs(step).max() > 1e-12:
            step = step / 2
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return w


def length_controlled_win_rate(scores: Sequence[float], length_differences: Sequence[float]) -> float:
    """The win probability at equal length: ``sigmoid(intercept)`` of the regression described above."""
    y = np.asarray(scores, dtype=float)
    diff = np.asarray(length_differences, dtype=float)
    if y.size == 0:
        raise ValueError("length_controlled_win_rate: no outcomes")
    if np.all(y == 1.0) or np.all(y == 0.0):
        return float(y[0])  # every pair won (or lost): the regression's intercept is unbounded
    scale = diff.std()
    x = diff / scale if scale > 0 else np.zeros_like(diff)
    intercept = _fit_logistic(x, y)[0]
    return float(1.0 / (1.0 + math.exp(-intercept)))


def lc_win_rate_ci(
    scores: Sequence[float],
    length_differences: Sequence[float],
    *,
    n_resamples: int = LC_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """``{mean, ci, n}``: the length-controlled win rate, its interval from refitting on resampled pairs."""
    y = np.asarray(scores, dtype=float)
    diff = np.asarray(length_differences, dtype=float)
    estimate = length_controlled_win_rate(y, diff)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, y.size, size=(n_resamples, y.size))
    resampled = np.array([length_controlled_win_rate(y[p], diff[p]) for p in picks])
    low, high = percentile_interval(resampled, confidence)
    return {"mean": estimate, "ci": [low, high], "n": int(y.size)}


def words(text: str) -> int:
    return len(text.split())


def summarize_outcomes(rows: list[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Counts, win rate with CI and sign test, length-controlled win rate and mean reply lengths.

    Each row has ``outcome`` (win/loss/tie/unparseable, for the model), ``inconsistent``, ``words_model``
    and ``words_baseline``. Unparseable pairs are counted and left out of the rates (``n`` says how many
    pairs the rates rest on).
    """
    counts = {k: sum(r["outcome"] == k for r in rows) for k in (WIN, LOSS, TIE, UNPARSEABLE)}
    scored = [r for r in rows if r["outcome"] != UNPARSEABLE]
    summary: dict[str, Any] = {
        "pairs": len(rows),
        "wins": counts[WIN],
        "losses": counts[LOSS],
        "ties": counts[TIE],
        "inconsistent": sum(bool(r["inconsistent"]) for r in rows),
        "unparseable": counts[UNPARSEABLE],
        "n": len(scored),
        "win_rate": None,
        "lc_win_rate": None,
        "sign_test_p": sign_test_p_value(counts[WIN], counts[LOSS]),
        "mean_words": {
            "model": float(np.mean([r["words_model"] for r in rows])) if rows else None,
            "baseline": float(np.mean([r["words_baseline"] for r in rows])) if rows else None,
        },
    }
    if scored:
        scores = [OUTCOME_SCORES[r["outcome"]] for r in scored]
        differences = [r["words_model"] - r["words_baseline"] for r in scored]
        summary["win_rate"] = mean_ci(scores, seed=seed)
        summary["lc_win_rate"] = lc_win_rate_ci(scores, differences, seed=seed)
    return summary
