"""ntk.solve_cg: preconditioned-CG block Newton against the Cholesky solver (R&W Alg. 3.3), CG against dense
solves, the pivoted-Cholesky preconditioner, and the automatic solver choice by memory (math.md (c))."""

import pytest
import torch
from fp_bounds import EPS, matmul_bound

from ntkbayes.ntk import posterior, solve, solve_cg
from ntkbayes.ntk.analytic import mlp_kernels
from ntkbayes.utils import MemoryEstimateError

N, C, D, LAM = 40, 3, 5, 1e-2
DT = torch.float64


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N + 6, D, generator=g, dtype=DT)
    _, ntk = mlp_kernels(x, depth=2, activation="relu")
    y = (x[:N] @ torch.randn(D, C, generator=g, dtype=DT)).argmax(-1)
    m = torch.randn(2, N, C, generator=g, dtype=DT)
    return ntk[:N, :N], ntk[N:, :N], m, torch.nn.functional.one_hot(y, C).to(DT)


@pytest.mark.parametrize("rank", [0, 10])
@pytest.mark.parametrize("smooth", [0.0, 0.1])
def test_cg_newton_equals_cholesky_newton(problem, rank, smooth):
    K, Ks, m, Y = problem
    Y = (1 - smooth) * Y + smooth / C
    scale = 1.0 / (LAM * N)
    chol = solve.newton_block(K, m, Y, kernel_scale=scale, solver="cholesky")
    cg = solve.newton_block(K, m, Y, kernel_scale=scale, solver="cg", precond_rank=rank)
    assert cg.form == "block" and bool(cg.converged.all()) and chol.log_evidence.isfinite().all()
    assert (cg.f - chol.f).abs().max() < 1e-7
    assert (cg.alpha - chol.alpha).abs().max() < 1e-7
    # both stop once |ΔΨ| ≤ tol·|Ψ| twice (the solvers' own rule, tol = solve.DEFAULT_TOL); CG's inexact steps
    # converge linearly, so allow 10 such decreases between the two final objectives
    assert (cg.psi - chol.psi).abs().max() <= 10 * solve.DEFAULT_TOL * chol.psi.abs().max()
    assert torch.isnan(cg.log_evidence).all() and int(cg.cg_iterations.min()) > 0
    rep = cg.report()
    # every CG solve reached the solver's own relative-residual tolerance (no step hit the iteration cap)
    assert rep["solver"] == "cg" and rep["max_cg_residual"] <= solve_cg.DEFAULT_CG_TOL
    mean_cg, cov_cg = posterior.predict(cg, Ks, m_star=torch.zeros(6, C, dtype=DT))
    mean_ch, _ = posterior.predict(chol, Ks, m_star=torch.zeros(6, C, dtype=DT))
    assert cov_cg is None and (mean_cg - mean_ch).abs().max() < 1e-7
    with pytest.raises(ValueError, match="factors"):
        posterior.predict(cg, Ks, torch.ones(6, dtype=DT))


def test_preconditioner_reduces_cg_iterations(problem):
    K, _, m, Y = problem
    plain = solve.newton_block(K, m, Y, kernel_scale=1 / (1e-3 * N), solver="cg", precond_rank=0)
    pre = solve.newton_block(K, m, Y, kernel_scale=1 / (1e-3 * N), solver="cg", precond_rank=20)
    assert (pre.f - plain.f).abs().max() < 1e-6
    assert int(pre.cg_iterations.sum()) < int(plain.cg_iterations.sum())


def test_per_class_kernels_and_member_chunks(problem):
    K, _, m, Y = problem
    Kc = torch.stack([K, 0.5 * K + 0.1 * torch.eye(N, dtype=DT), 2.0 * K])
    chol = solve.newton_block(Kc, m, Y, solver="cholesky")
    cg = solve.newton_block(Kc, m, Y, solver="cg", precond_rank=5, member_chunk=1)
    assert (cg.f - chol.f).abs().max() < 1e-7 and cg.cg_iterations.shape == (2,)


def test_pcg_matches_dense_solve_and_pivoted_cholesky():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 30, 30, generator=g, dtype=DT)
    A = A @ A.transpose(1, 2) + 0.5 * torch.eye(30, dtype=DT)
    rhs = torch.randn(3, 30, generator=g, dtype=DT)
    cg_tol = 1e-12
    x, its, res = solve_cg.pcg(lambda v: (A @ v.unsqueeze(-1)).squeeze(-1), rhs, tol=cg_tol)
    assert (res <= cg_tol).all() and (its <= 60).all()                   # pcg's own stopping rule was met
    # relative residual r ⇒ relative error ≤ κ(A)·r (plus the dense solve's n·ε·κ); κ(A) ≈ 200 here
    evals = torch.linalg.eigvalsh(A)
    kappa = float((evals[:, -1] / evals[:, 0]).max())
    exact = torch.linalg.solve(A, rhs)
    bound = kappa * (cg_tol + 30 * EPS) * float(exact.norm(dim=-1).max())
    assert (x - exact).abs().max() <= bound
    jacobi = lambda v: v / A.diagonal(dim1=1, dim2=2)  # noqa: E731  (any SPD preconditioner gives the same x)
    xp, _, _ = solve_cg.pcg(lambda v: (A @ v.unsqueeze(-1)).squeeze(-1), rhs, jacobi, tol=cg_tol)
    assert (xp - x).abs().max() <= 2 * bound
    K = A[0] @ A[0]
    U = solve_cg.pivoted_cholesky(K, 30)
    # full-rank Cholesky reproduces K to its backward error γ_{n+1}|U||U|ᵀ (Higham 2002, Thm 10.3), doubled for
    # the product U Uᵀ formed here
    assert (U @ U.T - K).abs().max() <= matmul_bound(U, U.T, 4)
    errs = [torch.linalg.matrix_norm(K - (u := solve_cg.pivoted_cholesky(K, r)) @ u.T) for r in (2, 8, 20)]
    assert errs[0] > errs[1] > errs[2]


def test_auto_choice_by_memory(problem, monkeypatch):
    K, _, m, Y = problem
    chol_bytes = solve_cg.cholesky_memory_bytes(N, C, 2)
    cg_bytes = solve_cg.cg_memory_bytes(N, C, 2, rank=10)
    assert cg_bytes < chol_bytes
    monkeypatch.setattr("ntkbayes.utils.available_memory", lambda device: int((cg_bytes + chol_bytes) / 1.6))
    auto = solve.newton_block(K, m, Y, precond_rank=10)                  # Cholesky does not fit → CG
    assert auto.cg_iterations is not None
    with pytest.raises(MemoryEstimateError, match="solver='cg'"):
        solve.newton_block(K, m, Y, solver="cholesky")
    monkeypatch.setattr("ntkbayes.utils.available_memory", lambda device: 10 * chol_bytes)
    assert solve.newton_block(K, m, Y).cg_iterations is None             # fits → Cholesky, as before
    with pytest.raises(ValueError, match="solver"):
        solve.newton_block(K, m, Y, solver="lu")
    with pytest.raises(ValueError, match="cg_tol"):
        solve.newton_block(K, m, Y, solver="cholesky", cg_tol=1e-3)
