"""``ntk_ensemble`` with ``prior="kappa"``: the members' prior functions are draws of GP(0, Θ/κ), κ = λN, the prior
each member is the MAP under (docs/math.md (c), (g)). CPU, float64, fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ntkbayes as nb
from ntkbayes.data.splits import DatasetSplits, Split
from ntkbayes.ntk.analytic import mlp_kernels

KW = {"mode": "kernel", "kernel": "analytic", "depth": 1, "activation": "relu", "w_std": 1.5, "b_std": 1.0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    """N = 5 training points in 2-D, C = 2; validation and test sets of 4 points."""
    rng = np.random.default_rng(0)

    def split(n):
        x = torch.tensor(rng.normal(size=(n, 2)))
        return Split(x, (x[:, 0] > 0).long())

    train = split(5)
    train = Split(train.x, torch.tensor([0, 1, 0, 1, 1]))
    return DatasetSplits(name="five", num_classes=2, train=train, val=split(4), test=split(4))


def prior_at_train(model, data) -> torch.Tensor:
    """(S, N, C) the members' prior functions f0 at the training points: member logits minus Θ(X, X)·coef."""
    x = data.train.x.double()
    theta = mlp_kernels(x, x.clone(), depth=1, activation="relu", w_std=1.5, b_std=1.0)[1]  # the cross path, as predict
    return model.member_logits(data.train.x) - torch.einsum("mn,bnc->bmc", theta, model.coef_)


def test_prior_covariance_is_ntk_over_kappa(data):
    """Empirical second moment of f0 over S = 4000 members × C = 2 classes (n = 8000 independent N(0, Θ/κ)
    vectors) vs Θ/κ, entry by entry: the estimator (1/n) Σ f_i f_j has s.d. √((Σ_ii Σ_jj + Σ_ij²)/n) (Gaussian,
    known zero mean); each entry must be within 4.5 of them (a correct draw fails with probability ~1e-4 over the
    15 entries, and never with the fixed seed). Classes are independent (cross-class moment ≈ 0, same bound)."""
    lam, n_mem = 0.05, 4000
    m = nb.methods.create("ntk_ensemble", prior="kappa", weight_decay=lam, members=n_mem, **KW).fit(data, seed=0)
    f0 = prior_at_train(m, data)                                          # (S, N, C)
    n = len(data.train)
    x = data.train.x.double()
    sigma = mlp_kernels(x, depth=1, activation="relu", w_std=1.5, b_std=1.0)[1] / (lam * n)
    v = f0.permute(0, 2, 1).reshape(-1, n)                                # (S·C, N)
    est = v.t() @ v / v.shape[0]
    sd = ((sigma.diagonal()[:, None] * sigma.diagonal()[None, :] + sigma**2) / v.shape[0]).sqrt()
    z = (est - sigma).abs() / sd
    assert float(z.max()) < 4.5, z
    cross = (f0[..., 0].t() @ f0[..., 1]) / n_mem
    sd_cross = ((sigma.diagonal()[:, None] * sigma.diagonal()[None, :]) / n_mem).sqrt()
    assert float((cross.abs() / sd_cross).max()) < 4.5
    info = m.fit_info()
    assert info["prior"] == "kappa" and info["kappa"] == pytest.approx(lam * n)
    assert info["prior_scale"] == pytest.approx(1 / (lam * n), rel=1e-14)


def test_lambda_scales_the_prior_as_one_over_lambda(data):
    """Same seed, λ and 10λ: the same standard-normal draws, so f0 shrinks by exactly √10 (variance by 10) at the
    training points and in the test predictions' prior part; the λ grid picks one λ and reproduces its single fit."""
    fits = {lam: nb.methods.create("ntk_ensemble", prior="kappa", weight_decay=lam, members=6, **KW).fit(data, seed=1)
            for lam in (1e-2, 1e-1)}
    a, b = (prior_at_train(fits[lam], data) for lam in (1e-2, 1e-1))
    # bound: both are the same draws times (λN)^{-1/2}, up to rounding in the solve (~1e-12 relative)
    torch.testing.assert_close(a, b * np.sqrt(10.0), rtol=1e-9, atol=1e-9)
    assert fits[1e-2].fit_info()["prior_scale"] == pytest.approx(10 * fits[1e-1].fit_info()["prior_scale"])
    grid = nb.methods.create("ntk_ensemble", prior="kappa", weight_decay_grid=[1e-2, 1e-1], members=6,
                             **KW).fit(data, seed=1)
    chosen = grid.fit_info()["weight_decay"]
    torch.testing.assert_close(grid.member_logits(data.test.x), fits[chosen].member_logits(data.test.x),
                               rtol=1e-12, atol=1e-12)
    assert grid.fit_info()["prior_scale"] == fits[chosen].fit_info()["prior_scale"]


def test_kappa_one_is_the_ntkgp_prior(data):
    """κ = λN = 1: the NTKGP prior (f0 ~ GP(0, Θ)) and the κ-scaled one are the same ensemble (math.md (e), (g))."""
    n = len(data.train)
    kappa = nb.methods.create("ntk_ensemble", prior="kappa", weight_decay=1 / n, members=4, **KW).fit(data, seed=2)
    ntkgp = nb.methods.create("ntk_ensemble", prior="ntkgp", weight_decay=1 / n, members=4, **KW).fit(data, seed=2)
    torch.testing.assert_close(kappa.member_logits(data.test.x), ntkgp.member_logits(data.test.x), rtol=0, atol=0)
    assert ntkgp.fit_info()["prior_scale"] == 1.0


@pytest.mark.parametrize("bad", [dict(mode="network"), dict(mode="linearized"),
                                 dict(mode="kernel", kernel="empirical"),
                                 dict(mode="kernel", kernel="analytic", weight_decay=0.0, label_smoothing=0.1)])
def test_kappa_prior_elsewhere_is_refused(data, bad):
    with pytest.raises(ValueError, match="prior='kappa'"):
        nb.methods.create("ntk_ensemble", prior="kappa", members=2, width=8, **bad).fit(data, seed=0)
