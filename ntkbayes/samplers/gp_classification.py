"""Exact GP-classification posterior with a softmax likelihood, sampled by elliptical slice sampling.

Model (docs/math.md §0 and (c)): latents F ∈ R^{N×C}, prior F ~ N(0, K ⊗ I_C) (sample-major: the C columns are
independent, each N(0, K)), likelihood Π_i Π_c softmax(F_i)_c^{Y_ic} with one-hot or label-smoothed rows Y_i. For
the NTK ensemble's kernel use K = Θ/κ, κ = λN (math.md (c): the members are MAPs of this posterior's density).

Whitening: F = L V with L = chol(K) (plus the smallest jitter that factors it) and V ∈ R^{N×C} with prior N(0, I);
V is sampled by NUTS (default) or by :func:`~ntkbayes.samplers.elliptical.elliptical_slice` (:class:`Sampler`).
Elliptical slice sampling needs no tuning and is exact for the Gaussian prior, and it is what small problems and
the quadrature tests use; at N in the hundreds with a kernel scale well above the likelihood's curvature it moves
along the ellipse in small random-walk steps and mixes far more slowly than NUTS (figures at ``DEFAULT_CHAINS``).

Prediction at test points x* (per class c, independently): f*_c | F_c ~ N(K*X K⁻¹ F_c, K** − K*X K⁻¹ K_X*) with
K*X K⁻¹ F_c = A V_c with A = K*X L⁻ᵀ (M×N). Each posterior draw gives one member: test logits
f* = A V + sqrt(diag Σ*) ⊙ ε, ε ~ N(0, I) drawn independently per point — the per-point marginal of the conditional
Gaussian, which is all a per-point predictive needs (the mean over members of softmax(f*) is the posterior predictive
p(y* | x*, D) at every point; correlations between test points are not represented).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from ntkbayes.ntk.ensemble_kernel import chol_jitter
from ntkbayes.samplers import diagnostics
from ntkbayes.samplers.elliptical import elliptical_slice
from ntkbayes.samplers.nuts import nuts

#: Defaults (for the default sampler, NUTS), measured on moons (N = 360, C = 2) with the NTK kernel Θ/κ,
#: λ = 1e-3: 4 chains × (150 warm-up + 100 draws) give function-space R-hat 1.02-1.03 and bulk ESS ~300 of 400 draws
#: in 8e4 gradient evaluations (~1 min of one CPU thread); elliptical slice sampling with 4 × 5000 iterations
#: (thinned by 10, 2.2e5 likelihood evaluations, ~1.5 min) reached only R-hat 1.2 and ESS 17 there.
DEFAULT_CHAINS = 4
DEFAULT_WARMUP = 150
DEFAULT_SAMPLES = 100
DEFAULT_THIN = 1

class Sampler(str, Enum):
    """MCMC algorithm on the whitened latents V."""

    ESS = "ess"
    """Elliptical slice sampling: no tuning, no gradients, exact for the Gaussian prior; mixes slowly when the
    posterior is much narrower than the prior (large kernel scale, many points)."""
    NUTS = "nuts"
    """NUTS (pyro) on V with potential −log L(chol·V) + ½‖V‖²: gradients and adaptation, faster mixing per draw."""


def _targets(y: Tensor, n: int, num_classes: int | None) -> Tensor:
    """(N, C) float64 target rows from integer labels (N,) or soft/one-hot rows (N, C)."""
    if y.ndim == 1:
        if num_classes is None:
            num_classes = int(y.max()) + 1
        return torch.nn.functional.one_hot(y.long(), num_classes).to(torch.float64)
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"targets: expected (N,) labels or (N, C) rows with N = {n}, got {tuple(y.shape)}")
    return y.to(torch.float64)


@dataclass
class GPClassificationPosterior:
    """Posterior draws of the whitened latents and what prediction needs.

    Attributes:
        whitened: (chains, draws, N, C) float64 draws of V (F = chol · V).
        chol: (N, N) lower Cholesky factor of K (+ jitter·mean(diag K)·I).
        jitter: relative jitter that was needed (0 when K factored as given).
        lik_evals: likelihood evaluations of the run (gradient evaluations for NUTS). seconds: sampling time.
        divergences: NUTS divergent transitions after warm-up, all chains (0 for elliptical slice sampling).
        step_size: NUTS's adapted step size per chain (empty for elliptical slice sampling).
    """

    whitened: Tensor
    chol: Tensor
    jitter: float
    lik_evals: int
    seconds: float
    divergences: int = 0
    step_size: tuple[float, ...] = ()

    @property
    def latents(self) -> Tensor:
        """(S, N, C) draws of F at the training points, S = chains · draws."""
        v = self.whitened.reshape(-1, *self.whitened.shape[2:])
        return torch.matmul(self.chol, v)

    def diagnostics(self) -> dict[str, float]:
        """:func:`diagnostics.summarize` of the class probabilities softmax(F) at the N training points (function
        space, as ``hmc``: latents of confidently classified points drift slowly along directions the likelihood
        barely constrains — their R-hat stays high while every probability has converged), plus ``rhat_latents``,
        the max R-hat over the N·C latents themselves."""
        chains, draws = self.whitened.shape[:2]
        latents = self.latents
        probs = torch.softmax(latents, -1).reshape(chains, draws, -1)
        return {**diagnostics.summarize(probs),
                "rhat_latents": diagnostics.summarize(latents.reshape(chains, draws, -1))["rhat"]}

    def info(self) -> dict:
        """JSON-serializable facts: chains, draws, jitter, likelihood evaluations, divergences, step sizes, time and
        :meth:`diagnostics`."""
        return {"chains": int(self.whitened.shape[0]), "draws_per_chain": int(self.whitened.shape[1]),
                "jitter": self.jitter, "lik_evals": int(self.lik_evals), "divergences": int(self.divergences),
                "step_size": [float(s) for s in self.step_size], "seconds": round(self.seconds, 3),
                **self.diagnostics()}

    def predict_logits(self, k_cross: Tensor, k_test_diag: Tensor, seed: int = 0) -> Tensor:
        """Test logits, one member per posterior draw.

        Args:
            k_cross: (M, N) K(x*, X). k_test_diag: (M,) K(x*, x*).
            seed: seed of the generator drawing the conditional noise ε.

        Returns:
            (S, M, C) float64 logits f* (module docstring); softmax over the last axis gives member probabilities.
        """
        n = self.chol.shape[0]
        k_cross = k_cross.to(torch.float64)
        if k_cross.ndim != 2 or k_cross.shape[1] != n or k_test_diag.shape != (k_cross.shape[0],):
            raise ValueError(f"predict_logits: expected k_cross (M, {n}) and k_test_diag (M,), got "
                             f"{tuple(k_cross.shape)} and {tuple(k_test_diag.shape)}")
        a_t = torch.linalg.solve_triangular(self.chol, k_cross.t(), upper=False)  # (N, M) = L⁻¹ K_X*
        var = (k_test_diag.to(torch.float64) - (a_t * a_t).sum(0)).clamp_min(0.0)  # (M,) diag Σ*
        v = self.whitened.reshape(-1, *self.whitened.shape[2:])  # (S, N, C)
        mean = torch.einsum("nm,snc->smc", a_t, v)
        gen = torch.Generator().manual_seed(int(seed))
        eps = torch.randn(mean.shape, generator=gen, dtype=torch.float64)
        return mean + var.sqrt()[None, :, None] * eps


def sample_gp_classification(kernel: Tensor, targets: Tensor, *, num_classes: int | None = None,
                             chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP,
                             samples: int = DEFAULT_SAMPLES, thin: int = DEFAULT_THIN,
                             seed: int = 0, sampler: str | Sampler = Sampler.NUTS) -> GPClassificationPosterior:
    """Sample the softmax GP-classification posterior of the latents at the training points (module docstring).

    Args:
        kernel: (N, N) prior covariance K of each class's latent (symmetric PSD; e.g. s·k_rbf, K_nngp, Θ/κ).
        targets: (N,) integer labels, or (N, C) one-hot / label-smoothed rows (each summing to 1).
        num_classes: C when ``targets`` are labels (default: max label + 1).
        chains, warmup, samples, thin: sampler settings (per chain: ``samples // thin`` draws).
        seed: chain starts are prior draws (V = 0 would put every chain at the same point) and the sampler's
            generator is seeded from it.
        sampler: :class:`Sampler`.

    Returns:
        :class:`GPClassificationPosterior`.
    """
    kernel = kernel.to(torch.float64)
    n = kernel.shape[0]
    if kernel.shape != (n, n):
        raise ValueError(f"kernel: expected a square (N, N) matrix, got {tuple(kernel.shape)}")
    y = _targets(targets, n, num_classes)
    c = y.shape[1]
    chol, jitter = chol_jitter(kernel)

    def log_lik(z: Tensor) -> Tensor:  # (B, N·C) whitened → (B,)
        f = torch.matmul(chol, z.reshape(-1, n, c))
        return (y * torch.log_softmax(f, -1)).sum((1, 2))

    try:
        sampler = Sampler(sampler)
    except ValueError:
        raise ValueError(f"sampler: expected one of {[m.value for m in Sampler]}, got {sampler!r}") from None
    gen = torch.Generator().manual_seed(int(seed))
    init = torch.randn(chains, n * c, generator=gen, dtype=torch.float64)
    if sampler is Sampler.NUTS:
        run = nuts(lambda z: 0.5 * (z * z).sum() - log_lik(z[None])[0], init, warmup=warmup, samples=samples,
                   thin=thin, seed=int(seed) + 1)
        draws, evals, seconds = run.samples, sum(run.grad_evals), sum(run.seconds)
        nuts_facts = {"divergences": int(sum(run.divergences)), "step_size": tuple(float(s) for s in run.step_sizes)}
    else:
        ess = elliptical_slice(log_lik, init, warmup=warmup, samples=samples, thin=thin, seed=int(seed) + 1)
        draws, evals, seconds = ess.samples, ess.lik_evals, ess.seconds
        nuts_facts = {}
    return GPClassificationPosterior(whitened=draws.reshape(chains, -1, n, c), chol=chol, jitter=jitter,
                                     lik_evals=evals, seconds=seconds, **nuts_facts)

__all__ = ["GPClassificationPosterior", "Sampler", "sample_gp_classification"]
