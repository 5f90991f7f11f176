"""Uncertainty of leaderboard comparisons: t-intervals over seeds, paired tests against the best, rank intervals.

The unit of replication is the seed (one seed = one data split and one initialization, shared by every method of a
suite), so every interval and test here is over seeds; test points are not resampled (a bootstrap over test points
would need the saved predictions, which a fresh clone may not have, and would ignore the larger seed-to-seed
variation of training).

- **Confidence interval** of a mean over n seeds: Student t, mean ± t_{0.975, n−1} · s / √n with the sample standard
  deviation s (ddof = 1); exact for normal per-seed values, undefined (NaN) for n = 1.
- **Not significantly worse than the best** (bold): for the method with the best mean, each other method is tested
  with a one-sided paired t-test on the seeds both ran (H0: equal means; alternative: worse), level
  ``ALPHA`` = 0.05, no multiplicity correction; if fewer than 2 seeds are shared, Welch's unpaired one-sided test on
  all seeds; a method with one seed only (nothing to test) is bold only when it ties the best mean. A difference that
  is exactly constant over seeds (zero variance) counts as significant when it is non-zero.
- **Rank interval**: with the same pairwise test between every two methods, a method's rank lies in
  [1 + #methods significantly better, M − #methods significantly worse]; the mean-rank interval averages both ends
  over the table's metrics (a method without a metric is left out of that metric's ranks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as _st

#: Level of the one-sided tests behind bold entries and rank intervals.
ALPHA = 0.05

#: Confidence level of the intervals (two-sided).
CONFIDENCE = 0.95


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval over the values (one per seed); low = high = NaN when n < 2."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    n = v.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def significantly_worse(
    a: Mapping[int, float], b: Mapping[int, float], higher: bool, alpha: float = ALPHA
) -> bool | None:
    """Whether method a (seed → value) is significantly worse than method b at level ``alpha`` (one-sided).

    Paired t-test over the shared seeds when there are at least 2; else Welch's test over all seeds; None (cannot
    tell) when fewer than 2 seeds are shared and either side has fewer than 2 values.
    """
    sign = 1.0 if higher else -1.0  # d > 0 means b is better
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        d = sign * (np.array([b[s] for s in shared]) - np.array([a[s] for s in shared]))
        return _one_sided(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1, alpha)
    va, vb = np.array(list(a.values()), dtype=np.float64), np.array(list(b.values()), dtype=np.float64)
    if va.size < 2 or vb.size < 2:
        return None
    se2a, se2b = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
    se = math.sqrt(se2a + se2b)
    diff = sign * float(vb.mean() - va.mean())
    if se == 0:
        return diff > 0
    dof = (se2a + se2b) ** 2 / (se2a**2 / (va.size - 1) + se2b**2 / (vb.size - 1))  # Welch–Satterthwaite
    return _one_sided(diff, se, dof, alpha)


def _one_sided(diff: float, se: float, dof: float, alpha: float) -> bool:
    if se == 0:
        return diff > 0
    return bool(_st.t.sf(diff / se, dof) < alpha)


def _worse_matrix(values: Mapping[str, Mapping[int, float]], methods: list[str], higher: bool) -> np.ndarray:
    """(M, M) object array: entry [a, b] = ``significantly_worse(a, b)``, the paired tests vectorized."""
    seeds = sorted({s for m in methods for s in values[m]})
    col = {s: j for j, s in enumerate(seeds)}
    v = np.full((len(methods), len(seeds)), np.nan)
    for i, m in enumerate(methods):
        for s, x in values[m].items():
            v[i, col[s]] = x
    d = (v[None, :, :] - v[:, None, :]) * (1.0 if higher else -1.0)  # [a, b, s] > 0: b better than a
    shared = np.isfinite(d).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(shared > 0, np.nansum(d, -1) / np.maximum(shared, 1), np.nan)
        var = np.nansum((d - mean[..., None]) ** 2, -1) / np.maximum(shared - 1, 1)
        se = np.sqrt(var / np.maximum(shared, 1))
        p = _st.t.sf(mean / se, np.maximum(shared - 1, 1))
    out = np.empty((len(methods), len(methods)), dtype=object)
    for a in range(len(methods)):
        for b in range(len(methods)):
            if a == b:
                out[a, b] = False
            elif shared[a, b] >= 2:
                out[a, b] = bool(mean[a, b] > 0) if se[a, b] == 0 else bool(p[a, b] < ALPHA)
            else:
                out[a, b] = significantly_worse(values[methods[a]], values[methods[b]], higher)
    return out


def compare_methods(values: Mapping[str, Mapping[int, float]], higher: bool) -> dict[str, dict]:
    """Per method: rank of the mean (1 = best, ties share the lowest), rank interval and whether it is bold.

    Args:
        values: method → {seed: finite value}; methods without values are left out.
        higher: the metric's direction.

    Returns:
        method → {"rank": int, "rank_low": int, "rank_high": int, "best": bool}.
    """
    methods = [m for m, v in values.items() if v]
    if not methods:
        return {}
    means = {m: math.fsum(values[m].values()) / len(values[m]) for m in methods}
    key = (lambda m: -means[m]) if higher else (lambda m: means[m])
    best_mean = min(key(m) for m in methods)
    tops = [i for i, m in enumerate(methods) if key(m) == best_mean]
    worse = _worse_matrix(values, methods, higher)
    out = {}
    for i, m in enumerate(methods):
        better = sum(worse[i, j] is True for j in range(len(methods)))
        beaten = sum(worse[j, i] is True for j in range(len(methods)))
        bold = i in tops or all(worse[i, t] is False for t in tops)
        out[m] = {"rank": 1 + sum(key(b) < key(m) for b in methods), "rank_low": 1 + better,
                  "rank_high": len(methods) - beaten, "best": bool(bold)}
    return out


__all__ = ["ALPHA", "CONFIDENCE", "compare_methods", "significantly_worse", "t_interval"]
