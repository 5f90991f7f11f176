"""Elliptical slice sampling (Murray, Adams & MacKay 2010) on whitened latents, and exact GP classification with it.

The target is p(z | D) ∝ L(z) · N(z; 0, I) on a whitened state z ∈ R^D (a latent with prior N(0, Σ) is f = A z with
A Aᵀ = Σ). One iteration from z: draw ν ~ N(0, I) and a slice level log y = log L(z) + log u, u ~ U(0, 1); propose
z' = z cos θ + ν sin θ on the ellipse through z and ν, θ ~ U(0, 2π) with the bracket [θ − 2π, θ]; accept the first
z' with log L(z') > log y, shrinking the bracket towards 0 after each rejection. The update leaves the posterior
invariant exactly (the Gaussian prior is handled by the ellipse, not by a step size), so the sampler has no tuning
parameter, no warm-up adaptation and no divergences; its cost is a few likelihood evaluations per iteration and no
gradients. That is why it is used for the latent GP posterior: the prior is Gaussian and the likelihood cheap. NUTS
(:mod:`ntkbayes.samplers.nuts`) is used for network weights, where the prior is Gaussian too but the likelihood is
far from it and gradient-guided long trajectories mix much faster than ellipses through random prior draws.

Chains run vectorized: every chain does its own shrinking loop, and the batch iterates until all have accepted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: Rejections allowed in one iteration before the bracket is declared collapsed. The bracket shrinks geometrically
#: (by a uniform factor per rejection), so after 200 rejections it is ~e^{-200} wide: a collapsed bracket means the
#: likelihood is NaN or −inf at the current state, not slow mixing.
MAX_SHRINKS = 200


@dataclass
class EllipticalResult:
    """Draws of an :func:`elliptical_slice` run.

    Attributes:
        samples: (chains, draws, D) float64 whitened draws after burn-in and thinning.
        log_lik: (chains, draws) log-likelihood of each kept draw.
        lik_evals: likelihood evaluations over all chains and iterations (burn-in included; chains that have
            accepted are evaluated along while others shrink): the cost unit.
        seconds: wall time.
    """

    samples: Tensor
    log_lik: Tensor
    lik_evals: int
    seconds: float


def elliptical_slice(log_lik: Callable[[Tensor], Tensor], init: Tensor, *, warmup: int, samples: int, thin: int = 1,
                     seed: int = 0) -> EllipticalResult:
    """Elliptical slice sampling of p(z | D) ∝ exp(log_lik(z)) N(z; 0, I), one chain per row of ``init``.

    Args:
        log_lik: batched log-likelihood, (B, D) → (B,), float64.
        init: (chains, D) starting states (e.g. prior draws).
        warmup: burn-in iterations per chain (discarded). samples: iterations per chain after burn-in; ``samples //
            thin`` draws are kept per chain. thin: keep every ``thin``-th iteration.
        seed: seed of the ``torch.Generator`` that draws ν, u and θ (the global RNG is not touched).

    Returns:
        :class:`EllipticalResult`.
    """
    if init.ndim != 2:
        raise ValueError(f"init: expected shape (chains, D), got {tuple(init.shape)}")
    if warmup < 0 or samples < 1 or thin < 1 or samples // thin < 1:
        raise ValueError(f"elliptical_slice: expected warmup ≥ 0, samples ≥ thin ≥ 1, got {warmup}, {samples}, "
                         f"{thin}")
    gen = torch.Generator().manual_seed(int(seed))
    z = init.detach().to(torch.float64).clone()
    ll = log_lik(z)
    if not torch.isfinite(ll).all():
        raise ValueError("elliptical_slice: log_lik is not finite at the initial state")
    chains, dim = z.shape
    kept, kept_ll = [], []
    evals = chains
    start = time.perf_counter()
    for it in range(warmup + samples):
        nu = torch.randn(chains, dim, generator=gen, dtype=torch.float64)
        log_y = ll + torch.log(torch.rand(chains, generator=gen, dtype=torch.float64))
        theta = 2 * math.pi * torch.rand(chains, generator=gen, dtype=torch.float64)
        lo, hi = theta - 2 * math.pi, theta.clone()
        todo = torch.ones(chains, dtype=torch.bool)
        for _ in range(MAX_SHRINKS):  # masked over all chains: fewer, larger torch ops than indexing the active ones
            prop = z * torch.cos(theta)[:, None] + nu * torch.sin(theta)[:, None]
            ll_prop = log_lik(prop)
            evals += chains
            acc = todo & (ll_prop > log_y)
            z = torch.where(acc[:, None], prop, z)
            ll = torch.where(acc, ll_prop, ll)
            todo &= ~acc
            if not todo.any():
                break
            neg = theta < 0
            lo = torch.where(todo & neg, theta, lo)
            hi = torch.where(todo & ~neg, theta, hi)
            u = torch.rand(chains, generator=gen, dtype=torch.float64)
            theta = torch.where(todo, lo + (hi - lo) * u, theta)
        else:
            raise RuntimeError(f"elliptical_slice: bracket collapsed after {MAX_SHRINKS} shrinks (non-finite "
                               "likelihood?)")
        if it >= warmup and (it - warmup + 1) % thin == 0:
            kept.append(z.clone())
            kept_ll.append(ll.clone())
    return EllipticalResult(samples=torch.stack(kept, 1), log_lik=torch.stack(kept_ll, 1), lik_evals=evals,
                            seconds=time.perf_counter() - start)


__all__ = ["MAX_SHRINKS", "EllipticalResult", "elliptical_slice"]
