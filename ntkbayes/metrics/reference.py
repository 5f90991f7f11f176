"""Posterior-fidelity metrics: how close a method's predictive is to a reference posterior's on the same points.

Izmailov et al. 2021 ("What are Bayesian neural network posteriors really like?") and the NeurIPS 2021
approximate-inference competition score an approximation by its **agreement** and **total variation** with a
sampled (HMC) reference predictive. With p = the method's predictive mean and r = the reference's (N, C), both
``Predictive.probs`` (the mean of member probabilities, never of logits):

* ``ref/agreement`` = mean_i 1[argmax_c p_ic = argmax_c r_ic] (↑; ties resolve to the lowest class index on both
  sides, :func:`ntkbayes.metrics.compare.top1_agreement`);
* ``ref/tv`` = mean_i ½ Σ_c |p_ic − r_ic| ∈ [0, 1] (↓; :func:`ntkbayes.metrics.compare.total_variation`);
* ``ref/kl`` = mean_i KL(r_i ‖ p_i) = Σ_c r_ic (log r_ic − log p_ic), natural log (↓). Direction: the reference is
  the "true" predictive and this is the expected excess log loss of predicting with p when labels are drawn from r,
  so it punishes a method that is confident where the posterior is not. Terms with r_ic = 0 are 0. log p is the
  method's ``Predictive.log_probs`` (a logsumexp over member log-softmaxes when logits are present, so saturated
  float probabilities do not make it −inf), floored at log ``PROB_FLOOR``: a point where the method puts
  (numerically) zero mass on a class the reference deems possible adds at most r_ic · log(r_ic / 1e-12) ≤ 27.7
  nats instead of +inf. All computation is float64.
"""

from __future__ import annotations

import math

import torch

from ntkbayes.metrics.compare import check_predictive_pair, top1_agreement, total_variation
from ntkbayes.predictive import Predictive

#: Smallest probability the method's predictive is credited with inside ``ref/kl`` (log floor −27.6).
PROB_FLOOR = 1e-12

#: The metrics :func:`reference_metrics` returns: key → (display name, direction, (low, high), description); the
#: one declaration ``ntkbayes.metrics.METRIC_INFO`` and the leaderboard read.
METRICS: dict[str, tuple[str, str, tuple[float, float], str]] = {
    "ref/agreement": ("Agreement with the reference", "higher", (0.0, 1.0),
                      "top-1 agreement of the predictive mean with the reference's"),
    "ref/tv": ("TV to the reference", "lower", (0.0, 1.0),
               "mean total variation between the predictive means, in [0, 1]"),
    "ref/kl": ("KL(reference ‖ method) (nats)", "lower", (0.0, math.inf),
               "mean KL(reference ‖ method) of the predictive means, nats, method floored at 1e-12"),
}


def reference_metrics(pred: Predictive, ref_pred: Predictive) -> dict[str, float]:
    """``ref/agreement``, ``ref/tv`` and ``ref/kl`` of ``pred`` against ``ref_pred`` (module docstring).

    Args:
        pred: the method's predictive, member_probs (S, N, C).
        ref_pred: the reference predictive on the same N points and C classes, (S_ref, N, C).

    Returns:
        The three metrics as floats (means over the N points).
    """
    check_predictive_pair("reference_metrics", pred, ref_pred, "pred and ref_pred", b_side="reference ")
    p, r = pred.probs, ref_pred.probs
    log_p = pred.log_probs.to(torch.float64).clamp_min(math.log(PROB_FLOOR))
    kl = (torch.xlogy(r, r) - torch.where(r > 0, r * log_p, torch.zeros_like(r))).sum(-1).clamp_min(0.0)
    return {
        "ref/agreement": float(top1_agreement(p, r).mean()),
        "ref/tv": float(total_variation(p, r).mean()),
        "ref/kl": float(kl.mean()),
    }


__all__ = ["METRICS", "PROB_FLOOR", "reference_metrics"]
