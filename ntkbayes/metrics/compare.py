"""Method-to-method comparison of predictive distributions on the same points (benchmarks.md §1).

Two predictives ``a`` and ``b`` on the same N points with C classes are compared in three ways:

1. their predictive means p = mean_s a.member_probs and q = mean_s b.member_probs (N, C): Kullback–Leibler
   KL(p‖q) = Σ_c p_c log(p_c / q_c) both ways, Jensen–Shannon JS = ½ KL(p‖m) + ½ KL(q‖m) with m = ½(p + q)
   (Lin 1991), total variation TV = ½ Σ_c |p_c − q_c| and top-1 agreement 1[argmax p = argmax q], each per point
   and then averaged over points;
2. their probability-based uncertainty scores (``PROB_SCORES``): Spearman rank correlation over the N points (ties
   get average ranks, as ``scipy.stats.spearmanr``);
3. for sample-based predictives (S ≥ 2 on both sides) the distance, per point, between the two empirical
   distributions of member probability vectors: energy distance in the simplex with the Euclidean norm
   (Székely & Rizzo 2013) and the 1-Wasserstein distance of each class probability, averaged over classes.

Zeros: every p·log(p/q) term is ``scipy.special.xlogy``-style, 0·log(·) = 0, with no epsilon. KL(p‖q) is therefore
exactly +inf at a point where some q_c = 0 < p_c (which happens with float32 probabilities saturated to 0); its
mean over points is then +inf, and ``kl_inf_frac`` says at how many points. JS never has this problem: m_c ≥ p_c/2,
so JS is finite and 0 ≤ JS ≤ log 2 (natural log). All computation is float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.stats import rankdata

from ntkbayes.predictive import PROB_SCORES, Predictive

#: Member-distribution distances need at least this many members on both sides. An S = 1 predictive may be a
#: moment-matched or probit-approximated mean rather than a sample, and treating it as a point mass would make the
#: distance measure the other side's spread, not a disagreement between posteriors.
MIN_MEMBERS_FOR_DISTRIBUTION = 2

#: Pairwise member-distance blocks are computed for this many (point × member × member) entries at a time, which
#: bounds the memory of the energy distance at about 8·2^22 bytes = 32 MiB whatever S and N are.
PAIR_BLOCK_ELEMENTS = 2**22

#: Measures returned by ``compare`` (besides ``spearman/<score>`` for every score), with what they mean.
MEASURES: dict[str, str] = {
    "kl_ab": "mean over points of KL(p_a ‖ p_b) between predictive means, natural log (may be +inf)",
    "kl_ba": "mean over points of KL(p_b ‖ p_a)",
    "kl_inf_frac": "fraction of points where KL(p_a‖p_b) or KL(p_b‖p_a) is +inf (a zero probability on one side)",
    "js": "mean Jensen–Shannon divergence between predictive means, natural log, in [0, log 2]",
    "tv": "mean total variation ½ Σ_c |p_a − p_b| between predictive means, in [0, 1]",
    "agree": "top-1 agreement: fraction of points with the same argmax class",
    "energy": "mean energy distance between member-probability distributions (V-statistic, square root; S ≥ 2)",
    "w1": "mean over points and classes of the 1-Wasserstein distance between member probabilities (S ≥ 2)",
}


def _xlogy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x·log y elementwise with 0·log y = 0 for every y (including 0), as ``scipy.special.xlogy``."""
    return torch.where(x == 0, torch.zeros_like(x), x * torch.log(y))


def _check_pair(p: torch.Tensor, q: torch.Tensor, what: str = "p, q") -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"{what}: expected two (N, C) arrays of equal shape, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    return p, q


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-point KL(p‖q) = Σ_c p_c log p_c − p_c log q_c, natural log.

    Args:
        p, q: (N, C) probability vectors.

    Returns:
        (N,) float64, ≥ 0; +inf where q_c = 0 < p_c for some c; terms with p_c = 0 contribute 0.
    """
    p, q = _check_pair(p, q)
    kl = (_xlogy(p, p) - _xlogy(p, q)).sum(-1)
    return kl.clamp_min(0.0)  # rounding can give −1e-17 for equal rows


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-point Jensen–Shannon divergence ½ KL(p‖m) + ½ KL(q‖m), m = ½(p + q), natural log.

    Args:
        p, q: (N, C) probability vectors.

    Returns:
        (N,) float64 in [0, log 2]; finite for all inputs because m_c > 0 wherever p_c > 0 or q_c > 0.
    """
    p, q = _check_pair(p, q)
    m = 0.5 * (p + q)
    js = 0.5 * (_xlogy(p, p) - _xlogy(p, m)).sum(-1) + 0.5 * (_xlogy(q, q) - _xlogy(q, m)).sum(-1)
    return js.clamp(0.0, math.log(2.0))


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-point total variation ½ Σ_c |p_c − q_c|.

    Args:
        p, q: (N, C) probability vectors.

    Returns:
        (N,) float64 in [0, 1].
    """
    p, q = _check_pair(p, q)
    return 0.5 * (p - q).abs().sum(-1)


def top1_agreement(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-point indicator 1[argmax_c p = argmax_c q] (ties resolve to the lowest class index on both sides).

    Args:
        p, q: (N, C) probability vectors.

    Returns:
        (N,) float64 of 0/1.
    """
    p, q = _check_pair(p, q)
    return (p.argmax(-1) == q.argmax(-1)).to(torch.float64)


def spearman(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two scores over the same points: Pearson correlation of average ranks.

    Args:
        x, y: (N,) scores.

    Returns:
        A float in [−1, 1], or NaN when either score is constant (its ranks have no variance, so the correlation
        is undefined — e.g. mutual information of an S = 1 predictor, which is identically 0) or N < 2.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman: x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    if x.size < 2:
        return float("nan")
    rx, ry = rankdata(x) - (x.size + 1) / 2.0, rankdata(y) - (y.size + 1) / 2.0
    sx, sy = math.sqrt(float(rx @ rx)), math.sqrt(float(ry @ ry))
    if sx == 0.0 or sy == 0.0:
        return float("nan")
    return float(np.clip((rx @ ry) / (sx * sy), -1.0, 1.0))


def _check_members(a: torch.Tensor, b: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{what}: expected (S_a, N, C) and (S_b, N, C), got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def mean_pairwise_distance(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Per point, the mean Euclidean distance over all S_a · S_b member pairs (self-pairs included when b is a).

    Args:
        a: (S_a, N, C) member probabilities.
        b: (S_b, N, C) member probabilities; default ``a`` (then E‖X − X'‖ of the V-statistic).

    Returns:
        (N,) float64. Computed in blocks of points holding at most ``PAIR_BLOCK_ELEMENTS`` pairs, with exact
        coordinate differences (no ‖x‖² + ‖y‖² − 2x·y shortcut), so equal members are at distance exactly 0.
    """
    a, b = _check_members(a, a if b is None else b, "mean_pairwise_distance")
    sa, n, _ = a.shape
    sb = b.shape[0]
    at, bt = a.transpose(0, 1), b.transpose(0, 1)  # (N, S, C)
    block = max(1, PAIR_BLOCK_ELEMENTS // (sa * sb))
    out = torch.empty(n, dtype=torch.float64)
    for lo in range(0, n, block):
        d = torch.cdist(at[lo:lo + block], bt[lo:lo + block], compute_mode="donot_use_mm_for_euclid_dist")
        out[lo:lo + block] = d.mean((1, 2))
    return out


def energy_distance(
    a: torch.Tensor, b: torch.Tensor, *, self_a: torch.Tensor | None = None, self_b: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-point energy distance between two empirical distributions of member probability vectors.

    E(P, Q) = sqrt(2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖) with X, X' ~ P (the S_a rows ``a[:, i]``), Y, Y' ~ Q
    (the S_b rows ``b[:, i]``) and the Euclidean norm in the probability simplex (R^C). Expectations are the
    V-statistic (plain means over all S_a², S_a·S_b, S_b² pairs, the zero self-pairs included): it is ≥ 0 and 0
    exactly when the two member sets are equal as multisets, unlike the unbiased U-statistic, which can be
    negative. The square root makes it a metric (scipy's ``energy_distance`` convention; for C = 2 this equals
    2^{1/4} times scipy's value on the first class's probabilities). Member sets that are equal but in another
    order give rounding of about 1e-16 under the root, so about 1e-8 rather than exactly 0.

    Args:
        a: (S_a, N, C) member probabilities.
        b: (S_b, N, C) member probabilities on the same N points and C classes.
        self_a, self_b: optional (N,) ``mean_pairwise_distance(a)`` and ``(b)``, to reuse across many pairs.

    Returns:
        (N,) float64, ≥ 0.
    """
    a, b = _check_members(a, b, "energy_distance")
    dxx = mean_pairwise_distance(a) if self_a is None else self_a
    dyy = mean_pairwise_distance(b) if self_b is None else self_b
    return (2.0 * mean_pairwise_distance(a, b) - dxx - dyy).clamp_min(0.0).sqrt()


def wasserstein1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-point 1-Wasserstein distance between the members' probabilities of each class, averaged over classes.

    For one point and class, W1 = ∫ |F_a(t) − F_b(t)| dt between the empirical CDFs of the S_a values
    ``a[:, i, c]`` and the S_b values ``b[:, i, c]`` (the formula of ``scipy.stats.wasserstein_distance``,
    computed for all points and classes at once).

    Args:
        a: (S_a, N, C) member probabilities.
        b: (S_b, N, C) member probabilities.

    Returns:
        (N,) float64 in [0, 1].
    """
    a, b = _check_members(a, b, "wasserstein1")
    sa, n, c = a.shape
    sb = b.shape[0]
    x = a.permute(1, 2, 0).reshape(n * c, sa).sort(-1).values.contiguous()  # (N·C, S_a)
    y = b.permute(1, 2, 0).reshape(n * c, sb).sort(-1).values.contiguous()
    allv = torch.cat([x, y], -1).sort(-1).values  # (N·C, S_a + S_b)
    deltas = allv.diff(dim=-1)
    at = allv[:, :-1].contiguous()
    fx = torch.searchsorted(x, at, right=True).to(torch.float64) / sa
    fy = torch.searchsorted(y, at, right=True).to(torch.float64) / sb
    return ((fx - fy).abs() * deltas).sum(-1).reshape(n, c).mean(-1)


def check_predictive_pair(where: str, a: Predictive, b: Predictive, names: str, b_side: str = "") -> None:
    """Raise unless ``a`` and ``b`` are Predictives on the same N ≥ 1 points and C classes: TypeError or
    ValueError "``where``: ..." (``names``: the two arguments as the message names them; ``b_side`` prefixes b's
    (N, C), e.g. "reference ")."""
    if not isinstance(a, Predictive) or not isinstance(b, Predictive):
        raise TypeError(f"{where}: {names} must be Predictive objects")
    if a.member_probs.shape[1:] != b.member_probs.shape[1:]:
        raise ValueError(f"{where}: predictives are on different points or classes: (N, C) = "
                         f"{tuple(a.member_probs.shape[1:])} vs {b_side}{tuple(b.member_probs.shape[1:])}")
    if a.num_points == 0:
        raise ValueError(f"{where}: predictives have no points (N = 0)")


def compare(
    pred_a: Predictive,
    pred_b: Predictive,
    *,
    self_distances: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
) -> dict[str, float]:
    """All comparison measures between two predictives on the same N points and C classes.

    Args:
        pred_a: Predictive with member_probs (S_a, N, C).
        pred_b: Predictive with member_probs (S_b, N, C).
        self_distances: optional (N,) ``mean_pairwise_distance`` of each side's members, so that comparing one
            method with many others computes its O(S²) self term once.

    Returns:
        Dict with the keys of ``MEASURES`` and ``spearman/<score>`` for each score in ``PROB_SCORES``; every value a
        float (means over the N points). ``spearman/<score>`` is NaN where either side's score is constant;
        ``energy`` and ``w1`` are NaN unless both sides have at least ``MIN_MEMBERS_FOR_DISTRIBUTION`` members;
        ``kl_ab``/``kl_ba`` are +inf where a zero probability meets a positive one (see ``kl_inf_frac``).
    """
    check_predictive_pair("compare", pred_a, pred_b, "pred_a and pred_b")
    p, q = pred_a.probs, pred_b.probs
    kl_ab, kl_ba = kl_divergence(p, q), kl_divergence(q, p)
    out = {
        "kl_ab": float(kl_ab.mean()),
        "kl_ba": float(kl_ba.mean()),
        "kl_inf_frac": float((torch.isinf(kl_ab) | torch.isinf(kl_ba)).to(torch.float64).mean()),
        "js": float(js_divergence(p, q).mean()),
        "tv": float(total_variation(p, q).mean()),
        "agree": float(top1_agreement(p, q).mean()),
    }
    sampled = min(pred_a.num_members, pred_b.num_members) >= MIN_MEMBERS_FOR_DISTRIBUTION
    a, b = pred_a.member_probs, pred_b.member_probs
    if sampled:
        out["energy"] = float(energy_distance(a, b, self_a=self_distances[0], self_b=self_distances[1]).mean())
    else:
        out["energy"] = float("nan")
    out["w1"] = float(wasserstein1(a, b).mean()) if sampled else float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in PROB_SCORES:
            out[f"spearman/{name}"] = spearman(pred_a.score(name).numpy(), pred_b.score(name).numpy())
    return out


__all__ = [
    "MEASURES",
    "MIN_MEMBERS_FOR_DISTRIBUTION",
    "PAIR_BLOCK_ELEMENTS",
    "check_predictive_pair",
    "compare",
    "energy_distance",
    "js_divergence",
    "kl_divergence",
    "mean_pairwise_distance",
    "spearman",
    "top1_agreement",
    "total_variation",
    "wasserstein1",
]
