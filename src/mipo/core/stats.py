"""Honest statistics for evaluation: means with bootstrap intervals, paired differences with p-values.

Small pure functions over per-item scores, seeded so a rerun reports the same numbers. The unit of
resampling is the evaluation item (a question), never the token or the sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

# Enumerate every sign flip exactly up to this many items (2**16 = 65,536 flips); beyond, sample them.
EXACT_SIGN_FLIP_MAX_N = 16


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: need a non-empty list of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: values must be finite")
    return array


def bootstrap_means(values: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples of ``values`` drawn with replacement (the bootstrap distribution)."""
    array = _as_array(values, "bootstrap")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, array.size, size=(n_resamples, array.size))  # (R, n)
    return array[picks].mean(axis=1)


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> dict[str, float | int | list[float]]:
    """``{mean, ci: [low, high], n}``: the mean and its percentile bootstrap interval."""
    array = _as_array(values, "mean_ci")
    low, high = percentile_interval(bootstrap_means(array, n_resamples=n_resamples, seed=seed), confidence)
    return {"mean": float(array.mean()), "ci": [low, high], "n": int(array.size)}


def sign_flip_p_value(differences: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of a zero mean paired difference, by flipping the sign of each difference.

    Under the null hypothesis (the two models are exchangeable on each item) every sign pattern is
    equally likely. Up to ``EXACT_SIGN_FLIP_MAX_N`` items all ``2**n`` patterns are enumerated; beyond,
    ``n_resamples`` random patterns are drawn and the observed one is counted in (``(hits + 1) / (R + 1)``),
    so the p-value is never 0.
    """
    d = _as_array(differences, "sign_flip_p_value")
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))  # ties count as "at least as extreme"
    if d.size <= EXACT_SIGN_FLIP_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))  # (2**n, n)
        flipped = np.abs((signs * d).mean(axis=1))
        return float(np.mean(flipped >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_resamples, d.size))
    hits = int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - tolerance))
    return (hits + 1) / (n_resamples + 1)


def paired_difference(
    scores: Sequence[float],
    baseline_scores: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, float | int | list[float]]:
    """``{mean, ci, p_value, n}`` of ``scores - baseline_scores``, item by item.

    The interval resamples items (a paired bootstrap); the p-value is the sign-flip test above.
    """
    a = _as_array(scores, "paired_difference")
    b = _as_array(baseline_scores, "paired_difference")
    if a.size != b.size:
        raise ValueError(f"paired_difference: {a.size} scores against {b.size} baseline scores")
    d = a - b
    low, high = percentile_interval(bootstrap_means(d, n_resamples=n_resamples, seed=seed), confidence)
    return {
        "mean": float(d.mean()),
        "ci": [low, high],
        "p_value": sign_flip_p_value(d, n_resamples=n_resamples, seed=seed),
        "n": int(d.size),
    }


def histogram(values: Sequence[float], *, bins: int = 20) -> dict[str, list[float] | list[int]]:
    """``{edges, counts}`` for plotting a distribution (``len(edges) == len(counts) + 1``)."""
    array = _as_array(values, "histogram")
    counts, edges = np.histogram(array, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def ratio_of_means(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, float | int | list[float]] | None:
    """``{mean, ci, n}`` of ``mean(numerator) / mean(denominator)`` over paired items; None when the
    denominator's mean is 0. The interval resamples items: both bootstraps draw with the same seed from
    lists of the same length, so each resample takes the same items on both sides (a paired bootstrap)."""
    a = _as_array(numerator, "ratio_of_means")
    b = _as_array(denominator, "ratio_of_means")
    if a.size != b.size:
        raise ValueError(f"ratio_of_means: {a.size} numerators against {b.size} denominators")
    if b.mean() == 0:
        return None
    top = bootstrap_means(a, n_resamples=n_resamples, seed=seed)
    bottom = bootstrap_means(b, n_resamples=n_resamples, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = top / bottom
    low, high = percentile_interval(ratios[np.isfinite(ratios)], confidence)
    return {"mean": float(a.mean() / b.mean()), "ci": [low, high], "n": int(a.size)}
