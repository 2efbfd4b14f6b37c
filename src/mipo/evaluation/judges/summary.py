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

from mipo.core.stats import mean_ci, percentile_interval
from mipo.evaluation.judges.verdicts import LOSS, OUTCOME_SCORES, TIE, UNPARSEABLE, WIN

SLOPE_RIDGE = 1e-6  # keeps the length coefficient finite when the outcomes separate perfectly by length
LC_RESAMPLES = 1000  # each resample refits the regression: fewer than for a mean


def sign_test_p_value(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties left out): is the win share 1/2?"""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), without overflow


def _intercepts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Intercepts of logistic regressions of soft labels ``y`` (R, n) in [0, 1] on ``x`` (R, n), one per
    row, fitted together by Newton's method with step halving (the loss is convex; the tiny ridge on the
    slope makes it strictly so)."""
    w = np.zeros((y.shape[0], 2))  # (R, 2): intercept, slope

    def losses(w: np.ndarray) -> np.ndarray:
        z = w[:, :1] + w[:, 1:] * x  # (R, n)
        # -[y log s(z) + (1-y) log(1-s(z))] = log(1 + e^z) - y z, computed stably
        return np.sum(np.logaddexp(0.0, z) - y * z, axis=1) + 0.5 * SLOPE_RIDGE * w[:, 1] ** 2

    for _ in range(100):
        p = _sigmoid(w[:, :1] + w[:, 1:] * x)
        s = p * (1 - p)
        g0, g1 = np.sum(p - y, axis=1), np.sum((p - y) * x, axis=1) + SLOPE_RIDGE * w[:, 1]
        h00 = np.sum(s, axis=1) + 1e-12
        h01, h11 = np.sum(s * x, axis=1), np.sum(s * x * x, axis=1) + SLOPE_RIDGE
        det = h00 * h11 - h01**2
        step = np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det], axis=1)  # H^-1 g
        current = losses(w)
        for _ in range(40):  # halve the steps that would raise a row's loss
            worse = losses(w - step) > current + 1e-12
            if not worse.any():
                break
            step[worse] /= 2
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return w[:, 0]


def _lc_rows(y: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """The length-controlled win rate of each row of outcomes ``y`` (R, n) and length differences (R, n)."""
    scale = diff.std(axis=1, keepdims=True)
    x = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    rates = _sigmoid(_intercepts(x, y))
    # Every pair won (or lost): the intercept is unbounded; the rate is exactly 1 (or 0).
    swept = np.all(y == y[:, :1], axis=1) & np.isin(y[:, 0], (0.0, 1.0))
    return np.where(swept, y[:, 0], rates)


def length_controlled_win_rate(scores: Sequence[float], length_differences: Sequence[float]) -> float:
    """The win probability at equal length: ``sigmoid(intercept)`` of the regression described above."""
    y = np.asarray(scores, dtype=float)
    if y.size == 0:
        raise ValueError("length_controlled_win_rate: no outcomes")
    return float(_lc_rows(y[None, :], np.asarray(length_differences, dtype=float)[None, :])[0])


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
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, y.size, size=(n_resamples, y.size))  # (R, n)
    low, high = percentile_interval(_lc_rows(y[picks], diff[picks]), confidence)
    return {"mean": length_controlled_win_rate(y, diff), "ci": [low, high], "n": int(y.size)}


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
