"""Bootstrap intervals and sign-flip p-values against cases small enough to enumerate by hand."""

import itertools

import numpy as np
import pytest

from mipo.core.stats import (
    bootstrap_means,
    histogram,
    mean_ci,
    paired_difference,
    sign_flip_p_value,
)
from mipo.formats.results import format_ci


def test_bootstrap_distribution_matches_the_enumerated_one():
    # Values [0, 0, 1]: each of the 27 equally likely resamples has mean k/3 where k ~ Binomial(3, 1/3):
    # P(0) = 8/27, P(1/3) = 12/27, P(2/3) = 6/27, P(1) = 1/27.
    exact = {0.0: 8 / 27, 1 / 3: 12 / 27, 2 / 3: 6 / 27, 1.0: 1 / 27}
    enumerated = [np.mean(r) for r in itertools.product([0, 0, 1], repeat=3)]
    for value, p in exact.items():
        assert np.isclose(np.mean(np.isclose(enumerated, value)), p)
    means = bootstrap_means([0, 0, 1], n_resamples=40_000, seed=1)
    for value, p in exact.items():
        assert abs(np.mean(np.isclose(means, value)) - p) < 0.01


def test_mean_ci_percentiles_by_hand():
    # From the distribution above: 2.5% falls in the block of 0s (29.6%), 97.5% in the block of 1s
    # (the top 3.7%); for a 50% interval, 25% is still 0 and 75% falls in the 2/3 block (74.1%-96.3%).
    summary = mean_ci([0, 0, 1], n_resamples=40_000, seed=1)
    assert summary["mean"] == pytest.approx(1 / 3)
    assert summary["ci"] == [0.0, 1.0]
    assert summary["n"] == 3
    half = mean_ci([0, 0, 1], confidence=0.5, n_resamples=40_000, seed=1)
    assert half["ci"] == [0.0, pytest.approx(2 / 3)]


def test_constant_values_give_a_zero_width_interval():
    assert mean_ci([0.5] * 7)["ci"] == [0.5, 0.5]


def test_bootstrap_is_seeded():
    values = [0.13, 0.91, 0.42, 0.37, 0.88, 0.05, 0.61]
    assert mean_ci(values, seed=3) == mean_ci(values, seed=3)
    assert mean_ci(values, seed=3)["ci"] != mean_ci(values, seed=4)["ci"]


def test_sign_flip_p_value_exact_by_hand():
    # d = [1, 2, 3], observed mean 2: of the 8 sign patterns only (+,+,+) and (-,-,-) reach |mean| >= 2.
    assert sign_flip_p_value([1, 2, 3]) == pytest.approx(2 / 8)
    # d = [1, -1]: observed mean 0; every pattern is at least as extreme.
    assert sign_flip_p_value([1, -1]) == 1.0
    # d = [2, 1, 1, 1]: observed 5/4; patterns with |sum| >= 5: all +, all - -> 2 of 16.
    assert sign_flip_p_value([2, 1, 1, 1]) == pytest.approx(2 / 16)


def test_sign_flip_sampled_for_many_items():
    rng = np.random.default_rng(0)
    shifted = rng.normal(1.0, 1.0, size=40)
    assert sign_flip_p_value(shifted, n_resamples=5000) < 0.001
    null = rng.normal(0.0, 1.0, size=40)
    p = sign_flip_p_value(null, n_resamples=5000)
    assert 0.0 < p <= 1.0
    # Sampled p-values never reach 0: the observed pattern counts.
    assert sign_flip_p_value([1.0] * 30, n_resamples=999) == pytest.approx(1 / 1000)


def test_paired_difference():
    model = [1, 1, 1, 0]
    baseline = [0, 0, 1, 0]
    d = paired_difference(model, baseline, n_resamples=20_000, seed=0)
    assert d["mean"] == pytest.approx(0.5)
    # d = [1, 1, 0, 0]: |sum| >= 2 when the two 1s share a sign (2 ways) whatever the 0s do (4) -> 8 of 16.
    assert d["p_value"] == pytest.approx(8 / 16)
    assert d["ci"][0] == 0.0 and d["ci"][1] == 1.0
    assert d["n"] == 4
    with pytest.raises(ValueError, match="3 scores against 2"):
        paired_difference([1, 2, 3], [1, 2])


def test_bad_inputs_and_helpers():
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])
    h = histogram([0, 1, 1, 2], bins=2)
    assert h == {"edges": [0.0, 1.0, 2.0], "counts": [1, 3]}
    assert format_ci({"mean": 0.5, "ci": [0.25, 0.75]}) == "0.500 [0.250, 0.750]"


def test_ratio_of_means_resamples_the_same_items_on_both_sides():
    from mipo.core.stats import ratio_of_means

    # each item's numerator is half its denominator: every paired resample has the ratio 0.5 exactly
    r = ratio_of_means([0.5, 1.0, 2.0, 4.0], [1.0, 2.0, 4.0, 8.0], n_resamples=500)
    assert r["mean"] == pytest.approx(0.5) and r["ci"] == pytest.approx([0.5, 0.5]) and r["n"] == 4
    r = ratio_of_means([1.0, 3.0], [2.0, 2.0], n_resamples=500)
    assert r["mean"] == pytest.approx(1.0) and r["ci"][0] == pytest.approx(0.5) and r["ci"][1] == 1.5
    assert ratio_of_means([1.0], [0.0]) is None
    with pytest.raises(ValueError, match="2 numerators against 1"):
        ratio_of_means([1.0, 2.0], [1.0])
