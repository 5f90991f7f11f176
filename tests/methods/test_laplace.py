"""laplace: the laplace-torch GLM predictive against a hand-computed one (math.md (d)), prior-precision fits,
memory and BatchNorm guards, row blocking."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, jacrev, vmap
from toydata import tiny_splits

from ntkbayes import methods
from ntkbayes.methods import laplace as laplace_mod
from ntkbayes.utils import MemoryEstimateError

# marglik: the GLM tests need a real posterior spread (the default val_nll fit may go to the MAP's κ → ∞)
SMALL = {"width": 12, "depth": 1, "dtype": "float64", "epochs": 80, "lr": 0.01, "prior_fit": "marglik"}



@pytest.fixture(scope="module")
def blobs():
    return tiny_splits(n=60, classes=3, dim=2, seed=3)


def glm_reference(m, data, x_test, last_layer: bool, kappa: float):
    """μ* (N, C) and Σ* (N, C, C) of the linearized Laplace posterior written out (math.md (d)):
    H = Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i + κ I,  Σ* = J* H⁻¹ J*ᵀ, with J from torch.func.jacrev."""
    params = {k: v[0].detach() for k, v in m.params_.items()}
    names = list(params)[-2:] if last_layer else list(params)

    def f(sub, x):
        return functional_call(m.module_, {**params, **sub}, (x.unsqueeze(0),))[0]

    def jac(x):
        j = vmap(jacrev(f), in_dims=(None, 0))({k: params[k] for k in names}, x.double())
        return torch.cat([j[k].reshape(x.shape[0], data.num_classes, -1) for k in names], -1)

    xt = data.train.x.double()
    p = torch.softmax(functional_call(m.module_, params, (xt,)), -1)
    lam = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    jt = jac(xt)
    h = torch.einsum("ncp,ncd,ndq->pq", jt, lam, jt) + kappa * torch.eye(jt.shape[-1], dtype=torch.float64)
    js = jac(x_test)
    cov = js @ torch.linalg.solve(h, js.transpose(1, 2))
    return functional_call(m.module_, params, (x_test.double(),)), cov, h, params, names


@pytest.mark.parametrize("subset", ["last_layer", "all"])
def test_probit_predictive_matches_hand_computed_glm(blobs, subset):
    m = methods.create("laplace", subset=subset, hessian="full", link="probit", **SMALL).fit(blobs, seed=0)
    mu, cov, *_ = glm_reference(m, blobs, blobs.test.x, subset == "last_layer", m.prior_precision_)
    kappa_c = 1.0 / torch.sqrt(1.0 + math.pi / 8.0 * cov.diagonal(dim1=1, dim2=2))
    expected = torch.softmax(kappa_c * mu, -1)
    pred = m.predict(blobs.test.x)
    assert pred.member_probs.shape == (1, len(blobs.test), 3)
    # laplace-torch's GGN (curvlinops) agrees with the hand-made one to ~3e-8 relative, not to float64 rounding
    torch.testing.assert_close(pred.probs, expected, atol=1e-6, rtol=0)
    assert (cov.diagonal(dim1=1, dim2=2) > 1e-6).all()  # a real posterior spread, not the MAP in disguise


def test_mc_samples_have_the_glm_mean_and_covariance(blobs):
    m = methods.create("laplace", hessian="full", link="mc", num_samples=20000, **SMALL).fit(blobs, seed=0)
    x = blobs.test.x[:4]
    mu, cov, *_ = glm_reference(m, blobs, x, True, m.prior_precision_)
    z = m.predict(x).member_logits  # (S, 4, C) log-softmax of the logit samples: compare centred contrasts
    z = z - z.mean(-1, keepdim=True)
    mu_c = mu - mu.mean(-1, keepdim=True)
    centre = torch.eye(3, dtype=torch.float64) - 1.0 / 3
    cov_c = centre @ cov @ centre
    scale = cov_c.diagonal(dim1=1, dim2=2).max().sqrt()
    torch.testing.assert_close(z.mean(0), mu_c, atol=float(0.05 * scale), rtol=0)
    d = z - z.mean(0)
    emp = torch.einsum("snc,snd->ncd", d, d) / (z.shape[0] - 1)
    torch.testing.assert_close(emp, cov_c, atol=float(0.05 * scale**2), rtol=0)


def test_marglik_prior_precision_maximizes_the_laplace_evidence(blobs):
    m = methods.create("laplace", hessian="full", link="probit", **SMALL).fit(blobs, seed=0)
    kappa = m.prior_precision_

    def log_evidence(k):  # Σ log p(y|θ̂) − ½ log|H| + (P/2) log κ − (κ/2)‖θ̂‖²  (math.md (d))
        *_, h, params, names = glm_reference(m, blobs, blobs.test.x[:1], True, k)
        theta = torch.cat([params[n].flatten() for n in names])
        logits = functional_call(m.module_, params, (blobs.train.x.double(),))
        loglik = -torch.nn.functional.cross_entropy(logits, blobs.train.y, reduction="sum")
        return float(loglik - 0.5 * torch.logdet(h) + 0.5 * theta.numel() * math.log(k) - 0.5 * k * theta @ theta)

    assert m.fit_info()["log_marginal_likelihood"] == pytest.approx(log_evidence(kappa), abs=1e-6)
    for step in (0.5, 2.0):  # the optimum on a scalar κ: both neighbours are lower
        assert log_evidence(kappa * step) < log_evidence(kappa)


def test_map_prior_fit_uses_the_map_objectives_prior_precision(blobs):
    """prior_fit="map": κ = λN exactly (the prior of the MAP objective, math.md §0), nothing fitted."""
    m = methods.create("laplace", **dict(SMALL, prior_fit="map", weight_decay=3e-3)).fit(blobs, seed=0)
    n = len(blobs.train.y)
    assert m.prior_precision_ == 3e-3 * n  # the same product in float64 on both sides
    assert m.fit_info()["prior_fit"] == "map" and "val_nll_grid" not in m.fit_info()


def test_validation_grid_uses_the_prediction_settings(blobs):
    m = methods.create("laplace", **dict(SMALL, prior_fit="val_nll", link="mc", num_samples=16)).fit(blobs, seed=0)
    grid = m.fit_info()["val_nll_grid"]
    best = min(grid, key=grid.get)
    assert float(best) == pytest.approx(m.prior_precision_, rel=1e-3)
    probs = m.predict(blobs.val.x).probs
    val_nll = float(-probs.gather(1, blobs.val.y.reshape(-1, 1)).log().mean())
    assert grid[best] == pytest.approx(val_nll, rel=1e-12)  # same link, samples and seed as predict
    assert len(set(grid.values())) > 1


@pytest.mark.parametrize(("optimum", "expected", "at_edge"), [(1e6, 1e6, False), (1e-6, 1e-6, False),
                                                            (1e12, 1e8, True)])
def test_validation_grid_widens_until_the_optimum_is_interior(blobs, monkeypatch, optimum, expected, at_edge):
    # a validation NLL with its minimum at `optimum`: the grid (1e-4 … 1e4) grows by decades towards it, at most
    # MAX_GRID_EXTENSIONS (4) decades, and a fit still on the edge says so
    monkeypatch.setattr(laplace_mod.Laplace, "_val_nll", lambda self, k, data: math.log10(k / optimum) ** 2)
    m = methods.create("laplace", **dict(SMALL, prior_fit="val_nll")).fit(blobs, seed=0)
    assert m.prior_precision_ == pytest.approx(expected, rel=1e-9)  # κ = 10^(k/5) built by products: a few ulps
    assert m.fit_info()["prior_precision_at_edge"] is at_edge
    tried = sorted(float(k) for k in m.fit_info()["val_nll_grid"])
    assert tried[0] == pytest.approx(min(1e-4, expected)) or tried[-1] == pytest.approx(max(1e4, expected * 10**0.2))


@pytest.mark.parametrize("hessian", ["kron", "diag"])
def test_subset_all_structured_hessians_run(blobs, hessian):
    m = methods.create("laplace", subset="all", hessian=hessian, link="probit", **SMALL).fit(blobs, seed=0)
    pred, far = m.predict(blobs.test.x), m.predict(blobs.ood["far"])
    assert m.fit_info()["laplace_params"] == m.fit_info()["num_params"]
    assert far.msp.mean() > pred.msp.mean()  # msp = 1 − max p: less confident far from the data than on it


def test_row_blocks_do_not_change_the_predictive(blobs, monkeypatch):
    kw = dict(SMALL, subset="all", hessian="kron", link="probit")
    whole = methods.create("laplace", **kw).fit(blobs, seed=0)
    monkeypatch.setattr(laplace_mod, "JACOBIAN_BYTES", 1)  # one row per block
    blocked = methods.create("laplace", **kw).fit(blobs, seed=0)
    assert blocked.fit_info()["jacobian_rows"] == 1 and whole.fit_info()["jacobian_rows"] > len(blobs.test)
    torch.testing.assert_close(blocked.predict(blobs.test.x).probs, whole.predict(blobs.test.x).probs)


def test_full_hessian_refused_when_memory_is_short(blobs, monkeypatch):
    import ntkbayes.utils

    monkeypatch.setattr(ntkbayes.utils, "available_memory", lambda device: 10_000)
    with pytest.raises(MemoryEstimateError, match="hessian='kron' or 'diag', or subset='last_layer'"):
        methods.create("laplace", subset="all", hessian="full", **SMALL).fit(blobs, seed=0)


def test_batchnorm_and_bad_options_are_refused(blobs):
    with pytest.raises(ValueError, match="BatchNorm"):
        laplace_mod.check_no_batchnorm(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)))
    laplace_mod.check_no_batchnorm(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.GroupNorm(1, 3)))
    for key, value in [("hessian", "lowrank"), ("subset", "subnetwork"), ("link", "bridge"), ("prior_fit", "cv")]:
        with pytest.raises(ValueError, match=key):
            methods.create("laplace", **{**SMALL, key: value}).fit(blobs, seed=0)
