"""MCMC convergence diagnostics: rank-normalized split R-hat and bulk effective sample size.

Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding, and localization: an improved
R-hat for assessing convergence of MCMC": the draws of each quantity are pooled over chains, replaced by their
normal scores z = Φ⁻¹((r − 3/8)/(S + 1/4)) (r = average rank among all S draws), and each chain is split in two
halves. Then

* bulk ESS = Geyer's initial-monotone-sequence ESS (``pyro.ops.stats.effective_sample_size``, the Stan estimator)
  of the split, rank-normalized draws;
* R-hat = max(split R-hat of the rank-normalized draws, split R-hat of the rank-normalized folded draws
  |x − median(x)|), each ``pyro.ops.stats.gelman_rubin`` of the split chains (Stan's ``rhat``; the folded term
  catches chains that agree in location but not in scale).

A quantity that is constant over all draws (e.g. a class probability saturated to exactly 1.0) has no defined
R-hat or ESS: both are NaN for it, and :func:`summarize` leaves NaNs out of its max/min.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro.ops.stats import effective_sample_size, gelman_rubin
from scipy.special import ndtri
from scipy.stats import rankdata
from torch import Tensor

#: Convergence thresholds of the reference (Vehtari et al. 2021 recommend R-hat < 1.01 for final results and bulk
#: ESS > 100 per quantity; issue "gold-standard posterior" flags a reference above 1.05 or below 100).
RHAT_MAX = 1.05
ESS_MIN = 100.0


def _check(draws: Tensor) -> Tensor:
    draws = torch.as_tensor(draws, dtype=torch.float64)
    if draws.ndim < 2:
        raise ValueError(f"draws: expected shape (chains, draws, ...), got {tuple(draws.shape)}")
    if draws.shape[1] < 4:
        raise ValueError(f"draws: need at least 4 draws per chain to split chains, got {draws.shape[1]}")
    return draws.reshape(draws.shape[0], draws.shape[1], -1)


def split_chains(draws: Tensor) -> Tensor:
    """(chains, n, Q) → (2·chains, n//2, Q): first and last halves of each chain (the middle draw of an odd n is
    dropped, as in Stan)."""
    half = draws.shape[1] // 2
    return torch.cat([draws[:, :half], draws[:, -half:]], 0)


def rank_normalize(draws: Tensor) -> Tensor:
    """Normal scores of the pooled draws per quantity: (chains, n, Q) → same shape, float64.

    Ties get average ranks (``scipy.stats.rankdata``); z = Φ⁻¹((r − 3/8)/(S + 1/4)), S = chains·n (Blom 1958).
    """
    m, n, q = draws.shape
    flat = draws.reshape(m * n, q).numpy()
    ranks = rankdata(flat, axis=0, method="average")
    z = ndtri((ranks - 0.375) / (m * n + 0.25))
    return torch.from_numpy(np.ascontiguousarray(z)).reshape(m, n, q)


def _constant(draws: Tensor) -> Tensor:
    """(Q,) True where a quantity takes one value over all draws."""
    flat = draws.reshape(-1, draws.shape[-1])
    return (flat == flat[:1]).all(0)


def rhat(draws: Tensor) -> Tensor:
    """Rank-normalized split R-hat (bulk and folded, the larger) per quantity.

    Args:
        draws: (chains, n, ...) with n ≥ 4.

    Returns:
        float64 tensor of shape ``draws.shape[2:]``; NaN for constant quantities.
    """
    shape = torch.as_tensor(draws).shape[2:]
    x = _check(draws)
    const = _constant(x)
    out = torch.full((x.shape[-1],), math.nan, dtype=torch.float64)
    v = x[..., ~const]  # constants would turn pyro's whole batched computation to NaN
    if v.shape[-1]:
        bulk = gelman_rubin(split_chains(rank_normalize(v)), chain_dim=0, sample_dim=1)
        median = torch.quantile(v.reshape(-1, v.shape[-1]), 0.5, dim=0)  # midpoint for an even count, as numpy
        folded = gelman_rubin(split_chains(rank_normalize((v - median).abs())), chain_dim=0, sample_dim=1)
        out[~const] = torch.maximum(bulk, folded)
    return out.reshape(shape)


def bulk_ess(draws: Tensor) -> Tensor:
    """Bulk effective sample size per quantity: Geyer/Stan ESS of the split, rank-normalized draws.

    Args:
        draws: (chains, n, ...) with n ≥ 4.

    Returns:
        float64 tensor of shape ``draws.shape[2:]``, ≥ 0; NaN for constant quantities.
    """
    shape = torch.as_tensor(draws).shape[2:]
    x = _check(draws)
    const = _constant(x)
    out = torch.full((x.shape[-1],), math.nan, dtype=torch.float64)
    if (~const).any():
        ess = effective_sample_size(split_chains(rank_normalize(x[..., ~const])), chain_dim=0, sample_dim=1)
        # With a handful of draws from chains that disagree, Geyer's first pair sum can be negative and the
        # estimate with it; such a quantity carries no information: 0.
        out[~const] = ess.clamp_min(0.0)
    return out.reshape(shape)


def summarize(draws: Tensor) -> dict[str, float]:
    """Worst-case diagnostics over all quantities: ``{"rhat": max R-hat, "ess_bulk": min bulk ESS,
    "num_constant": quantities left out because constant, "flagged": R-hat > RHAT_MAX or ESS < ESS_MIN}``.

    With every quantity constant, R-hat and ESS are NaN and the result is not flagged (there is nothing to mix).
    """
    r = rhat(draws).reshape(-1)
    e = bulk_ess(draws).reshape(-1)
    ok = ~torch.isnan(r)
    worst_r = float(r[ok].max()) if ok.any() else math.nan
    worst_e = float(e[ok].min()) if ok.any() else math.nan
    flagged = bool(ok.any()) and (worst_r > RHAT_MAX or worst_e < ESS_MIN)
    return {"rhat": worst_r, "ess_bulk": worst_e, "num_constant": int((~ok).sum()), "flagged": flagged}


__all__ = ["ESS_MIN", "RHAT_MAX", "bulk_ess", "rank_normalize", "rhat", "split_chains", "summarize"]
