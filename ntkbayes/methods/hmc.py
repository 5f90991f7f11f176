"""``hmc``: the parameter posterior of the MAP family's MLP, sampled with NUTS — a gold-standard reference.

Model (docs/math.md §0): the MAP objective (1/N) Σ_i CE(f(x_i; θ), y_i) + (λ/2)‖θ‖² (λ = ``weight_decay``, every
weight and bias) is −(1/N) log p(θ | D) + const of the Bayesian model

    p(θ | D) ∝ Π_i softmax(f(x_i; θ))_{y_i} · N(θ; 0, κ⁻¹ I),   κ = λN,

so ``hmc`` samples the posterior whose mode the ``map`` method (same width/depth/activation/w_std/b_std,
standard parameterization) approximates with the same ``weight_decay``. Potential U(θ) = Σ_i CE + (κ/2)‖θ‖²,
float64, full batch. Chains start at independent draws of the network's initialization (He-style scale σw/√fan_in,
not the prior: κ⁻¹ᐟ² can be far larger) and run NUTS (:func:`ntkbayes.samplers.nuts`) with pyro's adaptation.

Predictive: one member per kept draw, softmax(f(x; θ_s)); S = chains · (samples // thin).

Convergence (Vehtari et al. 2021 rank-normalized split R-hat, bulk ESS) is judged in **function space**: on the
class probabilities of the validation inputs (the training inputs if there is no validation split; every point ×
class is a quantity; worst case over them). Parameter
space R-hat is meaningless for a network — hidden-unit permutations and sign flips make every chain's posterior
mode a different point with the same predictive — so it is recorded (``rhat_params``) but does not flag. A fit
with R-hat > 1.05 or bulk ESS < 100 sets ``info_["flagged"] = True``.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from ntkbayes.methods.base import Method
from ntkbayes.models import Activation, build_model
from ntkbayes.predictive import Predictive
from ntkbayes.samplers import diagnostics
from ntkbayes.samplers.nuts import DEFAULT_MAX_TREE_DEPTH, DEFAULT_TARGET_ACCEPT, nuts
from ntkbayes.seeding import derive_seed

#: Hidden units (see the README's reference section for the measured cost): narrow enough that NUTS mixes in
#: minutes on one CPU thread, wide enough to fit moons/spirals.
DEFAULT_WIDTH = 16
#: Hidden layers, as the MAP family's default.
DEFAULT_DEPTH = 2
#: λ: prior precision κ = λN, prior sd κ^{-1/2} (0.53 on moons, N = 360): the λ at which the figures below were
#: measured. The MAP family's default 1e-4 (sd 5.3 on moons) was not measured here; a suite comparing methods
#: against ``hmc`` sets one ``weight_decay`` for all of them.
DEFAULT_WEIGHT_DECAY = 1e-2
#: Chains × (warm-up + draws): measured on moons (width 16, λ = 1e-2, one thread): function-space R-hat 1.016 and
#: bulk ESS 346 of 400 draws, no divergences, 1.45e5 gradient evaluations (~2.5 min of CPU); see the README.
DEFAULT_CHAINS = 4
DEFAULT_WARMUP = 150
DEFAULT_SAMPLES = 100
DEFAULT_THIN = 1


class HMC(Method):
    """NUTS posterior of an MLP under the weight-decay prior (module docstring).

    Args:
        width, depth, activation, w_std, b_std: the MLP (standard parameterization, as ``map``).
        weight_decay: λ; the prior is N(0, (λN)⁻¹ I) on every parameter.
        chains, warmup, samples, thin: NUTS settings per chain (kept draws per chain: samples // thin).
        max_tree_depth, target_accept: NUTS settings (pyro's defaults 10 and 0.8).
        sampler_seed: varies the chains' starting points and momenta without changing the cell's seed (which also
            picks the data split): two references on the same split with different ``sampler_seed`` measure how
            stable the reference is.

    ``info_``: ``rhat`` and ``ess_bulk`` (function space, validation probabilities), ``rhat_params`` (max over
    parameters), ``flagged``, ``step_size`` (per chain), ``divergences``, ``grad_evals``,
    ``seconds``, ``prior_precision`` κ.
    """

    name = "hmc"
    family: ClassVar[str] = "reference"
    test_params: ClassVar[dict[str, Any]] = {"width": 4, "depth": 1, "chains": 2, "warmup": 10, "samples": 8,
                                             "thin": 1, "max_tree_depth": 4}
    dry_run_params: ClassVar[dict[str, Any]] = {"chains": 2, "warmup": 5, "samples": 4, "thin": 1,
                                                "max_tree_depth": 3}
    search_space: ClassVar[dict[str, list]] = {}
    #: Inclusive bounds for the suite-time check of base.Method.check_param (None = open); ``_check`` re-checks at
    #: fit time together with samples // thin ≥ 4 and 0 < target_accept < 1.
    param_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "width": (1, None), "depth": (0, None), "chains": (1, None), "warmup": (0, None), "samples": (4, None),
        "thin": (1, None), "max_tree_depth": (1, None), "sampler_seed": (0, None)}

    def __init__(self, *, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH, activation: str = "relu",
                 w_std: float = 1.5, b_std: float = 0.05, weight_decay: float = DEFAULT_WEIGHT_DECAY,
                 chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP, samples: int = DEFAULT_SAMPLES,
                 thin: int = DEFAULT_THIN, max_tree_depth: int = DEFAULT_MAX_TREE_DEPTH,
                 target_accept: float = DEFAULT_TARGET_ACCEPT, sampler_seed: int = 0):
        self._store_params(locals())

    def _check(self) -> None:
        try:
            Activation(self.activation)
        except ValueError:
            raise ValueError(f"activation: expected one of {', '.join(repr(a.value) for a in Activation)}, got "
                             f"{self.activation!r}") from None
        for key in ("width", "depth", "chains", "warmup", "samples", "thin", "max_tree_depth"):
            low = 0 if key in ("depth", "warmup") else 1
            if int(getattr(self, key)) < low:
                raise ValueError(f"{key}: expected an integer ≥ {low}, got {getattr(self, key)!r}")
        if int(self.samples) // int(self.thin) < 4:
            raise ValueError(f"samples: expected samples // thin ≥ 4 (R-hat splits chains), got {self.samples} // "
                             f"{self.thin}")
        if not self.weight_decay > 0:
            raise ValueError(f"weight_decay: expected > 0 (a proper prior), got {self.weight_decay!r}")
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept: expected a number in (0, 1), got {self.target_accept!r}")

    def _unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        out, start = {}, 0
        for name, shape in self.shapes_.items():
            size = math.prod(shape)
            out[name] = theta[start:start + size].view(shape)
            start += size
        return out

    def _forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """Logits (N, C) of the network with flat parameters theta (P,) on x (N, D)."""
        return functional_call(self.module_, self._unflatten(theta), (x,))

    def _fit(self, data, seed: int, device: torch.device) -> None:
        self._check()
        dtype = torch.float64
        module = build_model(data.feature_shape, int(data.num_classes), arch="mlp", width=int(self.width),
                             depth=int(self.depth), activation=self.activation, w_std=self.w_std, b_std=self.b_std,
                             parameterization="standard").to(device=device, dtype=dtype)
        self.module_ = module
        self.shapes_ = {k: tuple(v.shape) for k, v in module.named_parameters()}
        x = data.train.x.flatten(1).to(device, dtype)
        y = data.train.y.to(device).long()
        n = x.shape[0]
        kappa = float(self.weight_decay) * n  # κ = λN, docs/math.md §0

        def potential(theta: Tensor) -> Tensor:  # −log p(θ | D) + const
            ce = torch.nn.functional.cross_entropy(self._forward(theta, x), y, reduction="sum")
            return ce + 0.5 * kappa * (theta * theta).sum()

        self.potential_ = potential
        inits = []
        for k in range(int(self.chains)):  # chain k starts at the network's initialization drawn with its own seed
            chain_seed = derive_seed(seed, int(self.sampler_seed), k)
            module.reset_parameters(torch.Generator(device=device).manual_seed(chain_seed))
            inits.append(torch.cat([p.detach().reshape(-1) for p in module.parameters()]))
        start = time.perf_counter()
        run = nuts(potential, torch.stack(inits), warmup=int(self.warmup), samples=int(self.samples),
                   thin=int(self.thin), seed=derive_seed(seed, int(self.sampler_seed), -1),
                   target_accept=float(self.target_accept), max_tree_depth=int(self.max_tree_depth))
        self.samples_ = run.samples  # (chains, draws, P)
        x_val = (data.val.x if len(data.val) else data.train.x).flatten(1).to(device, dtype)
        val_probs = torch.softmax(self._member_logits(x_val), -1)  # (S, N_val, C)
        function_space = diagnostics.summarize(val_probs.reshape(*run.samples.shape[:2], -1))
        self.info_ = {
            **run.info(),
            **function_space,
            "rhat_params": diagnostics.summarize(run.samples)["rhat"],
            "num_params": int(run.samples.shape[-1]),
            "weight_decay": float(self.weight_decay),
            "prior_precision": kappa,
            "num_train": n,
            "fit_seconds": round(time.perf_counter() - start, 3),
        }

    def _member_logits(self, x: Tensor) -> Tensor:
        """(S, N, C) logits of every kept draw on x (N, D)."""
        flat = self.samples_.reshape(-1, self.samples_.shape[-1])
        return vmap(self._forward, in_dims=(0, None))(flat, x)

    def _predict(self, x: Tensor) -> Predictive:
        logits = self._member_logits(x.flatten(1).to(self.device_, torch.float64))
        return Predictive.from_logits(logits)
