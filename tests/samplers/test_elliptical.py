"""Elliptical slice sampling against a conjugate Gaussian posterior and against quadrature for a two-point
softmax GP classification (C = 2), float64, fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mc_error import assert_mc_close

from ntkbayes.samplers import elliptical_slice, sample_gp_classification


def test_ess_conjugate_gaussian():
    """Prior f ~ N(0, K), y = f + N(0, σ²I): posterior N(Σy/σ², Σ), Σ = (K⁻¹ + I/σ²)⁻¹; sampled as f = L z."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    k = a @ a.t() + 0.5 * torch.eye(4, dtype=torch.float64)
    chol = torch.linalg.cholesky(k)
    sigma2 = 0.3
    y = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    cov = torch.linalg.inv(torch.linalg.inv(k) + torch.eye(4, dtype=torch.float64) / sigma2)
    mean = cov @ y / sigma2

    def log_lik(z):
        f = z @ chol.t()
        return -((f - y) ** 2).sum(-1) / (2 * sigma2)

    res = elliptical_slice(log_lik, torch.zeros(4, 4, dtype=torch.float64), warmup=200, samples=4000, seed=1)
    f = res.samples @ chol.t()
    assert f.shape == (4, 4000, 4)
    assert_mc_close(f, mean, "posterior mean")
    i, j = torch.triu_indices(4, 4)
    c = f - mean
    assert_mc_close(c[..., i] * c[..., j], cov[i, j], "posterior covariance")
    assert torch.allclose(res.log_lik, log_lik(res.samples.reshape(-1, 4)).reshape(4, -1), rtol=0, atol=1e-12)


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _quadrature(k, y, k_star, k_ss, order):
    """Two training points, C = 2: everything depends on u = F[:, 0] − F[:, 1] ~ N(0, 2K) a priori, with likelihood
    Π_i σ(±u_i); v = F[:, 0] + F[:, 1] ~ N(0, 2K) is independent of u and untouched by the data. Tensor-product
    Gauss–Hermite over u (whitened), inner Gauss–Hermite over the test latent difference
    d* | u ~ N(k*ᵀK⁻¹u, 2(k** − k*ᵀK⁻¹k*)). Returns E[u], Cov[u], p(y* = 0)."""
    t, w = np.polynomial.hermite_e.hermegauss(order)  # ∫ g(t) N(t) dt ≈ Σ w g(t) / √(2π)
    w = w / np.sqrt(2 * np.pi)
    chol = np.linalg.cholesky(2 * k)
    tt = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    ww = np.outer(w, w).reshape(-1)
    u = tt @ chol.T
    sign = np.where(np.asarray(y) == 0, 1.0, -1.0)
    lik = np.prod(_sigmoid(sign * u), -1) * ww
    z = lik.sum()
    eu = (lik[:, None] * u).sum(0) / z
    cu = ((lik[:, None, None] * (u - eu)[:, :, None] * (u - eu)[:, None, :]).sum(0)) / z
    kinv_ks = np.linalg.solve(k, k_star)
    m = u @ kinv_ks
    s = np.sqrt(2 * (k_ss - k_star @ kinv_ks))
    p0_given_u = (_sigmoid(m[:, None] + s * t[None, :]) * w[None, :]).sum(1)
    return eu, cu, float((lik * p0_given_u).sum() / z)


@pytest.mark.parametrize(("labels", "sampler"), [([0, 1], "ess"), ([0, 0], "ess"), ([0, 1], "nuts")])
def test_gp_classification_two_points_against_quadrature(labels, sampler):
    # RBF kernel, outputscale 4 (strongly non-Gaussian posterior), two training points and one test point.
    x = np.array([0.0, 0.7])
    xs = 0.3
    s = 4.0
    k = s * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2)
    k_star = s * np.exp(-0.5 * (xs - x) ** 2)
    k_ss = s
    eu, cu, p0 = _quadrature(k, labels, k_star, k_ss, 80)
    eu2, cu2, p02 = _quadrature(k, labels, k_star, k_ss, 120)
    # The quadrature reference itself: orders 80 and 120 agree to ~1e-7 (the logistic's poles at ±iπ limit
    # Gauss–Hermite's convergence), far below the Monte-Carlo standard errors (~1e-2) it is compared with.
    assert np.abs(eu - eu2).max() < 1e-6 and np.abs(cu - cu2).max() < 1e-6 and abs(p0 - p02) < 1e-6

    settings = {"warmup": 500, "samples": 6000, "thin": 2} if sampler == "ess" else \
        {"warmup": 150, "samples": 500, "thin": 1}
    post = sample_gp_classification(torch.tensor(k), torch.tensor(labels), num_classes=2, chains=4, seed=0,
                                    sampler=sampler, **settings)
    chains, draws = post.whitened.shape[:2]
    f = post.latents.reshape(chains, draws, 2, 2)
    u = f[..., 0] - f[..., 1]
    assert_mc_close(u, torch.tensor(eu), "E[u]")
    assert_mc_close(f[..., 0], torch.tensor(eu) / 2, "E[F[:, 0]] = E[u]/2")
    c = u - torch.tensor(eu)
    i, j = torch.triu_indices(2, 2)
    assert_mc_close(c[..., i] * c[..., j], torch.tensor(cu)[i, j], "Cov[u]")
    # Cov(F[:, 0]) = (Cov[u] + 2K)/4: the data leave v = F0 + F1 at its prior N(0, 2K).
    f0 = f[..., 0] - torch.tensor(eu) / 2
    assert_mc_close(f0[..., i] * f0[..., j], torch.tensor((cu + 2 * k) / 4)[i, j], "Cov[F[:, 0]]")
    logits = post.predict_logits(torch.tensor(k_star)[None, :], torch.tensor([k_ss]), seed=1)
    assert logits.shape == (chains * draws, 1, 2)
    p = torch.softmax(logits, -1)[:, 0, 0].reshape(chains, draws, 1)
    assert_mc_close(p, torch.tensor([p0]), "p(y* = 0 | D)")
    info = post.info()
    assert info["rhat"] < 1.05 and info["ess_bulk"] > 400 and not info["flagged"]
    assert info["rhat_latents"] < 1.05


def test_gp_classification_soft_targets_equal_labels():
    k = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=torch.float64)
    a = sample_gp_classification(k, torch.tensor([0, 1]), chains=2, warmup=5, samples=10, seed=3, sampler="ess")
    b = sample_gp_classification(k, torch.eye(2, dtype=torch.float64), chains=2, warmup=5, samples=10, seed=3,
                                 sampler="ess")
    assert torch.equal(a.whitened, b.whitened)
