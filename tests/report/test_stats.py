"""Intervals and tests over seeds (ntkbayes/stats.py): coverage of the t-interval on synthetic data, the
paired test behind bold entries, rank intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from ntkbayes.stats import compare_methods, significantly_worse, t_interval


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_coverage_is_nominal(n):
    """Nominal 95 %: over 4000 synthetic leaderboards (normal per-seed values) the interval holds the true mean
    93–97 % of the time (binomial standard error √(0.95·0.05/4000) ≈ 0.34 %, so the band is ±6 standard errors)."""
    rng = np.random.default_rng(n)
    reps, mu = 4000, 0.8
    hits = 0
    for _ in range(reps):
        _, low, high = t_interval(list(mu + 0.05 * rng.standard_normal(n)))
        hits += low <= mu <= high
    assert 0.93 <= hits / reps <= 0.97


def test_t_interval_by_hand_and_degenerate_cases():
    v = [0.9, 0.8, 0.7]
    mean, low, high = t_interval(v)
    half = st.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # s = 0.1 exactly for these three values
    # a few ulps of quantities of order 1
    assert (mean, low, high) == pytest.approx((0.8, 0.8 - half, 0.8 + half), abs=1e-14)
    assert t_interval([0.5])[0] == 0.5 and math.isnan(t_interval([0.5])[1])
    assert all(math.isnan(x) for x in t_interval([]))
    assert t_interval([1.0, math.nan, 3.0])[0] == 2.0  # non-finite values left out


def test_paired_test_and_welch_fallback():
    best = {0: 0.90, 1: 0.80, 2: 0.85}
    worse = {s: v - 0.05 for s, v in best.items()}  # constant paired gap: significant
    assert significantly_worse(worse, best, higher=True) is True
    assert significantly_worse(best, worse, higher=True) is False
    noisy = {0: 0.91, 1: 0.76, 2: 0.86}  # paired differences −0.01, 0.04, −0.01: not significant
    assert significantly_worse(noisy, best, higher=True) is False
    assert significantly_worse({0: 0.2}, {0: 0.9}, higher=True) is None  # one seed: cannot tell
    # lower is better: a larger NLL on every seed is worse
    assert significantly_worse({0: 0.5, 1: 0.6}, {0: 0.3, 1: 0.4}, higher=False) is True
    # no shared seeds: Welch on all seeds
    assert significantly_worse({3: 0.1, 4: 0.11, 5: 0.12}, {0: 0.9, 1: 0.91, 2: 0.92}, higher=True) is True


def test_compare_methods_ranks_bold_and_rank_intervals():
    values = {"a": {0: 0.90, 1: 0.80, 2: 0.85}, "b": {0: 0.85, 1: 0.75, 2: 0.80},
              "c": {0: 0.91, 1: 0.76, 2: 0.86}, "d": {0: 0.5}, "e": {}}
    out = compare_methods(values, higher=True)
    assert set(out) == {"a", "b", "c", "d"}  # no values: left out
    assert [out[m]["rank"] for m in "abcd"] == [1, 3, 2, 4]
    assert [out[m]["best"] for m in "abcd"] == [True, False, True, False]  # d: one seed, not the best → not bold
    assert (out["a"]["rank_low"], out["a"]["rank_high"]) == (1, 3)  # b is significantly worse; d cannot be told
    assert (out["b"]["rank_low"], out["b"]["rank_high"]) == (2, 4)  # a is significantly better
    assert (out["d"]["rank_low"], out["d"]["rank_high"]) == (1, 4)  # untestable: any rank
    tie = compare_methods({"x": {0: 0.5, 1: 0.5}, "y": {0: 0.5, 1: 0.5}}, higher=False)
    assert tie["x"] == tie["y"] == {"rank": 1, "rank_low": 1, "rank_high": 2, "best": True}
