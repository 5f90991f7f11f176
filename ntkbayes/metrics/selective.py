"""Selective classification: the risk–coverage curve and its area (AURC), benchmarks.md §1 key ``sel/aurc``.

Geifman & El-Yaniv 2017 ("Selective classification for deep neural networks"), in the discrete form of Geifman et
al. 2019 ("Bias-reduced uncertainty estimation", eq. 2): sort the N points by confidence, descending and stable (tied
points keep their input order), let risk_k be the error rate among the k most confident points, and

    AURC = (1/N) Σ_{k=1..N} risk_k.

torch-uncertainty's ``AURC`` integrates the same points with the trapezoid rule over coverage k/N and rescales by
1/(1 − 1/N), which equals (N·AURC − (risk_1 + risk_N)/2) / (N − 1): an O(1/N) difference (tests pin the relation).
"""

from __future__ import annotations

import torch

from ntkbayes.metrics.calibration import _check_vector, _conf_correct, top_label
from ntkbayes.predictive import Predictive


def risk_coverage(
    probs: Predictive | torch.Tensor, labels: torch.Tensor, confidence: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Risk–coverage curve: coverage k/N (N,) and risk_k (N,) for k = 1..N, float64.

    Args:
        probs: a ``Predictive`` or averaged probabilities (N, C).
        labels: (N,) integer labels.
        confidence: optional (N,) ranking score, larger = more confident (e.g. −mutual_info); default the top-label
            confidence max_c p[i, c], as in ``sel/aurc``.
    """
    conf, correct = top_label(probs, labels)
    if confidence is not None:
        conf = _check_vector(confidence, "confidence", conf.shape[0])
    return _risk_coverage(conf, correct)


def _risk_coverage(conf: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage (N,) and risk (N,) from checked float64 confidences conf (N,) and 0/1 correctness (N,)."""
    order = torch.sort(conf, descending=True, stable=True).indices
    k = torch.arange(1, conf.shape[0] + 1, dtype=torch.float64)
    risk = torch.cumsum(1.0 - correct[order], 0) / k
    return k / conf.shape[0], risk


def aurc(
    probs: Predictive | torch.Tensor, labels: torch.Tensor, confidence: torch.Tensor | None = None
) -> float:
    """``sel/aurc``: mean over k = 1..N of risk_k (``risk_coverage``); probs (N, C), labels (N,). Lower is better."""
    return float(risk_coverage(probs, labels, confidence)[1].mean())


def aurc_from_confidence(conf: torch.Tensor, correct: torch.Tensor) -> float:
    """AURC from confidences conf (N,) (larger = more confident) and 0/1 (or bool) correctness correct (N,)."""
    conf, correct = _conf_correct(conf, correct)
    return float(_risk_coverage(conf, correct)[1].mean())
