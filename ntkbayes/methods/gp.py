"""Multiclass GP classification: Dirichlet-based GP (Milios et al., NeurIPS 2018) in closed form, or the softmax
likelihood with the Laplace approximation (Rasmussen & Williams 2006, Algorithms 3.3/3.4).

``backend="exact"``, ``likelihood="dirichlet"`` (default): each label y becomes Dirichlet pseudo-counts
α = α_ε + onehot(y) and, per class, the log-normal moment match of Gamma(α_c, 1): a regression target
ỹ_c = log α_c − σ̃²_c/2 with heteroscedastic noise σ̃²_c = log(1/α_c + 1) (GPyTorch's
``DirichletClassificationLikelihood``, computed here in closed form): f_c ~ GP(m_c, s·k) with a constant mean m_c
(generalized least squares), Gaussian noise σ̃² + σ_n², exact posterior and exact log marginal likelihood, which
selects (ℓ, s, σ_n²) on a grid. The predictive samples f* from its per-class marginals and takes the softmax (the
Dirichlet's normalized Gamma draws). Why the default: the softmax-Laplace posterior below is under-confident on
nearly separable data (digits test ECE 0.285, wine 0.247; every output scale tried ≥ 0.13): at the mode the
training points are classified with p ≈ 1, so W = diag π̂ − π̂π̂ᵀ ≈ 0, the latent variance at a test point stays
near the prior's s while the mean k*ᵀ(y − π̂) is held small by y − π̂ ≈ 0, and the Laplace evidence prefers
s ≈ 100 (latent prior std 10): averaging the softmax over that spread flattens it. The Dirichlet model's
Gaussian likelihood has no such saturation; measured (seeds 0–2) ECE 0.035 on digits, 0.056 on wine, accuracy
equal or higher, in seconds.

``likelihood="softmax"``: prior f_c ~ GP(0, s·k) independently per class, softmax likelihood; the posterior mode and the
Laplace covariance come from the NTK core's block Newton solver (``ntk.solve.newton_block`` = R&W Alg. 3.3 with a
line search; ``ntk.posterior.predict`` = Alg. 3.4, math.md (c)/(d)). Kernels: RBF (lengthscale by the median heuristic
or by the Laplace marginal likelihood), or the infinite-width NNGP / NTK of an MLP (``ntk.analytic.mlp_kernels``,
math.md (a)); the output scale s is fixed or chosen by the Laplace log evidence on a grid. The predictive has S =
``num_samples`` members, each softmax(f^(s)) of a latent sample f^(s) ~ N(μ*, Σ*) (MC link), so mutual
information and variance measure the GP's epistemic spread; ``link="probit"`` gives one member softmax(κ∘μ*).

``inference="mcmc"``: the exact softmax-likelihood posterior (no Laplace approximation) of the latents at the
training points, sampled by :func:`ntkbayes.samplers.sample_gp_classification` (NUTS on whitened latents by
default; docs/math.md (f)). Prior covariance per class: s·k for ``rbf``/``nngp`` with (ℓ, s) chosen exactly as
``likelihood="softmax"`` chooses them (fixed numbers, the median heuristic, or the Laplace evidence of this same
softmax model: empirical Bayes, then the exact posterior under the chosen hyperparameters); for ``ntk`` the prior
is Θ/κ, κ = λN (λ = ``weight_decay``), the GP whose MAP each member of ``ntk_ensemble`` is (math.md (c)), and
``outputscale`` is not used. The predictive has one member per kept draw (S = chains · (samples // thin)): the
test logits given that draw (``GPClassificationPosterior.predict_logits``). Convergence is recorded as ``hmc``
records it (function-space R-hat and bulk ESS on the validation probabilities, ``flagged``). The training set
is subsampled to ``max_train`` as for the other inference routes, and more than ``MCMC_MAX_TRAIN`` points are
refused.

``backend="gpytorch"``: for larger data on a GPU, GPyTorch's Dirichlet-based classification (Milios et al.,
NeurIPS 2018: ``DirichletClassificationLikelihood`` turns labels into heteroscedastic Gaussian regression targets
on log-Dirichlet latents), an ``ExactGP`` with one RBF GP per class (``batch_shape = C``) trained by Adam on the exact
marginal likelihood; the predictive samples the latent f from its marginals and takes the softmax. RBF only.
"""

from __future__ import annotations

import math
import time
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor

from ntkbayes.data.splits import stratified_subset
from ntkbayes.methods.base import GaussianLink, Method
from ntkbayes.methods.gp_dirichlet import NOISE_GRID, dirichlet_gp_class, dirichlet_solve, dirichlet_targets
from ntkbayes.models import Activation
from ntkbayes.ntk import posterior, solve
from ntkbayes.predictive import Predictive
from ntkbayes.samplers import diagnostics
from ntkbayes.samplers.gp_classification import (
    DEFAULT_CHAINS,
    DEFAULT_SAMPLES,
    DEFAULT_THIN,
    DEFAULT_WARMUP,
    Sampler,
    sample_gp_classification,
)
from ntkbayes.seeding import derive_seed
from ntkbayes.training import seeded_rng
from ntkbayes.utils import check_memory

#: Largest training set solved exactly; larger ones are subsampled (stratified, seeded). The block Newton costs
#: O(C N³) per iteration and each grid point of the marginal-likelihood search is one solve: N = 1000, C = 10 takes
#: seconds per solve on a laptop CPU.
DEFAULT_MAX_TRAIN = 1000
#: σb of the ``nngp``/``ntk`` kernels' MLP: the NTK ensemble's (both parameterizations give the same NNGP; under
#: σb = 0.05 both kernels are nearly positively homogeneous and the boundaries rays from the origin).
DEFAULT_B_STD = 1.0
#: Latent samples per prediction (MC link): the predictive's members. 200 keeps the MC error of the mean
#: probability below ~0.035 (s.e. ≤ 0.5/√200) while prediction stays cheap.
DEFAULT_NUM_SAMPLES = 200
#: Output scales tried by ``outputscale="ml"`` (prior logit variance s; 0.3 … 100 spans near-uniform to
#: near-deterministic priors on standardized inputs).
OUTPUTSCALE_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: While the best output scale is the largest (smallest) tried, ``outputscale="ml"`` tries it ×(÷) this factor, up
#: to ``MAX_EXTENSIONS`` times: well-separated classes favour large scales beyond the grid.
GRID_EXTENSION = 3.0
MAX_EXTENSIONS = 4
#: Multipliers of the median-heuristic lengthscale tried by ``lengthscale="ml"``.
LENGTHSCALE_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Points used for the median of pairwise distances (O(n²) distances).
MEDIAN_POINTS = 1000
#: Test rows per block of the Dirichlet predictive (bounds the C × N × rows work array).
PREDICT_ROWS = 1024
#: Adam steps and step size for the GPyTorch backend (GPyTorch's Dirichlet classification example uses 50 at 0.1).
DEFAULT_TRAIN_ITERS = 100
DEFAULT_LR = 0.1
#: Largest N that ``inference="mcmc"`` samples (after the ``max_train`` subsample). One NUTS gradient costs
#: O(N²C) (the whitened latents times chol K) and the tree depth grows with N; the sampler's default chain lengths
#: were measured at N = 360 (moons, ~1 min of one CPU thread), so N = 1000 is several times that per chain.
MCMC_MAX_TRAIN = 1000
#: λ of the ``ntk`` kernel's prior Θ/(λN) under ``inference="mcmc"``: the ``ntk_ensemble`` default, so both
#: describe the same GP prior unless a suite sets another one for both.
DEFAULT_WEIGHT_DECAY = 1e-3


class Covariance(str, Enum):
    """Prior covariance function of each class's latent function."""

    RBF = "rbf"
    """s·exp(−‖x−x'‖²/(2ℓ²)); ℓ by ``lengthscale``."""
    NNGP = "nngp"
    """s·K_nngp: infinite-width MLP at initialization (``depth``, ``activation``, ``w_std``, ``b_std``)."""
    NTK = "ntk"
    """s·Θ: infinite-width NTK of the same MLP (the GP whose MAP is the trained wide network, math.md (c))."""


class Likelihood(str, Enum):
    """Observation model of the exact backend (module docstring)."""

    DIRICHLET = "dirichlet"
    """Dirichlet-based GP classification: exact GP regression of log-Dirichlet targets, ML-II on a grid."""
    SOFTMAX = "softmax"
    """Softmax likelihood with the Laplace approximation (under-confident on nearly separable data)."""


class Inference(str, Enum):
    """How the posterior is computed (exact backend)."""

    ANALYTIC = "analytic"
    """The likelihood's closed-form route: exact GP regression of the Dirichlet targets (``likelihood="dirichlet"``)
    or the Laplace approximation (``likelihood="softmax"``)."""
    MCMC = "mcmc"
    """Exact softmax-likelihood posterior sampled by MCMC (``ntkbayes.samplers.sample_gp_classification``);
    ``likelihood`` is not used (the model is the softmax likelihood)."""


class Backend(str, Enum):
    """Solver."""

    EXACT = "exact"
    """Laplace approximation through ``ntk.solve`` (O(C N³), float64)."""
    GPYTORCH = "gpytorch"
    """GPyTorch Dirichlet-based exact GP classification (RBF, Adam on the marginal likelihood); for larger N on GPU."""


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.t()).clamp_min(0)


def median_lengthscale(x: Tensor, generator: torch.Generator | None = None) -> float:
    """Median pairwise Euclidean distance among (at most ``MEDIAN_POINTS`` of) the rows of x (N, D)."""
    if x.shape[0] > MEDIAN_POINTS:
        x = x[torch.randperm(x.shape[0], generator=generator)[:MEDIAN_POINTS].to(x.device)]
    i, j = torch.triu_indices(x.shape[0], x.shape[0], 1)
    d = _sqdist(x, x)[i, j].sqrt()
    med = float(d.median()) if d.numel() else 1.0
    return med if med > 0 else 1.0


def _scale_check(allowed: tuple[str, ...]):
    """Checker of a ``str | float`` scale option: one of ``allowed`` or a positive number."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) > 0:
            return float(value)
        raise ValueError(f"expected one of {list(allowed)} or a positive number, got {value!r}")

    return check


class GPClassifier(Method):
    """Multiclass GP classifier (module docstring). Inputs are flattened to (N, D) and used in float64.

    Args:
        kernel: :class:`Covariance`. lengthscale (rbf): ``"median"``, ``"ml"`` (marginal likelihood — exact for
            ``dirichlet``, Laplace for ``softmax`` — over ``LENGTHSCALE_GRID`` × median) or a number. outputscale: a
            number s or ``"ml"`` (``OUTPUTSCALE_GRID``; for ``softmax`` extended at its edges).
        link: :class:`~ntkbayes.methods.base.GaussianLink`. num_samples: S for the MC link.
        depth, activation, w_std, b_std: the MLP whose infinite-width kernel ``nngp``/``ntk`` use (defaults: the
            NTK ensemble's, σb = 1; with σb = 0.05 the kernels are nearly positively homogeneous and the decision
            boundaries rays from the origin, docs/ntk_ensemble.md).
        max_train: training points used at most (stratified subsample beyond).
        backend: :class:`Backend`. train_iters, lr: Adam settings of the GPyTorch backend.
        likelihood: :class:`Likelihood` of the exact backend (``gpytorch`` is Dirichlet-based).
        inference: :class:`Inference` (module docstring). With ``"mcmc"``: weight_decay λ > 0 (``ntk`` kernel: prior
            Θ/(λN)); sampler (:class:`~ntkbayes.samplers.gp_classification.Sampler`), chains, warmup, samples, thin
            (kept draws per chain: samples // thin ≥ 4) and sampler_seed (varies the chains without changing the
            cell's seed, as ``hmc``'s); ``link`` must be ``"mc"`` and ``num_samples`` is not used.

    ``info_`` with ``inference="mcmc"`` (the keys of ``hmc``): ``rhat`` and ``ess_bulk`` (function space, validation
    probabilities), ``flagged`` (R-hat > 1.05 or bulk ESS < 100), ``divergences``, ``step_size``, ``grad_evals``,
    ``seconds`` (sampling), ``fit_seconds``, ``num_train``; also ``rhat_train``/``ess_bulk_train`` (training
    probabilities), ``rhat_latents``, ``jitter``, the kernel's ``prior_scale`` and for ``ntk`` ``weight_decay`` and
    ``prior_precision`` κ.
    """

    name = "gp"
    family = "gp"
    test_params: ClassVar[dict[str, Any]] = {"num_samples": 4, "train_iters": 5, "max_train": 200}
    dry_run_params: ClassVar[dict[str, Any]] = {"max_train": 64, "num_samples": 8, "train_iters": 3, "chains": 2,
                                                "warmup": 5, "samples": 4, "thin": 1}
    #: The kernel family; its scales are fitted inside the method by the marginal likelihood.
    search_space: ClassVar[dict[str, list]] = {"kernel": ["rbf", "nngp", "ntk"]}
    param_bounds = {"num_samples": (1, None), "depth": (0, None), "w_std": (0.0, None), "b_std": (0.0, None),
                    "max_train": (2, None), "train_iters": (1, None), "lr": (0.0, None), "weight_decay": (0.0, None),
                    "chains": (1, None), "warmup": (0, None), "samples": (4, None), "thin": (1, None),
                    "sampler_seed": (0, None)}
    param_checks = {"lengthscale": _scale_check(("median", "ml")), "outputscale": _scale_check(("ml",))}

    def __init__(self, *, kernel: Covariance = Covariance.RBF, lengthscale: str | float = "ml",
                 outputscale: str | float = "ml", link: GaussianLink = GaussianLink.MC,
                 num_samples: int = DEFAULT_NUM_SAMPLES, depth: int = 2, activation: Activation = Activation.RELU,
                 w_std: float = 1.5, b_std: float = DEFAULT_B_STD, max_train: int = DEFAULT_MAX_TRAIN,
                 backend: Backend = Backend.EXACT, train_iters: int = DEFAULT_TRAIN_ITERS, lr: float = DEFAULT_LR,
                 likelihood: Likelihood = Likelihood.DIRICHLET, inference: Inference = Inference.ANALYTIC,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, sampler: Sampler = Sampler.NUTS,
                 chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP, samples: int = DEFAULT_SAMPLES,
                 thin: int = DEFAULT_THIN, sampler_seed: int = 0):
        self._store_params(locals())

    # -- hyperparameter checks --------------------------------------------------------------------------------
    def _check(self) -> None:
        self.likelihood_ = Likelihood(self.likelihood)
        self.kernel_ = Covariance(self.kernel)
        self.link_ = GaussianLink(self.link)
        self.backend_ = Backend(self.backend)
        self.inference_ = Inference(self.inference)
        if self.inference_ is Inference.MCMC:
            self._check_mcmc()
            self.likelihood_ = Likelihood.SOFTMAX
        if self.backend_ is Backend.GPYTORCH and self.likelihood_ is not Likelihood.DIRICHLET:
            raise ValueError(f"likelihood: backend='gpytorch' is Dirichlet-based, got {self.likelihood_.value!r}")
        if self.backend_ is Backend.GPYTORCH and self.kernel_ is not Covariance.RBF:
            raise ValueError(f"kernel: backend='gpytorch' supports 'rbf' only, got {self.kernel_.value!r}")

    def _check_mcmc(self) -> None:
        """Options of ``inference="mcmc"`` (ValueError naming the option)."""
        Sampler(self.sampler)
        if self.backend_ is not Backend.EXACT:
            raise ValueError(f"backend: inference='mcmc' runs on the exact backend, got {self.backend_.value!r}")
        if self.link_ is not GaussianLink.MC:
            raise ValueError(f"link: inference='mcmc' has one member per posterior draw (link='mc'), got "
                             f"{self.link_.value!r}")
        for key, low in (("chains", 1), ("warmup", 0), ("samples", 1), ("thin", 1), ("sampler_seed", 0)):
            if int(getattr(self, key)) < low:
                raise ValueError(f"{key}: expected an integer ≥ {low}, got {getattr(self, key)!r}")
        if int(self.samples) // int(self.thin) < 4:
            raise ValueError(f"samples: expected samples // thin ≥ 4 (R-hat splits chains), got {self.samples} // "
                             f"{self.thin}")
        if self.kernel_ is Covariance.NTK:
            if not (float(self.weight_decay) > 0 and math.isfinite(float(self.weight_decay))):
                raise ValueError(f"weight_decay: inference='mcmc' with kernel='ntk' needs λ > 0 (prior Θ/(λN)), got "
                                 f"{self.weight_decay!r}")
            if self.outputscale != "ml":
                raise ValueError(f"outputscale: inference='mcmc' with kernel='ntk' uses the prior Θ/(λN) (set "
                                 f"weight_decay instead), got {self.outputscale!r}")

    @property
    def _activation(self) -> str:
        return Activation(self.activation).value

    # -- kernels ----------------------------------------------------------------------------------------------
    def _base_kernel(self, x1: Tensor, x2: Tensor, lengthscale: float | None) -> Tensor:
        """Unscaled kernel (N, M): exp(−d²/2ℓ²) or the analytic NNGP / NTK."""
        if self.kernel_ is Covariance.RBF:
            return torch.exp(-_sqdist(x1, x2) / (2 * lengthscale**2))
        from ntkbayes.ntk.analytic import mlp_kernels

        # the square path for K(X, X): exactly symmetric with exact diagonal expectations (quadrature activations)
        nngp, ntk = mlp_kernels(x1, None if x2 is x1 else x2, depth=self.depth, activation=self._activation,
                                w_std=self.w_std, b_std=self.b_std)
        return (nngp if self.kernel_ is Covariance.NNGP else ntk).to(x1.dtype)

    def _base_diag(self, x: Tensor) -> Tensor:
        if self.kernel_ is Covariance.RBF:
            return torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        from ntkbayes.ntk.analytic import mlp_kernels_diag

        nngp, ntk = mlp_kernels_diag(x, depth=self.depth, activation=self._activation, w_std=self.w_std,
                                     b_std=self.b_std)
        return (nngp if self.kernel_ is Covariance.NNGP else ntk).to(x.dtype)

    # -- fit --------------------------------------------------------------------------------------------------
    def _fit(self, data, seed: int, device: torch.device) -> None:
        self._check()
        self.seed_ = seed
        gen = torch.Generator().manual_seed(derive_seed(seed, "gp_lengthscale"))
        x, y = data.train.x.flatten(1).to(device, torch.float64), data.train.y.to(device)
        n_all, C = x.shape[0], self.num_classes_
        if n_all > int(self.max_train):
            keep = torch.as_tensor(stratified_subset(y.cpu(), int(self.max_train), derive_seed(seed, "gp_subset")),
                                   device=device)
            x, y = x[keep], y[keep]
        N = x.shape[0]
        self.x_train_ = x
        self.info_: dict[str, Any] = {"backend": self.backend_.value, "kernel": self.kernel_.value, "n_train": N,
                                      "subsampled_from": n_all if N < n_all else None}
        check_memory((3 * C + 2) * N**2 * 8, device, f"GP classification kernel solve (N = {N}, C = {C})",
                     "max_train (subsample the training set)")
        median = median_lengthscale(x, gen) if self.kernel_ is Covariance.RBF else None
        if self.backend_ is Backend.GPYTORCH:
            self._fit_gpytorch(x, y, C, seed, median)
            return
        Y = torch.nn.functional.one_hot(y, C).to(torch.float64)
        if self.kernel_ is not Covariance.RBF:
            lengthscales = [None]
        elif self.lengthscale == "ml":
            lengthscales = [median * m for m in LENGTHSCALE_GRID]
        else:
            lengthscales = [median if self.lengthscale == "median" else float(self.lengthscale)]
        scales = list(OUTPUTSCALE_GRID) if self.outputscale == "ml" else [float(self.outputscale)]
        self.info_.update(likelihood=self.likelihood_.value, lengthscale_median=median,
                          inference=self.inference_.value)
        if self.inference_ is Inference.MCMC:
            x_val = data.val.x if len(data.val) else data.train.x
            self._fit_mcmc(x, Y, lengthscales, scales, x_val.flatten(1).to(device, torch.float64), seed)
            return
        if self.likelihood_ is Likelihood.DIRICHLET:
            self._fit_dirichlet(x, y, C, lengthscales, scales)
            return
        ls, s, res, grid = self._search(x, Y, lengthscales, scales)
        self.lengthscale_, self.outputscale_, self.result_ = ls, s, res
        rep = res.report()
        tried_s = sorted({g[1] for g in grid})
        self.info_.update({
            "lengthscale": ls, "lengthscale_median": median, "outputscale": s,
            "log_evidence": float(res.log_evidence[0]),
            "newton_iterations": rep["max_iterations"], "converged": rep["all_converged"],
            "grid": grid if len(grid) > 1 else None,
            "at_grid_edge": (len(lengthscales) > 1 and ls in (lengthscales[0], lengthscales[-1]))
            or (len(tried_s) > 1 and s in (tried_s[0], tried_s[-1])),
        })

    def _search(self, x: Tensor, Y: Tensor, lengthscales: list, scales: list):
        """Maximize the Laplace log evidence log q(Y | ℓ, s) (math.md (c)) over the grid; the output scale is
        extended by factors of ``GRID_EXTENSION`` while the best one sits at the grid's edge (at most
        ``MAX_EXTENSIONS`` times each way). Returns (ℓ, s, NewtonResult, grid rows [ℓ, s, log q])."""
        grid, best = [], None
        bases = {ls: self._base_kernel(x, x, ls) for ls in lengthscales}

        def evaluate(ls, s):
            nonlocal best
            res = solve.newton_block(s * bases[ls], None, Y)
            grid.append([ls, s, float(res.log_evidence[0])])
            if best is None or grid[-1][2] > best[2]:
                best = (ls, s, grid[-1][2], res)

        for ls in lengthscales:
            for s in scales:
                evaluate(ls, s)
        if len(scales) > 1:
            for _ in range(MAX_EXTENSIONS):
                tried = sorted({g[1] for g in grid if g[0] == best[0]})
                if best[1] == tried[-1]:
                    evaluate(best[0], tried[-1] * GRID_EXTENSION)
                elif best[1] == tried[0]:
                    evaluate(best[0], tried[0] / GRID_EXTENSION)
                else:
                    break
        return best[0], best[1], best[3], grid

    def _fit_mcmc(self, x: Tensor, Y: Tensor, lengthscales: list, scales: list, x_val: Tensor, seed: int) -> None:
        """Prior covariance (module docstring), then the softmax posterior by MCMC and its diagnostics."""
        start = time.perf_counter()
        x, Y, x_val = x.cpu(), Y.cpu(), x_val.cpu()                   # the samplers run on the CPU (pyro NUTS)
        self.x_train_ = x
        N = x.shape[0]
        if N > MCMC_MAX_TRAIN:
            raise ValueError(f"inference='mcmc': N = {N} training points exceed MCMC_MAX_TRAIN = {MCMC_MAX_TRAIN} "
                             f"(NUTS costs O(N²C) per gradient); set max_train ≤ {MCMC_MAX_TRAIN} to subsample")
        if self.kernel_ is Covariance.NTK:
            kappa = float(self.weight_decay) * N                                 # κ = λN, math.md §0 and (c)
            ls, s = None, 1.0 / kappa
            self.info_.update(weight_decay=float(self.weight_decay), prior_precision=kappa)
        elif len(lengthscales) * len(scales) > 1:                               # empirical Bayes, same model
            ls, s, res, grid = self._search(x, Y, lengthscales, scales)
            tried_s = sorted({g[1] for g in grid})
            self.info_.update(log_evidence_laplace=float(res.log_evidence[0]), grid=grid,
                              at_grid_edge=(len(lengthscales) > 1 and ls in (lengthscales[0], lengthscales[-1]))
                              or (len(tried_s) > 1 and s in (tried_s[0], tried_s[-1])))
        else:
            ls, s = lengthscales[0], scales[0]
        self.lengthscale_, self.outputscale_ = ls, s
        self.info_.update(lengthscale=ls, outputscale=None if self.kernel_ is Covariance.NTK else s, prior_scale=s)
        self.mcmc_seed_ = derive_seed(seed, "gp_mcmc", int(self.sampler_seed))
        self.predict_seed_ = derive_seed(seed, "gp_mcmc_predict", int(self.sampler_seed))
        post = sample_gp_classification(s * self._base_kernel(x, x, ls), Y, chains=int(self.chains),
                                        warmup=int(self.warmup), samples=int(self.samples), thin=int(self.thin),
                                        seed=self.mcmc_seed_, sampler=self.sampler)
        self.posterior_ = post
        chains, draws = post.whitened.shape[:2]
        val_probs = torch.softmax(self._mcmc_mean(x_val), -1).reshape(chains, draws, -1)
        info = post.info()
        self.info_.update({
            "sampler": Sampler(self.sampler).value, "chains": chains, "draws_per_chain": draws,
            "step_size": info["step_size"], "divergences": info["divergences"], "grad_evals": info["lik_evals"],
            "seconds": info["seconds"], "jitter": info["jitter"],
            **diagnostics.summarize(val_probs),
            "rhat_train": info["rhat"], "ess_bulk_train": info["ess_bulk"], "rhat_latents": info["rhat_latents"],
            "num_train": N, "fit_seconds": round(time.perf_counter() - start, 3),
        })

    def _mcmc_mean(self, x: Tensor) -> Tensor:
        """(S, M, C) conditional means K*X K⁻¹ F of the test latents, one per draw (no conditional noise)."""
        k_cross = self.outputscale_ * self._base_kernel(x, self.x_train_, self.lengthscale_)
        a_t = torch.linalg.solve_triangular(self.posterior_.chol, k_cross.t(), upper=False)
        v = self.posterior_.whitened.reshape(-1, *self.posterior_.whitened.shape[2:])
        return torch.einsum("nm,snc->smc", a_t, v)

    def _fit_dirichlet(self, x: Tensor, y: Tensor, C: int, lengthscales: list, scales: list) -> None:
        """Exact Dirichlet-based GP (module docstring): (ℓ, s, σ_n²) maximizing the log marginal likelihood over
        the grid lengthscales × scales × :data:`NOISE_GRID`; the grid rows [ℓ, s, σ_n², log p] go to ``info_``."""
        targets, var = dirichlet_targets(y, C)
        grid, best = [], None
        for ls in lengthscales:
            base = self._base_kernel(x, x, ls)
            for s in scales:
                for noise in NOISE_GRID:
                    sol = dirichlet_solve(s * base, targets, var + noise)
                    grid.append([ls, s, noise, sol[3]])
                    if best is None or sol[3] > best[0][3]:
                        best = (sol, ls, s, noise)
        (self.chol_, self.alpha_, self.mean_, lml), ls, s, noise = best
        self.lengthscale_, self.outputscale_ = ls, s
        edge = any(len(v) > 1 and b in (v[0], v[-1]) for v, b in ((lengthscales, ls), (scales, s)))
        self.info_.update(lengthscale=ls, outputscale=s, noise=noise, log_marginal_likelihood=lml,
                          grid=grid if len(grid) > 1 else None, at_grid_edge=edge or noise == NOISE_GRID[-1])

    def _latent_dirichlet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean (M, C) and diagonal covariance (M, C, C) of the Dirichlet model, in row blocks."""
        means, variances = [], []
        prior_var = self.outputscale_ * self._base_diag(x)
        for a in range(0, x.shape[0], PREDICT_ROWS):
            ks = self.outputscale_ * self._base_kernel(x[a:a + PREDICT_ROWS], self.x_train_, self.lengthscale_)
            means.append(ks @ self.alpha_.t() + self.mean_)
            v = torch.linalg.solve_triangular(self.chol_, ks.t().expand(self.chol_.shape[0], -1, -1), upper=False)
            variances.append((prior_var[a:a + PREDICT_ROWS, None] - (v * v).sum(1).t()).clamp_min(0))
        return torch.cat(means), torch.diag_embed(torch.cat(variances))

    def _fit_gpytorch(self, x: Tensor, y: Tensor, C: int, seed: int, median: float) -> None:
        with seeded_rng(derive_seed(seed, "gpytorch"), x.device):  # GPyTorch draws from the global RNG
            self._train_gpytorch(x, y, C, median)

    def _train_gpytorch(self, x: Tensor, y: Tensor, C: int, median: float) -> None:
        import gpytorch

        if int(y.max()) + 1 != C or torch.unique(y).numel() != C:
            raise ValueError(f"backend='gpytorch': the training labels must contain all {C} classes")
        lik = gpytorch.likelihoods.DirichletClassificationLikelihood(y, learn_additional_noise=True,
                                                                     dtype=torch.float64).to(x.device)
        model = dirichlet_gp_class()(x, lik.transformed_targets, lik, C, median).to(x.device)
        model.train()
        lik.train()
        opt = torch.optim.Adam(model.parameters(), lr=float(self.lr))
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
        loss = torch.tensor(float("nan"))
        for _ in range(int(self.train_iters)):
            opt.zero_grad()
            loss = -mll(model(x), lik.transformed_targets).sum()
            loss.backward()
            opt.step()
        model.eval()
        lik.eval()
        self.gp_model_ = model
        self.info_.update({
            "lengthscale_median": median, "final_loss": float(loss.detach()),
            "lengthscale": model.covar_module.base_kernel.lengthscale.detach().flatten().tolist(),
            "outputscale": model.covar_module.outputscale.detach().flatten().tolist(),
        })

    # -- predict ----------------------------------------------------------------------------------------------
    def _latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Latent predictive mean (M, C) and covariance (M, C, C) (diagonal for the GPyTorch backend)."""
        if self.backend_ is Backend.GPYTORCH:
            import gpytorch

            with gpytorch.settings.fast_pred_var():
                dist = self.gp_model_(x)
            return dist.mean.t(), torch.diag_embed(dist.variance.t())
        if self.likelihood_ is Likelihood.DIRICHLET:
            return self._latent_dirichlet(x)
        s = self.outputscale_
        mean, cov = posterior.predict(self.result_, s * self._base_kernel(x, self.x_train_, self.lengthscale_),
                                  s * self._base_diag(x))                          # math.md (d), R&W Alg. 3.4
        return mean[0], cov[0]

    def _predict(self, x: Tensor) -> Predictive:
        x = x.flatten(1).to(self.x_train_.device, torch.float64)
        if x.shape[1] != self.x_train_.shape[1]:
            raise ValueError(f"x: expected {self.x_train_.shape[1]} features, got {x.shape[1]}")
        if self.inference_ is Inference.MCMC:                       # one member per posterior draw
            s = self.outputscale_
            return Predictive.from_logits(self.posterior_.predict_logits(
                s * self._base_kernel(x, self.x_train_, self.lengthscale_), s * self._base_diag(x),
                seed=self.predict_seed_))
        mean, cov = self._latent(x)
        if self.link_ is GaussianLink.PROBIT:
            return Predictive.from_logits(posterior.probit_logits(mean, cov).unsqueeze(0))
        gen = torch.Generator().manual_seed(derive_seed(self.seed_, "gp_samples"))
        return Predictive.from_logits(posterior.sample_logits(mean, cov, int(self.num_samples), gen))
