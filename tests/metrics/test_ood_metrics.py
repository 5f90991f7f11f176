"""OOD metrics: hand cases, scikit-learn to summation rounding (SUM) on random inputs with ties, torch-uncertainty's
FPR95, constant scores, the sign of every uncertainty score on a trivially separable pair, and the score identities."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ntkbayes.metrics import ood
from ntkbayes.predictive import PROB_SCORES, Predictive

#: A few ulps (2⁻⁵² ≈ 2.2e-16) of a result of order ≤ 1 computed in a handful of float64 operations.
ULP = 1e-15

#: float64 sums or means of N ≤ 10³ terms of order 1 taken in another order than the reference (a loop,
#: scikit-learn, torchmetrics): at most N·ε ≈ 2e-13 apart.
SUM = 1e-12

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch_uncertainty.metrics.classification import FPR95

D = torch.float64


def t(*xs):
    return torch.tensor(xs, dtype=D)


def test_hand_case_with_ties():
    s_id, s_ood = t(0.1, 0.4, 0.4, 0.8), t(0.4, 0.9, 0.3)
    # pairs (ood, id): .4 beats .1 and ties two .4s -> 2; .9 beats all -> 4; .3 beats .1 -> 1; total 7 of 12
    assert ood.auroc(s_id, s_ood) == pytest.approx(7 / 12, abs=ULP)
    # OOD positive, thresholds .9 .8 .4 .3 .1: (R, P) = (1/3, 1), (1/3, 1/2), (2/3, 2/5), (1, 1/2), (1, 3/7)
    assert ood.aupr_out(s_id, s_ood) == pytest.approx((1 + 0.4 + 0.5) / 3, abs=ULP)
    # ID positive on −s, thresholds −.1 −.3 −.4 −.8 −.9: (1/4, 1), (1/4, 1/2), (3/4, 3/5), (1, 2/3), (1, 4/7)
    assert ood.aupr_in(s_id, s_ood) == pytest.approx(0.25 + 0.5 * 0.6 + 0.25 * 2 / 3, abs=ULP)
    # k = ⌈0.95·3⌉ = 3, t = .3 (third largest OOD score); ID ≥ .3: .4, .4, .8
    assert ood.fpr95(s_id, s_ood) == 0.75


def test_fpr95_threshold_rule():
    s_ood = torch.arange(1, 21, dtype=D)  # n_ood = 20: k = 19 exactly, t = 2
    assert ood.fpr95(t(1.5, 2.0, 3.0), s_ood) == pytest.approx(2 / 3)
    assert ood.fpr95(t(1.5, 1.99), s_ood) == 0.0
    s_ood = torch.arange(1, 101, dtype=D)  # n_ood = 100: k = 95, t = 6
    assert ood.fpr95(t(5.0, 6.0, 7.0, 100.0), s_ood) == 0.75
    s_ood = torch.arange(1, 22, dtype=D)  # n_ood = 21: 0.95·21 = 19.95 -> k = 20, t = 2
    assert ood.fpr95(t(1.5, 2.0), s_ood) == 0.5
    # the older ID-positive convention thresholds at the 95 % quantile of ID scores and counts OOD below it:
    # ID = (j/19)², OOD = .5 + i/19. Ours: t = .5 + 1/19, ID ≥ t for j = 15..19 -> 5/20. ID-positive: t = (18/19)²,
    # OOD ≤ t for i = 0..7 -> 8/20. The conventions disagree, which is why records state ours.
    s_id = (torch.arange(20, dtype=D) / 19) ** 2
    s_ood = 0.5 + torch.arange(20, dtype=D) / 19
    assert ood.fpr95(s_id, s_ood) == 0.25
    t_id = torch.sort(s_id).values[math.ceil(0.95 * 20) - 1]
    assert float((s_ood <= t_id).double().mean()) == 0.4


def test_constant_score_is_defined():
    s_id, s_ood = torch.zeros(3, dtype=D), torch.zeros(2, dtype=D)
    assert ood.ood_metrics(s_id, s_ood) == pytest.approx(
        {"auroc": 0.5, "aupr_in": 3 / 5, "aupr_out": 2 / 5, "fpr95": 1.0}, abs=ULP
    )


def _random_scores(seed: int, n: int, m: int, ties: bool):
    rng = np.random.default_rng(seed)
    s_id, s_ood = rng.normal(size=n), rng.normal(0.7, 1.2, size=m)
    if ties:  # few distinct values: many ties inside and across the two sets
        s_id, s_ood = np.round(s_id, 1), np.round(s_ood, 1)
    return s_id, s_ood


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True), (3, False)])
def test_against_sklearn(seed, ties):
    s_id, s_ood = _random_scores(seed, 300, 113, ties)
    y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
    s = np.r_[s_id, s_ood]
    a, b = torch.from_numpy(s_id), torch.from_numpy(s_ood)
    assert ood.auroc(a, b) == pytest.approx(roc_auc_score(y, s), abs=SUM)
    assert ood.aupr_out(a, b) == pytest.approx(average_precision_score(y, s), abs=SUM)
    assert ood.aupr_in(a, b) == pytest.approx(average_precision_score(1 - y, -s), abs=SUM)
    # FPR95 from sklearn's ROC curve (OOD positive): the FPR at the first threshold whose TPR reaches 95 %
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert ood.fpr95(a, b) == pytest.approx(fpr[np.searchsorted(tpr, 0.95, side="left")], abs=SUM)


@pytest.mark.parametrize("seed,ties", [(4, False), (5, True)])
def test_fpr95_against_torch_uncertainty(seed, ties):
    s_id, s_ood = _random_scores(seed, 200, 57, ties)
    a, b = torch.from_numpy(s_id), torch.from_numpy(s_ood)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = FPR95(pos_label=1)
        metric.update(torch.cat([a, b]), torch.cat([torch.zeros(200), torch.ones(57)]).long())
        tu = float(metric.compute())
    # it returns a float32 ratio; compare the count of ID false alarms exactly
    assert round(tu * 200) == round(ood.fpr95(a, b) * 200)


def test_average_ranks_match_scipy_rule():
    x = t(3.0, 1.0, 3.0, 2.0, 1.0, 3.0)
    assert ood.average_ranks(x).tolist() == [5.0, 1.5, 5.0, 3.0, 1.5, 5.0]


def _separable_pair():
    """ID: three members agreeing on a confident prediction; OOD: members disagreeing, each fairly unsure."""
    g = torch.Generator().manual_seed(0)
    n = 40
    base = torch.tensor([0.96, 0.02, 0.02], dtype=D)
    cls = torch.arange(n) % 3
    id_probs = torch.stack([base.roll(int(c)) for c in cls])  # (N, C)
    id_member = id_probs.expand(3, n, 3) + 0.005 * torch.rand(3, n, 3, generator=g, dtype=D)
    ood_member = torch.stack([torch.tensor([0.6, 0.2, 0.2], dtype=D).roll(s).expand(30, 3) for s in range(3)])
    ood_member = ood_member + 0.02 * torch.rand(3, 30, 3, generator=g, dtype=D)
    norm = lambda x: x / x.sum(-1, keepdim=True)
    return Predictive(norm(id_member)), Predictive(norm(ood_member))


def test_every_score_has_the_right_sign():
    pid, pood = _separable_pair()
    res = ood.evaluate_ood(pid, pood)
    for name in PROB_SCORES:  # probabilities only: no logit scores
        assert res[f"{name}/auroc"] == 1.0, name  # below 0.5 would be a sign error
        assert res[f"{name}/fpr95"] == 0.0 and res[f"{name}/aupr_in"] == 1.0 and res[f"{name}/aupr_out"] == 1.0


def test_score_identities_and_single_member():
    g = torch.Generator().manual_seed(3)
    pred = Predictive.from_logits(2 * torch.randn(5, 50, 4, generator=g, dtype=D))
    assert torch.allclose(pred.entropy, pred.expected_entropy + pred.mutual_info, atol=SUM, rtol=0)
    assert (pred.variance >= 0).all() and (pred.mutual_info >= 0).all()
    single = Predictive.from_logits(torch.randn(50, 4, generator=g, dtype=D))
    assert (single.mutual_info == 0).all() and (single.variance == 0).all()
    assert torch.allclose(single.entropy, single.expected_entropy, atol=ULP, rtol=0)
    # S = 1: mutual_info and variance are not evaluated by default; asked for, constant -> AUROC 0.5, AP, FPR95
    single_ood = Predictive.from_logits(torch.randn(20, 4, generator=g, dtype=D))
    assert not any(k.split("/")[0] in ("mutual_info", "variance") for k in ood.evaluate_ood(single, single_ood))
    res = ood.evaluate_ood(single, single_ood, scores=("mutual_info", "variance"))
    for name in ("mutual_info", "variance"):
        assert res[f"{name}/auroc"] == 0.5 and res[f"{name}/fpr95"] == 1.0
        assert res[f"{name}/aupr_out"] == pytest.approx(20 / 70) and res[f"{name}/aupr_in"] == pytest.approx(50 / 70)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="score_ood"):
        ood.auroc(t(0.1, 0.2), torch.zeros(0, dtype=D))
    with pytest.raises(ValueError, match="score_id: contains NaN"):
        ood.fpr95(t(math.nan), t(0.1))
    with pytest.raises(ValueError, match=r"score_id: expected shape \(N,\)"):
        ood.auroc(torch.zeros(2, 2, dtype=D), t(0.1))
    with pytest.raises(ValueError, match="pred_ood: has 2 classes"):
        ood.evaluate_ood(Predictive(torch.full((4, 3), 1 / 3)), Predictive(torch.full((4, 2), 0.5)))
    with pytest.raises(ValueError, match="positive: no positive"):
        ood.average_precision(t(0.1, 0.2), torch.zeros(2, dtype=torch.bool))
