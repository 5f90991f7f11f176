"""OOD scores a predictive can produce (no constant scores), energy / max-logit against scikit-learn, and the
near / far group averages of ``metrics.evaluate`` (benchmarks.md §1)."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from ntkbayes import metrics
from ntkbayes.predictive import Predictive

D = torch.float64


def _pred(seed: int, s: int, n: int, c: int = 3, scale: float = 2.0, shift: float = 0.0) -> Predictive:
    g = torch.Generator().manual_seed(seed)
    return Predictive.from_logits(scale * torch.randn(s, n, c, generator=g, dtype=D) + shift)


def test_single_member_has_no_member_scores_and_logits_give_energy():
    y = torch.zeros(40, dtype=torch.int64)
    out = metrics.evaluate(_pred(0, 1, 40), y, ood={"o": _pred(1, 1, 20)})
    scores = {k.split("/")[2] for k in out if k.startswith("ood/")}
    assert scores == {"msp", "entropy", "energy", "max_logit"}
    probs_only = metrics.evaluate(Predictive(_pred(0, 4, 40).member_probs), y,
                                  ood={"o": Predictive(_pred(1, 4, 20).member_probs)})
    assert {k.split("/")[2] for k in probs_only if k.startswith("ood/")} == {
        "msp", "entropy", "expected_entropy", "mutual_info", "variance"}
    # a logit score is emitted only when both sides have logits
    mixed = metrics.evaluate(_pred(0, 4, 40), y, ood={"o": Predictive(_pred(1, 4, 20).member_probs)})
    assert not any("/energy/" in k for k in mixed)


def test_energy_and_max_logit_agree_with_sklearn():
    pid, pood = _pred(2, 3, 70), _pred(3, 3, 30, scale=0.7)  # smaller logits out of distribution
    out = metrics.evaluate(pid, torch.zeros(70, dtype=torch.int64), ood={"o": pood})
    for score in ("energy", "max_logit"):
        s_id, s_ood = pid.score(score).numpy(), pood.score(score).numpy()
        labels = [0] * len(s_id) + [1] * len(s_ood)
        scores = list(s_id) + list(s_ood)
        # same formulas, summation order differs: a few ulps of numbers of order 1
        assert out[f"ood/o/{score}/auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert out[f"ood/o/{score}/aupr_out"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
        assert out[f"ood/o/{score}/aupr_in"] == pytest.approx(
            average_precision_score([1 - v for v in labels], [-v for v in scores]), abs=1e-12)
    assert out["ood/o/energy/auroc"] > 0.5  # the sign: larger = more OOD


def test_near_far_group_means():
    pid = _pred(4, 3, 50)
    ood = {"a": _pred(5, 3, 20), "b": _pred(6, 3, 15, scale=0.5), "c": _pred(7, 3, 10, scale=0.2)}
    y = torch.zeros(50, dtype=torch.int64)
    out = metrics.evaluate(pid, y, ood=ood, ood_groups={"a": "near", "c": "far"})  # b undeclared: near
    for key in ("msp/auroc", "energy/fpr95", "mutual_info/aupr_in"):  # a mean of two numbers ≤ 1: one ulp
        assert out[f"ood/near/{key}"] == pytest.approx((out[f"ood/a/{key}"] + out[f"ood/b/{key}"]) / 2, abs=1e-15)
        assert out[f"ood/far/{key}"] == out[f"ood/c/{key}"]  # a mean of one value is that value
        assert metrics.metric_info(f"ood/far/{key}").direction == metrics.metric_info(f"ood/c/{key}").direction
    assert not any(k.startswith("ood/far/") for k in metrics.evaluate(pid, y, ood=ood, ood_groups={}))
    assert not any(k.startswith("ood/near/") for k in metrics.evaluate(pid, y, ood=ood))  # no groups: no means


def test_group_errors_and_set_named_like_a_group():
    pid, y = _pred(8, 2, 30), torch.zeros(30, dtype=torch.int64)
    far = {"far": _pred(9, 2, 10)}
    same = metrics.evaluate(pid, y, ood=far, ood_groups={"far": "far"})  # moons: set `far` in group far
    assert same["ood/far/msp/auroc"] == metrics.evaluate(pid, y, ood=far)["ood/far/msp/auroc"]
    with pytest.raises(ValueError, match="collides"):
        metrics.evaluate(pid, y, ood={**far, "x": _pred(10, 2, 10, scale=0.1)}, ood_groups={"x": "far"})
    with pytest.raises(ValueError, match="ood_groups: set 'nope' is not an OOD set"):
        metrics.evaluate(pid, y, ood=far, ood_groups={"nope": "far"})
    with pytest.raises(ValueError, match=r"ood_groups\['far'\]: expected one of \['near', 'far'\]"):
        metrics.evaluate(pid, y, ood=far, ood_groups={"far": "middle"})


def test_directions_come_from_metric_info():
    assert metrics.higher_is_better("cls/acc") and not metrics.higher_is_better("cal/nll")
    assert metrics.higher_is_better("ood/near/energy/auroc") and not metrics.higher_is_better("ood/x/max_logit/fpr95")
    assert metrics.higher_is_better("shift/rotation/3/acc") and not metrics.higher_is_better("shift/noise/1/ece")
    assert metrics.higher_is_better("custom/loss") is None and metrics.higher_is_better("ood/x/bald/auroc") is None
    assert math.isinf(metrics.metric_info("shift/r/2/nll").range[1])
