"""Predictive: validation and the uncertainty scores against slow, obvious formulas (benchmarks.md §1)."""

import math

import pytest
import torch

from ntkbayes import SCORES, Predictive

#: float64 sums or means of N ≤ 10³ terms of order 1 taken in another order than the reference (a loop,
#: scikit-learn, torchmetrics): at most N·ε ≈ 2e-13 apart.
SUM = 1e-12


def _random_pred(S=5, N=7, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Predictive.from_logits(3 * torch.randn(S, N, C, generator=g, dtype=torch.float64))


def test_scores_match_loops():
    pred = _random_pred()
    P = pred.member_probs
    S, N, C = P.shape
    for i in range(N):
        p = [sum(P[s, i, c].item() for s in range(S)) / S for c in range(C)]
        H = -sum(q * math.log(q) for q in p)
        EH = sum(-sum(P[s, i, c].item() * math.log(P[s, i, c].item()) for c in range(C)) for s in range(S)) / S
        var = sum(sum((P[s, i, c].item() - p[c]) ** 2 for s in range(S)) / S for c in range(C)) / C
        assert pred.msp[i].item() == pytest.approx(1 - max(p), abs=SUM)
        assert pred.entropy[i].item() == pytest.approx(H, abs=SUM)
        assert pred.expected_entropy[i].item() == pytest.approx(EH, abs=SUM)
        assert pred.mutual_info[i].item() == pytest.approx(H - EH, abs=SUM)
        assert pred.variance[i].item() == pytest.approx(var, abs=SUM)


def test_entropy_decomposition_and_single_member():
    pred = _random_pred(S=8)
    assert torch.allclose(pred.entropy, pred.expected_entropy + pred.mutual_info, atol=SUM)
    assert (pred.mutual_info >= 0).all() and (pred.variance >= 0).all()
    one = _random_pred(S=1)
    assert torch.equal(one.mutual_info, torch.zeros(one.num_points, dtype=torch.float64))
    assert torch.equal(one.variance, torch.zeros(one.num_points, dtype=torch.float64))
    assert torch.allclose(one.entropy, one.expected_entropy)


def test_log_probs_survive_saturation():
    logits = torch.tensor([[[800.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    pred = Predictive.from_logits(logits)
    assert pred.member_probs[0, 0, 1] == 0.0  # saturated in float64 too
    assert torch.isfinite(pred.log_probs).all()
    assert pred.log_probs[0, 1].item() == pytest.approx(-800.0)


def test_two_dim_input_is_one_member_and_zero_handled():
    pred = Predictive(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    assert pred.member_probs.shape == (1, 2, 2) and pred.member_probs.dtype == torch.float64
    assert pred.entropy[0].item() == 0.0
    assert pred.entropy[1].item() == pytest.approx(math.log(2))
    assert SCORES == ("msp", "entropy", "expected_entropy", "mutual_info", "variance", "energy", "max_logit")
    assert pred.available_scores == ("msp", "entropy")  # S = 1, no logits
    with pytest.raises(ValueError, match="unknown uncertainty score"):
        pred.score("bald")


@pytest.mark.parametrize(
    "probs, match",
    [
        (torch.ones(2, 3), "rows must sum to 1"),
        (torch.full((1, 2, 2), float("nan")), "NaN"),
        (torch.ones(2, 2, 2, 2) / 2, "shape"),
        (torch.tensor([[[1.5, -0.5]]]), "negative"),
        (torch.tensor([[[1, 0]]]), "floating"),
        (torch.empty(0, 3, 2), "empty"),
    ],
)
def test_validation_errors(probs, match):
    with pytest.raises(ValueError, match=match):
        Predictive(probs)


def test_logit_shape_mismatch():
    with pytest.raises(ValueError, match="member_logits"):
        Predictive(torch.full((1, 2, 2), 0.5), torch.zeros(1, 3, 2))


def test_logit_scores_average_member_logits_first():
    # z̄ = mean_s z = [[1, 2, 3], [0, 0, 0]]; energy = −logsumexp z̄, max_logit = −max z̄ (torch-uncertainty)
    z = torch.tensor([[[0.0, 2.0, 4.0], [1.0, -1.0, 0.0]], [[2.0, 2.0, 2.0], [-1.0, 1.0, 0.0]]], dtype=torch.float64)
    pred = Predictive.from_logits(z)
    energy = [-math.log(math.exp(1) + math.exp(2) + math.exp(3)), -math.log(3)]
    # a few ulps of log / exp in float64 on numbers of order 1
    assert pred.energy.tolist() == pytest.approx(energy, abs=1e-14, rel=0)
    assert pred.max_logit.tolist() == [-3.0, -0.0]
    assert pred.available_scores == SCORES
    assert torch.equal(pred.score("energy"), pred.energy)


def test_available_scores_and_missing_logits():
    probs_only = Predictive(torch.full((3, 2, 4), 0.25, dtype=torch.float64))
    assert probs_only.available_scores == ("msp", "entropy", "expected_entropy", "mutual_info", "variance")
    with pytest.raises(ValueError, match="energy: needs member_logits"):
        _ = probs_only.energy
    one = Predictive.from_logits(torch.zeros(2, 3, dtype=torch.float64))
    assert one.available_scores == ("msp", "entropy", "energy", "max_logit")
