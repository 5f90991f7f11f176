"""Computational core of the NTK ensemble (``methods/ntk_ensemble.py``): batched-matmul paths for S stacked
NTK-parameterized MLPs, and the infinite-width prior draws.

* :class:`StackedMLP` evaluates S members of a :class:`~ntkbayes.models.MLP` with one ``torch.baddbmm`` per layer
  (math.md (a), NTK parameterization z = (σw/√n)·W h + σb·b): the network f(x; θ_s), its linearization
  f_lin(x; θ) = f0 + J(θ − θ0) by explicit tangent propagation (math.md (b), the same function as
  ``ntk.linearize``'s jvp, checked against it in the tests), and J·t for a tangent t, which with the readout
  tangents left out is He et al.'s NTKGP function δ(x) = J_{<readout}(x; θ0)·θ*_{<readout} (math.md (e)).
  Tangent propagation per layer: dz = s_w·(h0 ΔWᵀ + dh W0ᵀ) + s_b·Δb, dh' = φ'(z0) ⊙ dz.
* :class:`RowTable` is the training-time model: rows of the train/val inputs are addressed by their index, so the
  θ0 quantities (hidden activations and φ'(z0) for the linearized model, δ for NTKGP) are computed once and
  gathered instead of recomputed every step. It plugs into ``ntkbayes.training`` as an ordinary stacked model
  function whose "inputs" are a column of row indices.
* :class:`GPPrior` draws prior logits f0 ~ N(0, K ⊗ I_C) at the training points (K = NNGP for the standard
  prior, K = Θ for NTKGP, math.md (c), (e)) and, at new points, f0(x*) from the conditional given those draws:
  mean K*X K⁻¹ f0(X), variance k(x*, x*) − K*X K⁻¹ K_X*, per point. Metrics only use per-point predictive
  marginals, and a per-point conditional draw has exactly the marginal of a joint draw on X ∪ X*; the noise of
  each point is seeded by the point's own bytes, so a point gets the same draw whatever batch it is predicted in.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ntkbayes.models import MLP
from ntkbayes.ntk import solve
from ntkbayes.ntk.analytic import activation_pair
from ntkbayes.ntk.newton import IllConditionedWarning, warn_ill_conditioned
from ntkbayes.seeding import derive_seed

Params = dict[str, Tensor]

#: Relative diagonal jitter tried first when a prior kernel's Cholesky factor fails (×10 per retry, up to
#: MAX_JITTER). Float64 NNGP/NTK Grams of distinct standardized points factor without any.
JITTER = 1e-12
#: Largest relative jitter before the prior draw gives up (the Gram is then numerically rank-deficient: duplicate
#: training points).
MAX_JITTER = 1e-5


def row_hashes(x: Tensor) -> list[int]:
    """One 64-bit hash per row of x (N, ...) from its float64 bytes (the same for float32 and float64 inputs)."""
    a = np.ascontiguousarray(x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64).numpy())
    return [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in a]


class StackedMLP:
    """S stacked members of ``model`` (its architecture only) evaluated with batched matmuls.

    Parameters are name → (S, *shape) (``training.init_stacked`` layout). Inputs are (S, B, D) per member, or a
    shared (B, D) which is broadcast. Every output is (S, B, C).
    """

    def __init__(self, model: MLP):
        if not isinstance(model, MLP):
            raise ValueError(f"StackedMLP: expected an ntkbayes.models.MLP, got {type(model).__name__}")
        if model.dropout > 0:
            raise ValueError("StackedMLP: dropout must be 0 (the NTK ensemble trains deterministic members)")
        self.layers = [(f"layers.{i}.weight", f"layers.{i}.bias" if layer.bias is not None else None,
                        float(layer.w_scale), float(layer.b_scale)) for i, layer in enumerate(model.layers)]
        self.phi, self.dphi, _ = activation_pair(model.activation)

    @property
    def readout_keys(self) -> tuple[str, ...]:
        """Names of the readout layer's parameters (left out of NTKGP's δ, math.md (e))."""
        w, b, _, _ = self.layers[-1]
        return (w,) if b is None else (w, b)

    @staticmethod
    def _inputs(x: Tensor, s: int) -> Tensor:
        if x.ndim == 2:
            return x.unsqueeze(0).expand(s, *x.shape)
        return x.flatten(2)

    def _dense(self, p: Params, i: int, h: Tensor) -> Tensor:
        w, b, ws, bs = self.layers[i]
        if b is None:
            return torch.bmm(h, p[w].transpose(1, 2)) * ws
        return torch.baddbmm(p[b].unsqueeze(1), h, p[w].transpose(1, 2), beta=bs, alpha=ws)

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Network logits f(x; θ_s): params (S, ...), x (S, B, D) or (B, D) → (S, B, C)."""
        s = next(iter(params.values())).shape[0]
        h = self._inputs(x, s)
        last = len(self.layers) - 1
        for i in range(last + 1):
            z = self._dense(params, i, h)
            if i < last:
                h = self.phi(z)
        return z

    __call__ = forward

    @torch.no_grad()
    def primal(self, params0: Params, x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """θ0 quantities the tangent pass needs: layer inputs h0^l (S, B, n_l) for every layer, φ'(z0^l)
        (S, B, n_l) for the hidden layers, and f0 (S, B, C)."""
        s = next(iter(params0.values())).shape[0]
        h = self._inputs(x, s)
        hs, dphis = [], []
        last = len(self.layers) - 1
        for i in range(last + 1):
            hs.append(h)
            z = self._dense(params0, i, h)
            if i < last:
                dphis.append(self.dphi(z))
                h = self.phi(z)
        return hs, dphis, z

    def tangent(self, params0: Params, tangents: Params, hs: Sequence[Tensor], dphis: Sequence[Tensor]) -> Tensor:
        """J(x; θ0)·t (S, B, C) from :meth:`primal`'s quantities; t name → (S, ...), missing names are 0.
        Differentiable in t (math.md (b): dz = s_w(h0 tWᵀ + dh W0ᵀ) + s_b t_b; dh' = φ'(z0) ⊙ dz)."""
        dh = None
        last = len(self.layers) - 1
        for i, (w, b, ws, bs) in enumerate(self.layers):
            dz = None
            if b is not None and b in tangents:
                dz = (bs * tangents[b]).unsqueeze(1).expand(hs[i].shape[0], hs[i].shape[1], -1)
            if w in tangents:
                dz = torch.bmm(hs[i], tangents[w].transpose(1, 2)).mul(ws) if dz is None else \
                    torch.baddbmm(dz, hs[i], tangents[w].transpose(1, 2), alpha=ws)
            if dh is not None:
                w0 = params0[w].transpose(1, 2)
                dz = torch.bmm(dh, w0).mul(ws) if dz is None else torch.baddbmm(dz, dh, w0, alpha=ws)
            if dz is None:  # nothing moved up to here
                dz = torch.zeros(hs[i].shape[0], hs[i].shape[1], params0[w].shape[1], dtype=hs[i].dtype,
                                 device=hs[i].device)
            if i < last:
                dh = dphis[i] * dz
        return dz

    def delta(self, params0: Params, theta_star: Params, x: Tensor) -> Tensor:
        """NTKGP δ(x) = J_{<readout}(x; θ0)·θ*_{<readout} (math.md (e)): (S, B, C), no gradient."""
        hs, dphis, _ = self.primal(params0, x)
        with torch.no_grad():
            t = {k: v for k, v in theta_star.items() if k not in self.readout_keys}
            return self.tangent(params0, t, hs, dphis)

    def linearized(self, params: Params, params0: Params, x: Tensor) -> Tensor:
        """f_lin(x; θ) = f0(x) + J(x; θ0)(θ − θ0) (math.md (b)), differentiable in θ: (S, B, C)."""
        hs, dphis, f0 = self.primal(params0, x)
        return f0 + self.tangent(params0, {k: v - params0[k] for k, v in params.items()}, hs, dphis)


class RowTable:
    """Training-time stacked model over a fixed table of R rows (train then val), addressed by row index.

    ``table(params, idx)`` with idx (S, B, 1) holding row numbers (as floats, the dtype ``ntkbayes.training``
    casts inputs to; exact below 2^24 rows) returns logits (S, B, C): the network (``linearized=False``) or the
    linearized model around ``params0``, plus δ when given. θ0 quantities are computed once at construction
    (``cache=True``; memory ≈ S·R·(2·Σ hidden widths + input width + C) numbers) or per call (``cache=False``).
    """

    def __init__(self, net: StackedMLP, x: Tensor, params0: Params | None = None, *, linearized: bool = False,
                 delta: Tensor | None = None, cache: bool = True):
        if linearized and params0 is None:
            raise ValueError("RowTable: the linearized model needs params0")
        self.net, self.x, self.params0, self.linearized = net, x, params0, bool(linearized)
        self.delta = delta                                      # (S, R, C) or None
        self.cache = None
        if self.linearized and cache:
            self.cache = net.primal(params0, x)

    def members(self, sl: slice) -> RowTable:
        """The same table for members ``sl`` only: parameters, δ and the θ0 cache sliced (views, no recomputation)."""
        sub = copy.copy(self)
        sub.params0 = None if self.params0 is None else {k: v[sl] for k, v in self.params0.items()}
        sub.delta = None if self.delta is None else self.delta[sl]
        if self.cache is not None:
            hs, dphis, f0 = self.cache
            sub.cache = ([h[sl] for h in hs], [d[sl] for d in dphis], f0[sl])
        return sub

    def rows(self, n: int | None = None, start: int = 0) -> Tensor:
        """Index column (n, 1) for rows start … start+n−1, in the table's dtype (pass as training inputs)."""
        n = self.x.shape[0] - start if n is None else n
        return torch.arange(start, start + n, device=self.x.device, dtype=self.x.dtype).unsqueeze(1)

    @staticmethod
    def _take(t: Tensor, idx: Tensor, shared: slice | Tensor | None) -> Tensor:
        """Rows of t (S, R, ...) at idx (S, B): a view for a shared contiguous range, else a gather."""
        if isinstance(shared, slice):
            return t[:, shared]
        if shared is not None:
            return t.index_select(1, shared)
        ar = torch.arange(t.shape[0], device=t.device).unsqueeze(1)
        return t[ar, idx]

    def __call__(self, params: Params, ix: Tensor) -> Tensor:
        idx = ix[..., 0].long()                                 # (S, B)
        shared = None
        if ix.stride(0) == 0 or idx.shape[0] == 1:              # the same rows for every member (full batch, eval)
            r = idx[0]
            a, n = int(r[0]), r.shape[0]
            contiguous = int(r[-1]) - a == n - 1 and torch.equal(r, torch.arange(a, a + n, device=r.device))
            shared = slice(a, a + n) if contiguous else r
        if shared is None:
            x = self.x[idx]
        else:
            x = self.x[shared] if isinstance(shared, slice) else self.x.index_select(0, shared)
        if not self.linearized:
            out = self.net.forward(params, x)
        else:
            if self.cache is not None:
                hs, dphis, f0 = self.cache
                hs = [self._take(h, idx, shared) for h in hs]
                dphis = [self._take(d, idx, shared) for d in dphis]
                f0 = self._take(f0, idx, shared)
            else:
                hs, dphis, f0 = self.net.primal(self.params0, x)
            t = {k: v - self.params0[k] for k, v in params.items()}
            out = f0 + self.net.tangent(self.params0, t, hs, dphis)
        if self.delta is not None:
            out = out + self._take(self.delta, idx, shared)
        return out


def chol_jitter(K: Tensor) -> tuple[Tensor, float]:
    """Cholesky factor of K + jitter·mean(diag K)·I with the smallest jitter (0, JITTER, ×10 …) that works."""
    scale = float(K.diagonal().mean())
    jitter = 0.0
    while True:
        A = K if jitter == 0.0 else K + (jitter * scale) * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            return L, jitter
        jitter = JITTER if jitter == 0.0 else jitter * 10
        if jitter > MAX_JITTER:
            raise ValueError("prior kernel at the training points is numerically singular (duplicate training "
                             "points?); deduplicate data.train.x")


@dataclass
class GPPrior:
    """B draws of prior logits f0 ~ N(0, K ⊗ I_C) at N training points, and conditional draws elsewhere.

    Attributes:
        values: (B, N, C) the draws at the training points. chol: (N, N) Cholesky factor of K(X, X) (+ jitter).
        white: (N, B·C) L⁻¹ f0(X), so the conditional mean at x* is (L⁻¹K_X*)ᵀ white. jitter: relative jitter
        used. seed: the seed conditional draws are derived from.
    """

    values: Tensor
    chol: Tensor
    white: Tensor
    jitter: float
    seed: int

    @classmethod
    def draw(cls, K: Tensor, members: int, classes: int, seed: int) -> GPPrior:
        """Draw ``members`` prior functions at the training points. K: (N, N) per-output kernel (float64)."""
        L, jitter = chol_jitter(K)
        n = K.shape[0]
        g = torch.Generator().manual_seed(derive_seed(seed, "train_draws"))
        z = torch.randn(n, members * classes, generator=g, dtype=K.dtype).to(K.device)
        f = L @ z                                               # (N, B·C), columns ~ N(0, K + jitter)
        values = f.view(n, members, classes).permute(1, 0, 2).contiguous()
        return cls(values, L, z, jitter, int(seed))

    def conditional(self, K_star_x: Tensor, k_star_diag: Tensor, x_star: Tensor) -> Tensor:
        """Draw f0(x*) (B, M, C) given the draws at X: per point, N(K*X K⁻¹f0(X), k** − K*X K⁻¹K_X*).

        Args: K_star_x (M, N) prior kernel test × train; k_star_diag (M,) its test diagonal; x_star (M, ...) the
        points (their bytes seed the per-point noise, see the module docstring).
        """
        B, N, C = self.values.shape
        A = torch.linalg.solve_triangular(self.chol, K_star_x.t().to(self.chol.dtype), upper=False)   # L⁻¹K_X*
        mean = (A.t() @ self.white).view(-1, B, C).permute(1, 0, 2)                                  # (B, M, C)
        var = (k_star_diag.to(A.dtype) - A.pow(2).sum(0)).clamp_min(0.0)                             # (M,)
        z = torch.stack([torch.randn(B, C, dtype=torch.float64,
                                     generator=torch.Generator().manual_seed(derive_seed(self.seed, "point", h)))
                         for h in row_hashes(x_star)], 1).to(mean.device, mean.dtype)              # (B, M, C)
        return mean + var.sqrt()[None, :, None] * z


# -- fit records of the NTK ensemble ------------------------------------------------------------------------------
def ensemble_nll(logits: Tensor | None, y: Tensor) -> float | None:
    """NLL of the ensemble's mean predictive, −mean log((1/S) Σ_s softmax(logits_s))[y] (benchmarks.md)."""
    if logits is None:
        return None
    lp = torch.logsumexp(torch.log_softmax(logits.double(), -1), 0) - math.log(logits.shape[0])
    return float(-lp.gather(1, y.view(-1, 1).to(lp.device)).mean())


def take_members(params: dict | None, sl: slice) -> dict | None:
    """Members ``sl`` of stacked parameters (None stays None)."""
    return None if params is None else {k: v[sl] for k, v in params.items()}


def training_summary(report: dict) -> dict:
    """Per-member convergence of ``ntkbayes.training`` condensed for ``fit_info``: extremes, ``all_converged``
    and per-member lists ``converged``, ``stop_reason``, ``iterations`` and ``grad_max`` (‖∇L_s‖_∞ reached; None
    for Adam, whose report has no ‖·‖_∞). L-BFGS counts a member converged only on its gradient criterion."""
    iters = report.get("iterations") or report.get("epochs_run")
    reasons = list(report.get("stop_reason", []))
    grad_max = report.get("grad_max")
    return {"optimizer": report["optimizer"], "iterations_min": int(min(iters)), "iterations_max": int(max(iters)),
            "grad_norm_max": float(max(report["grad_norm"])),
            "grad_max_max": float(max(grad_max)) if grad_max else None,
            "evaluations_max": int(max(report["evaluations"])) if "evaluations" in report else None,
            "tol_grad": report.get("tol_grad"),
            "all_converged": bool(all(report["converged"])), "converged": [bool(c) for c in report["converged"]],
            "stop_reason": reasons, "iterations": [int(i) for i in iters],
            "grad_max": [float(g) for g in grad_max] if grad_max else None,
            "stop_reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
            "final_train_loss_max": float(max(report["final_train_loss"]))}


def newton_summary(results: list) -> dict:
    """Per-member Newton convergence (None entries: the closed-form λ = 0 interpolant, exact by construction),
    with the same per-member lists as :func:`training_summary`."""
    done = [r for r in results if r is not None]
    if not done:
        n = len(results)
        return {"optimizer": "interpolant", "all_converged": True, "iterations_min": 0, "iterations_max": 0,
                "converged": [True] * n, "stop_reason": ["closed_form"] * n, "iterations": [0] * n}
    iters = torch.cat([r.iterations.cpu() for r in done])
    grad = torch.cat([r.grad_norm.cpu() for r in done])
    conv = torch.cat([r.converged.cpu() for r in done])
    return {"optimizer": "newton", "iterations_min": int(iters.min()), "iterations_max": int(iters.max()),
            "grad_norm_max": float(grad.max()), "all_converged": bool(conv.all()), "converged": conv.tolist(),
            "stop_reason": ["converged" if c else "max_iter" for c in conv.tolist()], "iterations": iters.tolist(),
            "log_evidence_mean": float(torch.cat([r.log_evidence.cpu() for r in done]).mean())}


def newton_condition_bound(theta: Tensor, kappa: float, classes: int = 1) -> tuple[float, str]:
    """Upper bound 1 + tr(Θ)/(2κ) on the condition number of the Newton system I + W^½ΘW^½/κ of λ > 0
    (math.md (c)): W = diag(p) − ppᵀ has eigenvalues ≤ ½ and λmax(Θ) ≤ tr(Θ). ``classes``: C for a scalar
    kernel Θ ⊗ I_C (its trace is C·tr(Θ)). Free, and never large unless κ is tiny."""
    n = theta.shape[0]
    flat = theta.reshape(n * theta.shape[2], -1) if theta.ndim == 4 else theta
    return 1.0 + classes * float(flat.diagonal().sum()) / (2.0 * kappa), "newton_trace_bound"


def condition_info(lam: float, conds: list[tuple[float, str]], dtype: torch.dtype) -> dict:
    """fit_info keys for the condition numbers of the kernel systems of one λ (max and per member), warning once
    (``ntk.newton.IllConditionedWarning``) when the λ = 0 interpolant's cond(Θ) exceeds the threshold."""
    worst = max(c for c, _ in conds)
    if lam == 0.0:
        warn_ill_conditioned(worst, dtype, "ntk_ensemble kernel mode, weight_decay=0: Θ",
                             "set weight_decay (λ) > 0, e.g. 1e-5", stacklevel=4)
    return {"kernel_condition": worst, "kernel_condition_method": conds[0][1],
            "member_kernel_condition": [c for c, _ in conds]}


def quiet_interpolant(theta: Tensor, f0: Tensor, Y: Tensor) -> tuple[Tensor, tuple[float, str]]:
    """``ntk.solve.interpolant_smoothed`` coefficients γ and (cond(Θ), method), its per-call warning silenced
    (the caller warns once for all members through :func:`condition_info`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        res = solve.interpolant_smoothed(theta, f0, Y)
    return res.gamma, (res.condition, res.condition_method)


#: Keys :func:`flat_fit_info` copies from a λ candidate's kernel-condition record.
CONDITION_KEYS = ("kernel_condition", "kernel_condition_method", "member_kernel_condition")


def flat_fit_info(candidate: dict) -> dict:
    """Flat ``fit_info`` keys of the selected λ for the harness and leaderboard: ``converged`` (all members),
    ``member_converged``, ``member_stop_reason``, ``member_iterations``, ``member_grad_max`` (None for Newton and
    Adam) and, in kernel mode, ``kernel_condition`` (max over members), its method and per-member list."""
    conv = candidate["convergence"]
    out = {"converged": bool(conv["all_converged"]), "member_converged": conv.get("converged"),
           "member_stop_reason": conv.get("stop_reason"), "member_iterations": conv.get("iterations"),
           "member_grad_max": conv.get("grad_max")}
    out.update({k: candidate[k] for k in CONDITION_KEYS if k in candidate})
    return out
