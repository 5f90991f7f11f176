"""Shared pieces of the function-space Newton solvers (``docs/math.md`` (c)): the result type, input layouts, the
per-sample W^{1/2}, and the Newton/IRLS driver with its backtracking line search and stopping rule.

Used by :mod:`ntkbayes.ntk.solve` (Cholesky steps), :mod:`ntkbayes.ntk.solve_cg` (conjugate-gradient steps) and
:mod:`ntkbayes.ntk.posterior` (test-point layouts). A solver supplies Ψ(α) and a Newton step; :func:`newton_loop`
does the rest, identically for all of them. Conventions (math.md 0): B prior means (members), N train, M test
points, C classes; vectors are sample-major (index ``n*C + c``) unless a docstring says class-major.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import torch
from torch import Tensor

#: Newton stops after two consecutive steps with |ΔΨ| ≤ tol·max(1, |Ψ|) (float64 kernels). Newton converges
#: quadratically, so the second (polishing) step takes the MAP to rounding precision.
DEFAULT_TOL = 1e-10
#: Default tolerance for float32 kernels (|ΔΨ| below ~1e-7·|Ψ| is rounding noise there).
DEFAULT_TOL_FLOAT32 = 1e-6
#: Line-search slack in units of eps·max(1, |Ψ|): Ψ is a sum over NC terms, so a step at the optimum can raise it
#: by rounding; such steps are accepted so the polishing step is not rejected.
ROUNDING_SLACK = 64.0
#: Iteration cap; the verified problems need 7–13 iterations, tiny λ (large K) a few more.
DEFAULT_MAX_ITER = 100
#: Step halvings in the backtracking line search before a member keeps its iterate (t → 0: stalled at optimum).
MAX_HALVINGS = 40
#: Memory advice named in errors raised before (NC)² or C·N² matrices are formed.
MEMORY_OPTION = ("member_chunk (solve fewer members at once), keep_factors=False, a smaller N (subsample / "
                 "max_train) or the block form with the analytic kernel (kernel='analytic')")


@dataclass
class NewtonResult:
    """Converged Newton/IRLS solution for B prior means sharing one kernel (math.md (c)).

    Attributes:
        form: ``"full"`` (sample-major NC × NC) or ``"block"`` (class-block, R&W Alg. 3.3).
        f: (B, N, C) MAP logits at the training points, ĝ = m + Kα.
        alpha: (B, N, C) α̂ = y − softmax(ĝ) at the optimum.
        beta: (B, N, C) coefficients on the kernel as given, ``kernel_scale·α`` (= α/(λN) = β of math.md (c) when
            the kernel is Θ and ``kernel_scale = 1/(λN)``).
        kernel_scale: prior covariance K = kernel_scale · (kernel given); predict applies it to test kernels too.
        log_evidence: (B,) Laplace log q(Y) = Σ yᵀlog softmax(ĝ) − ½α̂ᵀKα̂ − ½log|I + SKS|.
        psi: (B,) final objective Ψ = ΣCE(ĝ) + ½α̂ᵀKα̂.
        iterations: (B,) Newton iterations per member. converged: (B,) two steps in a row had |ΔΨ| ≤ tol·max(1,|Ψ|).
        delta_psi: (B,) |ΔΨ| of the last step. grad_norm: (B,) ‖∇_g Ψ‖ = ‖α − (y − p)‖ at the end.
        sqrt_w: (B, N, C, C) per-sample W^{1/2} (full form). chol: (B, NC, NC) chol(I + SKS) (full form).
        e_mats: (B, C, N, N) E_c (block form). chol_m: (B, N, N) chol(Σ_c E_c) (block form).
        cg_iterations: (B,) total conjugate-gradient iterations over all Newton steps (``solver="cg"`` only; its
            log_evidence is NaN). cg_max_residual: (B,) the largest final relative CG residual of any step.
    """

    form: str
    f: Tensor
    alpha: Tensor
    beta: Tensor
    kernel_scale: float
    log_evidence: Tensor
    psi: Tensor
    iterations: Tensor
    converged: Tensor
    delta_psi: Tensor
    grad_norm: Tensor
    sqrt_w: Tensor | None = None
    chol: Tensor | None = None
    e_mats: Tensor | None = None
    chol_m: Tensor | None = None
    cg_iterations: Tensor | None = None
    cg_max_residual: Tensor | None = None

    def report(self) -> dict:
        """JSON-serializable convergence summary over the B members."""
        out = {
            "form": self.form,
            "members": int(self.f.shape[0]),
            "all_converged": bool(self.converged.all()),
            "max_iterations": int(self.iterations.max()),
            "mean_iterations": float(self.iterations.double().mean()),
            "max_grad_norm": float(self.grad_norm.max()),
            "max_delta_psi": float(self.delta_psi.max()),
            "mean_log_evidence": float(self.log_evidence.mean()),
        }
        if self.cg_iterations is not None:
            out.update(solver="cg", max_cg_iterations=int(self.cg_iterations.max()),
                       max_cg_residual=float(self.cg_max_residual.max()))
        return out


def members(m: Tensor | None, N: int, C: int, ref: Tensor, name: str) -> Tensor:
    """Prior means as (B, N, C) in ref's dtype/device; accepts (N, C), (B, N, C), (N*C,), (B, N*C) or None (zero)."""
    if m is None:
        return torch.zeros(1, N, C, dtype=ref.dtype, device=ref.device)
    m = torch.as_tensor(m).to(ref.device, ref.dtype)
    if m.shape in ((N, C), (N * C,)):
        m = m.reshape(1, N, C)
    elif m.ndim == 3 and m.shape[1:] == (N, C):
        pass
    elif m.ndim == 2 and m.shape[1] == N * C:
        m = m.reshape(-1, N, C)
    else:
        raise ValueError(f"{name}: expected shape (N, C)=({N}, {C}), (B, N, C) or flat (B, N*C), got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return m


def targets(Y: Tensor, N: int, C: int, ref: Tensor) -> Tensor:
    """Y as (N, C) rows on the simplex; integer labels (N,) become one-hot."""
    Y = torch.as_tensor(Y)
    if not Y.is_floating_point():
        if Y.shape != (N,) or Y.min() < 0 or Y.max() >= C:
            raise ValueError(f"Y: integer labels must have shape ({N},) and values in [0, {C}), got {tuple(Y.shape)}")
        Y = torch.nn.functional.one_hot(Y.long(), C)
    Y = Y.to(ref.device, ref.dtype)
    if Y.shape != (N, C):
        raise ValueError(f"Y: expected shape (N, C)=({N}, {C}), got {tuple(Y.shape)}")
    if (Y < 0).any() or (Y.sum(-1) - 1).abs().max() > 1e-6:
        raise ValueError("Y: rows must be non-negative and sum to 1 (one-hot or label-smoothed targets)")
    return Y


def flat_kernel(K: Tensor, N: int, C: int, name: str) -> Tensor:
    """(N, N, C, C) 4-D layout or flat (NC, NC) sample-major → flat (NC, NC) (math.md 0)."""
    if K.shape == (N, N, C, C):
        return K.permute(0, 2, 1, 3).reshape(N * C, N * C)
    if K.shape == (N * C, N * C):
        return K
    raise ValueError(f"{name}: expected (N*C, N*C)=({N * C}, {N * C}) or (N, N, C, C), got {tuple(K.shape)}")


def flat_cross(K: Tensor, N: int, C: int, name: str) -> Tensor:
    """Test-train kernel → flat (MC, NC): from (M, N, C, C), flat (MC, NC), or scalar (M, N) (⊗ I_C)."""
    K = torch.as_tensor(K)
    if K.ndim == 4 and K.shape[1:] == (N, C, C):
        return K.permute(0, 2, 1, 3).reshape(K.shape[0] * C, N * C)
    if K.ndim == 2 and K.shape[1] == N * C and K.shape[0] % C == 0:
        return K
    if K.ndim == 2 and K.shape[1] == N:
        return torch.kron(K, torch.eye(C, dtype=K.dtype, device=K.device))
    raise ValueError(f"{name}: expected (M, N, C, C), flat (M*C, N*C) or scalar (M, N) with N={N}, C={C}, "
                     f"got {tuple(K.shape)}")


def star_mean(m_star: Tensor | None, B: int, M: int, C: int, ref: Tensor) -> Tensor:
    """Test-point prior means (1 or B, M, C) for B solved members (:func:`members` layouts)."""
    m_star = members(m_star, M, C, ref, "m_star")
    if m_star.shape[0] not in (1, B):
        raise ValueError(f"m_star: {m_star.shape[0]} prior means for {B} solved members")
    return m_star


def kernel_dims(m: Tensor | None, Y: Tensor) -> tuple[int, int]:
    """(N, C) from Y (labels need C from m)."""
    Y = torch.as_tensor(Y)
    if Y.ndim == 2:
        return Y.shape[0], Y.shape[1]
    if m is None:
        raise ValueError("Y: integer labels need the prior mean m (B, N, C) to give C; pass one-hot Y (N, C)")
    return Y.shape[0], torch.as_tensor(m).shape[-1]


def sqrt_w(p: Tensor) -> tuple[Tensor, Tensor]:
    """W_i = diag(p_i) − p_i p_iᵀ and its symmetric square root via eigh, eigenvalues clamped at 0. p (..., C)."""
    W = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    evals, Q = torch.linalg.eigh(W)
    S = (Q * evals.clamp_min(0).sqrt().unsqueeze(-2)) @ Q.transpose(-1, -2)
    return S, W


#: Systems up to this size get their exact condition number from ``torch.linalg.eigvalsh`` (≈ (NC)³ flops, under
#: a second at 2048 on one CPU thread); larger ones the Cholesky-diagonal estimate (free once factored).
EIGH_MAX_SIZE = 2048
#: cond(Θ) above which the λ = 0 interpolant is flagged (float64). Beyond ~1e8 its coefficients and its logits
#: off the data are dominated by Θ's near-null directions (measured: empirical NTK at width 64, cond 3.8e9,
#: coefficients up to 8.6e4, test logits up to 52), which gradient training from θ0 does not reach in practice;
#: the solve itself keeps cond·ε ≈ 2e-8 relative accuracy. In float32 the threshold is 1e-2/ε (≈ 8e4): two digits.
CONDITION_WARN_FLOAT64 = 1e8


class IllConditionedWarning(UserWarning):
    """A kernel system solved without regularization (λ = 0) is ill-conditioned: the solution is unreliable."""


def condition_threshold(dtype: torch.dtype) -> float:
    """cond above which a kernel system in ``dtype`` is flagged: min(1e8, 1e-2/ε) (:data:`CONDITION_WARN_FLOAT64`)."""
    return min(CONDITION_WARN_FLOAT64, 1e-2 / torch.finfo(dtype).eps)


def condition_number(A: Tensor, L: Tensor | None = None) -> tuple[float, str]:
    """Condition number of the symmetric positive-definite A (n, n) and how it was obtained.

    ``"eigvalsh"``: λmax/λmin exactly for n ≤ :data:`EIGH_MAX_SIZE` (inf when λmin ≤ 0). ``"cholesky_diag"``
    otherwise: (max L_ii / min L_ii)² from the Cholesky factor L (computed if not given), a lower bound on cond(A)
    (the L_ii are L's eigenvalues, and cond(A) = cond(L)²).
    """
    n = A.shape[-1]
    if n <= EIGH_MAX_SIZE:
        ev = torch.linalg.eigvalsh(A)
        lo, hi = float(ev[0]), float(ev[-1])
        return (hi / lo if lo > 0 else float("inf")), "eigvalsh"
    d = (L if L is not None else chol(A, "kernel")).diagonal().abs()
    return float((d.max() / d.min()) ** 2), "cholesky_diag"


def warn_ill_conditioned(cond: float, dtype: torch.dtype, what: str, fix: str, stacklevel: int = 3) -> bool:
    """Emit one :class:`IllConditionedWarning` line when ``cond`` exceeds :func:`condition_threshold`; returns
    whether it did."""
    limit = condition_threshold(dtype)
    if not cond > limit:
        return False
    warnings.warn(f"{what}: condition number {cond:.2g} exceeds {limit:.0e} "
                  f"({str(dtype).replace('torch.', '')}); the solution is dominated by near-null directions; {fix}",
                  IllConditionedWarning, stacklevel=stacklevel)
    return True


def chol(A: Tensor, what: str) -> Tensor:
    """Cholesky factor of A, or ValueError naming ``what`` if A is not positive definite."""
    L, info = torch.linalg.cholesky_ex(A)
    if (info != 0).any():
        raise ValueError(f"{what} is not positive definite (kernel not PSD or not finite?)")
    return L


def cat_results(results: list[NewtonResult]) -> NewtonResult:
    """Concatenate results of member chunks along the member axis."""
    if len(results) == 1:
        return results[0]
    kw = {}
    for fld in fields(NewtonResult):
        vals = [getattr(r, fld.name) for r in results]
        kw[fld.name] = torch.cat(vals) if isinstance(vals[0], Tensor) else vals[0]
    return NewtonResult(**kw)


def line_search(psi_of, a: Tensor, d: Tensor, psi0: Tensor, m: Tensor):
    """Backtracking per member: t halved until Ψ(a + t d) ≤ Ψ(a) up to rounding (math.md (c)); a member that never
    decreases Ψ keeps a (t = 0)."""
    out_a, out_psi = a.clone(), psi0.clone()
    slack = ROUNDING_SLACK * torch.finfo(a.dtype).eps * psi0.abs().clamp_min(1.0)
    t = torch.ones(a.shape[0], dtype=a.dtype, device=a.device)
    todo = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
    shape = (-1,) + (1,) * (a.ndim - 1)
    for _ in range(MAX_HALVINGS):
        idx = todo.nonzero().squeeze(1)
        cand = a[idx] + t[idx].view(shape) * d[idx]
        pc = psi_of(cand, m[idx])
        ok = torch.isfinite(pc) & (pc <= psi0[idx] + slack[idx])
        out_a[idx[ok]], out_psi[idx[ok]] = cand[ok], pc[ok]
        todo[idx[ok]] = False
        t[idx[~ok]] *= 0.5
        if not todo.any():
            break
    return out_a, out_psi


def start(a0: Tensor | None, m: Tensor) -> Tensor:
    """Newton's starting α in the layout of ``m``: 0, or a copy of the warm start ``a0`` (same shape)."""
    if a0 is None:
        return torch.zeros_like(m)
    if a0.shape != m.shape:
        raise ValueError(f"alpha0: expected the prior means' shape {tuple(m.shape)}, got {tuple(a0.shape)}")
    return a0.to(dtype=m.dtype, device=m.device).clone()


def newton_loop(psi_of, step, a0: Tensor, m: Tensor, tol: float | None, max_iter: int):
    """Shared driver: Newton direction from ``step(a, m, idx)`` (idx: the active members' indices), line search,
    per-member convergence bookkeeping."""
    if tol is None:
        tol = DEFAULT_TOL if a0.dtype == torch.float64 else DEFAULT_TOL_FLOAT32
    B = a0.shape[0]
    a, psi = a0, psi_of(a0, m)
    iters = torch.zeros(B, dtype=torch.long, device=a.device)
    conv = torch.zeros(B, dtype=torch.bool, device=a.device)
    dpsi = torch.full((B,), float("inf"), dtype=a.dtype, device=a.device)
    small = torch.zeros(B, dtype=torch.long, device=a.device)
    for _ in range(max_iter):
        act = (~conv).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        a_act, m_act = a[act], m[act]
        a_new, psi_new = line_search(psi_of, a_act, step(a_act, m_act, act) - a_act, psi[act], m_act)
        change = (psi[act] - psi_new).abs()
        a[act], psi[act], dpsi[act] = a_new, psi_new, change
        iters[act] += 1
        small[act] = torch.where(change <= tol * psi_new.abs().clamp_min(1.0), small[act] + 1, 0)
        conv[act] = small[act] >= 2  # one polishing step after |ΔΨ| is small: quadratic convergence → full precision
    return a, psi, iters, conv, dpsi
