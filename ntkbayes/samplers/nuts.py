"""No-U-Turn sampling of a flat parameter vector with pyro-ppl (Hoffman & Gelman 2014; Stan's multinomial variant).

:func:`nuts` takes a potential U(θ) = −log p(θ | D) + const on θ ∈ R^P and runs ``chains`` independent chains one
after another on the current process (pyro's multi-chain mode forks worker processes; sequential chains keep the
run deterministic and single-threaded). Each chain has its own kernel: step size adapted by dual averaging to the
target acceptance probability and a diagonal mass matrix adapted over the warm-up windows (pyro's defaults, Stan's
schedule). Thinning keeps every ``thin``-th draw after warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer.mcmc import MCMC, NUTS
from torch import Tensor

from ntkbayes.samplers import diagnostics

#: Pyro's (and Stan's) default NUTS settings, kept as the defaults here.
DEFAULT_TARGET_ACCEPT = 0.8
DEFAULT_MAX_TREE_DEPTH = 10


@dataclass
class NUTSResult:
    """Draws and per-chain facts of a :func:`nuts` run.

    Attributes:
        samples: (chains, draws, P) float64 draws after warm-up and thinning.
        step_sizes: adapted step size of each chain.
        divergences: divergent transitions after warm-up, per chain (counted over all post-warm-up iterations,
            thinned or not).
        grad_evals: potential-and-gradient evaluations per chain (warm-up included): the run's cost unit.
        seconds: wall time per chain.
    """

    samples: Tensor
    step_sizes: list[float] = field(default_factory=list)
    divergences: list[int] = field(default_factory=list)
    grad_evals: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def diagnostics(self) -> dict[str, float]:
        """:func:`diagnostics.summarize` of the parameter draws (max R-hat, min bulk ESS over the P coordinates)."""
        return diagnostics.summarize(self.samples)

    def info(self) -> dict:
        """JSON-serializable summary: per-chain step size, total divergences, gradient evaluations and time."""
        return {
            "chains": int(self.samples.shape[0]),
            "draws_per_chain": int(self.samples.shape[1]),
            "step_size": [float(s) for s in self.step_sizes],
            "divergences": int(sum(self.divergences)),
            "grad_evals": int(sum(self.grad_evals)),
            "seconds": round(float(sum(self.seconds)), 3),
        }


def nuts(potential_fn: Callable[[Tensor], Tensor], init: Tensor, *, warmup: int, samples: int, thin: int = 1,
         seed: int = 0, target_accept: float = DEFAULT_TARGET_ACCEPT,
         max_tree_depth: int = DEFAULT_MAX_TREE_DEPTH) -> NUTSResult:
    """Sample exp(−U(θ)) with NUTS, one chain per row of ``init``.

    Args:
        potential_fn: θ (P,) → scalar U(θ), differentiable by autograd (float64 recommended).
        init: (chains, P) starting points, one per chain.
        warmup: adaptation iterations per chain (discarded). samples: post-warm-up iterations per chain; ``samples
            // thin`` draws are kept per chain. thin: keep every ``thin``-th iteration.
        seed: chain k draws its momenta from the torch global RNG seeded with ``seed + k`` inside a
            ``fork_rng`` block (the caller's RNG state is restored afterwards).
        target_accept, max_tree_depth: NUTS settings (pyro's defaults).

    Returns:
        :class:`NUTSResult`.
    """
    if init.ndim != 2:
        raise ValueError(f"init: expected shape (chains, P), got {tuple(init.shape)}")
    if warmup < 0 or samples < 1 or thin < 1:
        raise ValueError(f"nuts: expected warmup ≥ 0, samples ≥ 1, thin ≥ 1, got {warmup}, {samples}, {thin}")
    if samples // thin < 1:
        raise ValueError(f"nuts: samples // thin must be ≥ 1, got {samples} // {thin}")
    calls = [0]

    def potential(z: dict[str, Tensor]) -> Tensor:
        calls[0] += 1
        return potential_fn(z["theta"])

    result = NUTSResult(samples=torch.empty(0))
    draws = []
    for k, theta0 in enumerate(init):
        calls[0] = 0
        kernel = NUTS(potential_fn=potential, target_accept_prob=target_accept, max_tree_depth=max_tree_depth)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False):
            torch.manual_seed(int(seed) + k)
            mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup,
                        initial_params={"theta": theta0.detach().clone()}, disable_progbar=True)
            mcmc.run()
        result.seconds.append(time.perf_counter() - start)
        chain = mcmc.get_samples(group_by_chain=True)["theta"][0]  # (samples, P)
        draws.append(chain[thin - 1::thin][: samples // thin].to(torch.float64))
        diag = mcmc.diagnostics()
        result.step_sizes.append(float(kernel.step_size))
        result.divergences.append(len(diag["divergences"]["chain 0"]))
        result.grad_evals.append(calls[0])
    result.samples = torch.stack(draws)
    return result


__all__ = ["DEFAULT_MAX_TREE_DEPTH", "DEFAULT_TARGET_ACCEPT", "NUTSResult", "nuts"]
