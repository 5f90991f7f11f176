"""Newton/IRLS for the class-block GP-classifier MAP with preconditioned conjugate gradients (math.md (c)).

For large N the Cholesky route of :func:`ntkbayes.ntk.solve.newton_block` (R&W Algorithm 3.3) needs C + 1
factorizations of N × N matrices per Newton step and keeps ~2·B·C·N² numbers: at full MNIST (N = 60,000, C = 10)
that is ~580 GB in float64 — it cannot run on one GPU. This module solves the same Newton step matrix-free:

    α_new = b − S v,   (I + S K S) v = S K b,   b = W K α + (y − p),   S = W^{1/2} (per-sample C × C)

(the general-form Newton step of math.md (c), sample-major, with K = blockdiag_c K_c). The linear system is
solved by conjugate gradients: A = I + SKS is symmetric positive definite with eigenvalues in
[1, 1 + ½·λ_max(K)], and a product A v costs one (N × N)·(N × B·C) matrix product with the kernel. Memory is the
kernel itself plus O(B·N·C) vectors. The preconditioner is the same operator with K replaced by a rank-r pivoted
Cholesky approximation U Uᵀ ≈ K (Harbrecht, Peters & Schneider 2012; GPyTorch's default, Gardner et al. 2018),
inverted exactly through the Woodbury identity:

    P = I + S (U ⊗ I_C)(U ⊗ I_C)ᵀ S,   P⁻¹ x = x − S V (I_{rC} + Vᵀ W V)⁻¹ Vᵀ S x,   V = U ⊗ I_C

It removes the r largest kernel directions, which carry the ill-conditioning of A (the NTK spectrum decays fast),
so CG needs tens instead of hundreds of iterations. Each Newton step is solved to a relative residual ``cg_tol``;
the outer loop (line search, stopping rule) is the shared one of :mod:`ntkbayes.ntk.newton`. The MAP agrees with the
Cholesky solver to the CG tolerance (tested). The Laplace log evidence needs log|I + SKS|, which CG does not give:
it is returned as NaN, and the predictive covariance is unavailable (the mean, all an ensemble member needs, is).

Choosing the solver (``newton_block(..., solver="auto")``): Cholesky while its ~(2·B·C + C_K)·N² numbers fit in
memory (exact, gives the evidence and covariance, O(C N³) per step), CG beyond (O(N² C · CG iterations) per step,
memory ~N² + 12·B·N·C + r·N).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ntkbayes.ntk.newton import DEFAULT_MAX_ITER, MEMORY_OPTION, NewtonResult, newton_loop, sqrt_w, start
from ntkbayes.utils import check_memory

#: Relative residual ‖A v − rhs‖ / ‖rhs‖ at which a Newton step's CG solve stops (float64; float32: 1e-5). The
#: outer Newton stopping rule (|ΔΨ| ≤ tol·|Ψ|, twice) still decides convergence; 1e-9 lets it reach 1e-10.
DEFAULT_CG_TOL = 1e-9
DEFAULT_CG_TOL_FLOAT32 = 1e-5
#: CG iteration cap per Newton step.
DEFAULT_CG_MAX_ITER = 1000
#: Rank of the pivoted-Cholesky preconditioner: 100 removes the dominant NTK directions at N in the thousands
#: (CG then needs ~10–30 iterations per Newton step); its Woodbury core is (r·C)² per member, 1000² at C = 10.
#: Capped at N / (2C) by :func:`effective_rank` for small N.
DEFAULT_PRECOND_RANK = 100
#: Training points per chunk when accumulating the preconditioner core Σ_n u_n u_nᵀ ⊗ W_n.
_CORE_CHUNK_VALUES = 2**24


def effective_rank(precond_rank: int, n: int, c: int) -> int:
    """Preconditioner rank used: at most ``precond_rank`` and at most N / (2C), so that the Woodbury core (r·C)²
    (a Cholesky of (rC)³/3 per member and Newton step) stays cheaper than the N² C kernel products it saves."""
    return max(0, min(int(precond_rank), n // (2 * c)))


def pivoted_cholesky(K: Tensor, rank: int, rel_tol: float = 1e-12) -> Tensor:
    """Greedy pivoted Cholesky U (N, r) with U Uᵀ ≈ K (N, N) PSD; stops early once the largest remaining diagonal
    is below ``rel_tol``·trace. Cost O(N r²); reads r rows of K."""
    n = K.shape[0]
    rank = min(int(rank), n)
    d = K.diagonal().clone()
    trace = float(d.sum())
    U = torch.zeros(rank, n, dtype=K.dtype, device=K.device)
    for k in range(rank):
        i = int(torch.argmax(d))
        if float(d[i]) <= rel_tol * trace:
            return U[:k].t().contiguous()
        row = K[i] - U[:k, i] @ U[:k]
        U[k] = row / torch.sqrt(d[i])
        d -= U[k] * U[k]
        d[i] = 0.0
    return U.t().contiguous()


def cholesky_memory_bytes(n: int, c: int, members: int, kernel_classes: int = 1, itemsize: int = 8) -> int:
    """Working bytes of the Cholesky block Newton (``solve.newton_block``): 2·B·C + C_K matrices N × N."""
    return (2 * members * c + kernel_classes) * n * n * itemsize


def cg_memory_bytes(n: int, c: int, members: int, rank: int = DEFAULT_PRECOND_RANK, itemsize: int = 8) -> int:
    """Working bytes of :func:`newton_block_cg` besides the kernel: ~12 (B, N, C) vectors, W and S (B, N, C, C)
    twice, U (N, r), the Woodbury cores B·(rC)² twice and one chunk of the core assembly."""
    vectors = (12 * members * n * c + 4 * members * n * c * c + n * rank) * itemsize
    chunk = min(n * members * rank * c, _CORE_CHUNK_VALUES) if rank > 0 else 0
    return vectors + (2 * members * (rank * c) ** 2 + chunk) * itemsize


def _kernel_mv(Kc: Tensor, scale: float):
    """a (b, N, C) ↦ (blockdiag_c K_c) a, sample-major; one GEMM for a shared kernel, one bmm per class set."""
    def mv(a: Tensor) -> Tensor:
        b, n, c = a.shape
        if Kc.shape[0] == 1:
            out = Kc[0] @ a.permute(1, 0, 2).reshape(n, b * c)
            return (scale * out).view(n, b, c).permute(1, 0, 2)
        out = torch.bmm(Kc, a.permute(2, 1, 0))                              # (C, N, b)
        return (scale * out).permute(2, 1, 0)
    return mv


class _Preconditioner:
    """P⁻¹ for P = I + S (sU Uᵀ ⊗ I_C) S via Woodbury (module docstring); S (b, N, C, C), p (b, N, C).

    The core I + s Σ_n (u_n u_nᵀ) ⊗ W_n with W_n = diag(p_n) − p_n p_nᵀ is assembled by matrix products only:
    per class (U ∘ p_c)ᵀU for the diagonal part, QᵀQ with Q_n = u_n ⊗ p_n for the rank-one part (chunks of N).
    """

    def __init__(self, U: Tensor, S: Tensor, p: Tensor, scale: float):
        b, n, c = p.shape
        r = U.shape[1]
        self.U, self.S, self.rt = U, S, scale ** 0.5
        diag = torch.matmul(U.t()[None, None] * p.transpose(1, 2)[:, :, None, :], U)   # (b, C, r, r)
        core = torch.zeros(b, r, c, r, c, dtype=p.dtype, device=p.device)
        core.diagonal(dim1=2, dim2=4).copy_(diag.permute(0, 2, 3, 1))                     # δ_cd (U∘p_c)ᵀU
        core = core.view(b, r * c, r * c)
        step = max(1, _CORE_CHUNK_VALUES // max(1, b * r * c))
        for i in range(0, n, step):
            q = (U[i:i + step, :, None] * p[:, i:i + step, None, :]).reshape(b, -1, r * c)  # u_n ⊗ p_n
            core -= q.transpose(1, 2) @ q
        core = scale * core
        core.diagonal(dim1=-2, dim2=-1).add_(1.0)
        L, info = torch.linalg.cholesky_ex(core)
        if (info != 0).any():
            raise ValueError("CG preconditioner: I + Vᵀ W V is not positive definite (kernel not PSD?)")
        self.L = L

    def __call__(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        sx = (self.S @ x.unsqueeze(-1)).squeeze(-1)                           # S x
        t = self.rt * torch.einsum("nr,bnc->brc", self.U, sx).reshape(b, -1, 1)  # Vᵀ S x
        t = torch.cholesky_solve(t, self.L).view(b, -1, c)
        v = self.rt * torch.einsum("nr,brc->bnc", self.U, t)                 # V (…)
        return x - (self.S @ v.unsqueeze(-1)).squeeze(-1)


def pcg(matvec, rhs: Tensor, precond=None, tol: float = DEFAULT_CG_TOL, max_iter: int = DEFAULT_CG_MAX_ITER):
    """Preconditioned conjugate gradients for B independent SPD systems A_b x_b = rhs_b.

    Args:
        matvec: x (B, ...) ↦ A x (B, ...). rhs: (B, ...). precond: x ↦ P⁻¹ x or None (identity).
        tol: stop a member at ‖r‖ ≤ tol·‖rhs‖. max_iter: iteration cap.
    Returns:
        (x (B, ...), iterations (B,) long, relative residual (B,)).
    """
    precond = precond or (lambda v: v)
    dims = tuple(range(1, rhs.ndim))
    shape = (-1,) + (1,) * (rhs.ndim - 1)
    bnorm = torch.linalg.vector_norm(rhs, dim=dims).clamp_min(torch.finfo(rhs.dtype).tiny)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = precond(r)
    p = z.clone()
    rz = (r * z).sum(dims)
    iters = torch.zeros(rhs.shape[0], dtype=torch.long, device=rhs.device)
    res = torch.linalg.vector_norm(r, dim=dims) / bnorm
    active = res > tol
    for _ in range(int(max_iter)):
        if not active.any():
            break
        ap = matvec(p)
        pap = (p * ap).sum(dims)
        alpha = torch.where(active & (pap > 0), rz / torch.where(pap > 0, pap, torch.ones_like(pap)),
                            torch.zeros_like(pap))
        x += alpha.view(shape) * p
        r -= alpha.view(shape) * ap
        iters += active.long()
        res = torch.linalg.vector_norm(r, dim=dims) / bnorm
        active = active & (res > tol)
        z = precond(r)
        rz_new = (r * z).sum(dims)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta.view(shape) * p
        rz = rz_new
    return x, iters, res


def newton_block_cg(Kc: Tensor, m: Tensor, Y: Tensor, *, kernel_scale: float = 1.0, tol: float | None = None,
                    max_iter: int | None = None, cg_tol: float | None = None,
                    cg_max_iter: int = DEFAULT_CG_MAX_ITER, precond_rank: int = DEFAULT_PRECOND_RANK,
                    alpha0: Tensor | None = None) -> NewtonResult:
    """Block-kernel Newton with CG-solved steps (module docstring); same MAP as ``solve.newton_block``.

    Args:
        Kc: (1, N, N) shared or (C, N, N) per-class kernel; prior covariance ``kernel_scale``·K_c.
        m: (B, N, C) prior means. Y: (N, C) targets (validated by the caller, ``solve.newton_block``).
        tol, max_iter, alpha0: outer Newton settings as in ``solve.newton_block``. cg_tol: relative residual per step
            (default by dtype). cg_max_iter: CG cap per step. precond_rank: pivoted-Cholesky rank r (0: plain CG).
    Returns:
        :class:`~ntkbayes.ntk.newton.NewtonResult` with ``form = "block"``, no factors, ``log_evidence`` NaN and
        ``cg_iterations`` (B,) the total CG iterations per member.
    """
    B, N, C = m.shape
    max_iter = DEFAULT_MAX_ITER if max_iter is None else max_iter
    if cg_tol is None:
        cg_tol = DEFAULT_CG_TOL if Kc.dtype == torch.float64 else DEFAULT_CG_TOL_FLOAT32
    rank = effective_rank(precond_rank, N, C)
    check_memory(cg_memory_bytes(N, C, B, rank, Kc.element_size()), Kc.device,
                 f"CG block Newton (N = {N}, C = {C}, {B} members, preconditioner rank {rank})", MEMORY_OPTION)
    scale = float(kernel_scale)
    kmv = _kernel_mv(Kc, scale)
    U = pivoted_cholesky(Kc.mean(0) if Kc.shape[0] > 1 else Kc[0], rank) if rank > 0 else None
    cg_iters = torch.zeros(B, dtype=torch.long, device=Kc.device)
    worst_res = torch.zeros(B, dtype=Kc.dtype, device=Kc.device)

    def psi_of(a: Tensor, mm: Tensor) -> Tensor:                               # Ψ(α), math.md (c)
        u = kmv(a)
        return -(Y * torch.log_softmax(mm + u, -1)).sum((1, 2)) + 0.5 * (a * u).sum((1, 2))

    def step(a: Tensor, mm: Tensor, idx: Tensor) -> Tensor:                    # math.md (c) Newton lines, CG solve
        u = kmv(a)
        p = torch.softmax(mm + u, -1)
        S, W = sqrt_w(p)
        bvec = (W @ u.unsqueeze(-1)).squeeze(-1) + (Y - p)                      # b = W K α + (y − p)
        rhs = (S @ kmv(bvec).unsqueeze(-1)).squeeze(-1)                         # S K b

        def amv(v: Tensor) -> Tensor:                                           # (I + S K S) v
            sv = (S @ v.unsqueeze(-1)).squeeze(-1)
            return v + (S @ kmv(sv).unsqueeze(-1)).squeeze(-1)

        pre = _Preconditioner(U, S, p, scale) if U is not None else None
        v, its, res = pcg(amv, rhs, pre, cg_tol, cg_max_iter)
        cg_iters[idx] += its
        worst_res[idx] = torch.maximum(worst_res[idx], res)
        return bvec - (S @ v.unsqueeze(-1)).squeeze(-1)                        # α_new = b − S v

    a, psi, iters, conv, dpsi = newton_loop(psi_of, step, start(alpha0, m), m, tol, max_iter)
    u = kmv(a)
    f = m + u
    p = torch.softmax(f, -1)
    grad = (a - (Y - p)).flatten(1).norm(dim=1)
    nan = torch.full((B,), float("nan"), dtype=m.dtype, device=m.device)
    return NewtonResult("block", f, a, scale * a, scale, nan, psi, iters, conv, dpsi, grad,
                              cg_iterations=cg_iters, cg_max_residual=worst_res)

