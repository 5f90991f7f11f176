"""Calibration metrics: hand-computed edge cases (bin boundaries, confidence 1.0, empty bins), slow references,
scikit-learn and torch-uncertainty / torchmetrics where their convention is ours, and the documented differences."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss

from ntkbayes.metrics import calibration as cal
from ntkbayes.predictive import Predictive

#: A few ulps (2⁻⁵² ≈ 2.2e-16) of a result of order ≤ 1 computed in a handful of float64 operations.
ULP = 1e-15

#: float64 sums or means of N ≤ 10³ terms of order 1 taken in another order than the reference (a loop,
#: scikit-learn, torchmetrics): at most N·ε ≈ 2e-13 apart.
SUM = 1e-12

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch_uncertainty.metrics.classification import (
        BrierScore,
        CalibrationError,
        CategoricalNLL,
        ClasswiseCalibrationError,
    )
    from torch_uncertainty.metrics.classification.calibration.adaptive_calibration_error import _ace_compute
    from torchmetrics.functional.classification.calibration_error import _ce_compute

D = torch.float64

# Four binary points. Confidences: 1.0 (wrong) -> bin 15 under our rule; 0.8 = fl(12/15) and 0.6 = fl(9/15) sit
# exactly on a bin's lower edge -> bins 13 and 10 (1-based); 0.94 (correct) -> bin 15 ([14/15, 1]).
EDGE_P = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.94, 0.06]], dtype=D)
EDGE_Y = torch.tensor([1, 1, 1, 0])

# Three 3-class points: predictions 0, 1, 2; correct, wrong, correct.
P3 = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]], dtype=D)
Y3 = torch.tensor([0, 2, 2])


def _random(seed: int, s: int = 4, n: int = 300, c: int = 5, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    pred = Predictive.from_logits(scale * torch.randn(s, n, c, generator=g, dtype=D))
    return pred, torch.randint(0, c, (n,), generator=g)


# ------------------------------------------------------------------------------------------------ hand-computed


def test_point_metrics_by_hand():
    assert cal.accuracy(P3, Y3) == pytest.approx(2 / 3, abs=ULP)
    # Brier: (.25+.09+.04) + (.01+.49+.64) + (.04+.04+.16) = .38 + 1.14 + .24 = 1.76, over 3 points
    assert cal.brier(P3, Y3) == pytest.approx(1.76 / 3, abs=SUM)
    assert cal.nll(torch.log(P3), Y3) == pytest.approx(-(math.log(0.5) + math.log(0.2) + math.log(0.6)) / 3, abs=SUM)
    assert cal.nll(Predictive(P3), Y3) == pytest.approx(-(math.log(0.5) + math.log(0.2) + math.log(0.6)) / 3)


def test_ece_mce_by_hand_three_classes():
    # conf .5 -> bin 8 ([7/15, 8/15)) correct, gap .5; conf .7 -> bin 11 wrong, gap .7; conf .6 on the edge 9/15
    # -> bin 10 correct, gap .4. ECE = (.5 + .7 + .4) / 3, MCE = .7.
    assert cal.ece(P3, Y3) == pytest.approx(1.6 / 3, abs=SUM)
    assert cal.mce(P3, Y3) == pytest.approx(0.7, abs=SUM)


def test_confidence_one_lands_in_last_bin_and_edges_go_up():
    conf, correct = cal.top_label(EDGE_P, EDGE_Y)
    bins = cal.reliability_bins(conf, correct, 15)
    counts = torch.zeros(15, dtype=torch.int64)
    counts[[9, 12, 14]] = torch.tensor([1, 1, 2])
    assert torch.equal(bins.counts, counts)  # 1.0 and 0.94 share bin 15; 12 bins are empty
    assert torch.isnan(bins.acc[bins.counts == 0]).all() and torch.isnan(bins.conf[bins.counts == 0]).all()
    assert bins.acc[14] == 0.5 and bins.conf[14] == pytest.approx(0.97, abs=ULP)
    # bin 15: |.5 − .97| · 2/4; bin 13: |1 − .8| · 1/4; bin 10: |0 − .6| · 1/4
    assert cal.ece(EDGE_P, EDGE_Y) == pytest.approx(0.235 + 0.05 + 0.15, abs=SUM)  # 0.435
    assert cal.mce(EDGE_P, EDGE_Y) == pytest.approx(0.6, abs=SUM)
    assert bins.lower[14] == 14 / 15 and bins.upper[14] == 1.0


def test_torchmetrics_hidden_bin_differs_from_our_rule():
    """torchmetrics (and torch-uncertainty on top of it) puts confidence 1.0 into a 16th bin (issue 3510): there
    bin 15 holds 0.94 alone (gap .06) and the extra bin holds 1.0 (gap 1), so ECE = .25·1 + .25·.06 + .05 + .15."""
    conf, correct = cal.top_label(EDGE_P, EDGE_Y)
    assert float(_ce_compute(conf, correct, 15, norm="l1")) == pytest.approx(0.465, abs=SUM)
    assert float(_ce_compute(conf, correct, 15, norm="max")) == pytest.approx(1.0, abs=SUM)
    assert cal.ece(EDGE_P, EDGE_Y) == pytest.approx(0.435, abs=SUM)
    assert cal.mce(EDGE_P, EDGE_Y) == pytest.approx(0.6, abs=SUM)


def test_bin_index_rule_at_every_edge():
    m = 15
    edges = cal.bin_edges(m)
    assert edges[3] == 0.2 and edges[9] == 0.6 and edges[12] == 0.8 and edges[-1] == 1.0
    below = torch.nextafter(edges, torch.tensor(-1.0, dtype=D))
    idx_at, idx_below = cal.bin_index(edges, m), cal.bin_index(below, m)
    assert idx_at.tolist() == list(range(m)) + [m - 1]  # e_m opens bin m; 1.0 closes the last bin
    assert idx_below[1:].tolist() == list(range(m))  # just below e_m is still bin m − 1
    over = torch.tensor([1.0 + 1e-7, 1.5], dtype=D)  # float32 rows may sum a little above 1
    assert cal.bin_index(over, m).tolist() == [m - 1, m - 1]


def test_adaptive_ece_by_hand():
    # sorted confidences .6 (wrong), .8 (right), .94 (right), 1.0 (wrong)
    assert cal.adaptive_ece(EDGE_P, EDGE_Y, 2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.47, abs=SUM)
    # np.array_split sizes 2, 1, 1: {.6,.8} gap .2; {.94} gap .06; {1.0} gap 1
    assert cal.adaptive_ece(EDGE_P, EDGE_Y, 3) == pytest.approx(0.5 * 0.2 + 0.25 * 0.06 + 0.25 * 1.0, abs=SUM)
    # N = 4 < 15 bins: one point per bin, 11 empty bins carry no weight -> mean |a − conf| = (.6+.2+.06+1) / 4
    assert cal.adaptive_ece(EDGE_P, EDGE_Y, 15) == pytest.approx(1.86 / 4, abs=SUM)
    bins = cal.adaptive_bins(*cal.top_label(EDGE_P, EDGE_Y), 3)
    assert bins.counts.tolist() == [2, 1, 1]
    assert bins.lower.tolist() == pytest.approx([0.6, 0.94, 1.0]) and bins.upper.tolist() == pytest.approx(
        [0.8, 0.94, 1.0]
    )


def test_adaptive_ties_keep_input_order():
    # three tied confidences split into bins of sizes 2, 1: the stable sort keeps input order, so points 0, 1 form
    # the lower bin (acc 1/2) and point 2 the upper one (acc 0); the reverse order would give acc 0 and 1
    conf = torch.tensor([0.7, 0.7, 0.7], dtype=D)
    bins = cal.adaptive_bins(conf, torch.tensor([1.0, 0.0, 0.0], dtype=D), 2)
    assert bins.counts.tolist() == [2, 1] and bins.acc.tolist() == [0.5, 0.0]
    assert bins.ece() == pytest.approx(2 / 3 * 0.2 + 1 / 3 * 0.7, abs=SUM)


@pytest.mark.parametrize("n,m", [(1, 15), (4, 15), (15, 15), (16, 15), (29, 15), (200, 15), (7, 3), (10, 1)])
def test_adaptive_bins_follow_array_split(n, m):
    conf = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=D)
    correct = (torch.arange(n) % 3 == 0).to(D)
    bins = cal.adaptive_bins(conf, correct, m)
    parts = np.array_split(np.argsort(conf.numpy(), kind="stable"), m)
    assert bins.counts.tolist() == [len(q) for q in parts]
    for b, q in enumerate(parts):
        if len(q):
            assert bins.conf[b] == pytest.approx(conf.numpy()[q].mean(), abs=ULP)
            assert bins.acc[b] == pytest.approx(correct.numpy()[q].mean(), abs=ULP)
            assert bins.lower[b] == conf.numpy()[q].min() and bins.upper[b] == conf.numpy()[q].max()
        else:
            assert torch.isnan(bins.acc[b]) and torch.isnan(bins.lower[b])


def test_classwise_ece_by_hand():
    # class 0: p = .5 (y=0), .1, .2 in three bins -> |1−.5| + .1 + .2 = .8
    # class 1: p = .3, .7, .2, never the label -> .3 + .7 + .2 = 1.2
    # class 2: p = .2, .2 share bin 4 with targets 0, 1 -> |1 − .4|; p = .6 (edge 9/15) target 1 -> .4; total 1.0
    assert cal.classwise_ece(P3, Y3) == pytest.approx((0.8 + 1.2 + 1.0) / 3 / 3, abs=SUM)
    # binary case with probabilities 1.0 and 0.0: both classes give (.94 + .2 + .6) / 4
    assert cal.classwise_ece(EDGE_P, EDGE_Y) == pytest.approx(1.74 / 4, abs=SUM)


def test_nll_saturated_probabilities_finite():
    logits = torch.tensor([[[1000.0, 0.0]]], dtype=D)
    pred = Predictive.from_logits(logits)
    assert pred.probs[0, 1] == 0.0  # the float64 softmax saturates
    assert cal.nll(pred, torch.tensor([1])) == pytest.approx(1000.0, abs=1e3 * SUM)  # from logits: a few ulps of 1000
    # ensemble: log((e^-1000 + 1/2) / 2) = log(1/4) up to e^-1000
    ens = Predictive.from_logits(torch.tensor([[[1000.0, 0.0]], [[0.0, 0.0]]], dtype=D))
    assert cal.nll(ens, torch.tensor([1])) == pytest.approx(math.log(4.0), abs=SUM)
    # probabilities only: floored at float64 tiny, finite and documented
    assert cal.nll(Predictive(pred.member_probs), torch.tensor([1])) == pytest.approx(-math.log(cal.LOG_PROB_FLOOR))


# ------------------------------------------------------------------------------------------------ references


def _slow_binned(conf, correct, m):
    """Obvious loop: bin m holds l ≤ c < u, the last bin also c = 1; weighted L1 and max gaps."""
    ece, mce = 0.0, 0.0
    n = len(conf)
    for b in range(m):
        lo, hi = b / m, (b + 1) / m
        sel = [i for i in range(n) if lo <= conf[i] < hi or (b == m - 1 and conf[i] >= hi)]
        if sel:
            gap = abs(sum(correct[i] for i in sel) / len(sel) - sum(conf[i] for i in sel) / len(sel))
            ece += len(sel) / n * gap
            mce = max(mce, gap)
    return ece, mce


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_mce_classwise_against_slow_loops(seed):
    pred, y = _random(seed, n=200, c=4)
    p = pred.probs
    conf, correct = cal.top_label(p, y)
    ece, mce = _slow_binned(conf.tolist(), correct.tolist(), 15)
    assert cal.ece(pred, y) == pytest.approx(ece, abs=SUM)
    assert cal.mce(pred, y) == pytest.approx(mce, abs=SUM)
    per_class = [_slow_binned(p[:, c].tolist(), (y == c).double().tolist(), 15)[0] for c in range(4)]
    assert cal.classwise_ece(pred, y) == pytest.approx(np.mean(per_class), abs=SUM)
    # adaptive: np.array_split of the sorted points
    order = np.argsort(conf.numpy(), kind="stable")
    parts = np.array_split(order, 15)
    aece = sum(len(q) / len(order) * abs(correct.numpy()[q].mean() - conf.numpy()[q].mean()) for q in parts)
    assert cal.adaptive_ece(pred, y) == pytest.approx(aece, abs=SUM)


@pytest.mark.parametrize("seed", [0, 1])
def test_against_sklearn(seed):
    pred, y = _random(seed, c=5, scale=1.0)
    p, yn = pred.probs.numpy(), y.numpy()
    assert cal.brier(pred, y) == pytest.approx(brier_score_loss(yn, p, labels=list(range(5))), abs=SUM)
    assert cal.brier(pred, y) == pytest.approx(((p - np.eye(5)[yn]) ** 2).sum(1).mean(), abs=SUM)
    assert cal.nll(pred, y) == pytest.approx(log_loss(yn, p, labels=list(range(5))), abs=SUM)
    assert cal.nll(torch.log(pred.probs), y) == pytest.approx(log_loss(yn, p, labels=list(range(5))), abs=SUM)
    assert cal.accuracy(pred, y) == pytest.approx((p.argmax(1) == yn).mean(), abs=ULP)


@pytest.mark.parametrize("seed", [0, 1])
def test_against_torch_uncertainty_where_conventions_agree(seed):
    """No confidence equals 1.0 here, so torchmetrics' binning is ours; internals keep float64 (its public classes
    cast confidences to float32, so they agree to 1e-6 only)."""
    pred, y = _random(seed, s=5, n=400, c=4)
    p = pred.probs
    conf, correct = cal.top_label(p, y)
    assert float(_ce_compute(conf, correct, 15, norm="l1")) == pytest.approx(cal.ece(p, y), abs=SUM)
    assert float(_ce_compute(conf, correct, 15, norm="max")) == pytest.approx(cal.mce(p, y), abs=SUM)
    assert float(_ace_compute(conf, correct, 15)) == pytest.approx(cal.adaptive_ece(p, y), abs=SUM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cw = ClasswiseCalibrationError(num_classes=4, num_bins=15)
        cw.update(p, y)
        assert float(cw.compute()) == pytest.approx(cal.classwise_ece(p, y), abs=SUM)
        pub = CalibrationError(task="multiclass", num_classes=4, num_bins=15)
        pub.update(p, y)
        assert float(pub.compute()) == pytest.approx(cal.ece(p, y), abs=1e-6)
        b = BrierScore(num_classes=4).set_dtype(D)
        b.update(p, y)
        assert float(b.compute()) == pytest.approx(cal.brier(p, y), abs=SUM)
        # (N, S, C) input: torch-uncertainty averages member Brier scores. Mean member score = Brier of the mean
        # + Σ_c Var_s p_s[c] = ours + C · variance score (bias-variance identity): a different quantity.
        b = BrierScore(num_classes=4).set_dtype(D)
        b.update(pred.member_probs.permute(1, 0, 2), y)
        gap = float(b.compute()) - cal.brier(p, y)
        assert gap == pytest.approx(4 * float(pred.variance.mean()), abs=SUM) and gap > 1e-3
        nl = CategoricalNLL().set_dtype(D)
        nl.update(p, y)
        assert float(nl.compute()) == pytest.approx(cal.nll(pred, y), abs=SUM)
        # with a true-class probability of exactly 0 torch-uncertainty's NLL is inf; ours stays finite
        nl = CategoricalNLL().set_dtype(D)
        nl.update(EDGE_P, EDGE_Y)
        assert math.isinf(float(nl.compute())) and math.isfinite(cal.nll(torch.log(EDGE_P), EDGE_Y))


# ------------------------------------------------------------------------------------------------ input checks


def test_invalid_inputs_name_the_tensor():
    with pytest.raises(ValueError, match="probs: expected averaged"):
        cal.ece(torch.full((2, 3, 2), 0.5, dtype=D), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\)"):
        cal.ece(P3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels: expected an integer dtype"):
        cal.brier(P3, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"labels: values must lie in \[0, 3\)"):
        cal.accuracy(P3, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="log_probs: expected log-probabilities"):
        cal.nll(P3, Y3)
    with pytest.raises(ValueError, match="n_bins"):
        cal.ece(P3, Y3, n_bins=0)
    with pytest.raises(ValueError, match="probs: contains NaN"):
        cal.brier(torch.tensor([[math.nan, 1.0]], dtype=D), torch.tensor([0]))
    with pytest.raises(ValueError, match="correct: expected 0/1"):
        cal.reliability_bins(torch.tensor([0.5], dtype=D), torch.tensor([0.5], dtype=D))
    with pytest.raises(ValueError, match="no points"):
        cal.ece(torch.zeros(0, 3, dtype=D), torch.zeros(0, dtype=torch.int64))
