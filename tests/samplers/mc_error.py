"""Monte-Carlo error checks shared by the sampler tests: an estimate is compared with a known value within
``Z_TOL`` standard errors, the standard error being sd / sqrt(ESS) with the Geyer/Stan ESS of the draws."""

from __future__ import annotations

import torch
from pyro.ops.stats import effective_sample_size

#: Standard errors allowed. For a correct sampler each check fails with probability ≈ 2Φ(−4.5) = 7e-6, so a file
#: with ~20 such checks fails by chance with probability ~1e-4 — and never, as the seeds are fixed.
Z_TOL = 4.5


def assert_mc_close(draws: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """draws (chains, n, Q): the mean over chains and draws of each quantity is within Z_TOL·SE of ``expected``."""
    draws = draws.to(torch.float64).reshape(draws.shape[0], draws.shape[1], -1)
    expected = torch.as_tensor(expected, dtype=torch.float64).reshape(-1)
    est = draws.mean((0, 1))
    ess = effective_sample_size(draws, chain_dim=0, sample_dim=1)
    se = draws.reshape(-1, draws.shape[-1]).std(0) / ess.sqrt()
    z = (est - expected).abs() / se
    assert bool((z < Z_TOL).all()), f"{what}: estimate {est.tolist()} vs {expected.tolist()}, z = {z.tolist()}, " \
                                    f"ESS = {ess.tolist()}"
