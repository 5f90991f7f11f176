"""Classification and calibration metrics: accuracy, NLL, Brier, ECE / MCE, adaptive ECE, classwise ECE.

Definitions and conventions are benchmarks.md §1 (keys ``cls/acc``, ``cal/*``):

- ECE / MCE: Naeini et al. 2015, Guo et al. 2017 ("On calibration of modern neural networks", eq. 3 and the MCE
  below it): M equal-width bins on the top-label confidence, L1 gap weighted by bin mass.
- Adaptive ECE: Nixon et al. 2019 ("Measuring calibration in deep learning"): M nearly equal-count bins on the sorted
  confidences, the same weighted L1 formula (not netcal's ``ACE``, an unweighted mean over equal-width bins).
- Classwise ECE: Kull et al. 2019 ("Beyond temperature scaling", §5 "classwise-ECE"): for every class c the binary
  calibration error of p[:, c] against 1[y = c], mean over classes.

Binning rule (pinned by tests): with edges e_m = fl(m / M) (the float64 nearest m/M, m = 0..M), a value v falls in
bin m (0-based) iff e_m ≤ v < e_{m+1}; the last bin is closed, so v = 1.0 falls in bin M (1-based), and values a
rounding error above 1 (rows of float32 softmax may sum to 1 + 1e-7) fall there too. torchmetrics and
torch-uncertainty instead put v = 1.0 into a hidden (M+1)-th bin (torchmetrics issue 3510).

All functions take averaged predictive probabilities ``probs`` (N, C) (or a ``Predictive``, whose member
probabilities are averaged first, benchmarks.md §4 pitfall 2) and integer ``labels`` (N,); they compute in float64
and return Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ntkbayes.predictive import Predictive

#: Number of calibration bins: 15 is the Guo et al. 2017 setting used by torch-uncertainty and
#: uncertainty-baselines, so our ECE is comparable with their tables (benchmarks.md §1).
DEFAULT_N_BINS = 15

#: Smallest probability the NLL takes the log of when no logits are stored: float64 ``tiny`` (2.2e-308), so a true
#: class probability of exactly 0 costs log(1/tiny) = 708.4 nats instead of inf. With logits (``Predictive.log_probs``
#: uses logsumexp over members) nothing is clamped and saturated probabilities give the exact finite value.
LOG_PROB_FLOOR = torch.finfo(torch.float64).tiny


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------


def as_probs(probs: Predictive | torch.Tensor, name: str = "probs") -> torch.Tensor:
    """(N, C) float64 averaged probabilities from a ``Predictive`` or an (N, C) tensor.

    A 3-D (S, N, C) tensor is refused: average the members first (``Predictive(member_probs).probs``), since tools
    that score members separately and then average compute a different quantity (benchmarks.md §4 pitfall 2).
    """
    if isinstance(probs, Predictive):
        return probs.probs
    if not isinstance(probs, torch.Tensor):
        raise TypeError(f"{name}: expected a Predictive or a torch.Tensor, got {type(probs).__name__}")
    if probs.ndim == 3:
        raise ValueError(
            f"{name}: expected averaged (N, C) probabilities, got member probabilities of shape "
            f"{tuple(probs.shape)}; pass a Predictive or member_probs.mean(0)"
        )
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ValueError(f"{name}: expected shape (N, C) with C ≥ 1, got {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {probs.dtype}")
    probs = probs.detach().to("cpu", torch.float64)
    if not torch.isfinite(probs).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if (probs < 0).any():
        raise ValueError(f"{name}: contains negative probabilities")
    return probs


def check_labels(labels: torch.Tensor | np.ndarray, n: int, c: int, name: str = "labels") -> torch.Tensor:
    """(N,) int64 labels checked against N points and C classes: 1-D, integer dtype, values in [0, C)."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match the predictions, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer dtype, got {labels.dtype}")
    labels = labels.detach().to("cpu", torch.int64)
    if n and ((labels < 0) | (labels >= c)).any():
        raise ValueError(
            f"{name}: values must lie in [0, {c}) for {c} classes, got range [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )
    return labels


def _probs_labels(probs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    p = as_probs(probs)
    if p.shape[0] == 0:
        raise ValueError("probs: no points (N = 0); metrics are undefined")
    return p, check_labels(labels, p.shape[0], p.shape[1])


def _check_vector(x: torch.Tensor, name: str, n: int | None = None) -> torch.Tensor:
    """(N,) float64 copy of a finite 1-D tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 1 or (n is not None and x.shape[0] != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return x


def top_label(probs: Predictive | torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence conf_i = max_c p[i, c] (N,) and correctness a_i = 1[argmax_c p_i = y_i] (N,), float64.

    Ties in the argmax go to the lowest class index (``torch.argmax``).
    """
    p, y = _probs_labels(probs, labels)
    conf, pred = p.max(-1)
    return conf, (pred == y).to(torch.float64)


# ----------------------------------------------------------------------------------------------------------------
# point metrics
# ----------------------------------------------------------------------------------------------------------------


def accuracy(probs: Predictive | torch.Tensor, labels: torch.Tensor) -> float:
    """``cls/acc``: mean_i 1[argmax_c p_i = y_i] for probs (N, C), labels (N,)."""
    return float(top_label(probs, labels)[1].mean())


def nll(log_probs: Predictive | torch.Tensor, labels: torch.Tensor) -> float:
    """``cal/nll``: −mean_i log p[i, y_i], natural log.

    Args:
        log_probs: a ``Predictive`` (its ``log_probs``: logsumexp over member log-softmax when logits are stored, so
            saturated probabilities stay finite) or an (N, C) tensor of log-probabilities (all ≤ 0; passing
            probabilities by mistake is caught because every probability row has an entry ≥ 1/C > 0).
        labels: (N,) integer class labels.

    Without logits (a ``Predictive`` built from probabilities, or a tensor), log p is floored at
    log(``LOG_PROB_FLOOR``) = −708.4: a true-class probability of exactly 0 costs 708.4 nats, not inf.
    """
    floor = math.log(LOG_PROB_FLOOR)
    if isinstance(log_probs, Predictive):
        lp = log_probs.log_probs
        if log_probs.member_logits is not None:
            floor = -math.inf  # exact log-space values: nothing to clamp
    else:
        if not isinstance(log_probs, torch.Tensor):
            raise TypeError(f"log_probs: expected a Predictive or a torch.Tensor, got {type(log_probs).__name__}")
        if log_probs.ndim != 2 or log_probs.shape[1] == 0:
            raise ValueError(f"log_probs: expected shape (N, C), got {tuple(log_probs.shape)}")
        lp = log_probs.detach().to("cpu", torch.float64)
        if torch.isnan(lp).any() or (lp == math.inf).any():
            raise ValueError("log_probs: contains NaN or +inf")
        if lp.numel() and lp.max() > 1e-6:
            raise ValueError(
                f"log_probs: expected log-probabilities (≤ 0), got a maximum of {float(lp.max()):.3g}; "
                "pass log p, not p"
            )
    if lp.shape[0] == 0:
        raise ValueError("log_probs: no points (N = 0); metrics are undefined")
    y = check_labels(labels, lp.shape[0], lp.shape[1])
    true_lp = lp.gather(1, y[:, None]).squeeze(1).clamp_min(floor)
    return float(-true_lp.mean())


def brier(probs: Predictive | torch.Tensor, labels: torch.Tensor) -> float:
    """``cal/brier``: mean_i Σ_c (p[i, c] − 1[y_i = c])², range [0, 2], on the averaged probs (N, C)."""
    p, y = _probs_labels(probs, labels)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(torch.float64)
    return float((p - onehot).square().sum(-1).mean())


# ----------------------------------------------------------------------------------------------------------------
# binning
# ----------------------------------------------------------------------------------------------------------------


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    return int(n_bins)


def bin_edges(n_bins: int = DEFAULT_N_BINS) -> torch.Tensor:
    """(M + 1,) float64 edges fl(m / M), m = 0..M (correctly rounded, so 3/15 is exactly the float 0.2)."""
    n_bins = _check_n_bins(n_bins)
    return torch.arange(n_bins + 1, dtype=torch.float64) / n_bins


def bin_index(values: torch.Tensor, n_bins: int = DEFAULT_N_BINS) -> torch.Tensor:
    """0-based equal-width bin of each value (any shape), int64: e_m ≤ v < e_{m+1}, last bin closed.

    Values ≥ 1 (1.0 itself and float32 rounding above it) go to the last bin, values < 0 to the first.
    """
    edges = bin_edges(n_bins)
    # right=True: v == e_m goes to bin m (interval [e_m, e_{m+1})); then fold v ≥ 1 into the last bin.
    idx = torch.searchsorted(edges, values.contiguous(), right=True) - 1
    return idx.clamp(0, n_bins - 1)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics for reliability diagrams and binned calibration errors (M bins).

    Attributes:
        lower: (M,) lower end of each bin (equal-width: the edge e_m; adaptive: smallest confidence in the bin).
        upper: (M,) upper end (equal-width: e_{m+1}; adaptive: largest confidence in the bin).
        counts: (M,) int64 number of points in each bin.
        acc: (M,) mean correctness in each bin (NaN for an empty bin, so plots skip it).
        conf: (M,) mean confidence in each bin (NaN for an empty bin).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    counts: torch.Tensor
    acc: torch.Tensor
    conf: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        """(M,) bin mass |B_m| / N."""
        return self.counts.to(torch.float64) / self.counts.sum()

    @property
    def gaps(self) -> torch.Tensor:
        """(M,) |acc(B_m) − conf(B_m)| (NaN for an empty bin)."""
        return (self.acc - self.conf).abs()

    def ece(self) -> float:
        """Σ_m |B_m|/N · |acc(B_m) − conf(B_m)| over non-empty bins (L1, weighted)."""
        ne = self.counts > 0
        return float((self.weights[ne] * self.gaps[ne]).sum())

    def mce(self) -> float:
        """max_m |acc(B_m) − conf(B_m)| over non-empty bins."""
        return float(self.gaps[self.counts > 0].max())


def _bin_stats(conf: torch.Tensor, correct: torch.Tensor, idx: torch.Tensor, n_bins: int):
    """Counts (M,), mean correctness (M,), mean confidence (M,) per bin index; NaN where empty."""
    counts = torch.bincount(idx, minlength=n_bins)
    denom = counts.to(torch.float64)
    acc = torch.bincount(idx, weights=correct, minlength=n_bins) / denom  # 0/0 = NaN for empty bins
    mean_conf = torch.bincount(idx, weights=conf, minlength=n_bins) / denom
    return counts, acc, mean_conf


def _conf_correct(conf: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    conf = _check_vector(conf, "conf")
    if conf.shape[0] == 0:
        raise ValueError("conf: no points (N = 0); calibration is undefined")
    if isinstance(correct, torch.Tensor) and correct.dtype == torch.bool:
        correct = correct.to(torch.float64)
    correct = _check_vector(correct, "correct", conf.shape[0])
    if ((correct != 0) & (correct != 1)).any():
        raise ValueError("correct: expected 0/1 (or bool) values")
    return conf, correct


def reliability_bins(conf: torch.Tensor, correct: torch.Tensor, n_bins: int = DEFAULT_N_BINS) -> ReliabilityBins:
    """Equal-width reliability bins (module docstring rule) of confidences conf (N,) vs 0/1 outcomes correct (N,).

    For top-label calibration pass ``top_label(probs, labels)``; for one class c of the classwise version pass
    (p[:, c], 1[y = c]).
    """
    n_bins = _check_n_bins(n_bins)
    conf, correct = _conf_correct(conf, correct)
    counts, acc, mean_conf = _bin_stats(conf, correct, bin_index(conf, n_bins), n_bins)
    edges = bin_edges(n_bins)
    return ReliabilityBins(edges[:-1], edges[1:], counts, acc, mean_conf)


def adaptive_bins(conf: torch.Tensor, correct: torch.Tensor, n_bins: int = DEFAULT_N_BINS) -> ReliabilityBins:
    """Equal-count bins: sort conf (N,) ascending (stable: tied values keep input order), split like
    ``np.array_split`` into M consecutive runs (the first N mod M runs get one extra point); empty when N < M."""
    n_bins = _check_n_bins(n_bins)
    conf, correct = _conf_correct(conf, correct)
    n = conf.shape[0]
    order = torch.sort(conf, stable=True).indices
    # np.array_split: the first r = N mod M bins hold q + 1 = ⌊N/M⌋ + 1 sorted points, the others q
    q, r = divmod(n, n_bins)
    pos = torch.arange(n)
    big = r * (q + 1)  # points in the larger bins
    rank_bin = torch.where(pos < big, pos // (q + 1), r + (pos - big) // max(q, 1))
    idx = torch.empty(n, dtype=torch.int64)
    idx[order] = rank_bin
    counts, acc, mean_conf = _bin_stats(conf, correct, idx, n_bins)
    nan = torch.full((n_bins,), math.nan, dtype=torch.float64)
    lower = nan.scatter_reduce(0, idx, conf, "amin", include_self=False)
    upper = nan.scatter_reduce(0, idx, conf, "amax", include_self=False)
    return ReliabilityBins(lower, upper, counts, acc, mean_conf)


# ----------------------------------------------------------------------------------------------------------------
# calibration errors
# ----------------------------------------------------------------------------------------------------------------


def ece(probs: Predictive | torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS) -> float:
    """``cal/ece``: top-label ECE, M equal-width bins, L1 weighted by bin mass; probs (N, C), labels (N,)."""
    return reliability_bins(*top_label(probs, labels), n_bins).ece()


def mce(probs: Predictive | torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS) -> float:
    """``cal/mce``: largest |acc − conf| over the non-empty equal-width bins; probs (N, C), labels (N,)."""
    return reliability_bins(*top_label(probs, labels), n_bins).mce()


def adaptive_ece(probs: Predictive | torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS) -> float:
    """``cal/aece``: top-label ECE on M equal-count bins (``adaptive_bins``); probs (N, C), labels (N,)."""
    return adaptive_bins(*top_label(probs, labels), n_bins).ece()


def classwise_ece(probs: Predictive | torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS) -> float:
    """``cal/cwece``: (1/C) Σ_c Σ_m |B_mc|/N · |mean_{B_mc} 1[y = c] − mean_{B_mc} p[:, c]|.

    Bins B_mc are the equal-width bins of p[:, c]; probs (N, C), labels (N,). Vectorized over classes: one
    ``bincount`` on the flat index c·M + m.
    """
    n_bins = _check_n_bins(n_bins)
    p, y = _probs_labels(probs, labels)
    n, c = p.shape
    target = torch.nn.functional.one_hot(y, c).to(torch.float64)
    flat = (bin_index(p, n_bins) + n_bins * torch.arange(c)).reshape(-1)  # (N·C,) index c·M + m
    freq = torch.bincount(flat, weights=target.reshape(-1), minlength=c * n_bins).reshape(c, n_bins)
    mass = torch.bincount(flat, weights=p.reshape(-1), minlength=c * n_bins).reshape(c, n_bins)
    # |B|/N · |Σ_B y/|B| − Σ_B p/|B|| = |Σ_B y − Σ_B p| / N, which is 0 for an empty bin.
    per_class = (freq - mass).abs().sum(-1) / n
    return float(per_class.mean())
