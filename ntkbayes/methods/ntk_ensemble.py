"""NTK ensemble: networks from independent initializations under NTK-regularized cross-entropy.

Plenk, Calvo-Ordonez, Cartea, Gal, van der Wilk, Ciosek, "The Neural Tangent Kernel for Classification" (2026):
each member minimizes, from its own random θ0 (math.md §0, (c)),

    L(θ) = (1/N) Σ_i CE(softmax(f(x_i; θ)), Y_i) + (λ/2)‖θ − θ_a‖²,   θ_a ∈ {θ0, 0},  Y = (1−ε)·onehot + ε/C

and the spread of the trained members over initializations is the predictive uncertainty. Three ways to compute
the same ensemble (:class:`Mode`): the finite-width networks themselves, their linearized models
f_lin = f0 + J(θ − θ0), or the function-space solution of the linearized problem — the MAP of a GP classifier
with prior mean m (f0 for anchor θ0, f0 − Jθ0 for anchor 0) and kernel Θ/κ, κ = λN (math.md (c)) — with each
member's empirical NTK or the infinite-width NTK (then m = f0 is drawn from the NNGP: an infinitely wide
ensemble). ``prior="ntkgp"`` adds He, Lakshminarayanan & Teh's (NeurIPS 2020) untrainable function
δ(x) = J_{<readout}(x; θ0)·θ*_{<readout} (math.md (e)), so that the prior mean has covariance Θ instead of the
NNGP. We follow math.md (e) without rescaling: the random prior mean has covariance Θ and the prior covariance
of the MAP problem is Θ/κ, so the NTKGP members are exact posterior samples only for Gaussian likelihoods with
κ = λN = 1; for other κ (and for CE) they are a randomized-MAP approximation (κ is recorded in ``fit_info``).
``prior="kappa"`` (analytic kernel) does the rescaling: f0 ~ GP(0, Θ/κ), the sample-then-optimize construction
(math.md (g)) under which each member is a posterior draw of the GP with kernel Θ/κ (exactly for a Gaussian
likelihood, approximately for CE); ``fit_info()["prior_scale"]`` is the variance factor of the prior draws' kernel
(1/κ there, 1 otherwise).
λ = 0 is allowed with label smoothing (ε > 0): the solution is then the minimum-‖θ − θ0‖ interpolant of the
smoothed targets, which gradient-based training from θ0 reaches whatever the anchor (math.md (c)).

Members are trained together, vectorized over a leading member axis (``ntkbayes.training``), with the batched
matmul paths of ``ntk.ensemble_kernel``; full-batch L-BFGS to a gradient tolerance when the data fit in memory,
minibatch Adam with early stopping otherwise. Convergence per member is recorded in ``fit_info()``.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor

from ntkbayes import training
from ntkbayes.methods.base import Method
from ntkbayes.models import MLP, Activation
from ntkbayes.ntk import solve
from ntkbayes.ntk.analytic import mlp_kernels, mlp_kernels_diag
from ntkbayes.ntk.empirical import empirical_ntk
from ntkbayes.ntk.ensemble_kernel import (
    GPPrior,
    RowTable,
    StackedMLP,
    condition_info,
    ensemble_nll,
    flat_fit_info,
    newton_condition_bound,
    newton_summary,
    quiet_interpolant,
    take_members,
    training_summary,
)
from ntkbayes.ntk.linearize import Linearized
from ntkbayes.ntk.solve_cg import cg_memory_bytes, cholesky_memory_bytes
from ntkbayes.predictive import Predictive
from ntkbayes.seeding import derive_seed, member_seeds
from ntkbayes.training import DType, Optimizer
from ntkbayes.utils import available_memory, check_memory

#: Members S. 8 gives usable epistemic spread (mutual information, variance) at 8× the cost of one network;
#: deep-ensemble studies (Lakshminarayanan et al. 2017, Ovadia et al. 2019) see little gain in NLL beyond 5–10.
DEFAULT_MEMBERS = 8
#: Hidden width. 128 is what fits the default suite's CPU budget: full-batch L-BFGS of the *network* needs
#: 150–600 iterations to the tolerances below at λ = 1e-3 (its loss keeps creeping down along weakly curved
#: directions, while the linearized model converges in ~30), and one iteration costs ≈ 6·N·P·S flops: measured on
#: digits(0–4) (N = 539, 8 members, 1 CPU thread) 13 CPU-s at width 128 and 43 at width 256. The price is a larger
#: finite-width gap (math.md (a): single-init NTK error ~20 % at 128, ~9 % at 1024); the lazy-regime study and the
#: must-show test sweep the width, and suites can set ``width`` (512–1024 on a GPU).
DEFAULT_WIDTH = 128
#: Hidden nonlinearities L (math.md (a)); depth 2 is the setting math.md verifies against neural-tangents.
DEFAULT_DEPTH = 2
#: σw, σb of every layer (math.md (a)); σw = 1.5 keeps relu pre-activations O(1) (neural-tangents' examples). σb = 1:
#: in NTK parameterization σb scales the bias in f and in Θ while λ penalizes the raw parameter, so neural-tangents'
#: example σb = 0.05 leaves the net nearly homogeneous, f(r·u) ≈ r·g(u), with ray boundaries (moons acc 0.88,
#: spirals 0.64); σb = 1 matches the baselines' capacity, in every mode and both kernels (docs/ntk_ensemble.md).
DEFAULT_W_STD = 1.5
DEFAULT_B_STD = 1.0
#: λ on the mean CE (κ = λN): 1e-3 is a light regularizer for N ~ 10³ (κ ≈ 1, the NTKGP-consistent scale,
#: math.md (e)) and keeps L-BFGS well conditioned. Sweep it with ``weight_decay_grid``.
DEFAULT_WEIGHT_DECAY = 1e-3
#: L-BFGS iteration cap, generous (digits/mnist1d subsets at λ = 1e-3 stop within ~600 iterations (network), ~40
#: (linearized)); it binds for λ = 0 with one-hot targets (no finite minimizer: recorded as not converged).
DEFAULT_MAX_ITER = 5000
#: Convergence = ‖∇L_s‖_∞ ≤ tol (the only criterion recorded as converged). float64: logits then match the kernel
#: solution to ~1e-6. float32: the gradient of a mean loss carries ~1e-7·‖per-row gradient‖ rounding, so 1e-5.
DEFAULT_TOL_FLOAT64 = 1e-8
DEFAULT_TOL_FLOAT32 = 1e-5
#: L-BFGS stops early (``training.fit_lbfgs`` "loss_change", recorded as NOT converged) when the relative loss
#: change stays below this for ``training.STALL_ITERATIONS`` iterations. The ReLU network's objective is only
#: piecewise smooth, so its ‖∇‖_∞ can stall at ~1e-3 however long it runs (moons, width 256: 5.8e-4 after 2761
#: float64 iterations, docs/ntk_ensemble.md); the stop then saves the compute. mnist1d(0–4), float32: 1e-6 ends
#: within TV 0.004 of 1e-7's test probabilities at half the iterations.
DEFAULT_TOL_CHANGE_FLOAT64 = 1e-12
DEFAULT_TOL_CHANGE_FLOAT32 = 1e-6
#: Adam settings when the data do not fit a full batch: rows per step, step size, maximum epochs, and epochs
#: without validation-NLL improvement before a member stops (standard choices; early stopping ends training).
DEFAULT_BATCH_SIZE = 256
DEFAULT_LR = 1e-3
DEFAULT_EPOCHS = 500
DEFAULT_PATIENCE = 20
#: ``optimizer="auto"`` uses full-batch L-BFGS when one full forward/backward pass of all members plus the L-BFGS
#: history fits in this fraction of the device's available memory, minibatch Adam otherwise.
LBFGS_MEMORY_FRACTION = 0.5
#: The linearized model caches θ0 activations of the train/val rows when they take at most this fraction.
CACHE_MEMORY_FRACTION = 0.25
#: Bytes of one test-block kernel Θ(x*, X) (M_block × N × C × C) in kernel mode with the empirical NTK.
PREDICT_BLOCK_BYTES = 2**28
#: Rows per forward pass at prediction time (network / linearized) and per analytic-kernel block.
PREDICT_ROWS = 2048
#: Members trained together by full-batch L-BFGS on a CPU (all of them on a GPU). A stacked run evaluates every
#: member until the slowest stops, and on one CPU thread stacked batched matmuls are no faster per member than
#: single ones (benchmarks/perf/ensemble.py), so one member at a time does less work for the same trajectories.
CPU_MEMBER_GROUP = 1
#: L-BFGS history pairs (``training.DEFAULT_HISTORY_SIZE``); used in the memory estimate.
_HISTORY = training.DEFAULT_HISTORY_SIZE


class Mode(str, Enum):
    """How each member's trained function is computed (math.md (b), (c))."""

    NETWORK = "network"
    """Finite-width NTK-parameterized MLPs f(x; θ) from independent inits, trained on the objective."""
    LINEARIZED = "linearized"
    """The same members' linearized models f0 + J(θ − θ0) (explicit tangent propagation), trained the same way."""
    KERNEL = "kernel"
    """Function-space solution per member: Newton on the GP-classifier MAP (λ > 0) or the smoothed-target
    interpolant (λ = 0), math.md (c); no training."""


class TangentKernel(str, Enum):
    """Which neural tangent kernel ``mode="kernel"`` solves with."""

    EMPIRICAL = "empirical"
    """Each member's empirical NTK at its init, the full (NC × NC) Gram: equals the trained linearized member."""
    ANALYTIC = "analytic"
    """The infinite-width NTK Θ ⊗ I_C (one shared (N, N) kernel) with prior means drawn from the NNGP."""


class Prior(str, Enum):
    """Prior function of each member (math.md (e))."""

    STANDARD = "standard"
    """f0 = f(·; θ0): covariance over inits is the NNGP (a plain ensemble)."""
    NTKGP = "ntkgp"
    """f̃ = f + δ with the untrainable δ = J_{<readout}(θ0)·θ*_{<readout}: prior covariance Θ (He et al. 2020)."""
    KAPPA = "kappa"
    """f0 ~ GP(0, Θ/κ), κ = λN: the prior functions at the scale of the prior Θ/κ each member is the MAP under
    (math.md (c)), i.e. the NTKGP prior scaled by κ^{-1/2}. Sample-then-optimize / randomized prior (math.md (g)):
    each member is an exact posterior draw of GP(0, Θ/κ) for a Gaussian likelihood, a randomized-MAP approximation
    of it for cross-entropy. ``mode="kernel"``, ``kernel="analytic"`` and λ > 0 only."""


class NTKEnsemble(Method):
    """Ensemble of S NTK-parameterized MLPs, linearized models or kernel solutions (module docstring).

    Args (defaults are the module constants, each documented with why):
        mode: :class:`Mode`. kernel: :class:`TangentKernel` (``mode="kernel"`` only).
        members: S. width, depth, activation, w_std, b_std: the NTK-parameterized MLP of ``ntkbayes.models``
            (math.md (a)); the batched-matmul paths and the analytic kernels are written for it, so this method
            takes no other model.
        weight_decay: λ ≥ 0 on the mean CE (κ = λN); 0 only with ``label_smoothing`` > 0, except that the network and
            linearized modes allow λ = 0 with one-hot targets for lazy-regime studies (no finite optimum: the run
            stops at ``max_iter`` and records it).
        anchor: ``"init"`` (θ_a = θ0) or ``"zero"`` (θ_a = 0, not with the analytic kernel: its prior mean
            f0 − Jθ0 needs the finite network). label_smoothing: ε ∈ [0, 1).
        prior: :class:`Prior` (``"kappa"``: analytic kernel mode and λ > 0 only). weight_decay_grid: λ values; the
            one with the best validation NLL of the ensemble is kept (the kernel is computed once for all λ in kernel
            mode; the other modes train once per λ).
        optimizer: :class:`~ntkbayes.training.Optimizer`. max_iter, tol: L-BFGS iteration cap and gradient tolerance
            ‖∇L_s‖_∞ (None: 1e-8 in float64, 1e-5 in float32); also the Newton tolerance scale in kernel mode.
        batch_size, lr, epochs, patience: Adam. dtype: :class:`~ntkbayes.training.DType` (``"auto"``: float32
            for the trained modes, float64 for kernel solves). θ0 is drawn in float64 whatever the dtype, from
            ``seeding.member_seeds``, so a seed gives the same members in every mode and dtype.

    Fitted state: ``module_`` (the MLP, architecture only), ``params0_`` (S, ...) inits, ``params_`` (S, ...)
    trained parameters (network / linearized), ``theta_star_`` (NTKGP draws), ``coef_`` (S, N, C) kernel-mode
    coefficients with f(x*) = m(x*) + Θ(x*, X)·coef (math.md (c)), ``weight_decay_`` the chosen λ.
    Predictive: S = members, with member logits.
    """

    name = "ntk_ensemble"
    family = "ntk"
    test_params: ClassVar[dict[str, Any]] = {"members": 3, "width": 32, "depth": 1, "max_iter": 300,
                                             "dtype": "float64"}
    dry_run_params: ClassVar[dict[str, Any]] = {"members": 2, "width": 8, "epochs": 2, "patience": 1,
                                                "max_iter": 10, "batch_size": 64}
    #: λ only, like the MAP family's weight decay: four decades, κ = λN from ~1e-4 to ~10 on the small sets (λ = 1e-5
    #: was chosen on the lower edge of [1e-5, 1e-2] on moons/spirals). σb stays at the default 1, which gives the
    #: NTK-parameterized MLP the capacity of the standard one (docs/ntk_ensemble.md). 8 trials; kernel modes select
    #: λ inside one cell (:meth:`inner_search`).
    search_space: ClassVar[dict[str, list]] = {"weight_decay": [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2]}
    param_bounds = {"members": (1, None), "width": (1, None), "depth": (0, None), "w_std": (0.0, None),
                    "b_std": (0.0, None), "weight_decay": (0.0, None), "weight_decay_grid": (0.0, None),
                    "label_smoothing": (0.0, 0.99), "max_iter": (1, None), "tol": (0.0, None),
                    "batch_size": (1, None), "lr": (0.0, None), "epochs": (1, None), "patience": (1, None)}

    def __init__(self, *, mode: Mode = Mode.NETWORK, kernel: TangentKernel = TangentKernel.EMPIRICAL,
                 members: int = DEFAULT_MEMBERS, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH,
                 activation: Activation = Activation.RELU, w_std: float = DEFAULT_W_STD, b_std: float = DEFAULT_B_STD,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, anchor: solve.Anchor = solve.Anchor.INIT,
                 label_smoothing: float = 0.0, prior: Prior = Prior.STANDARD,
                 weight_decay_grid: tuple[float, ...] | None = None, optimizer: Optimizer = Optimizer.AUTO,
                 max_iter: int = DEFAULT_MAX_ITER, tol: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS, patience: int = DEFAULT_PATIENCE,
                 dtype: DType = DType.AUTO):
        self._store_params(locals())

    @classmethod
    def inner_search(cls, params: dict[str, Any]) -> dict[str, str]:
        """Kernel mode selects λ itself from ``weight_decay_grid``: the kernel (and its prior draws) is computed once
        for every λ, so the whole λ grid costs about one trial."""
        return {"weight_decay": "weight_decay_grid"} if Mode(params.get("mode", Mode.NETWORK)) is Mode.KERNEL else {}

    # -- validation ---------------------------------------------------------------------------------------------
    def _resolve(self) -> None:
        """Check and resolve the options into ``mode_``, ``kernel_``, ``anchor_``, ``prior_``, ``lams_``, ``dtype_``."""
        self.mode_ = Mode(self.mode)
        self.kernel_ = TangentKernel(self.kernel) if self.mode_ is Mode.KERNEL else None
        self.anchor_ = solve.Anchor(self.anchor)
        self.prior_ = Prior(self.prior)
        self.optimizer_ = Optimizer(self.optimizer)
        self.dtype_ = training.torch_dtype(self.dtype, torch.float64 if self.mode_ is Mode.KERNEL else torch.float32)
        eps = float(self.label_smoothing)
        grid = self.weight_decay_grid
        lams = tuple(float(v) for v in grid) if grid is not None else (float(self.weight_decay),)
        if not lams or any(not (lam >= 0.0 and math.isfinite(lam)) for lam in lams):
            raise ValueError(f"weight_decay / weight_decay_grid: expected finite values ≥ 0, got {lams}")
        if self.mode_ is Mode.KERNEL and eps == 0.0 and min(lams) == 0.0:
            raise ValueError("weight_decay=0 with one-hot targets (label_smoothing=0) has no finite kernel-mode "
                             "solution (the logits diverge); set weight_decay > 0 or label_smoothing > 0")
        if self.kernel_ is TangentKernel.ANALYTIC and self.anchor_ is solve.Anchor.ZERO and max(lams) > 0:
            raise ValueError("anchor='zero' needs the finite network's prior mean f0 − Jθ0, which has no "
                             "infinite-width form here; use kernel='empirical' or anchor='init'")
        if self.prior_ is Prior.KAPPA and (self.kernel_ is not TangentKernel.ANALYTIC or min(lams) <= 0.0):
            raise ValueError("prior='kappa' draws f0 ~ GP(0, Θ/(λN)) from the infinite-width NTK: it needs "
                             "mode='kernel', kernel='analytic' and weight_decay > 0 (got mode="
                             f"{self.mode_.value!r}, kernel={self.kernel_.value if self.kernel_ else None!r}, "
                             f"weight_decay values {lams})")
        self.lams_ = lams

    # -- fit ------------------------------------------------------------------------------------------------------
    def _fit(self, data, seed: int, device: torch.device) -> None:
        self._resolve()
        S = int(self.members)
        self.module_ = self._mlp().to(device=device, dtype=self.dtype_).eval()
        self.net_ = StackedMLP(self.module_)
        self.seeds_ = member_seeds(seed, S)
        self.seed_ = int(seed)
        xt = data.train.x.flatten(1).to(device, self.dtype_)
        yt = data.train.y.to(device)
        xv = data.val.x.flatten(1).to(device, self.dtype_)
        yv = data.val.y.to(device)
        if self.weight_decay_grid is not None and len(yv) == 0:
            raise ValueError("weight_decay_grid: choosing λ needs a non-empty data.val")
        self.x_train_ = xt
        n = xt.shape[0]
        self.info_ = {"mode": self.mode_.value, "kernel": self.kernel_.value if self.kernel_ else None,
                      "prior": self.prior_.value, "anchor": self.anchor_.value,
                      "label_smoothing": float(self.label_smoothing), "members": S, "width": int(self.width),
                      "depth": int(self.depth), "num_train": n, "dtype": str(self.dtype_).replace("torch.", ""),
                      "member_seeds": self.seeds_, "init_dtype": str(training.INIT_DTYPE).replace("torch.", "")}
        if self.kernel_ is TangentKernel.ANALYTIC:
            self.params0_ = None
            candidates = self._fit_analytic(xt, yt, xv)
        else:
            self.params0_ = training.init_stacked(self.module_, self.seeds_, device, self.dtype_)
            self.info_["num_params"] = int(sum(v[0].numel() for v in self.params0_.values()))
            self.theta_star_ = None
            if self.prior_ is Prior.NTKGP:  # θ*: an independent draw from the init distribution, math.md (e)
                self.theta_star_ = training.init_stacked(
                    self.module_, [derive_seed(seed, "ntkgp_theta_star", k) for k in range(S)], device, self.dtype_)
            if self.mode_ is Mode.KERNEL:
                candidates = self._fit_empirical(xt, yt, xv)
            else:
                candidates = self._fit_trained(xt, yt, xv, yv)
        self._select(candidates, yv, n)
        self.info_["prior_scale"] = self._prior_std(self.weight_decay_, n) ** 2    # variance factor of f0's kernel

    def _prior_std(self, lam: float, n: int) -> float:
        """Factor on the unit-scale prior draws: κ^{-1/2} = (λN)^{-1/2} for ``prior="kappa"``, 1 otherwise."""
        return 1.0 / math.sqrt(lam * n) if self.prior_ is Prior.KAPPA else 1.0

    def _select(self, candidates: list[dict], yv: Tensor, n: int) -> None:
        """Keep the λ with the best validation NLL of the ensemble; record every λ's NLL and convergence."""
        for c in candidates:
            c["val_nll"] = ensemble_nll(c.pop("val_logits"), yv) if len(yv) else None
        best = min(candidates, key=lambda c: math.inf if c["val_nll"] is None else c["val_nll"])
        if len(candidates) > 1:
            self.info_["weight_decay_grid"] = {repr(c["weight_decay"]): c["val_nll"] for c in candidates}
        self.weight_decay_ = best["weight_decay"]
        for key in ("params", "coef"):
            if key in best:
                setattr(self, f"{key}_", best[key])
        self.info_.update({"weight_decay": self.weight_decay_, "kappa": self.weight_decay_ * n,
                           "val_nll": best["val_nll"], "convergence": best["convergence"], **flat_fit_info(best)})
        if self.weight_decay_ == 0.0:
            self.info_["note"] = ("weight_decay=0: the anchor has no effect (training from θ0 reaches the "
                                  "min-‖θ−θ0‖ solution)")

    def _mlp(self) -> MLP:
        """The NTK-parameterized MLP of the members (architecture; its own parameter values are not used)."""
        return MLP(self.in_features_, self.num_classes_, width=int(self.width), depth=int(self.depth),
                   activation=Activation(self.activation).value, w_std=self.w_std, b_std=self.b_std,
                   parameterization="ntk")

    def _targets(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        return training.soft_targets(y, self.num_classes_, float(self.label_smoothing), dtype)

    # network / linearized ------------------------------------------------------------------------------------------
    def _fit_trained(self, xt: Tensor, yt: Tensor, xv: Tensor, yv: Tensor) -> list[dict]:
        S, n, m = int(self.members), xt.shape[0], xv.shape[0]
        dev, item = xt.device, xt.element_size()
        x_all = torch.cat([xt, xv])
        hidden = int(self.width) * int(self.depth)
        delta = None
        if self.theta_star_ is not None:
            delta = torch.cat([self.net_.delta(self.params0_, self.theta_star_, x_all[i:i + PREDICT_ROWS])
                               for i in range(0, x_all.shape[0], PREDICT_ROWS)], 1)
        avail = available_memory(dev)
        linearized = self.mode_ is Mode.LINEARIZED
        cache_bytes = S * x_all.shape[0] * (2 * hidden + x_all.shape[1] + self.num_classes_) * item
        table = RowTable(self.net_, x_all, self.params0_, linearized=linearized, delta=delta,
                         cache=linearized and cache_bytes <= CACHE_MEMORY_FRACTION * avail)
        p = self.info_["num_params"]
        state_bytes = (2 * _HISTORY + 8) * S * p * item                 # L-BFGS history, iterate, grads, anchor
        act_bytes = 6 * S * n * (hidden + x_all.shape[1]) * item        # activations of one full-batch pass
        opt = self.optimizer_
        if opt is Optimizer.AUTO:
            fits = state_bytes + act_bytes <= LBFGS_MEMORY_FRACTION * avail
            opt = Optimizer.LBFGS if fits else Optimizer.ADAM
        f64 = self.dtype_ == torch.float64
        tol = self.tol if self.tol is not None else (DEFAULT_TOL_FLOAT64 if f64 else DEFAULT_TOL_FLOAT32)
        tol_change = DEFAULT_TOL_CHANGE_FLOAT64 if f64 else DEFAULT_TOL_CHANGE_FLOAT32
        lbfgs = opt is Optimizer.LBFGS
        self.info_.update({"optimizer": opt.value, "tol": float(tol) if lbfgs else None,
                           "tol_change": tol_change if lbfgs else None, "cached_theta0": table.cache is not None})
        train_in, val_in = (table.rows(n), yt), (table.rows(m, start=n), yv)
        anchor = self.params0_ if self.anchor_ is solve.Anchor.INIT else None
        out = []
        for lam in self.lams_:
            common = dict(weight_decay=lam, anchor=anchor, label_smoothing=float(self.label_smoothing))
            if opt is Optimizer.LBFGS:
                check_memory(state_bytes, dev, f"L-BFGS state of {S} members × {p} parameters",
                             "optimizer='adam' or fewer members")
                chunk = max(1, int(n * min(1.0, LBFGS_MEMORY_FRACTION * avail / max(act_bytes, 1) / 2)))
                group = S if dev.type == "cuda" else min(S, CPU_MEMBER_GROUP)
                parts = []
                for lo in range(0, S, group):  # each member's trajectory is the same alone or stacked
                    sl = slice(lo, lo + group)
                    parts.append(training.fit_lbfgs(
                        table if group == S else table.members(sl), take_members(self.params0_, sl), train_in,
                        val_in if m else None, **{**common, "anchor": take_members(anchor, sl)},
                        max_iter=int(self.max_iter),
                        tol_grad=float(tol), tol_change=tol_change, chunk_size=None if chunk >= n else chunk))
                res = training.concat_results(parts)
            else:
                res = training.fit_adam(table, self.params0_, train_in, val_in if m else None, **common,
                                        lr=float(self.lr), epochs=int(self.epochs), batch_size=int(self.batch_size),
                                        patience=int(self.patience),
                                        seeds=[derive_seed(self.seed_, "batches", k) for k in range(S)])
            val_logits = training.predict_stacked(table, res.params, val_in[0]) if m else None
            out.append({"weight_decay": lam, "params": res.params, "val_logits": val_logits,
                        "convergence": training_summary(res.report)})
        return out

    # kernel, empirical NTK ---------------------------------------------------------------------------------------
    def _member_prior(self, x: Tensor, anchor: solve.Anchor, s: int) -> Tensor:
        """(1, M, C) prior mean m(x) of linearized member s (math.md (c)), plus δ(x) for NTKGP (math.md (e)),
        through ``ntk.linearize`` (jvp) in float64."""
        params0 = {k: v[s:s + 1].to(torch.float64) for k, v in self.params0_.items()}
        lin = Linearized(self.module64_, params0, stacked=True)
        x = x.to(torch.float64)
        m = lin.f0(x) if anchor is solve.Anchor.INIT else lin.prior_mean(x)
        if self.theta_star_ is not None:
            star = {k: v[s:s + 1].to(torch.float64) for k, v in self.theta_star_.items()
                    if k not in self.net_.readout_keys}
            m = m + lin.jvp(star, x)
        return m.to(self.solve_dtype_)

    def _fit_empirical(self, xt: Tensor, yt: Tensor, xv: Tensor) -> list[dict]:
        S, n, C = int(self.members), xt.shape[0], self.num_classes_
        self.solve_dtype_ = self.dtype_
        self.module64_ = self._mlp().to(device=xt.device, dtype=torch.float64).eval()
        item = torch.finfo(self.dtype_).bits // 8
        check_memory((4 * (n * C) ** 2 + xv.shape[0] * n * C * C) * item, xt.device,
                     f"empirical NTK Gram (N*C = {n * C}) and its Newton solve, per member",
                     "kernel='analytic', mode='linearized', or fewer training points")
        Y = self._targets(yt, self.dtype_)
        per_lam = {lam: {"coef": [], "val": [], "results": [], "cond": []} for lam in self.lams_}
        for s in range(S):
            p_s = {k: v[s].to(torch.float64) for k, v in self.params0_.items()}
            theta = empirical_ntk(self.module64_, xt.double(), params=p_s).to(self.dtype_)        # (N, N, C, C)
            theta_v = empirical_ntk(self.module64_, xv.double(), xt.double(), params=p_s).to(self.dtype_) \
                if xv.shape[0] else None
            priors = {}                                                     # anchor → (train, val) prior means
            warm = {}                                                       # anchor → (λ, Newton result)
            for lam in self.lams_:
                anchor = self.anchor_ if lam > 0 else solve.Anchor.INIT     # λ = 0: gradient flow from θ0
                if anchor not in priors:
                    priors[anchor] = (self._member_prior(xt, anchor, s),
                                      self._member_prior(xv, anchor, s)[0] if xv.shape[0] else None)
                m_tr, mv = priors[anchor]
                if lam > 0:
                    a0 = solve.warm_start(warm[anchor][1], lam, warm[anchor][0]) if anchor in warm else None
                    rep = solve.solve_ntk_classifier(theta, m_tr, Y, lam, keep_factors=False,
                                                     tol=self._newton_tol(), alpha0=a0)
                    warm[anchor] = (lam, rep)
                    coef, cond = rep.beta[0], newton_condition_bound(theta, lam * n)
                else:                                           # warned once for all members, by condition_info
                    rep, (gamma, cond) = None, quiet_interpolant(theta, m_tr, Y)
                    coef = gamma[0]
                for key, value in (("coef", coef), ("results", rep), ("cond", cond)):
                    per_lam[lam][key].append(value)
                if theta_v is not None:
                    per_lam[lam]["val"].append(mv + torch.einsum("mncd,nd->mc", theta_v, coef))
            del theta, theta_v
        return [{"weight_decay": lam, "coef": torch.stack(d["coef"]),
                 "val_logits": torch.stack(d["val"]) if d["val"] else None,
                 "convergence": newton_summary(d["results"]), **condition_info(lam, d["cond"], self.dtype_)}
                for lam, d in per_lam.items()]

    def _newton_tol(self) -> float | None:
        return None if self.tol is None else float(self.tol)

    # kernel, analytic NTK ----------------------------------------------------------------------------------------
    def _kernel_args(self) -> dict:
        return {"depth": int(self.depth), "activation": self.activation, "w_std": float(self.w_std),
                "b_std": float(self.b_std)}

    def _fit_analytic(self, xt: Tensor, yt: Tensor, xv: Tensor) -> list[dict]:
        S, n, C = int(self.members), xt.shape[0], self.num_classes_
        self.solve_dtype_ = self.dtype_
        # NNGP, NTK and the prior's factor (3 N × N) plus the cheaper of the two Newton solvers ("auto" picks it)
        need = 3 * n * n * 8 + min(cholesky_memory_bytes(n, C, S), cg_memory_bytes(n, C, S))
        check_memory(need, xt.device, f"analytic NTK solve (N = {n}, {S} members)",
                     "fewer members or fewer training points")
        nngp, ntk = mlp_kernels(xt.double(), **self._kernel_args())
        prior_k = nngp if self.prior_ is Prior.STANDARD else ntk    # math.md (e): f̃0 ~ N(0, Θ ⊗ I_C)
        self.gp_prior_ = GPPrior.draw(prior_k, S, C, derive_seed(self.seed_, "analytic_prior"))
        self.info_["prior_jitter"] = self.gp_prior_.jitter
        ntk_s = ntk.to(self.dtype_)
        Y = self._targets(yt, self.dtype_)
        f0_v_unit, ntk_v = (self._analytic_prior_at(xv) if xv.shape[0] else (None, None))
        out, warm = [], None                                            # warm: (λ, Newton result) of the last λ
        for lam in self.lams_:
            c0 = self._prior_std(lam, n)                                # prior="kappa": f0 ~ N(0, Θ/κ ⊗ I_C)
            f0, f0_v = self.gp_prior_.values.to(self.dtype_) * c0, (None if f0_v_unit is None else f0_v_unit * c0)
            if lam > 0:
                a0 = None if warm is None else solve.warm_start(warm[1], lam, warm[0])
                res = solve.solve_ntk_classifier(ntk_s, f0, Y, lam, keep_factors=False, tol=self._newton_tol(),
                                                 alpha0=a0)
                warm = (lam, res)
                coef, conv = res.beta, newton_summary([res])
                cond = [newton_condition_bound(ntk_s, lam * n, C)]
            else:
                coef, cond = quiet_interpolant(ntk_s, f0, Y)
                conv, cond = newton_summary([None] * S), [cond]
            val = f0_v + torch.einsum("mn,bnc->bmc", ntk_v, coef) if f0_v is not None else None
            out.append({"weight_decay": lam, "coef": coef, "val_logits": val, "convergence": conv,
                        **condition_info(lam, cond, self.dtype_)})
        return out

    def _analytic_prior_at(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Conditional prior draws f0(x) (S, M, C) and the NTK Θ(x, X) (M, N) at new points (analytic mode)."""
        x64 = x.flatten(1).to(self.x_train_.device, torch.float64)
        nngp, ntk = mlp_kernels(x64, self.x_train_.double(), **self._kernel_args())
        dn, dt = mlp_kernels_diag(x64, **self._kernel_args())
        ntkgp = self.prior_ is not Prior.STANDARD                  # NTKGP and kappa draw from Θ (kappa rescaled)
        f0 = self.gp_prior_.conditional(ntk if ntkgp else nngp, dt if ntkgp else dn, x64)
        return f0.to(self.solve_dtype_), ntk.to(self.solve_dtype_)

    # -- predict --------------------------------------------------------------------------------------------------
    def member_logits(self, x: Tensor) -> Tensor:
        """(S, M, C) logits of every member at inputs x (M, ...)."""
        x = x.flatten(1).to(self.device_, self.dtype_)
        if x.shape[1] != self.in_features_:
            raise ValueError(f"x: expected {self.in_features_} features per row, got {x.shape[1]}")
        rows = [x[i:i + PREDICT_ROWS] for i in range(0, x.shape[0], PREDICT_ROWS)] or [x]
        return torch.cat([self._block_logits(b) for b in rows], 1)

    def _block_logits(self, x: Tensor) -> Tensor:
        if self.mode_ is Mode.NETWORK:
            out = self.net_.forward(self.params_, x)
        elif self.mode_ is Mode.LINEARIZED:
            out = self.net_.linearized(self.params_, self.params0_, x)
        elif self.kernel_ is TangentKernel.ANALYTIC:
            f0, ntk = self._analytic_prior_at(x)
            f0 = f0 * self._prior_std(self.weight_decay_, self.x_train_.shape[0])
            return f0 + torch.einsum("mn,bnc->bmc", ntk, self.coef_)        # math.md (c): m* + Θ*X β
        else:
            return self._empirical_logits(x)
        if self.theta_star_ is not None:
            out = out + self.net_.delta(self.params0_, self.theta_star_, x)
        return out

    def _empirical_logits(self, x: Tensor) -> Tensor:
        S, n, C = self.coef_.shape
        anchor = self.anchor_ if self.weight_decay_ > 0 else solve.Anchor.INIT
        rows = max(1, PREDICT_BLOCK_BYTES // (n * C * C * 8))
        out = []
        for s in range(S):
            p_s = {k: v[s].to(torch.float64) for k, v in self.params0_.items()}
            m = self._member_prior(x, anchor, s)[0]
            parts = [torch.einsum("mncd,nd->mc", empirical_ntk(self.module64_, x[i:i + rows].double(),
                                                              self.x_train_.double(), params=p_s)
                                  .to(self.coef_.dtype), self.coef_[s]) for i in range(0, x.shape[0], rows)]
            out.append(m + torch.cat(parts))                                # math.md (c): m* + Θ*X β
        return torch.stack(out)

    def _predict(self, x: Tensor) -> Predictive:
        return Predictive.from_logits(self.member_logits(x))

