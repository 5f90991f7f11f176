"""Function-space solver (math.md (c), (d)) against parameter-space references built here with torch.func.

Reference objects: a depth-2 width-32 ReLU MLP in float64 (N = 8, C = 3, 5 test points, as in math.md's
verification); J by ``jacrev``, Θ = JJᵀ, the linearized network by ``jvp``, L-BFGS in parameter space.
"""

import functools
import math
import warnings

import numpy as np
import pytest
import torch
from fp_bounds import EPS, matmul_bound, ulps
from torch.func import functional_call, jacrev, jvp, linearize

from ntkbayes.models import MLP
from ntkbayes.ntk import posterior, solve
from ntkbayes.utils import MemoryEstimateError

N, C, M, D = 8, 3, 5, 4
DT = torch.float64


class Ref:
    """Tiny MLP, its Jacobians, NTKs and a jvp-linearized forward pass with a flat parameter vector."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = MLP(D, C, width=32, depth=2, activation="relu").to(DT)
        self.X = torch.randn(N, D, dtype=DT)
        self.Xs = torch.randn(M, D, dtype=DT)
        self.names = [k for k, _ in self.model.named_parameters()]
        self.shapes = [p.shape for _, p in self.model.named_parameters()]
        self.theta0 = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        self.P = self.theta0.numel()
        self.J = jacrev(lambda t: self.f(t, self.X))(self.theta0).reshape(N * C, self.P)
        self.Js = jacrev(lambda t: self.f(t, self.Xs))(self.theta0).reshape(M * C, self.P)
        self.Theta, self.ThetaSX, self.ThetaSS = self.J @ self.J.T, self.Js @ self.J.T, self.Js @ self.Js.T
        self.f0, self.f0s = self.f(self.theta0, self.X).detach(), self.f(self.theta0, self.Xs).detach()

    def unflat(self, t):
        out, i = {}, 0
        for k, s in zip(self.names, self.shapes):
            out[k] = t[i:i + s.numel()].view(s)
            i += s.numel()
        return out

    def f(self, t, x):
        return functional_call(self.model, self.unflat(t), (x,))

    def f_lin(self, t, x):  # f0 + J(θ − θ0) via jvp, differentiable in θ
        f0, jv = jvp(lambda u: self.f(u, x), (self.theta0,), (t - self.theta0,))
        return f0 + jv

    def f_lin_fast(self, x):
        """Same map with the jvp traced once (torch.func.linearize): ~5× faster inside the L-BFGS loop."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f0, jvp_fn = linearize(lambda u: self.f(u, x), self.theta0)
        return lambda t: f0 + jvp_fn(t - self.theta0)

    def means(self, anchor):
        if anchor == "init":
            return self.f0, self.f0s
        return (self.f0 - (self.J @ self.theta0).view(N, C), self.f0s - (self.Js @ self.theta0).view(M, C))

    def lbfgs(self, anchor, lam, Y):
        """Minimize (1/N)ΣCE(f_lin) + (λ/2)‖θ − θ_a‖² in parameter space from θ0; returns train/test logits."""
        theta_a = self.theta0 if anchor == "init" else torch.zeros_like(self.theta0)
        th = self.theta0.clone().requires_grad_(True)
        f_train, f_test = self.f_lin_fast(self.X), self.f_lin_fast(self.Xs)
        # at θ = θ0 both tangents are 0: each returns f0 rounded a few times
        assert (f_train(th) - self.f_lin(th, self.X)).abs().max() <= ulps(self.f0, 8)
        # stopping settings of the reference (run it to rounding level), not tolerances: its comparisons allow 1e-5
        opt = torch.optim.LBFGS([th], lr=1.0, max_iter=4000, history_size=50, tolerance_grad=1e-13,
                                tolerance_change=1e-18, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            ce = -(Y * torch.log_softmax(f_train(th), -1)).sum(-1).mean()
            loss = ce + 0.5 * lam * ((th - theta_a) ** 2).sum()
            loss.backward()
            return loss

        for _ in range(2):  # a restart after the first convergence polishes the last digits
            opt.step(closure)
        with torch.no_grad():
            return f_train(th), f_test(th)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices: one thread avoids oversubscription when tests run side by side (15× faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref():
    return Ref()


def targets(smooth):
    Y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), C).to(DT)
    return (1 - smooth) * Y + smooth / C if smooth else Y


def newton_kappa(K, scale=1.0):
    """Upper bound on the condition number of the Newton system I + S(sK)S: the eigenvalues of W = diag(p) − ppᵀ
    lie in [0, ½], so those of I + SKS lie in [1, 1 + ½·s·λ_max(K)]."""
    return 1.0 + 0.5 * scale * float(torch.linalg.eigvalsh(K).max())


def solve_tol(n, kappa, *xs):
    """n·ε·κ·|x|: how far two backward-stable solves of a system of size n and condition κ may differ in x
    (different algorithms, batching or summation order; Higham 2002, §7.1)."""
    return n * EPS * kappa * max(float(torch.as_tensor(x).abs().max()) for x in xs)


def dense_laplace_cov(K, Kx, Kss, f):
    """Slow reference Σ* = K** − K*X W (I + K W)⁻¹ K_X* with the dense blockdiag W = diag(p) − ppᵀ."""
    p = torch.softmax(f, -1)
    W = torch.block_diag(*[torch.diag(q) - torch.outer(q, q) for q in p])
    return Kss - Kx @ W @ torch.linalg.solve(torch.eye(N * C, dtype=DT) + K @ W, Kx.T)


# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("smooth", [0.0, 0.1])
@pytest.mark.parametrize("lam", [1e-2, 1e-3])
@pytest.mark.parametrize("anchor", ["init", "zero"])
def test_newton_full_equals_lbfgs_on_linearized_network(ref, anchor, lam, smooth):
    Y = targets(smooth)
    m, ms = ref.means(anchor)
    res = solve.solve_ntk_classifier(ref.Theta, m, Y, lam)
    mean, _ = posterior.predict(res, ref.ThetaSX, m_star=ms)
    f_lb, fs_lb = ref.lbfgs(anchor, lam, Y)
    assert res.form == "full" and bool(res.converged.all()) and 3 <= int(res.iterations.max()) <= 30
    assert (res.f[0] - f_lb).abs().max() < 1e-5
    assert (mean[0] - fs_lb).abs().max() < 1e-5
    # representer / self-consistency: β = −(p − y)/(λN), f = m + Θβ   (math.md (c)). β + (p − y)/(λN) is the
    # solver's own reported gradient ‖α − (y − p)‖ over λN, up to the rounding of recomputing p and scaling
    p, g = torch.softmax(res.f[0], -1), float(res.grad_norm[0]) / (lam * N)
    assert (res.beta[0] + (p - Y) / (lam * N)).abs().max() <= g + ulps(res.beta[0], 8) + 8 * EPS / (lam * N)
    # the solver's f = m + Θ(α/(λN)) and this Θβ are the same product rounded in another order: 2·γ_NC|Θ||β|
    beta = res.beta[0].reshape(-1, 1)
    assert (res.f[0] - m - (ref.Theta @ beta).view(N, C)).abs().max() <= matmul_bound(ref.Theta, beta, 2) + ulps(
        res.f[0], 4)
    # Σ_c β_c = Σ_c (α − (y − p))_c/(λN) + (1 − Σ_c p_c)/(λN): ≤ √C·gradient + C rounded sums
    assert res.beta[0].sum(-1).abs().max() <= math.sqrt(C) * g + ulps(res.beta[0], 2 * C) + 2 * C * EPS / (lam * N)


def test_prior_mean_anchors(ref):
    # the same forward pass: a few ulps at most
    assert (solve.prior_mean(ref.model, ref.X, "init") - ref.f0).abs().max() <= ulps(ref.f0, 4)
    # f0 − J(x*)θ0 by one jvp vs by the explicit Jacobian: two length-P dot products, 2·γ_P|J||θ0| (+ f0's ulps)
    zero = solve.prior_mean(ref.model, ref.Xs, "zero")
    bound = matmul_bound(ref.Js, ref.theta0[:, None], 2) + ulps(ref.f0s, 4)
    assert (zero - ref.means("zero")[1]).abs().max() <= bound
    with pytest.raises(ValueError):
        solve.prior_mean(ref.model, ref.X, "origin")


def _scalar_problem(ref, B=1, seed=1):
    """k̄ = class-averaged Θ (a scalar kernel), its kron form, test kernels and B random prior means."""
    T4 = ref.Theta.view(N, C, N, C)
    k = T4.diagonal(dim1=1, dim2=3).mean(-1) / 10
    ks = ref.ThetaSX.view(M, C, N, C).diagonal(dim1=1, dim2=3).mean(-1) / 10
    kss = ref.ThetaSS.view(M, C, M, C).diagonal(dim1=1, dim2=3).mean(-1) / 10
    g = torch.Generator().manual_seed(seed)
    m = 2 * torch.randn(B, N, C, generator=g, dtype=DT)
    ms = 2 * torch.randn(B, M, C, generator=g, dtype=DT)
    eye = torch.eye(C, dtype=DT)
    return k, ks, kss, torch.kron(k, eye), torch.kron(ks, eye), torch.kron(kss, eye), m, ms


@pytest.mark.parametrize("smooth", [0.0, 0.1])
def test_block_equals_full_on_kron_kernel(ref, smooth):
    k, ks, kss, K, Ks, Kss, m, ms = _scalar_problem(ref, B=2)
    Y = targets(smooth)
    rf, rb = solve.newton_full(K, m, Y), solve.newton_block(k, m, Y)
    assert rb.form == "block" and bool(rb.converged.all()) and bool(rf.converged.all())
    # two converged solvers of one problem: they differ by n·ε·κ (n = NC, κ of the Newton system; κ ≈ 7 here)
    kappa = newton_kappa(k)
    for name in ("f", "alpha", "log_evidence", "psi"):
        got, want = getattr(rf, name), getattr(rb, name)
        assert (got - want).abs().max() <= solve_tol(N * C, kappa, want), name
    mu_f, cov_f = posterior.predict(rf, Ks, kss.diagonal(), ms)
    mu_b, cov_b = posterior.predict(rb, ks, kss.diagonal(), ms)
    assert (mu_f - mu_b).abs().max() <= solve_tol(N * C, kappa, mu_b, ks.abs() @ rb.alpha[0].abs())
    assert (cov_f - cov_b).abs().max() <= solve_tol(N * C, kappa, kss)
    # both equal the dense (K + W⁻¹)⁻¹ reference, per test-point block (math.md (d))
    dense = dense_laplace_cov(K, Ks, Kss, rf.f[1]).view(M, C, M, C).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    assert (cov_b[1] - dense).abs().max() <= solve_tol(N * C, kappa, kss)
    # per-class (C, N, N) kernels with identical classes give the same answer as the shared one (batched products
    # instead of one: rounding in another order, same n·ε·κ bound)
    rb3 = solve.newton_block(k.expand(C, N, N), m, Y)
    assert (rb3.f - rb.f).abs().max() <= solve_tol(N * C, kappa, rb.f)
    mu3, cov3 = posterior.predict(rb3, ks.expand(C, M, N), kss.diagonal().expand(C, M), ms)
    assert (cov3 - cov_b).abs().max() <= solve_tol(N * C, kappa, kss)


@pytest.mark.parametrize("form", ["full", "block", "cg"])
def test_warm_start_reaches_the_same_optimum_in_fewer_steps(ref, form):
    """Newton from the neighbouring λ's solution (solve.warm_start) converges to the cold start's optimum: Ψ is
    strictly convex, so the two differ only by the solves' rounding, n·ε·κ (Higham 2002, §7.1) on top of the
    stopping rule's last step (quadratic convergence: the polished iterate is exact to rounding)."""
    k, ks, kss, K, Ks, Kss, m, ms = _scalar_problem(ref, B=2)
    Y = targets(0.0)
    kern = K if form == "full" else k
    opts = {"solver": {"block": "cholesky", "cg": "cg"}[form]} if form != "full" else {}
    lam0, lam = 3e-2, 1e-2
    prev = solve.solve_ntk_classifier(kern, m, Y, lam0, **opts)
    cold = solve.solve_ntk_classifier(kern, m, Y, lam, **opts)
    warm = solve.solve_ntk_classifier(kern, m, Y, lam, alpha0=solve.warm_start(prev, lam, lam0), **opts)
    assert bool(cold.converged.all()) and bool(warm.converged.all())
    assert int(warm.iterations.max()) < int(cold.iterations.max())
    kappa = newton_kappa(k, 1.0 / (lam * N))
    tol = solve_tol(N * C, kappa, cold.f) if form != "cg" else 1e-6 * float(cold.f.abs().max())  # CG: its cg_tol
    assert (warm.f - cold.f).abs().max() <= tol
    with pytest.raises(ValueError, match="alpha0"):
        solve.solve_ntk_classifier(kern, m, Y, lam, alpha0=torch.zeros(3, N, C, dtype=DT), **opts)


@pytest.mark.parametrize("form", ["full", "block"])
def test_batched_members_equal_separate_solves(ref, form):
    k, ks, kss, K, Ks, _, m, ms = _scalar_problem(ref, B=3, seed=2)
    Y = targets(0.1)
    kern, kx = (K, Ks) if form == "full" else (k, ks)
    run = solve.newton_full if form == "full" else solve.newton_block
    batched = run(kern, m, Y)
    chunked = run(kern, m, Y, member_chunk=2)
    mu_b, cov_b = posterior.predict(batched, kx, kss.diagonal(), ms)
    # batched and single solves run the same steps with batched products: they differ by n·ε·κ (n = NC)
    tol = functools.partial(solve_tol, N * C, newton_kappa(k))
    for b in range(3):
        single = run(kern, m[b], Y)
        mu_s, cov_s = posterior.predict(single, kx, kss.diagonal(), ms[b])
        assert (single.f[0] - batched.f[b]).abs().max() <= tol(batched.f[b])
        assert (single.log_evidence[0] - batched.log_evidence[b]).abs() <= tol(batched.log_evidence[b])
        assert (mu_s[0] - mu_b[b]).abs().max() <= tol(mu_b[b]) and (cov_s[0] - cov_b[b]).abs().max() <= tol(kss)
    assert (chunked.f - batched.f).abs().max() <= tol(batched.f)
    assert chunked.iterations.tolist() == batched.iterations.tolist()


@pytest.mark.parametrize("anchor", ["init", "zero"])
def test_laplace_covariance_and_evidence_equal_weight_space(ref, anchor):
    lam, Y = 1e-2, targets(0.1 if anchor == "zero" else 0.0)
    kappa = lam * N
    m, ms = ref.means(anchor)
    res = solve.solve_ntk_classifier(ref.Theta, m, Y, lam)
    mean, cov_joint = posterior.predict(res, ref.ThetaSX, ref.ThetaSS, ms, joint=True)
    _, cov = posterior.predict(res, ref.ThetaSX.view(M, C, N, C).permute(0, 2, 1, 3), ref.ThetaSS, ms, block_size=2)
    # weight space: θ̂ = θ_a + Jᵀβ, H = JᵀŴJ + κI (math.md (d))
    theta_a = ref.theta0 if anchor == "init" else torch.zeros_like(ref.theta0)
    dtheta = ref.J.T @ res.beta[0].reshape(-1)
    f_w = ref.f0 + (ref.J @ (theta_a + dtheta - ref.theta0)).view(N, C)
    p = torch.softmax(f_w, -1)
    W = torch.block_diag(*[torch.diag(q) - torch.outer(q, q) for q in p])
    H = ref.J.T @ W @ ref.J + kappa * torch.eye(ref.P, dtype=DT)
    sigma_w = ref.Js @ torch.linalg.solve(H, ref.Js.T)
    # the weight-space reference solves with H (P × P, P = 1315): P·ε·κ(H), κ(H) ≤ 1 + ½λ_max(Θ)/κ ≈ 1e3 → 3e-10
    rel = ref.P * EPS * (1 + 0.5 * float(torch.linalg.eigvalsh(ref.Theta).max()) / kappa)
    assert torch.linalg.norm(cov_joint[0] - sigma_w) / torch.linalg.norm(sigma_w) <= rel
    blocks = sigma_w.view(M, C, M, C).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    assert torch.linalg.norm(cov[0] - blocks) / torch.linalg.norm(blocks) <= rel
    mean_w = ref.f0s + (ref.Js @ (theta_a + dtheta - ref.theta0)).view(M, C)
    assert (mean[0] - mean_w).abs().max() <= rel * float(mean_w.abs().max())
    log_ev_w = ((Y * torch.log_softmax(f_w, -1)).sum() - 0.5 * kappa * dtheta @ dtheta
                - 0.5 * torch.linalg.slogdet(H)[1] + 0.5 * ref.P * math.log(kappa))
    # log|H| is off by tr(H⁻¹δH) ≤ P·ε·κ(H) (relative to the terms it sums)
    assert abs(float(res.log_evidence[0] - log_ev_w)) <= rel * max(1.0, abs(float(log_ev_w)))


def test_interpolant_matches_lbfgs_and_newton_limit(ref):
    Y = targets(0.1)
    interp = solve.interpolant_smoothed(ref.Theta, ref.f0, Y, ref.ThetaSX, ref.f0s)
    # γ = Θ⁻¹(…) by Cholesky: n·ε·κ(Θ) (n = NC, κ(Θ) ≈ 500) relative to |f| and |γ|; softmax has slope ≤ ½
    evals = torch.linalg.eigvalsh(ref.Theta)
    tol = functools.partial(solve_tol, N * C, float(evals.max() / evals.min()))
    assert (torch.softmax(interp.f[0], -1) - Y).abs().max() <= tol(interp.f)     # interpolates log Y + s
    assert interp.gamma.sum(-1).abs().max() <= C * tol(interp.gamma)              # class sums of γ vanish
    f_lb, fs_lb = ref.lbfgs("init", 0.0, Y)
    assert (torch.softmax(f_lb, -1) - Y).abs().max() < 1e-6
    assert (fs_lb - interp.f_star[0]).abs().max() < 1e-5
    gaps = []
    for lam in (1e-5, 1e-7):
        res = solve.solve_ntk_classifier(ref.Theta, ref.f0, Y, lam)
        mean, _ = posterior.predict(res, ref.ThetaSX, m_star=ref.f0s)
        gaps.append(float((mean[0] - interp.f_star[0]).abs().max()))
    assert gaps[1] < 1e-2 and 20 < gaps[0] / gaps[1] < 500                  # gap ∝ λ


def test_interpolant_scalar_kernel_and_errors(ref):
    k, ks, _, K, Ks, _, m, ms = _scalar_problem(ref, B=2)
    Y = targets(0.2)
    a = solve.interpolant_smoothed(k, m, Y, ks, ms)
    b = solve.interpolant_smoothed(K, m, Y, Ks, ms)
    # scalar (N × N) and kron (NC × NC) solves with k: n·ε·κ(k) (κ(k) ≈ 110) relative to the solution; the shift
    # s solves EᵀK⁻¹E (condition ≤ κ(k)) on top of it
    evals = torch.linalg.eigvalsh(k)
    tol = functools.partial(solve_tol, N * C, float(evals.max() / evals.min()))
    assert (a.gamma - b.gamma).abs().max() <= tol(a.gamma)
    assert (a.f_star - b.f_star).abs().max() <= tol(ks.abs() @ a.gamma[0].abs(), a.f_star)
    assert (a.shift - b.shift).abs().max() <= tol(a.shift, a.gamma)
    with pytest.raises(ValueError, match="one-hot"):
        solve.interpolant_smoothed(ref.Theta, ref.f0, targets(0.0))


def test_softmax_predictives():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 4, C, generator=g, dtype=DT)
    A = torch.randn(2, 4, C, C, generator=g, dtype=DT)
    cov = A @ A.transpose(-1, -2)
    # noise only along the shift direction 1_C leaves softmax unchanged: MC is exact, probit is not. Σ = 5·11ᵀ
    # has eigenvalues 15, 0, 0; eigh returns the zeros as ±C·ε·15 (sign and size differ between CPUs), which
    # sample_logits treats as 0, so each draw is μ + √15·q·z with q ∝ 1_C to a few ulps: softmax is off by a few
    # ulps of |μ| + √15·|z| (|z| ≤ 6 over these 1200 draws)
    shift_cov = 5.0 * torch.ones(2, 4, C, C, dtype=DT)
    mc = posterior.softmax_mc(mean, shift_cov, 50, g)
    assert (mc - torch.softmax(mean, -1)).abs().max() <= 8 * C * EPS * (float(mean.abs().max()) + 6 * 15**0.5)
    # what another CPU's eigh may return: the null eigenvalues as +C·ε·15 instead of ≤ 0 (the AVX2 / AVX-512
    # difference that once gave 5e-10 here); still treated as rounding noise, so the same bound holds
    noisy_cov = shift_cov + C * EPS * 15 * torch.eye(C, dtype=DT)
    mc_noisy = posterior.softmax_mc(mean, noisy_cov, 50, torch.Generator().manual_seed(0))
    assert (mc_noisy - torch.softmax(mean, -1)).abs().max() <= 8 * C * EPS * (float(mean.abs().max()) + 6 * 15**0.5)
    assert (posterior.softmax_probit(mean, shift_cov) - torch.softmax(mean, -1)).abs().max() > 1e-2
    # small covariance: probit ≈ MC ≈ plug-in
    small = 1e-4 * cov
    mc_small = posterior.softmax_mc(mean, small, 20000, torch.Generator().manual_seed(1))
    assert (mc_small - posterior.softmax_probit(mean, small)).abs().max() < 1e-3
    # C = 2: MC matches 1-D Gauss–Hermite quadrature of E σ(f1 − f2) within a few standard errors
    mu2, L2 = torch.tensor([[0.7, -0.4]], dtype=DT), torch.tensor([[[1.5, 0.0], [0.8, 0.6]]], dtype=DT)
    cov2 = L2 @ L2.transpose(-1, -2)
    probs, samples = posterior.softmax_mc(mu2, cov2, 100000, torch.Generator().manual_seed(2), return_samples=True)
    assert samples.shape == (100000, 1, 2) and torch.allclose(samples.mean(0), probs)
    v = cov2[0, 0, 0] + cov2[0, 1, 1] - 2 * cov2[0, 0, 1]
    x, w = np.polynomial.hermite_e.hermegauss(80)
    exact = float((w * (1 / (1 + np.exp(-(0.7 + 0.4 + math.sqrt(float(v)) * x))))).sum() / w.sum())
    se = float(samples[:, 0, 0].std()) / math.sqrt(100000)
    assert abs(float(probs[0, 0]) - exact) < 5 * se
    # variances instead of covariances for probit; same generator seed → same samples
    diag = cov.diagonal(dim1=-2, dim2=-1)
    assert torch.equal(posterior.softmax_probit(mean, cov), posterior.softmax_probit(mean, diag))
    s1 = posterior.sample_logits(mean, cov, 7, torch.Generator().manual_seed(3))
    s2 = posterior.sample_logits(mean, cov, 7, torch.Generator().manual_seed(3))
    assert s1.shape == (7, 2, 4, C) and torch.equal(s1, s2)


def test_input_forms_and_validation(ref, monkeypatch):
    Y = targets(0.0)
    T4 = ref.Theta.view(N, C, N, C).permute(0, 2, 1, 3)                    # (N, N, C, C) layout
    kw = {"kernel_scale": 1 / (1e-2 * N)}
    a = solve.newton_full(ref.Theta, ref.f0, Y, **kw)
    b = solve.newton_full(T4, ref.f0.reshape(-1), Y, **kw)               # 4-D kernel, flat m
    c = solve.newton_full(ref.Theta, ref.f0, Y.argmax(-1), **kw)         # integer labels
    # same numbers in another memory layout: products may round in another order, n·ε·κ with κ ≈ 1e3 here
    tol = solve_tol(N * C, newton_kappa(ref.Theta, kw["kernel_scale"]), a.f)
    assert (a.f - b.f).abs().max() <= tol and (a.f - c.f).abs().max() <= tol
    assert set(a.report()) >= {"all_converged", "max_iterations", "max_grad_norm"} and a.report()["all_converged"]
    with pytest.raises(ValueError, match="Y"):
        solve.newton_full(ref.Theta, ref.f0, 2 * Y)
    with pytest.raises(ValueError, match="m"):
        solve.newton_full(ref.Theta, ref.f0[:5], Y)
    with pytest.raises(ValueError, match="K"):
        solve.newton_full(ref.Theta[:5], ref.f0, Y)
    with pytest.raises(ValueError, match="lam"):
        solve.solve_ntk_classifier(ref.Theta, ref.f0, Y, 0.0)
    lean = solve.newton_full(ref.Theta, ref.f0, Y, keep_factors=False, **kw)
    assert posterior.predict(lean, ref.ThetaSX)[1] is None
    with pytest.raises(ValueError, match="keep_factors"):
        posterior.predict(lean, ref.ThetaSX, ref.ThetaSS)
    monkeypatch.setattr("ntkbayes.utils.available_memory", lambda device: 1000)
    with pytest.raises(MemoryEstimateError, match="member_chunk"):
        solve.newton_full(ref.Theta, ref.f0, Y)
    with pytest.raises(MemoryEstimateError, match="kernel='analytic'"):
        solve.newton_block(ref.Theta[:N, :N], ref.f0, Y)
