"""``evaluate``: every key of benchmarks.md §1, agreement with the per-metric functions, METRIC_INFO / CONVENTIONS,
input validation, and hypothesis properties (finite and in range for random valid predictives)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntkbayes import metrics
from ntkbayes.predictive import SCORES, Predictive

#: float64 sums or means of N ≤ 10³ terms of order 1 taken in another order than the reference (a loop,
#: scikit-learn, torchmetrics): at most N·ε ≈ 2e-13 apart.
SUM = 1e-12

D = torch.float64
BASE_KEYS = ["cls/acc", "cal/nll", "cal/brier", "cal/ece", "cal/mce", "cal/aece", "cal/cwece", "sel/aurc"]


def _pred(seed: int, s: int, n: int, c: int, scale: float = 2.0) -> Predictive:
    g = torch.Generator().manual_seed(seed)
    return Predictive.from_logits(scale * torch.randn(s, n, c, generator=g, dtype=D))


def test_every_key_and_agreement_with_functions():
    pred, pood = _pred(0, 4, 60, 3), _pred(1, 4, 25, 3, scale=0.5)
    y = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(2))
    out = metrics.evaluate(pred, y, ood={"far": pood, "near": _pred(3, 4, 10, 3)})
    ood_keys = [f"ood/{s}/{score}/{m}" for s in ("far", "near") for score in SCORES for m in metrics.OOD_METRICS]
    assert list(out) == BASE_KEYS + ood_keys
    assert all(isinstance(v, float) for v in out.values())
    assert out["cls/acc"] == metrics.accuracy(pred, y)
    assert out["cal/nll"] == metrics.nll(pred, y)
    assert out["cal/brier"] == metrics.brier(pred, y)
    assert out["cal/ece"] == metrics.ece(pred, y) and out["cal/mce"] == metrics.mce(pred, y)
    assert out["cal/aece"] == metrics.adaptive_ece(pred, y) and out["cal/cwece"] == metrics.classwise_ece(pred, y)
    assert out["sel/aurc"] == metrics.aurc(pred, y)
    assert out["ood/far/entropy/auroc"] == metrics.auroc(pred.entropy, pood.entropy)
    assert out["ood/far/msp/fpr95"] == metrics.fpr95(pred.msp, pood.msp)
    assert list(metrics.evaluate(pred, y)) == BASE_KEYS


def test_n_bins_changes_binned_metrics_only():
    pred = _pred(4, 3, 80, 4)
    y = torch.randint(0, 4, (80,), generator=torch.Generator().manual_seed(5))
    a, b = metrics.evaluate(pred, y), metrics.evaluate(pred, y, n_bins=5)
    assert b["cal/ece"] == metrics.ece(pred, y, 5) and a["cal/ece"] != b["cal/ece"]
    assert all(a[k] == b[k] for k in ("cls/acc", "cal/nll", "cal/brier", "sel/aurc"))


def test_metric_info_and_conventions():
    pred = _pred(6, 2, 20, 3)
    out = metrics.evaluate(pred, torch.zeros(20, dtype=torch.int64), ood={"noise": _pred(7, 2, 9, 3)})
    for key, value in out.items():
        info = metrics.metric_info(key)
        assert info.direction in (metrics.Direction.HIGHER, metrics.Direction.LOWER)
        assert info.range[0] <= value <= info.range[1], key
    assert metrics.metric_info("ood/noise/msp/auroc").name == "AUROC (OOD positive)"
    assert metrics.metric_info("cal/ece").name == "ECE (15 bins)"
    assert metrics.metric_info("ood/x/variance/fpr95").direction == "lower"
    assert metrics.metric_info("cls/acc").direction == "higher"
    for bad in ("cal/foo", "ood/x/bogus/auroc", "ood//msp/auroc", "ood/x/msp/auroc/extra"):
        with pytest.raises(ValueError, match="metric key"):
            metrics.metric_info(bad)
    conv = json.loads(json.dumps(metrics.CONVENTIONS))  # JSON-serializable as stored in records
    assert conv["ece_bins"] == 15 and conv["ood_positive"] == "ood" and conv["log_base"] == "e"
    assert "last bin closed" in conv["ece_boundary"] and "0.95" in conv["fpr95"]
    assert metrics.conventions(10)["ece_bins"] == 10
    assert json.loads(json.dumps({k: v.direction for k, v in metrics.METRIC_INFO.items()}))["sel/aurc"] == "lower"


def test_validation_names_the_tensor():
    pred = _pred(8, 2, 10, 3)
    y = torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"labels: expected shape \(10,\)"):
        metrics.evaluate(pred, y[:9])
    with pytest.raises(ValueError, match="labels: expected an integer dtype"):
        metrics.evaluate(pred, y.double())
    with pytest.raises(ValueError, match=r"labels: values must lie in \[0, 3\)"):
        metrics.evaluate(pred, y + 3)
    with pytest.raises(ValueError, match=r"ood\['far'\]: has 4 classes"):
        metrics.evaluate(pred, y, ood={"far": _pred(9, 2, 5, 4)})
    with pytest.raises(ValueError, match="set name"):
        metrics.evaluate(pred, y, ood={"a/b": _pred(9, 2, 5, 3)})
    with pytest.raises(ValueError, match=r"ood\['e'\]: no points"):
        metrics.evaluate(pred, y, ood={"e": Predictive(torch.zeros(2, 0, 3))})
    with pytest.raises(TypeError, match="pred: expected a Predictive"):
        metrics.evaluate(pred.probs, y)


def test_saturated_float32_probabilities_stay_finite():
    # float32 softmax saturated to exact 0 and 1, stored without logits (as the results store keeps them)
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]], dtype=torch.float32)
    out = metrics.evaluate(Predictive(probs), torch.tensor([1, 1, 0]), ood={"o": Predictive(probs)})
    assert all(math.isfinite(v) for v in out.values())
    assert out["cal/nll"] == pytest.approx(-math.log(metrics.LOG_PROB_FLOOR) / 3)
    assert out["cal/ece"] == pytest.approx(1 / 3) and out["cal/mce"] == pytest.approx(1 / 3)  # one bin, acc 2/3


@st.composite
def predictives(draw):
    s, n, c = draw(st.integers(1, 4)), draw(st.integers(1, 40)), draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.0, 0.1, 1.0, 10.0, 1e3]))
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(s, n, c, generator=g, dtype=D)
    if draw(st.booleans()):
        pred = Predictive.from_logits(logits)
    else:  # probabilities only, float32-rounded like stored predictions (exact zeros possible)
        pred = Predictive(torch.softmax(logits, -1).float())
    labels = torch.randint(0, c, (n,), generator=g)
    m = draw(st.integers(1, 15))
    pood = Predictive.from_logits(scale * torch.randn(s, m, c, generator=g, dtype=D))
    return pred, labels, pood, draw(st.integers(1, 20))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(predictives())
def test_evaluate_outputs_finite_and_in_range(case):
    pred, labels, pood, n_bins = case
    out = metrics.evaluate(pred, labels, ood={"o": pood}, n_bins=n_bins)
    scores = [s for s in pred.available_scores if s in pood.available_scores]
    assert len(out) == len(BASE_KEYS) + len(scores) * len(metrics.OOD_METRICS)
    for key, value in out.items():
        lo, hi = metrics.metric_info(key).range
        assert math.isfinite(value) and lo - SUM <= value <= hi + SUM, (key, value)
    assert out["cal/mce"] >= out["cal/ece"] - SUM  # the max gap bounds the weighted mean gap
    if pred.member_logits is None:  # the log floor bounds every point's loss
        assert out["cal/nll"] <= -math.log(metrics.LOG_PROB_FLOOR) + SUM
    for score in scores:  # a score constant over ID and OOD carries no information
        if torch.unique(torch.cat([pred.score(score), pood.score(score)])).numel() == 1:
            assert out[f"ood/o/{score}/auroc"] == 0.5 and out[f"ood/o/{score}/fpr95"] == 1.0
