"""The Dirichlet-based GP classifier's pieces (Milios et al., NeurIPS 2018), used by ``gp``'s default likelihood.

Labels become per-class regression targets with heteroscedastic Gaussian noise (the Dirichlet transform, GPyTorch's
``DirichletClassificationLikelihood``); each class is then exact GP regression (:func:`dirichlet_solve`), or the
GPyTorch model (:func:`dirichlet_gp_class`) for the ``gpytorch`` backend. Not a method: ``ntkbayes.methods.gp`` is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: α_ε of the Dirichlet transform (GPyTorch's default): the pseudo-count of every class besides the label's 1.
ALPHA_EPSILON = 0.01
#: Extra noise variances σ_n² tried by the Dirichlet likelihood (GPyTorch learns one; ``learn_additional_noise``).
#: 0 is a natural lower end (the transform's own noise is ≥ log 2 ≈ 0.69); a fit at the largest is flagged.
NOISE_GRID = (0.0, 0.1, 1.0, 10.0)


def dirichlet_targets(y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Regression targets ỹ (N, C) and noise variances σ̃² (N, C) of the Dirichlet transform of labels y (N,)."""
    alpha = torch.nn.functional.one_hot(y, num_classes).to(torch.float64) + ALPHA_EPSILON
    var = torch.log(1.0 / alpha + 1.0)
    return torch.log(alpha) - var / 2, var


def dirichlet_solve(K: Tensor, targets: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """Exact GP regression per class with kernel K (N, N), targets (N, C), noise variances (N, C) and a constant
    mean by generalized least squares. Returns the Cholesky factors L (C, N, N) of K + diag(noise_c), the weights
    α = (K + D_c)⁻¹(ỹ_c − m_c) (C, N), the means m (C,) and the log marginal likelihood summed over classes."""
    n, c = targets.shape
    L = torch.linalg.cholesky(K.unsqueeze(0) + torch.diag_embed(noise.t()))             # (C, N, N)
    rhs = torch.stack([targets.t(), torch.ones_like(targets.t())], -1)                  # (C, N, 2)
    sol = torch.cholesky_solve(rhs, L)
    m = sol[..., 1].mul(targets.t()).sum(1) / sol[..., 1].sum(1)                        # 1ᵀA⁻¹ỹ / 1ᵀA⁻¹1
    r = targets.t() - m[:, None]
    alpha = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
    lml = -0.5 * (r * alpha).sum() - torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum() - 0.5 * n * c * math.log(
        2 * math.pi)
    return L, alpha, m, float(lml)


def dirichlet_gp_class():
    """The GPyTorch model class, defined lazily (gpytorch is imported only for this backend)."""
    import gpytorch

    class DirichletGP(gpytorch.models.ExactGP):
        """One GP per class (batch_shape = C) on the Dirichlet-transformed targets (GPyTorch example model)."""

        def __init__(self, x, targets, likelihood, num_classes: int, lengthscale: float):
            super().__init__(x, targets, likelihood)
            batch = torch.Size((num_classes,))
            self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch)
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(batch_shape=batch),
                                                             batch_shape=batch)
            self.covar_module.base_kernel.lengthscale = torch.full((num_classes, 1, 1), lengthscale)
            self.to(x.dtype)

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return DirichletGP


__all__ = ["ALPHA_EPSILON", "NOISE_GRID", "dirichlet_gp_class", "dirichlet_solve", "dirichlet_targets"]
