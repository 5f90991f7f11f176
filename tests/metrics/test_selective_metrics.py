"""AURC and the risk–coverage curve: hand cases (stable ties), a slow loop, torch-uncertainty's trapezoid form."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ntkbayes.metrics.calibration import top_label
from ntkbayes.metrics.selective import aurc, aurc_from_confidence, risk_coverage
from ntkbayes.predictive import Predictive

#: A few ulps (2⁻⁵² ≈ 2.2e-16) of a result of order ≤ 1 computed in a handful of float64 operations.
ULP = 1e-15

#: float64 sums or means of N ≤ 10³ terms of order 1 taken in another order than the reference (a loop,
#: scikit-learn, torchmetrics): at most N·ε ≈ 2e-13 apart.
SUM = 1e-12

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch_uncertainty.metrics.classification import AURC

D = torch.float64


def test_aurc_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]], dtype=D)
    y = torch.tensor([0, 2, 2])
    # most confident first: .7 (wrong), .6 (right), .5 (right): risks 1, 1/2, 1/3
    cov, risk = risk_coverage(p, y)
    assert cov.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0]) and risk.tolist() == pytest.approx([1, 0.5, 1 / 3])
    assert aurc(p, y) == pytest.approx((1 + 0.5 + 1 / 3) / 3, abs=ULP)


def test_aurc_ties_are_stable():
    # confidences .5 (wrong), .5 (right), .9 (right): stable descending order is 2, 0, 1 -> risks 0, 1/2, 1/3
    p = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]], dtype=D)
    y = torch.tensor([1, 0, 0])
    assert aurc(p, y) == pytest.approx((0 + 0.5 + 1 / 3) / 3, abs=ULP)
    # swapping the tied points changes the order, hence the value (1/9): the rule is pinned
    assert aurc(p[[1, 0, 2]], y[[1, 0, 2]]) == pytest.approx((0 + 0 + 1 / 3) / 3, abs=ULP)


def test_aurc_extremes_and_custom_confidence():
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]], dtype=D)
    assert aurc(p, torch.zeros(4, dtype=torch.int64)) == 0.0
    assert aurc(p, torch.ones(4, dtype=torch.int64)) == 1.0
    y = torch.tensor([0, 0, 1, 1])  # errors are the least confident: risks 0, 0, 1/3, 1/2
    assert aurc(p, y) == pytest.approx((1 / 3 + 1 / 2) / 4, abs=ULP)
    # ranking by a reversed confidence puts the errors first: risks 1, 1, 2/3, 1/2
    assert aurc(p, y, confidence=-p[:, 0]) == pytest.approx((1 + 1 + 2 / 3 + 1 / 2) / 4, abs=ULP)
    with pytest.raises(ValueError, match=r"confidence: expected shape \(4,\)"):
        aurc(p, y, confidence=p[:3, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aurc_against_loop_and_torch_uncertainty(seed):
    g = torch.Generator().manual_seed(seed)
    n = 250
    pred = Predictive.from_logits(1.5 * torch.randn(3, n, 4, generator=g, dtype=D))
    y = torch.randint(0, 4, (n,), generator=g)
    p = pred.probs.numpy()
    conf, wrong = p.max(1), (p.argmax(1) != y.numpy()).astype(float)
    order = np.argsort(-conf, kind="stable")
    slow = np.mean([wrong[order[:k]].mean() for k in range(1, n + 1)])
    ours = aurc(pred, y)
    assert ours == pytest.approx(slow, abs=SUM)
    conf, correct = top_label(pred, y)
    assert aurc_from_confidence(conf, correct.bool()) == ours
    # torch-uncertainty integrates the same risks with the trapezoid rule over coverage k/N, rescaled by
    # 1/(1 − 1/N): (N·AURC − (r_1 + r_N)/2) / (N − 1), an O(1/N) difference from ours
    r = risk_coverage(pred, y)[1]
    default = torch.get_default_dtype()
    try:  # its coverage grid arange(1, N+1)/N takes the default dtype: float64 makes the comparison exact
        torch.set_default_dtype(D)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = AURC()
            metric.update(pred.probs, y)
            tu = float(metric.compute())
    finally:
        torch.set_default_dtype(default)
    trapezoid = (n * ours - float(r[0] + r[-1]) / 2) / (n - 1)
    assert tu == pytest.approx(trapezoid, abs=SUM)
    assert abs(tu - ours) > 1e-6
