"""Laplace (GGN) predictive at test points and the softmax predictive: ``docs/math.md`` (d).

:func:`predict` turns a :class:`~ntkbayes.ntk.newton.NewtonResult` (full or block form) into the logit predictive
N(μ*, Σ*) (R&W 2006, Algorithm 3.4 for the block form); :func:`softmax_mc` and :func:`softmax_probit` turn that
into class probabilities. Conventions (sample-major vectors, kernel units, anchors) are those of
:mod:`ntkbayes.ntk.solve`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ntkbayes.ntk.newton import NewtonResult, flat_cross, star_mean
from ntkbayes.utils import check_memory

#: Test points per chunk when forming predictive covariances (bounds memory at B·NC·chunk·C numbers).
DEFAULT_PREDICT_BLOCK = 512
#: Eigenvalues of Σ* up to EIGEN_ZERO·C·ε·λ_max count as zero in :func:`sample_logits` (eigh's backward error).
EIGEN_ZERO = 16.0


# ---- Laplace predictive at test points — math.md (d) ----
def _star_blocks(K: Tensor, M: int, C: int, joint: bool) -> Tensor:
    """Test-test kernel → per-point blocks (M, C, C), or the flat joint (MC, MC) when ``joint``."""
    K = torch.as_tensor(K)
    eye = torch.eye(C, dtype=K.dtype, device=K.device)
    if joint:
        if K.shape == (M, M, C, C):
            return K.permute(0, 2, 1, 3).reshape(M * C, M * C)
        if K.shape == (M * C, M * C):
            return K
        if K.shape == (M, M):
            return torch.kron(K, eye)
        raise ValueError(f"K_star_star: joint=True needs (M*C, M*C), (M, M, C, C) or (M, M), got {tuple(K.shape)}")
    if K.shape == (M, C, C):
        return K
    if K.shape == (M,):
        return K[:, None, None] * eye
    if K.shape == (M, M, C, C):
        return K[torch.arange(M), torch.arange(M)]
    if K.shape == (M * C, M * C):
        return K.view(M, C, M, C).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    raise ValueError(f"K_star_star: expected (M, C, C), (M,), (M, M, C, C) or (M*C, M*C) with M={M}, C={C}, "
                     f"got {tuple(K.shape)}")


def predict(result: NewtonResult, K_star_X: Tensor, K_star_star: Tensor | None = None,
            m_star: Tensor | None = None, *, joint: bool = False,
            block_size: int = DEFAULT_PREDICT_BLOCK) -> tuple[Tensor, Tensor | None]:
    """Laplace (GGN) predictive N(μ*, Σ*) of the logits at M test points (math.md (d)).

    μ* = m* + K*X α̂ and Σ* = K** − K*X S (I + SKS)⁻¹ S K_X* (full form), or for the block form
    Σ*_cc' = δ_cc'(k** − k*_cᵀE_c k*_c) + (E_c k*_c)ᵀ(Σ_j E_j)⁻¹(E_c' k*_c'). Kernels are given in the units of
    the solver's kernel (e.g. Θ); ``result.kernel_scale`` is applied here.

    Args:
        result: from :func:`newton_full` / :func:`newton_block` (factors kept for the covariance).
        K_star_X: full form: (M, N, C, C), flat (MC, NC) or scalar (M, N) (⊗ I_C); block form: (M, N) or (C, M, N).
        K_star_star: None (mean only); full form: (M, C, C) blocks, (M,) scalar diagonal, or (MC, MC) /
            (M, M, C, C) (or (M, M) scalar, for ``joint``); block form: (M,) or (C, M) diagonals.
        m_star: prior mean at the test points (M, C) or (B, M, C) (anchor: module docstring); None = zero.
        joint: full form only: return the joint (B, MC, MC) covariance instead of per-point blocks.
        block_size: test points per chunk.

    Returns:
        mean (B, M, C) and cov (B, M, C, C) (or (B, MC, MC) if ``joint``; None without K_star_star).
    """
    B, N, C = result.f.shape
    ref, s = result.f, result.kernel_scale
    if result.form == "full":
        Kx = flat_cross(K_star_X, N, C, "K_star_X").to(ref.device, ref.dtype)
        M = Kx.shape[0] // C
        mean = star_mean(m_star, B, M, C, ref) + s * (result.alpha.reshape(B, N * C) @ Kx.t()).view(B, M, C)
    elif result.form == "block":
        Kx = torch.as_tensor(K_star_X).to(ref.device, ref.dtype)
        Kx = Kx.unsqueeze(0) if Kx.ndim == 2 else Kx
        if Kx.ndim != 3 or Kx.shape[0] not in (1, C) or Kx.shape[2] != N:
            raise ValueError(f"K_star_X: block form expects (M, N) or (C, M, N) with N={N}, C={C}, "
                             f"got {tuple(K_star_X.shape)}")
        M = Kx.shape[1]
        a = result.alpha.transpose(1, 2).unsqueeze(-1)                              # (B, C, N, 1)
        mean = star_mean(m_star, B, M, C, ref) + s * (Kx @ a).squeeze(-1).transpose(1, 2)
    else:
        raise ValueError(f"result.form: expected 'full' or 'block', got {result.form!r}")
    if K_star_star is None:
        return mean, None
    if (result.chol is None) and (result.e_mats is None):
        raise ValueError("result: factors were not kept (keep_factors=False, or solver='cg'); the covariance "
                         "needs them")
    if result.form == "full":
        return mean, _cov_full(result, Kx * s, K_star_star, M, joint, block_size)
    if joint:
        raise ValueError("joint=True is supported for the full form only")
    kss = torch.as_tensor(K_star_star).to(ref.device, ref.dtype)
    kss = kss.unsqueeze(0) if kss.ndim == 1 else kss
    if kss.shape not in ((1, M), (C, M)):
        raise ValueError(f"K_star_star: block form expects (M,) or (C, M) diagonals with M={M}, got "
                         f"{tuple(K_star_star.shape)}")
    covs = []
    for i in range(0, M, block_size):
        kx = s * Kx[:, i:i + block_size].transpose(1, 2)                           # (Cc, N, mc)
        V = result.e_mats @ kx                                                      # E_c k*_c   (B, C, N, mc)
        diag = s * kss[:, i:i + block_size] - (kx * V).sum(-2)                      # k** − k*ᵀE_c k*
        mc = V.shape[-1]
        U = torch.cholesky_solve(V.permute(0, 2, 1, 3).reshape(B, N, C * mc), result.chol_m).view(B, N, C, mc)
        cross = torch.einsum("bcnm,bndm->bmcd", V, U)                              # (E_c k*)ᵀ(ΣE)⁻¹(E_c' k*)
        covs.append(torch.diag_embed(diag.transpose(1, 2)) + cross)
    return mean, torch.cat(covs, 1)


def _cov_full(result: NewtonResult, Kx: Tensor, K_star_star: Tensor, M: int, joint: bool, block: int) -> Tensor:
    """Σ* = K** − VᵀV with V = L⁻¹ S K_X* (math.md (d)); Kx (MC, NC) already scaled."""
    B, N, C = result.f.shape
    ref, s = result.f, result.kernel_scale
    kss = _star_blocks(K_star_star, M, C, joint).to(ref.device, ref.dtype) * s
    if joint:
        check_memory(B * (N * C) * (M * C) * 2 * ref.element_size(), ref.device,
                     "joint predictive covariance", "joint=False or fewer test points")
        block = M
    out = []
    for i in range(0, M, block):
        kx = Kx[i * C:(i + block) * C].t().reshape(N, C, -1)                       # (N, C, mc*C)
        V = torch.einsum("bncd,ndj->bncj", result.sqrt_w, kx).reshape(B, N * C, -1)  # S K_X*
        V = torch.linalg.solve_triangular(result.chol, V, upper=False)              # L⁻¹ S K_X*
        if joint:
            return kss - V.transpose(1, 2) @ V
        V = V.view(B, N * C, -1, C)
        out.append(kss[i:i + block] - torch.einsum("brmc,brmd->bmcd", V, V))
    return torch.cat(out, 1)


predict_mean_cov = predict


# ---- softmax predictive — math.md (d) ----
def sample_logits(mean: Tensor, cov: Tensor, num_samples: int,
                  generator: torch.Generator | None = None) -> Tensor:
    """Draws f^(s) = μ* + Σ*^{1/2} z^(s) (symmetric root via eigh, robust to singular Σ*).

    Eigenvalues at or below ``EIGEN_ZERO``·C·ε·λ_max are rounding noise of eigh (its backward error is that size,
    and their sign differs between CPUs); they are set to 0, so a singular Σ* gives the same samples everywhere
    up to rounding instead of noise of size √(ε·λ_max) along its null space.

    Args: mean (..., M, C); cov (..., M, C, C); generator: its device draws z (CPU default), moved to mean's device.
    Returns: (S, ..., M, C) logit samples.
    """
    evals, Q = torch.linalg.eigh(cov)
    noise = EIGEN_ZERO * cov.shape[-1] * torch.finfo(cov.dtype).eps * evals[..., -1:].clamp_min(0)
    R = Q * torch.where(evals > noise, evals, torch.zeros_like(evals)).sqrt().unsqueeze(-2)
    dev = generator.device if generator is not None else mean.device
    z = torch.randn((num_samples, *mean.shape), generator=generator, dtype=mean.dtype, device=dev).to(mean.device)
    return mean + (R @ z.unsqueeze(-1)).squeeze(-1)


def softmax_mc(mean: Tensor, cov: Tensor, num_samples: int, generator: torch.Generator | None = None,
               return_samples: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Monte Carlo softmax predictive E_{f~N(μ*,Σ*)} softmax(f) (math.md (d), R&W Alg. 3.4 end).

    Args: mean (..., M, C); cov (..., M, C, C); num_samples: S.
    Returns: probs (..., M, C); with ``return_samples`` also the per-sample probabilities (S, ..., M, C).
    """
    probs = torch.softmax(sample_logits(mean, cov, num_samples, generator), -1)
    return (probs.mean(0), probs) if return_samples else probs.mean(0)


def probit_logits(mean: Tensor, cov: Tensor) -> Tensor:
    """κ ∘ μ* with κ_c = (1 + (π/8) Σ*_cc)^{-1/2} (math.md (d)). mean (..., M, C); cov (..., M, C, C) or variances
    (..., M, C). Returns (..., M, C)."""
    var = cov.diagonal(dim1=-2, dim2=-1) if cov.ndim == mean.ndim + 1 else cov
    return mean / torch.sqrt(1.0 + (math.pi / 8.0) * var)


def softmax_probit(mean: Tensor, cov: Tensor) -> Tensor:
    """Probit / mean-field softmax predictive softmax(κ ∘ μ*) (laplace-torch ``link_approx='probit'``); rough when
    Σ* is large (math.md (d)). Shapes as in :func:`probit_logits`; returns probs (..., M, C)."""
    return torch.softmax(probit_logits(mean, cov), -1)


softmax_predictive_mc = softmax_mc
softmax_predictive_probit = softmax_probit
