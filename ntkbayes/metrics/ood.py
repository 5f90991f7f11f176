"""Out-of-distribution detection metrics: AUROC, AUPR-In, AUPR-Out, FPR95 (benchmarks.md §1, "OOD detection").

OOD is the positive class (OpenOOD v1.5, torch-uncertainty); every score is "larger = more OOD" (``SCORES`` of
``ntkbayes.predictive``: msp, entropy, expected_entropy, mutual_info, variance, energy, max_logit). Only the scores
both predictives can produce are evaluated (``Predictive.available_scores``: no member scores for S = 1, no logit
scores without logits).

- AUROC: the Mann–Whitney form P(s_ood > s_id) + ½ P(s_ood = s_id) computed from average ranks (Hanley & McNeil
  1982, eq. 2), identical to scikit-learn's ``roc_auc_score`` including ties.
- Average precision: scikit-learn's step-wise ``average_precision_score``, AP = Σ_k (R_k − R_{k−1}) P_k over the
  distinct score thresholds in decreasing order (no interpolation). AUPR-Out: OOD positive, score s; AUPR-In: ID
  positive, score −s.
- FPR95: with k = ⌈0.95·n_ood⌉ (exact integer arithmetic, (95·n_ood + 99) // 100) and t the k-th largest OOD score,
  FPR95 = fraction of ID points with score ≥ t: the ID false-alarm rate once 95 % of OOD is caught. The older
  ID-positive convention gives different numbers (0.578 vs 0.500 on one synthetic example).

A constant score (e.g. a score asked for explicitly on S = 1 predictives) gives AUROC 0.5,
AUPR-Out = n_ood / (n_id + n_ood), AUPR-In = n_id / (n_id + n_ood) and FPR95 = 1: defined, never NaN.
"""

from __future__ import annotations

import torch

from ntkbayes.metrics.calibration import _check_vector
from ntkbayes.predictive import Predictive

#: OOD recall, in percent, at which FPR95 reads the ID false-positive rate (integer so ⌈0.95·n⌉ is exact).
FPR_RECALL_PERCENT = 95

#: Metric names per (OOD set, score), in key order ``ood/<set>/<score>/<metric>``.
OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def _id_ood(score_id: torch.Tensor, score_ood: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s_id = _check_vector(score_id, "score_id")
    s_ood = _check_vector(score_ood, "score_ood")
    if s_id.shape[0] == 0 or s_ood.shape[0] == 0:
        raise ValueError(
            f"score_id / score_ood: both must be non-empty, got {s_id.shape[0]} ID and {s_ood.shape[0]} OOD points"
        )
    return s_id, s_ood


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """(N,) 1-based ranks of x (N,) in ascending order, ties given the mean of their ranks (scipy's ``rankdata``)."""
    sorted_x, order = torch.sort(x, stable=True)
    _, group, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)  # rank of the last member of each tie group
    avg = ends - (counts.to(torch.float64) - 1) / 2  # mean of ranks ends − count + 1 .. ends
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = avg[group]
    return ranks


def auroc(score_id: torch.Tensor, score_ood: torch.Tensor) -> float:
    """AUROC with OOD positive: score_id (N,), score_ood (M,), larger = more OOD; ties count ½."""
    return _auroc(*_id_ood(score_id, score_ood))


def _auroc(s_id: torch.Tensor, s_ood: torch.Tensor) -> float:
    n, m = s_id.shape[0], s_ood.shape[0]
    ranks = average_ranks(torch.cat([s_id, s_ood]))
    # Mann–Whitney U of the positives: Σ rank(ood) − M(M+1)/2 (half-integer sums, exact in float64)
    u = ranks[n:].sum() - m * (m + 1) / 2
    return float(u / (n * m))


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Step-wise average precision (scikit-learn's ``average_precision_score``): scores (N,), positive (N,) bool.

    AP = Σ_k (R_k − R_{k−1}) · P_k over thresholds at the distinct scores, largest first (R_0 = 0).
    """
    s = _check_vector(scores, "scores")
    if not isinstance(positive, torch.Tensor) or positive.dtype != torch.bool or positive.shape != s.shape:
        raise ValueError(f"positive: expected a bool tensor of shape {tuple(s.shape)}")
    if not positive.any():
        raise ValueError("positive: no positive points; average precision is undefined")
    return _average_precision(s, positive)


def _average_precision(s: torch.Tensor, positive: torch.Tensor) -> float:
    n_pos = int(positive.sum())
    sorted_s, order = torch.sort(s, descending=True, stable=True)
    counts = torch.unique_consecutive(sorted_s, return_counts=True)[1]
    last = torch.cumsum(counts, 0) - 1  # index of the last point of each tie group = one threshold
    tps = torch.cumsum(positive[order].to(torch.float64), 0)[last]
    precision = tps / (last + 1).to(torch.float64)
    recall = tps / n_pos
    d_recall = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((d_recall * precision).sum())


def aupr_out(score_id: torch.Tensor, score_ood: torch.Tensor) -> float:
    """AUPR-Out: average precision with OOD positive and the score as is; score_id (N,), score_ood (M,)."""
    return _aupr(*_id_ood(score_id, score_ood), ood_positive=True)


def _aupr(s_id: torch.Tensor, s_ood: torch.Tensor, ood_positive: bool) -> float:
    is_ood = torch.cat([torch.zeros(s_id.shape[0], dtype=torch.bool), torch.ones(s_ood.shape[0], dtype=torch.bool)])
    s = torch.cat([s_id, s_ood])
    return _average_precision(s, is_ood) if ood_positive else _average_precision(-s, ~is_ood)


def aupr_in(score_id: torch.Tensor, score_ood: torch.Tensor) -> float:
    """AUPR-In: average precision with ID positive and −score; score_id (N,), score_ood (M,)."""
    return _aupr(*_id_ood(score_id, score_ood), ood_positive=False)


def fpr95(score_id: torch.Tensor, score_ood: torch.Tensor) -> float:
    """FPR95 (OOD positive): fraction of ID scores ≥ t, t the ⌈0.95·M⌉-th largest OOD score; score_id (N,),
    score_ood (M,). Lower is better."""
    return _fpr95(*_id_ood(score_id, score_ood))


def _fpr95(s_id: torch.Tensor, s_ood: torch.Tensor) -> float:
    m = s_ood.shape[0]
    k = (FPR_RECALL_PERCENT * m + 99) // 100  # ⌈0.95·M⌉ without floating-point rounding
    t = torch.sort(s_ood, descending=True).values[k - 1]
    return float((s_id >= t).to(torch.float64).mean())


def ood_metrics(score_id: torch.Tensor, score_ood: torch.Tensor) -> dict[str, float]:
    """{"auroc", "aupr_in", "aupr_out", "fpr95"} for one score: score_id (N,), score_ood (M,), larger = more OOD."""
    s_id, s_ood = _id_ood(score_id, score_ood)
    return {
        "auroc": _auroc(s_id, s_ood),
        "aupr_in": _aupr(s_id, s_ood, ood_positive=False),
        "aupr_out": _aupr(s_id, s_ood, ood_positive=True),
        "fpr95": _fpr95(s_id, s_ood),
    }


def evaluate_ood(
    pred_id: Predictive, pred_ood: Predictive, scores: tuple[str, ...] | None = None
) -> dict[str, float]:
    """Every OOD metric for every score: keys ``<score>/<metric>``; pred_id on N ID points, pred_ood on M OOD
    points, both with C classes. ``scores``: default, every score both predictives can produce
    (``available_scores``)."""
    if pred_ood.num_classes != pred_id.num_classes:
        raise ValueError(
            f"pred_ood: has {pred_ood.num_classes} classes, the ID predictive has {pred_id.num_classes}"
        )
    if scores is None:
        have = set(pred_ood.available_scores)
        scores = tuple(s for s in pred_id.available_scores if s in have)
    out = {}
    for name in scores:
        for metric, value in ood_metrics(pred_id.score(name), pred_ood.score(name)).items():
            out[f"{name}/{metric}"] = value
    return out
