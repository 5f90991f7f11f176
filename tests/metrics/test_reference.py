"""ref/* metrics against an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, logsumexp, softmax

from ntkbayes.metrics.reference import METRICS, PROB_FLOOR, reference_metrics
from ntkbayes.predictive import Predictive


def _numpy_metrics(logits_or_probs, ref_probs, from_logits):
    """Independent: numpy/scipy, predictive means and KL(ref ‖ pred) written out term by term."""
    if from_logits:
        p = softmax(logits_or_probs, -1).mean(0)
        log_p = logsumexp(log_softmax(logits_or_probs, -1), 0) - np.log(logits_or_probs.shape[0])
    else:
        p = logits_or_probs.mean(0)
        with np.errstate(divide="ignore"):
            log_p = np.log(p)
    r = ref_probs.mean(0)
    log_p = np.maximum(log_p, np.log(PROB_FLOOR))
    kl = np.zeros(r.shape[0])
    for i in range(r.shape[0]):
        for c in range(r.shape[1]):
            if r[i, c] > 0:
                kl[i] += r[i, c] * (np.log(r[i, c]) - log_p[i, c])
    return {
        "ref/agreement": np.mean(p.argmax(-1) == r.argmax(-1)),
        "ref/tv": np.mean(0.5 * np.abs(p - r).sum(-1)),
        "ref/kl": np.mean(np.maximum(kl, 0.0)),
    }


@pytest.mark.parametrize("from_logits", [True, False])
def test_reference_metrics_match_numpy(from_logits):
    rng = np.random.default_rng(0)
    logits = 2.0 * rng.standard_normal((5, 40, 3))
    ref = softmax(2.0 * rng.standard_normal((7, 40, 3)), -1)
    pred = Predictive.from_logits(torch.tensor(logits)) if from_logits else \
        Predictive(torch.tensor(softmax(logits, -1)))
    got = reference_metrics(pred, Predictive(torch.tensor(ref)))
    want = _numpy_metrics(logits if from_logits else softmax(logits, -1), ref, from_logits)
    assert set(got) == set(METRICS)
    assert got["ref/agreement"] == want["ref/agreement"]
    for key in ("ref/tv", "ref/kl"):
        # means of 40 float64 sums of ≤ 3 terms of size O(1): agreement to a few hundred ulps
        assert got[key] == pytest.approx(want[key], rel=1e-13, abs=1e-15), key


def test_reference_metrics_identical_and_saturated():
    rng = np.random.default_rng(1)
    probs = torch.tensor(softmax(rng.standard_normal((4, 10, 2)), -1))
    same = reference_metrics(Predictive(probs), Predictive(probs))
    assert same["ref/agreement"] == 1.0 and same["ref/tv"] == 0.0
    assert same["ref/kl"] < 1e-15  # Σ r(log r − log r): cancellation to rounding
    # A saturated member: float64 softmax([0, -800]) = [1, 0] exactly; the log predictive (−800 from the logits,
    # −inf from the probabilities) is floored at log 1e-12 either way, so KL stays finite.
    logits = torch.tensor([[[0.0, -800.0]]], dtype=torch.float64)
    ref = Predictive(torch.tensor([[[0.5, 0.5]]], dtype=torch.float64))
    want = 0.5 * np.log(0.5) + 0.5 * (np.log(0.5) - np.log(PROB_FLOOR))
    with_logits = reference_metrics(Predictive.from_logits(logits), ref)
    probs_only = reference_metrics(Predictive(torch.softmax(logits, -1)), ref)
    assert with_logits["ref/kl"] == pytest.approx(want, rel=1e-14)
    assert probs_only["ref/kl"] == pytest.approx(want, rel=1e-14)
    assert probs_only["ref/tv"] == 0.5 and probs_only["ref/agreement"] == 1.0


def test_reference_metrics_shape_mismatch():
    a = Predictive(torch.full((1, 3, 2), 0.5, dtype=torch.float64))
    b = Predictive(torch.full((1, 4, 2), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="different points"):
        reference_metrics(a, b)
