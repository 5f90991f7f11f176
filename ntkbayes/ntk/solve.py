"""Function-space solver: NTK-regularized cross-entropy = multiclass GP-classifier MAP.

Implements ``docs/math.md`` (c); its predictive (d) is :mod:`ntkbayes.ntk.posterior`:

* (c) the linearized network trained on (1/N)ΣCE + (λ/2)‖θ−θ_a‖² is the MAP of a GP classifier with prior
  g ~ N(m, K), K = Θ/κ, κ = λN; Newton/IRLS in the general sample-major (NC × NC) form (:func:`newton_full`) and
  in the class-block form, Rasmussen & Williams (2006, GPML) Algorithm 3.3 with a prior mean (:func:`newton_block`),
  both with a backtracking line search and the Laplace log evidence; the λ → 0 label-smoothed interpolant
  (:func:`interpolant_smoothed`). For large N the block form's steps can be solved matrix-free by
  pivoted-Cholesky-preconditioned conjugate gradients (``solver="cg"``, :mod:`ntkbayes.ntk.solve_cg`, which also
  explains the choice); ``solver="auto"`` uses Cholesky while it fits in memory and N is small.
* (d) in :mod:`ntkbayes.ntk.posterior`: the linearized-Laplace (GGN) predictive N(μ*, Σ*) at test points
  (``posterior.predict``, R&W Algorithm 3.4 for the block form) and the softmax predictive.

Conventions (math.md 0): B prior means (ensemble members) share one kernel; N train, M test points, C classes;
vectors are **sample-major** (index ``n*C + c``, ``f.reshape(-1)`` of an (N, C) tensor) in the full form and
class-major inside the block form. Every solver works in the kernel's dtype and device (float64 recommended).

Anchors (math.md (c)): the caller builds the prior mean m (train) and m* (test) and passes them in —

* anchor ``init`` (θ_a = θ0): m = f0(X) = f(X; θ0), m* = f0(x*);
* anchor ``zero`` (θ_a = 0): m = f0(X) − J(X)θ0 = f_lin(X; θ=0), m* = f0(x*) − J(x*)θ0;
* infinite width: m = f0 sampled jointly on X ∪ X* from N(0, K_nngp ⊗ I_C) (or N(0, Θ ⊗ I_C) for NTKGP, (e)).

:func:`prior_mean` computes the first two for a finite network with one ``torch.func.jvp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from ntkbayes import utils
from ntkbayes.ntk import solve_cg
from ntkbayes.ntk.newton import (  # noqa: F401  (DEFAULT_* and NewtonResult re-exported: solve's public API)
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    DEFAULT_TOL_FLOAT32,
    MEMORY_OPTION,
    IllConditionedWarning,
    NewtonResult,
    cat_results,
    chol,
    condition_number,
    flat_cross,
    flat_kernel,
    kernel_dims,
    members,
    newton_loop,
    sqrt_w,
    star_mean,
    start,
    targets,
    warn_ill_conditioned,
)
from ntkbayes.utils import check_memory


class Solver(str, Enum):
    """Linear algebra of the block Newton steps (:func:`newton_block`; the choice is explained in ``solve_cg``)."""

    AUTO = "auto"
    """Cholesky while its ~(2·B·C + C_K)·N² numbers fit in memory, and, when the factors are not kept, only up to
    N = ``AUTO_CG_MIN_N``; preconditioned CG beyond."""
    CHOLESKY = "cholesky"
    """R&W Algorithm 3.3: C + 1 Cholesky factorizations per step; exact; gives the evidence and covariance."""
    CG = "cg"
    """Matrix-free steps by pivoted-Cholesky-preconditioned conjugate gradients (``ntk.solve_cg``): memory ~N²
    for the kernel plus O(B·N·C); MAP to the CG tolerance; no log evidence (NaN), no covariance."""


#: Above this many training points ``solver="auto"`` uses CG unless the factors are kept: measured on mnist1d
#: (N = 1594, C = 5, 8 members, 1 CPU thread) CG takes 9.7 s and Cholesky 160 s for the same MAP (max difference
#: 5e-9); benchmarks/perf/solve.py finds CG ahead from N ≈ 500 (C = 10) and its cost growing as N^1.1 vs N^3.3.
AUTO_CG_MIN_N = 1024


class Anchor(str, Enum):
    """Point the L2 regularizer pulls the parameters toward (math.md (c))."""

    INIT = "init"
    """θ_a = θ0: prior mean m = f0 = f(·; θ0)."""
    ZERO = "zero"
    """θ_a = 0: prior mean m = f_lin(·; θ=0) = f0 − J θ0 (needs the finite network)."""



# ---- full (sample-major NC × NC) Newton — math.md (c) ----
def _full_factor(S: Tensor, K4: Tensor, scale: float) -> Tensor:
    """chol(I + S K S) for blockdiag S (b, N, C, C) and K4 (N, C, N, C) → (b, NC, NC).

    S K S = S (S K)ᵀ (S and K symmetric): two batched block products on contiguous rows, 1.5–2× faster than the
    equivalent einsum pair (measured N = 539, C = 5)."""
    b, N, C, _ = S.shape
    SK = torch.matmul(S, K4.reshape(N, C, N * C)).view(b, N * C, N * C)
    A = torch.matmul(S, SK.transpose(-1, -2).reshape(b, N, C, N * C)).view(b, N * C, N * C)
    del SK
    A.mul_(scale).diagonal(dim1=-2, dim2=-1).add_(1.0)
    return chol(A, "I + S K S")


def _blocks(S: Tensor, v: Tensor) -> Tensor:
    """Blockdiag (b, N, C, C) times (b, N, C)."""
    return (S @ v.unsqueeze(-1)).squeeze(-1)


def _newton_full_core(K: Tensor, m: Tensor, Y: Tensor, scale: float, tol: float | None, max_iter: int,
                      keep: bool, a0: Tensor | None = None) -> NewtonResult:
    B, N, C = m.shape
    K4 = K.view(N, C, N, C)

    def kmv(a: Tensor) -> Tensor:  # K a, a (b, N, C); K symmetric
        return (scale * (a.reshape(a.shape[0], -1) @ K)).view(a.shape)

    def psi_of(a: Tensor, mm: Tensor) -> Tensor:  # Ψ(α) = Σ CE(m + Kα) + ½ αᵀKα   (math.md (c))
        u = kmv(a)
        return -(Y * torch.log_softmax(mm + u, -1)).sum((1, 2)) + 0.5 * (a * u).sum((1, 2))

    def step(a: Tensor, mm: Tensor, _idx: Tensor) -> Tensor:  # math.md (c), Newton/IRLS lines
        u = kmv(a)
        p = torch.softmax(mm + u, -1)
        S, W = sqrt_w(p)
        bvec = _blocks(W, u) + (Y - p)                                  # b = W K α + (y − p)
        L = _full_factor(S, K4, scale)                                  # L = chol(I + S K S)
        v = _blocks(S, kmv(bvec)).reshape(a.shape[0], N * C, 1)
        w = torch.cholesky_solve(v, L).view(a.shape)
        return bvec - _blocks(S, w)                                     # α_new = b − S L⁻ᵀL⁻¹ S K b

    a, psi, iters, conv, dpsi = newton_loop(psi_of, step, start(a0, m), m, tol, max_iter)
    u = kmv(a)
    f = m + u
    logp = torch.log_softmax(f, -1)
    p = logp.exp()
    S, _ = sqrt_w(p)
    L = _full_factor(S, K4, scale)
    half_logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    log_ev = (Y * logp).sum((1, 2)) - 0.5 * (a * u).sum((1, 2)) - half_logdet   # math.md (c) log-evidence
    grad = (a - (Y - p)).flatten(1).norm(dim=1)
    return NewtonResult("full", f, a, scale * a, scale, log_ev, psi, iters, conv, dpsi, grad,
                        sqrt_w=S if keep else None, chol=L if keep else None)


def newton_full(K: Tensor, m: Tensor | None, Y: Tensor, *, kernel_scale: float = 1.0, tol: float | None = None,
                max_iter: int = DEFAULT_MAX_ITER, member_chunk: int | None = None,
                keep_factors: bool = True, alpha0: Tensor | None = None) -> NewtonResult:
    """Newton/IRLS for the GP-classifier MAP with a general multi-output kernel (math.md (c), sample-major).

    Minimizes Ψ(α) = Σ_i CE(softmax(g_i), y_i) + ½αᵀKα with g = m + Kα, for each of B prior means; never forms
    K⁻¹ or W⁻¹. Cost O(B (NC)³) per iteration, memory about 3·B·(NC)² numbers.

    Args:
        K: (NC, NC) sample-major kernel or (N, N, C, C) (e.g. the empirical NTK Θ); prior covariance is
            ``kernel_scale · K`` (use ``kernel_scale = 1/(λN)`` with K = Θ, see :func:`solve_ntk_classifier`).
        m: prior mean at the training points, (B, N, C), (N, C), flat (B, NC) / (NC,), or None (zero).
        Y: (N, C) one-hot or label-smoothed targets, or (N,) integer labels.
        tol: stop after two steps with |ΔΨ| ≤ tol·max(1, |Ψ|) (None: DEFAULT_TOL, or DEFAULT_TOL_FLOAT32 for
            float32). member_chunk: solve members in chunks of this size (memory).
        keep_factors: keep W^{1/2} and chol(I + SKS) for ``posterior.predict``'s covariance.
        alpha0: (B, N, C) starting α (None: 0). Ψ is strictly convex and every step is line-searched, so the start
            changes the iterations, not the optimum: a warm start from a neighbouring λ's solution
            (:func:`warm_start`) saves most of them.

    Returns:
        :class:`NewtonResult` with ``form = "full"``.
    """
    N, C = kernel_dims(m, Y)
    K = flat_kernel(torch.as_tensor(K), N, C, "K")
    m, Y = members(m, N, C, K, "m"), targets(Y, N, C, K)
    chunk = member_chunk or m.shape[0]
    check_memory((3 * min(chunk, m.shape[0]) + 1) * (N * C) ** 2 * K.element_size(), K.device,
                 f"full Newton (N*C = {N * C}, {min(chunk, m.shape[0])} members)", MEMORY_OPTION)
    a0 = None if alpha0 is None else start(members(alpha0, N, C, K, "alpha0"), m)
    return cat_results([_newton_full_core(K, m[i:i + chunk], Y, float(kernel_scale), tol, max_iter, keep_factors,
                                          None if a0 is None else a0[i:i + chunk])
                        for i in range(0, m.shape[0], chunk)])


# ---- block Newton = R&W Algorithm 3.3 with a prior mean — math.md (c) ----
def _block_factor(Kc: Tensor, sq: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """E_c = D_c^½ L_c⁻ᵀ L_c⁻¹ D_c^½ with L_c = chol(I + D_c^½ K_c D_c^½); also Σ_c log|L_c| (b,). sq (b, C, N)."""
    A = (scale * Kc) * sq.unsqueeze(-1) * sq.unsqueeze(-2)
    A.diagonal(dim1=-2, dim2=-1).add_(1.0)
    L = chol(A, "I + D^½ K_c D^½")
    del A
    logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum((-1, -2))
    E = torch.cholesky_inverse(L)
    del L
    E.mul_(sq.unsqueeze(-1)).mul_(sq.unsqueeze(-2))
    return E, logdet


def _newton_block_core(Kc: Tensor, m: Tensor, Y: Tensor, scale: float, tol: float | None, max_iter: int,
                       keep: bool, a0: Tensor | None = None) -> NewtonResult:
    m, Yc = m.transpose(1, 2).contiguous(), Y.t().contiguous()          # class-major (b, C, N)

    def kmv(a: Tensor) -> Tensor:  # blockdiag_c(K_c) a, a (b, C, N)
        return scale * (Kc @ a.unsqueeze(-1)).squeeze(-1)

    def psi_of(a: Tensor, mm: Tensor) -> Tensor:
        u = kmv(a)
        return -(Yc * torch.log_softmax(mm + u, 1)).sum((1, 2)) + 0.5 * (a * u).sum((1, 2))

    def step(a: Tensor, mm: Tensor, _idx: Tensor) -> Tensor:  # R&W Algorithm 3.3, lines 4-12, with u = f − m
        u = kmv(a)
        pi = torch.softmax(mm + u, 1)
        E, _ = _block_factor(Kc, pi.sqrt(), scale)
        M = chol(E.sum(1), "Σ_c E_c")
        b = pi * u - pi * (pi * u).sum(1, keepdim=True) + Yc - pi     # b = W(f − m) + y − π
        c = (E @ kmv(b).unsqueeze(-1)).squeeze(-1)                      # c_c = E_c K_c b_c
        t = torch.cholesky_solve(c.sum(1).unsqueeze(-1), M)             # M⁻ᵀM⁻¹ Σ_c c_c
        return b - c + (E @ t.unsqueeze(1)).squeeze(-1)                 # a_c = b_c − c_c + E_c t

    a0 = None if a0 is None else a0.transpose(1, 2).contiguous()
    a, psi, iters, conv, dpsi = newton_loop(psi_of, step, start(a0, m), m, tol, max_iter)
    u = kmv(a)
    f = m + u
    logp = torch.log_softmax(f, 1)
    pi = logp.exp()
    E, logdet_l = _block_factor(Kc, pi.sqrt(), scale)
    M = chol(E.sum(1), "Σ_c E_c")
    # ½log|I + SKS| = Σ_c log|L_c| + log|M|   (|I + KW| = Π_c|L_c|² · |Σ_c E_c|, matrix determinant lemma)
    half_logdet = logdet_l + torch.log(torch.diagonal(M, dim1=-2, dim2=-1)).sum(-1)
    log_ev = (Yc * logp).sum((1, 2)) - 0.5 * (a * u).sum((1, 2)) - half_logdet
    grad = (a - (Yc - pi)).flatten(1).norm(dim=1)
    a_sm = a.transpose(1, 2)
    return NewtonResult("block", f.transpose(1, 2), a_sm, scale * a_sm, scale, log_ev, psi, iters, conv, dpsi,
                        grad, e_mats=E if keep else None, chol_m=M if keep else None)


def newton_block(Kc: Tensor, m: Tensor | None, Y: Tensor, *, kernel_scale: float = 1.0, tol: float | None = None,
                 max_iter: int = DEFAULT_MAX_ITER, member_chunk: int | None = None,
                 keep_factors: bool = True, solver: str | Solver = Solver.AUTO, alpha0: Tensor | None = None,
                 **cg_options) -> NewtonResult:
    """Newton for a class-block kernel K = blockdiag(K_1..K_C): R&W Algorithm 3.3 with a prior mean and a line
    search (math.md (c)). Cost O(B C N³) per iteration, memory about 2·B·C·N² numbers.

    Args:
        Kc: (N, N) kernel shared by all classes (e.g. the analytic NTK Θ, multi-output Θ ⊗ I_C) or (C, N, N);
            prior covariance is ``kernel_scale · K_c``.
        m, Y, tol, max_iter, member_chunk, keep_factors, alpha0: as in :func:`newton_full` (m, Y, alpha0
            sample-major (B, N, C)).
        solver: :class:`Solver`; ``"auto"`` uses Cholesky when it fits in memory and either ``keep_factors`` or
            N ≤ ``AUTO_CG_MIN_N``, CG otherwise. cg_options: ``cg_tol``, ``cg_max_iter``, ``precond_rank`` of
            ``solve_cg.newton_block_cg``.

    Returns:
        :class:`NewtonResult` with ``form = "block"`` (same MAP as :func:`newton_full` on Σ_c K_c ⊗ e_c e_cᵀ).
    """
    Kc = torch.as_tensor(Kc)
    N, C = kernel_dims(m, Y)
    if Kc.shape == (N, N):
        Kc = Kc.unsqueeze(0)
    elif Kc.shape != (C, N, N):
        raise ValueError(f"Kc: expected (N, N)=({N}, {N}) or (C, N, N)=({C}, {N}, {N}), got {tuple(Kc.shape)}")
    m, Y = members(m, N, C, Kc, "m"), targets(Y, N, C, Kc)
    a0 = None if alpha0 is None else start(members(alpha0, N, C, Kc, "alpha0"), m)
    chunk = member_chunk or m.shape[0]
    try:
        solver = Solver(solver)
    except ValueError:
        raise ValueError(f"solver: expected one of {[v.value for v in Solver]}, got {solver!r}") from None
    need = solve_cg.cholesky_memory_bytes(N, C, min(chunk, m.shape[0]), Kc.shape[0], Kc.element_size())
    if solver is Solver.AUTO:
        fits = need <= 0.8 * utils.available_memory(Kc.device)
        solver = Solver.CHOLESKY if fits and (keep_factors or N <= AUTO_CG_MIN_N) else Solver.CG
    if solver is Solver.CG:
        return cat_results([solve_cg.newton_block_cg(Kc, m[i:i + chunk], Y, kernel_scale=kernel_scale, tol=tol,
                                                     max_iter=max_iter, alpha0=None if a0 is None else
                                                     a0[i:i + chunk], **cg_options)
                            for i in range(0, m.shape[0], chunk)])
    if cg_options:
        raise ValueError(f"{sorted(cg_options)}: CG options need solver='cg' or 'auto'")
    check_memory(need, Kc.device, f"block Newton (N = {N}, C = {C}, {min(chunk, m.shape[0])} members)",
                 MEMORY_OPTION + ", or solver='cg'")
    return cat_results([_newton_block_core(Kc, m[i:i + chunk], Y, float(kernel_scale), tol, max_iter, keep_factors,
                                           None if a0 is None else a0[i:i + chunk])
                        for i in range(0, m.shape[0], chunk)])


def solve_ntk_classifier(Theta: Tensor, f0: Tensor, Y: Tensor, lam: float, **kwargs) -> NewtonResult:
    """MAP of the linearized network under (1/N)ΣCE + (λ/2)‖θ − θ_a‖²: K = Θ/(λN) (math.md (c)).

    Picks the block form for an (N, N) analytic kernel (Θ ⊗ I_C) or (C, N, N), the full form for (NC, NC) or
    (N, N, C, C). ``result.beta`` is β = α/(λN); predictions use Θ-valued test kernels (``kernel_scale`` = 1/(λN)).

    Args:
        Theta: the NTK at the training points (shapes above). f0: (B, N, C) prior means (anchor: module docstring).
        Y: (N, C) targets or (N,) labels. lam: λ > 0 (for λ → 0 see :func:`interpolant_smoothed`).
        **kwargs: passed to :func:`newton_full` / :func:`newton_block` (tol, max_iter, member_chunk, keep_factors).
    """
    if not lam > 0:
        raise ValueError(f"lam: expected λ > 0, got {lam}; for λ → 0 use interpolant_smoothed")
    Theta = torch.as_tensor(Theta)
    N, C = kernel_dims(f0, Y)
    scale = 1.0 / (lam * N)
    if Theta.shape in ((N, N), (C, N, N)):
        return newton_block(Theta, f0, Y, kernel_scale=scale, **kwargs)
    return newton_full(Theta, f0, Y, kernel_scale=scale, **kwargs)


def warm_start(previous: NewtonResult, lam: float, lam_previous: float) -> Tensor:
    """α to start :func:`solve_ntk_classifier` at λ from its solution at ``lam_previous``: the one with the same
    logits, since m + Θα/(λN) is unchanged when α scales with λ (α₀ = α_prev · λ/λ_prev)."""
    return previous.alpha * (lam / lam_previous)


def prior_mean(model: torch.nn.Module, x: Tensor, anchor: str | Anchor = Anchor.INIT,
               params: dict[str, Tensor] | None = None) -> Tensor:
    """Prior mean m(x) (N, C) of the linearized network for an anchor (math.md (c)): f0(x) for ``init``,
    f0(x) − J(x)θ0 = f_lin(x; θ=0) for ``zero`` (one ``torch.func.jvp`` with tangent −θ0)."""
    from torch.func import functional_call, jvp

    anchor = Anchor(anchor)
    params = params or {k: v.detach() for k, v in model.named_parameters()}
    fn = lambda p: functional_call(model, p, (x,))
    if anchor is Anchor.INIT:
        return fn(params).detach()
    f0, jv = jvp(fn, (params,), ({k: -v for k, v in params.items()},))
    return (f0 + jv).detach()


# ---- λ → 0 label-smoothed interpolant — math.md (c) ----
@dataclass
class InterpolantResult:
    """Min-‖θ−θ0‖ interpolant of label-smoothed targets (anchor θ0, λ → 0).

    Attributes: gamma (B, N, C) coefficients on Θ; shift (B, N) the per-sample s; f (B, N, C) = f0 + Θγ
    (= log Y + s); f_star (B, M, C) = f0* + Θ*X γ, or None without test inputs; condition: cond(Θ) of the system
    solved and condition_method how it was obtained (``newton.condition_number``).
    """

    gamma: Tensor
    shift: Tensor
    f: Tensor
    f_star: Tensor | None
    condition: float = float("nan")
    condition_method: str = ""


def interpolant_smoothed(Theta: Tensor, f0: Tensor, Y: Tensor, Theta_star_X: Tensor | None = None,
                         f0_star: Tensor | None = None) -> InterpolantResult:
    """λ → 0 limit of the (c) solution with label-smoothed targets (gradient flow from θ0, math.md (c)).

    s = −(EᵀΘ⁻¹E)⁻¹EᵀΘ⁻¹(Z0 − f0), γ = Θ⁻¹(Z0 + Es − f0), E = I_N ⊗ 1_C, Z0 = log Y; for a scalar kernel
    (Θ ⊗ I_C) this reduces to s = −mean_c(Z0 − f0).

    Args:
        Theta: (NC, NC) / (N, N, C, C) positive-definite NTK, or scalar (N, N) (multi-output Θ ⊗ I_C).
        f0: (B, N, C) or (N, C) prior means (anchor ``init``). Y: (N, C) label-smoothed targets (all > 0).
        Theta_star_X: (M, N, C, C) / (MC, NC) (or (M, N) with a scalar Theta); f0_star: (B, M, C) or (M, C).

    Records cond(Θ) in the result and warns (``newton.IllConditionedWarning``, one line) when it exceeds
    ``newton.condition_threshold`` (1e8 in float64): the interpolant is then unreliable; use λ > 0.
    """
    Theta = torch.as_tensor(Theta)
    Y = torch.as_tensor(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y: expected (N, C) label-smoothed targets, got shape {tuple(Y.shape)}")
    N, C = Y.shape
    Y = targets(Y, N, C, Theta)
    if (Y <= 0).any():
        raise ValueError("Y: one-hot targets have no finite λ → 0 minimizer (logits diverge); use label smoothing")
    f0 = members(f0, N, C, Theta, "f0")
    B = f0.shape[0]
    r = torch.log(Y) - f0                                                              # Z0 − f0
    if Theta.shape == (N, N):
        L = chol(Theta, "Theta")
        cond = condition_number(Theta, L)
        s = -r.mean(-1)
        rhs = (r + s.unsqueeze(-1)).permute(1, 0, 2).reshape(N, B * C)
        gamma = torch.cholesky_solve(rhs, L).view(N, B, C).transpose(0, 1)
        f = f0 + (Theta @ gamma.transpose(0, 1).reshape(N, B * C)).view(N, B, C).transpose(0, 1)
    else:
        Th = flat_kernel(Theta, N, C, "Theta")
        L = chol(Th, "Theta (NC × NC; needs P ≥ NC and full rank)")
        cond = condition_number(Th, L)
        E = torch.kron(torch.eye(N, dtype=Th.dtype, device=Th.device),
                       torch.ones(C, 1, dtype=Th.dtype, device=Th.device))             # I_N ⊗ 1_C
        ThE = torch.cholesky_solve(E, L)                                               # Θ⁻¹E
        Thr = torch.cholesky_solve(r.reshape(B, N * C).t(), L)                         # Θ⁻¹(Z0 − f0)
        s = -torch.linalg.solve(E.t() @ ThE, E.t() @ Thr)                               # (N, B)
        g = Thr + ThE @ s                                                               # γ
        gamma, s = g.t().reshape(B, N, C), s.t()
        f = f0 + (gamma.reshape(B, N * C) @ Th).view(B, N, C)
    f_star = None
    if Theta_star_X is not None:
        Kx = torch.as_tensor(Theta_star_X).to(Theta.device, Theta.dtype)
        if Theta.shape == (N, N):
            if Kx.ndim != 2 or Kx.shape[1] != N:
                raise ValueError(f"Theta_star_X: expected (M, N) with N={N}, got {tuple(Kx.shape)}")
            Kx = torch.kron(Kx, torch.eye(C, dtype=Kx.dtype, device=Kx.device))
        else:
            Kx = flat_cross(Kx, N, C, "Theta_star_X")
        M = Kx.shape[0] // C
        f_star = star_mean(f0_star, B, M, C, Theta) + (gamma.reshape(B, N * C) @ Kx.t()).view(B, M, C)
    warn_ill_conditioned(cond[0], Theta.dtype, "interpolant_smoothed (λ = 0): Θ",
                         "use weight_decay (λ) > 0 or a wider network")
    return InterpolantResult(gamma, s, f, f_star, *cond)
