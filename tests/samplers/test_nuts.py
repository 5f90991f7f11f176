"""NUTS against a conjugate Gaussian posterior (Bayesian linear regression), float64, fixed seeds."""

from __future__ import annotations

import torch
from mc_error import assert_mc_close

from ntkbayes.samplers import nuts


def _regression():
    """y = Xθ + N(0, σ²), prior θ ~ N(0, α⁻¹ I): posterior N(μ, A⁻¹), A = XᵀX/σ² + αI, μ = A⁻¹Xᵀy/σ²."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    x[:, 1] += 0.8 * x[:, 0]  # correlated posterior
    sigma, alpha = 0.7, 1.0
    y = x @ torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64) + sigma * torch.randn(12, generator=g,
                                                                                       dtype=torch.float64)
    prec = x.t() @ x / sigma**2 + alpha * torch.eye(3, dtype=torch.float64)
    cov = torch.linalg.inv(prec)
    mean = cov @ x.t() @ y / sigma**2

    def potential(theta):
        return ((y - x @ theta) ** 2).sum() / (2 * sigma**2) + 0.5 * alpha * (theta**2).sum()

    return potential, mean, cov


def test_nuts_conjugate_gaussian_mean_and_covariance():
    potential, mean, cov = _regression()
    init = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = nuts(potential, init, warmup=300, samples=800, thin=1, seed=3)
    draws = res.samples
    assert draws.shape == (2, 800, 3) and draws.dtype == torch.float64
    assert_mc_close(draws, mean, "posterior mean")
    i, j = torch.triu_indices(3, 3)
    centered = draws - mean
    assert_mc_close(centered[..., i] * centered[..., j], cov[i, j], "posterior covariance")
    diag = res.diagnostics()
    assert diag["rhat"] < 1.01 and diag["ess_bulk"] > 400 and not diag["flagged"]
    info = res.info()
    assert info["divergences"] == 0 and info["chains"] == 2 and info["grad_evals"] > 2 * 1100
    assert all(s > 0 for s in info["step_size"])


def test_nuts_thinning_and_determinism():
    potential, _, _ = _regression()
    init = torch.zeros(1, 3, dtype=torch.float64)
    a = nuts(potential, init, warmup=20, samples=30, thin=3, seed=5)
    b = nuts(potential, init, warmup=20, samples=30, thin=3, seed=5)
    assert a.samples.shape == (1, 10, 3)
    assert torch.equal(a.samples, b.samples)
