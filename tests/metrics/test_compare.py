"""Comparison measures (ntkbayes/metrics/compare.py) against hand-computed values and slow obvious references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ntkbayes.metrics import compare as cmp
from ntkbayes.predictive import PROB_SCORES, Predictive

#: A few ulps (2⁻⁵² ≈ 2.2e-16) of a result of order ≤ 1 computed in a handful of float64 operations.
ULP = 1e-15

#: float64 sums or means of N ≤ 10³ terms of order 1 taken in another order than the reference (a loop,
#: scikit-learn, torchmetrics): at most N·ε ≈ 2e-13 apart.
SUM = 1e-12

#: Differences of O(1) means that nearly cancel (condition number κ ≤ 10³) before a square root or a log:
#: κ·N·ε ≈ 1e-10 relative.
CANCEL = 1e-10

LOG = math.log


def _random_members(s: int, n: int, c: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(s, n, c, generator=g, dtype=torch.float64), -1)


def test_hand_computed_two_points_two_classes():
    # point 1: p = (3/4, 1/4), q = (1/4, 3/4);  point 2: p = (1, 0), q = (3/4, 1/4)
    p = torch.tensor([[0.75, 0.25], [1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.75], [0.75, 0.25]], dtype=torch.float64)
    # KL(p‖q): ¾ log 3 + ¼ log ⅓ = ½ log 3;  1·log(1/(3/4)) + 0 = log 4/3
    kl_pq = [0.5 * LOG(3), LOG(4 / 3)]
    # KL(q‖p): ½ log 3;  ¼ log(¼ / 0) = +inf
    kl_qp = [0.5 * LOG(3), math.inf]
    # JS with m = (½, ½): ½[¾ log(3/2) + ¼ log(1/2)]·2;  m = (7/8, 1/8): ½ log(8/7) + ½[¾ log(6/7) + ¼ log 2]
    js = [0.75 * LOG(1.5) + 0.25 * LOG(0.5), 0.5 * LOG(8 / 7) + 0.5 * (0.75 * LOG(6 / 7) + 0.25 * LOG(2))]
    tv = [0.5, 0.25]
    agree = [0.0, 1.0]
    torch.testing.assert_close(cmp.kl_divergence(p, q), torch.tensor(kl_pq, dtype=torch.float64))
    got_qp = cmp.kl_divergence(q, p)
    assert got_qp[0].item() == pytest.approx(kl_qp[0]) and math.isinf(got_qp[1].item())
    torch.testing.assert_close(cmp.js_divergence(p, q), torch.tensor(js, dtype=torch.float64))
    torch.testing.assert_close(cmp.total_variation(p, q), torch.tensor(tv, dtype=torch.float64))
    torch.testing.assert_close(cmp.top1_agreement(p, q), torch.tensor(agree, dtype=torch.float64))
    out = cmp.compare(Predictive(p), Predictive(q))
    assert out["kl_ab"] == pytest.approx(sum(kl_pq) / 2)
    assert math.isinf(out["kl_ba"]) and out["kl_inf_frac"] == 0.5
    assert out["js"] == pytest.approx(sum(js) / 2)
    assert out["tv"] == pytest.approx(0.375)
    assert out["agree"] == 0.5
    assert math.isnan(out["energy"]) and math.isnan(out["w1"])  # S = 1: not a sample-based comparison


def _kl_loop(p, q):
    out = []
    for i in range(p.shape[0]):
        s = 0.0
        for c in range(p.shape[1]):
            if p[i, c] > 0:
                s += math.inf if q[i, c] == 0 else float(p[i, c] * math.log(p[i, c] / q[i, c]))
        out.append(s)
    return np.array(out)


def test_kl_js_against_loop_and_scipy():
    p = _random_members(1, 40, 5, seed=1)[0]
    q = _random_members(1, 40, 5, seed=2)[0]
    p[0] = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64)  # zeros on the p side: finite KL(p‖q)
    np.testing.assert_allclose(cmp.kl_divergence(p, q).numpy(), _kl_loop(p.numpy(), q.numpy()), rtol=SUM)
    np.testing.assert_allclose(cmp.kl_divergence(q, p).numpy(), _kl_loop(q.numpy(), p.numpy()), rtol=SUM)
    m = 0.5 * (p + q)
    js_loop = 0.5 * _kl_loop(p.numpy(), m.numpy()) + 0.5 * _kl_loop(q.numpy(), m.numpy())
    np.testing.assert_allclose(cmp.js_divergence(p, q).numpy(), js_loop, rtol=SUM)
    # scipy's jensenshannon is the square root of JS (natural log by default)
    ref = stats.entropy(p.numpy().T, m.numpy().T) / 2 + stats.entropy(q.numpy().T, m.numpy().T) / 2
    np.testing.assert_allclose(cmp.js_divergence(p, q).numpy(), ref, rtol=CANCEL, atol=ULP)


def test_identical_predictives_give_zero_divergence_and_full_agreement():
    members = _random_members(6, 30, 4, seed=3)
    a, b = Predictive(members), Predictive(members.clone())
    out = cmp.compare(a, b)
    for key in ("kl_ab", "kl_ba", "kl_inf_frac", "js", "tv", "energy", "w1"):
        assert out[key] == 0.0, key
    assert out["agree"] == 1.0
    for name in PROB_SCORES:
        assert out[f"spearman/{name}"] == pytest.approx(1.0), name


def test_symmetries_and_bounds():
    a = Predictive(_random_members(5, 50, 3, seed=4, scale=6.0))
    b = Predictive(_random_members(7, 50, 3, seed=5, scale=6.0))
    ab, ba = cmp.compare(a, b), cmp.compare(b, a)
    for key in ("js", "tv", "agree", "energy", "w1", "kl_inf_frac", *(f"spearman/{s}" for s in PROB_SCORES)):
        assert ab[key] == pytest.approx(ba[key], rel=SUM, abs=ULP), key
    assert ab["kl_ab"] == pytest.approx(ba["kl_ba"]) and ab["kl_ba"] == pytest.approx(ba["kl_ab"])
    assert 0 < ab["js"] <= math.log(2) and 0 < ab["tv"] <= 1 and ab["energy"] > 0 and ab["w1"] > 0
    js = cmp.js_divergence(a.probs, b.probs)
    assert (js >= 0).all() and (js <= math.log(2)).all()
    # the bound is reached by disjoint supports, and KL is infinite there
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert cmp.js_divergence(p, q).item() == pytest.approx(math.log(2))
    assert math.isinf(cmp.kl_divergence(p, q).item())
    assert cmp.total_variation(p, q).item() == 1.0


def test_spearman_matches_scipy_with_ties_and_constant_gives_nan():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=60).astype(float)  # many ties
    y = x + rng.normal(size=60)
    assert cmp.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=SUM)
    assert math.isnan(cmp.spearman(np.zeros(10), y[:10]))
    # an S = 1 predictor has mutual information identically 0: NaN, not a crash
    a = Predictive(_random_members(1, 20, 3, seed=6))
    b = Predictive(_random_members(4, 20, 3, seed=7))
    out = cmp.compare(a, b)
    assert math.isnan(out["spearman/mutual_info"]) and math.isnan(out["spearman/variance"])
    assert not math.isnan(out["spearman/entropy"])


def _energy_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = []
    for i in range(a.shape[1]):
        x, y = a[:, i], b[:, i]
        d = lambda u, v: np.mean([np.linalg.norm(ui - vi) for ui, vi in itertools.product(u, v)])
        out.append(math.sqrt(max(2 * d(x, y) - d(x, x) - d(y, y), 0.0)))
    return np.array(out)


def test_energy_distance_against_loop_and_scipy(monkeypatch):
    a = _random_members(5, 12, 4, seed=8)
    b = _random_members(3, 12, 4, seed=9)
    ref = _energy_loop(a.numpy(), b.numpy())
    np.testing.assert_allclose(cmp.energy_distance(a, b).numpy(), ref, rtol=CANCEL)
    monkeypatch.setattr(cmp, "PAIR_BLOCK_ELEMENTS", 30)  # blocks of one or two points: same answer
    np.testing.assert_allclose(cmp.energy_distance(a, b).numpy(), ref, rtol=CANCEL)
    # precomputed self terms (reused across pairs) give the same values
    self_a, self_b = cmp.mean_pairwise_distance(a), cmp.mean_pairwise_distance(b)
    loop_self = [np.mean([np.linalg.norm(u - v) for u in a[:, i].numpy() for v in a[:, i].numpy()]) for i in range(12)]
    np.testing.assert_allclose(self_a.numpy(), loop_self, rtol=SUM)
    np.testing.assert_allclose(cmp.energy_distance(a, b, self_a=self_a, self_b=self_b).numpy(), ref, rtol=CANCEL)
    # identical member sets → exactly 0 (in another order: rounding ~1e-16 under the square root); different → > 0
    assert (cmp.energy_distance(a, a[torch.randperm(5)]) < 1e-7).all()
    assert (cmp.energy_distance(a, a) == 0).all()
    assert (cmp.energy_distance(a, b) > 0).all()
    # C = 2: Euclidean distance in the simplex is √2·|p₁ − q₁|, so ours = 2^{1/4} · scipy's 1-D energy distance
    a2, b2 = _random_members(6, 5, 2, seed=10), _random_members(9, 5, 2, seed=11)
    sp = [stats.energy_distance(a2[:, i, 0].numpy(), b2[:, i, 0].numpy()) for i in range(5)]
    np.testing.assert_allclose(cmp.energy_distance(a2, b2).numpy(), 2**0.25 * np.array(sp), rtol=CANCEL)


def test_wasserstein1_against_scipy_loop():
    a = _random_members(5, 8, 3, seed=12)
    b = _random_members(11, 8, 3, seed=13)
    ref = [
        np.mean([stats.wasserstein_distance(a[:, i, c].numpy(), b[:, i, c].numpy()) for c in range(3)])
        for i in range(8)
    ]
    np.testing.assert_allclose(cmp.wasserstein1(a, b).numpy(), ref, rtol=CANCEL, atol=ULP)
    assert (cmp.wasserstein1(a, a) == 0).all()


def test_mismatched_points_raise():
    with pytest.raises(ValueError, match="different points"):
        cmp.compare(Predictive(_random_members(2, 5, 3, 0)), Predictive(_random_members(2, 6, 3, 0)))
    with pytest.raises(ValueError, match="equal shape"):
        cmp.total_variation(torch.ones(3, 2) / 2, torch.ones(3, 3) / 3)
