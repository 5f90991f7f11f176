"""``gp`` with ``inference="mcmc"``: the method is the sampler called with the right kernel (Θ/(λN) for ``ntk``),
its predictive matches quadrature on a two-point problem, its records follow ``hmc``'s, bad options are refused.
CPU, float64, fixed seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import tiny_splits

import ntkbayes as nb
from ntkbayes.data.splits import DatasetSplits, Split
from ntkbayes.methods import gp as gp_module
from ntkbayes.ntk.analytic import mlp_kernels, mlp_kernels_diag
from ntkbayes.samplers import sample_gp_classification

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samplers"))
from mc_error import assert_mc_close  # noqa: E402
from test_elliptical import _quadrature  # noqa: E402

#: Small sampler settings for the exactness tests (the draws need not be converged to be compared bit for bit).
FAST = {"chains": 2, "warmup": 10, "samples": 8, "thin": 1}
MLP = {"depth": 2, "activation": "relu", "w_std": 1.5, "b_std": 0.05}   # the gp method's defaults


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def blobs():
    return tiny_splits(n=40, classes=3, dim=3, seed=2)


def _by_hand(kernel: str, x1: torch.Tensor, x2: torch.Tensor, *, n_train: int, lam: float) -> torch.Tensor:
    """The prior covariance written out: 2·exp(−‖x−x'‖²/2·0.7²) (rbf), 3·K_nngp, Θ/(λN) (ntk)."""
    if kernel == "rbf":
        return 2.0 * torch.exp(-torch.cdist(x1, x2) ** 2 / (2 * 0.7**2))
    nngp, ntk = mlp_kernels(x1, None if x2 is x1 else x2, **MLP)  # the square path for K(X, X), as the method
    # (1/(λN))·Θ rather than Θ/(λN): a last-bit difference in K grows through NUTS's trajectories to ~1e-7 in the
    # draws; the scale itself is checked against Θ/(λN) separately
    return 3.0 * nngp if kernel == "nngp" else (1.0 / (lam * n_train)) * ntk


def _fixed(kernel: str) -> dict:
    return {"lengthscale": 0.7, "outputscale": 2.0} if kernel == "rbf" else \
        {"outputscale": 3.0} if kernel == "nngp" else {}


@pytest.mark.parametrize(("kernel", "lam"), [("rbf", 1e-3), ("nngp", 1e-3), ("ntk", 1e-3), ("ntk", 0.1)])
def test_method_is_the_sampler_with_the_prior_kernel(blobs, kernel, lam):
    """Fast path (the method) vs the obvious one (kernel by hand → sample_gp_classification → predict_logits)."""
    m = nb.methods.create("gp", inference="mcmc", kernel=kernel, weight_decay=lam, **_fixed(kernel), **FAST, **MLP)
    m.fit(blobs, seed=3)
    x, y = blobs.train.x.double(), blobs.train.y
    xs = blobs.test.x.double()
    n = x.shape[0]
    K = _by_hand(kernel, x, x, n_train=n, lam=lam)
    # the kernel the method factored is the one by hand (no jitter was needed: chol·cholᵀ = K). Bound, on any CPU:
    # Cholesky's backward error |LLᵀ − K| ≤ γ_{n+1}|L||Lᵀ| ≤ (n+1)·u·max K_ii (Higham 2002, Thm 10.3, and
    # Cauchy–Schwarz on |L||Lᵀ|), ≈ 1e-14·max K_ii at these n, plus the ~1 ulp between the method's kernel and the
    # one by hand: inside rtol = 1e-12 and atol = 1e-12·max K_ii
    chol = m.posterior_.chol
    assert m.fit_info()["jitter"] == 0.0
    assert torch.allclose(chol @ chol.t(), K, rtol=1e-12, atol=1e-12 * float(K.diagonal().max()))
    if kernel == "ntk":
        theta = mlp_kernels(x, **MLP)[1]
        assert torch.allclose(chol @ chol.t(), theta / (lam * n), rtol=1e-12, atol=1e-12 * float(K.diagonal().max()))
    direct = sample_gp_classification(K, y, num_classes=3, seed=m.mcmc_seed_, sampler="nuts", **FAST)
    diag = {"rbf": torch.full((len(xs),), 2.0, dtype=torch.float64),
            "nngp": 3.0 * mlp_kernels_diag(xs, **MLP)[0],
            "ntk": (1.0 / (lam * n)) * mlp_kernels_diag(xs, **MLP)[1]}[kernel]
    logits = direct.predict_logits(_by_hand(kernel, xs, x, n_train=n, lam=lam), diag, seed=m.predict_seed_)
    pred = m.predict(blobs.test.x)
    assert pred.member_probs.shape == (FAST["chains"] * FAST["samples"], len(xs), 3)
    # bound: same sampler and seeds; the kernels differ by rounding only (cdist vs the method's squared distances),
    # ~1e-15 relative, which NUTS's 18 iterations per chain carry to ≪ 1e-8
    assert (pred.member_probs.double() - torch.softmax(logits, -1)).abs().max() < 1e-8
    info = m.fit_info()
    if kernel == "ntk":  # IEEE-754 products and quotients are correctly rounded on every CPU: λ·N and 1/(λN)
        # are the same bits however computed (rel = 1e-15 ≈ 4.5 ulp only allows for a reassociation)
        assert info["prior_precision"] == pytest.approx(lam * n, rel=1e-15)
        assert info["prior_scale"] == pytest.approx(1 / (lam * n), rel=1e-15) and info["outputscale"] is None


def test_fit_info_has_the_hmc_keys(blobs):
    m = nb.methods.create("gp", inference="mcmc", kernel="ntk", **FAST).fit(blobs, seed=0)
    info = m.fit_info()
    json.dumps(info)
    for key in ("rhat", "ess_bulk", "flagged", "divergences", "step_size", "grad_evals", "seconds", "fit_seconds",
                "num_train", "chains", "draws_per_chain", "prior_precision", "weight_decay"):
        assert key in info, key
    assert info["flagged"] == (info["rhat"] > 1.05 or info["ess_bulk"] < 100)
    assert info["inference"] == "mcmc" and info["likelihood"] == "softmax" and len(info["step_size"]) == 2
    # R-hat / ESS are judged on the validation probabilities, as hmc's: S = 16 draws can never reach ESS 100
    assert info["flagged"] and info["num_train"] == len(blobs.train)


def _two_point_data(x_train, labels, x_test) -> DatasetSplits:
    f = lambda v: torch.tensor(v, dtype=torch.float64).reshape(-1, 1)  # noqa: E731
    test = Split(f(x_test), torch.tensor([0]))   # also the validation split (R-hat / ESS at the test point)
    return DatasetSplits(name="two_points", num_classes=2, train=Split(f(x_train), torch.tensor(labels)),
                         val=test, test=test)


@pytest.mark.parametrize("kernel", ["rbf", "ntk"])
def test_two_point_predictive_matches_quadrature(kernel):
    """Two training points, C = 2: p(y* = 0 | D) at one test point by Gauss–Hermite quadrature (the samplers'
    test helper, exact to ~1e-7) vs the method's predictive, within 4.5 Monte-Carlo standard errors (mc_error)."""
    x, labels, xs = [0.0, 0.7], [0, 1], 0.3
    if kernel == "rbf":   # ℓ = 1, s = 4: a strongly non-Gaussian posterior (the samplers' test)
        params = {"lengthscale": 1.0, "outputscale": 4.0}
        k = 4.0 * np.exp(-0.5 * (np.array(x)[:, None] - np.array(x)[None, :]) ** 2)
        k_star, k_ss = 4.0 * np.exp(-0.5 * (xs - np.array(x)) ** 2), 4.0
    else:                 # λ = 0.25, N = 2: prior Θ/0.5 = 2Θ
        params = {"weight_decay": 0.25, "depth": 1, "b_std": 1.0}
        xa = torch.tensor([*x, xs], dtype=torch.float64).reshape(-1, 1)
        theta = (mlp_kernels(xa, depth=1, activation="relu", w_std=1.5, b_std=1.0)[1] / 0.5).numpy()
        k, k_star, k_ss = theta[:2, :2], theta[2, :2], float(theta[2, 2])
    _, _, p0 = _quadrature(k, labels, k_star, k_ss, 80)
    m = nb.methods.create("gp", inference="mcmc", kernel=kernel, chains=4, warmup=150, samples=500, **params)
    pred = m.fit(_two_point_data(x, labels, [xs]), seed=0).predict(torch.tensor([[xs]], dtype=torch.float64))
    p = pred.member_probs[:, 0, 0].double().reshape(4, 500, 1)
    assert_mc_close(p, torch.tensor([p0]), f"p(y* = 0 | D), {kernel}")
    info = m.fit_info()
    assert info["rhat"] < 1.05 and not info["flagged"] and info["divergences"] == 0


@pytest.mark.parametrize(("params", "match"), [
    ({"inference": "bogus"}, "inference"),
    ({"inference": "mcmc", "sampler": "gibbs"}, "sampler"),
    ({"inference": "mcmc", "chains": 0}, "chains"),
])
def test_bad_option_is_refused_by_create(params, match):
    with pytest.raises(ValueError, match=match):
        nb.methods.create("gp", **params)


@pytest.mark.parametrize(("params", "match"), [
    ({"link": "probit"}, "link"),
    ({"kernel": "ntk", "weight_decay": 0.0}, "weight_decay"),
    ({"kernel": "ntk", "outputscale": 3.0}, "outputscale"),
    ({"backend": "gpytorch"}, "backend"),
    ({"samples": 6, "thin": 2}, "samples"),
])
def test_bad_option_is_refused_at_fit(blobs, params, match):
    with pytest.raises(ValueError, match=match):
        nb.methods.create("gp", inference="mcmc", **{**FAST, **params}).fit(blobs, seed=0)


def test_too_many_training_points_are_refused(blobs, monkeypatch):
    monkeypatch.setattr(gp_module, "MCMC_MAX_TRAIN", 10)
    with pytest.raises(ValueError, match="MCMC_MAX_TRAIN = 10"):
        nb.methods.create("gp", inference="mcmc", kernel="ntk", **FAST).fit(blobs, seed=0)
    # max_train subsamples below the cap, as for the other inference routes
    m = nb.methods.create("gp", inference="mcmc", kernel="ntk", max_train=9, **FAST).fit(blobs, seed=0)
    assert m.fit_info()["num_train"] == 9 and m.fit_info()["subsampled_from"] == len(blobs.train)
