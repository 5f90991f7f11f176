"""GP classification method (``gp``): kernels, links, hyperparameter selection, OOD behaviour, GPyTorch backend."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from sklearn.metrics import roc_auc_score
from toydata import tiny_splits

import ntkbayes as nb
from ntkbayes.data.splits import make_splits
from ntkbayes.methods.gp import LENGTHSCALE_GRID, OUTPUTSCALE_GRID, median_lengthscale
from ntkbayes.methods.gp_dirichlet import NOISE_GRID, dirichlet_targets
from ntkbayes.ntk import posterior, solve
from ntkbayes.utils import MemoryEstimateError


@pytest.fixture(scope="module")
def blobs():
    return tiny_splits(n=60, classes=3, dim=4, seed=0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small matrices: one thread avoids oversubscription when tests run side by side."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def accuracy(pred, y):
    return float((pred.probs.argmax(-1) == y).double().mean())


@pytest.mark.parametrize("link", ["mc", "probit"])
@pytest.mark.parametrize("kernel", ["rbf", "nngp", "ntk"])
def test_fit_predict_each_kernel_and_link(blobs, kernel, link):
    gp = nb.methods.create("gp", likelihood="softmax", lengthscale="median", kernel=kernel, link=link,
                           num_samples=16, depth=2, activation="relu")
    assert gp.fit(blobs, seed=0) is gp
    pred = gp.predict(blobs.test.x)
    assert pred.member_probs.shape == (16 if link == "mc" else 1, len(blobs.test), 3)
    assert accuracy(pred, blobs.test.y) > 0.8
    info = gp.fit_info()
    json.dumps(info)
    assert info["converged"] and np.isfinite(info["log_evidence"])
    assert len(info["grid"]) >= len(OUTPUTSCALE_GRID) and [g[1] for g in info["grid"][:6]] == list(OUTPUTSCALE_GRID)
    assert max(g[2] for g in info["grid"]) == info["log_evidence"]
    assert info["outputscale"] == max(info["grid"], key=lambda g: g[2])[1]
    if kernel == "rbf":
        assert info["lengthscale"] == pytest.approx(median_lengthscale(blobs.train.x.double()))


def test_predictive_is_the_laplace_posterior(blobs):
    """Probit members are softmax(κ∘μ*) of posterior.predict with the chosen hyperparameters (mean and Σ* diagonal)."""
    gp = nb.methods.create("gp", likelihood="softmax", lengthscale="median", link="probit",
                           outputscale=3.0).fit(blobs, seed=0)
    x, xt = blobs.train.x.double(), blobs.test.x.double()
    ls = gp.fit_info()["lengthscale"]
    k = lambda a, b: 3.0 * torch.exp(-torch.cdist(a, b) ** 2 / (2 * ls**2))
    res = solve.newton_block(k(x, x), None, torch.nn.functional.one_hot(blobs.train.y, 3).double())
    mean, cov = posterior.predict(res, k(xt, x), torch.full((len(xt),), 3.0, dtype=torch.float64))
    expected = torch.softmax(mean[0] / torch.sqrt(1 + torch.pi / 8 * cov[0].diagonal(dim1=-2, dim2=-1)), -1)
    # bound: same solver and formulas; only cdist vs the method's squared distances differ: cond(K)·ε on K → ≪ 1e-10
    assert (gp.predict(blobs.test.x).probs - expected).abs().max() < 1e-10


def test_far_ood_is_uncertain_on_two_moons():
    """RBF GP: far from the data the posterior returns to the prior, so MSP, entropy and MI flag the ``far`` set.
    (ReLU NNGP/NTK kernels are homogeneous: mean and std of the logits both grow ∝ ‖x‖, so confidence along a ray
    stays constant and MSP does not flag far points; that is a property of those priors, not tested here.)"""
    kernel = "rbf"
    x, y = make_moons(n_samples=240, noise=0.15, random_state=0)
    rng = np.random.default_rng(0)
    angle, radius = rng.uniform(0, 2 * np.pi, 60), rng.uniform(8, 12, 60)
    far = np.stack([0.5 + radius * np.cos(angle), 0.25 + radius * np.sin(angle)], 1)
    data = make_splits("moons_tiny", x, y, seed=0, extra_ood={"far": far})
    gp = nb.methods.create("gp", kernel=kernel, num_samples=64).fit(data, seed=0)
    test, ood = gp.predict(data.test.x), gp.predict(data.ood["far"])
    assert accuracy(test, data.test.y) > 0.9
    labels = np.r_[np.zeros(len(data.test)), np.ones(len(data.ood["far"]))]
    for score in ("msp", "entropy", "mutual_info"):
        auroc = roc_auc_score(labels, np.r_[getattr(test, score).numpy(), getattr(ood, score).numpy()])
        assert auroc > 0.9, (score, auroc)


def test_lengthscale_median_vs_ml(blobs):
    med = nb.methods.create("gp", likelihood="softmax", lengthscale="median").fit(blobs, seed=0).fit_info()
    ml = nb.methods.create("gp", likelihood="softmax", lengthscale="ml").fit(blobs, seed=0).fit_info()
    assert len(ml["grid"]) >= len(LENGTHSCALE_GRID) * len(OUTPUTSCALE_GRID)
    assert ml["lengthscale"] in [med["lengthscale"] * m for m in LENGTHSCALE_GRID]
    # bound: the same Newton solve of the same K twice; |ΔΨ| ≤ solve.DEFAULT_TOL·|Ψ| each
    assert ml["log_evidence"] >= med["log_evidence"] - 1e-9          # the median point is in the ML grid
    fixed = nb.methods.create("gp", likelihood="softmax", lengthscale=2.0, outputscale=5.0).fit(blobs, seed=0)
    fixed = fixed.fit_info()
    assert fixed["lengthscale"] == 2.0 and fixed["outputscale"] == 5.0 and fixed["grid"] is None


def test_gpytorch_backend_runs(blobs):
    gp = nb.methods.create("gp", backend="gpytorch", train_iters=15, num_samples=8).fit(blobs, seed=0)
    pred = gp.predict(blobs.test.x)
    assert pred.member_probs.shape == (8, len(blobs.test), 3) and accuracy(pred, blobs.test.y) > 0.8
    info = gp.fit_info()
    json.dumps(info)
    assert len(info["lengthscale"]) == 3 and np.isfinite(info["final_loss"])
    again = nb.methods.create("gp", backend="gpytorch", train_iters=15, num_samples=8).fit(blobs, seed=0)
    assert torch.equal(again.predict(blobs.test.x).member_probs, pred.member_probs)
    probit = nb.methods.create("gp", backend="gpytorch", train_iters=15, link="probit").fit(blobs, seed=0)
    assert probit.predict(blobs.test.x).num_members == 1


def test_same_seed_same_output_and_subsampling(blobs):
    a = nb.methods.create("gp", num_samples=8, max_train=20).fit(blobs, seed=3)
    b = nb.methods.create("gp", num_samples=8, max_train=20).fit(blobs, seed=3)
    pa, pb = a.predict(blobs.test.x), b.predict(blobs.test.x)
    assert torch.equal(pa.member_probs, pb.member_probs) and torch.equal(a.predict(blobs.test.x).member_probs,
                                                                         pa.member_probs)
    assert a.fit_info()["n_train"] == 20 and a.fit_info()["subsampled_from"] == len(blobs.train)
    c = nb.methods.create("gp", num_samples=8, max_train=20).fit(blobs, seed=4)
    assert not torch.equal(c.predict(blobs.test.x).member_probs, pa.member_probs)


def test_errors(blobs, monkeypatch):
    with pytest.raises(ValueError, match="kernel"):
        nb.methods.create("gp", kernel="matern").fit(blobs)
    with pytest.raises(ValueError, match="gpytorch"):
        nb.methods.create("gp", kernel="ntk", backend="gpytorch").fit(blobs)
    with pytest.raises(ValueError, match="likelihood"):
        nb.methods.create("gp", likelihood="softmax", backend="gpytorch").fit(blobs)
    with pytest.raises(ValueError, match="likelihood"):
        nb.methods.create("gp", likelihood="probit").fit(blobs)
    with pytest.raises(ValueError, match="outputscale"):
        nb.methods.create("gp", outputscale="median").fit(blobs)
    with pytest.raises(nb.methods.NotFittedError):
        nb.methods.create("gp").predict(blobs.test.x)
    gp = nb.methods.create("gp", outputscale=1.0).fit(blobs)
    with pytest.raises(ValueError, match="features"):
        gp.predict(torch.zeros(3, 7))
    monkeypatch.setattr("ntkbayes.utils.available_memory", lambda device: 1000)
    with pytest.raises(MemoryEstimateError, match="max_train"):
        nb.methods.create("gp").fit(blobs)


def _brute_force_laplace(K, Y, Ks, kss):
    """Multiclass Laplace GP written out densely in numpy (R&W §3.5, eqs. 3.39–3.44), independent of ntk.solve:
    the mode by scipy's trust-region Newton on Ψ(f) = −Σ y·log softmax f + ½ fᵀ(K ⊗ I_C)⁻¹ f over f ∈ R^{N·C},
    then W, the log evidence and the per-point predictive mean and C × C covariance with dense (NC × NC) algebra."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax, softmax

    n, c = Y.shape
    Kbig = np.kron(K, np.eye(c))                                          # sample-major, index n*C + c
    Kinv = np.linalg.inv(Kbig)

    def psi(f):
        return -(Y * log_softmax(f.reshape(n, c), -1)).sum() + 0.5 * f @ Kinv @ f

    def grad(f):
        return -(Y - softmax(f.reshape(n, c), -1)).reshape(-1) + Kinv @ f

    def hess(f):
        p = softmax(f.reshape(n, c), -1)
        W = np.zeros((n * c, n * c))
        for i in range(n):
            W[i * c:(i + 1) * c, i * c:(i + 1) * c] = np.diag(p[i]) - np.outer(p[i], p[i])
        return W + Kinv

    # Globalized start: scipy's trust region (its value-based ratio test stalls once the predicted decrease
    # ‖g‖²/λ_min(H) falls below ε·|Ψ|, i.e. near ‖g‖ ~ 1e-8 here, and then reports status 2), then pure Newton
    # steps, which need no value comparisons, until the gradient reaches its own rounding floor.
    opt = minimize(psi, np.zeros(n * c), jac=grad, hess=hess, method="trust-exact", options={"gtol": 1e-8})
    f = opt.x
    # rounding floor of ∇Ψ = −(Y − p) + K⁻¹f: ε·‖K⁻¹‖₂·‖f‖₂ per entry, times a safety factor of 100
    floor = 100 * np.finfo(float).eps * np.linalg.norm(Kinv, 2) * max(1.0, np.linalg.norm(f))
    for _ in range(20):
        g = grad(f)
        opt.newton_converged = bool(np.abs(g).max() <= floor)
        if opt.newton_converged:
            break
        f = f - np.linalg.solve(hess(f), g)
    opt.x, opt.gmax, opt.floor = f, float(np.abs(grad(f)).max()), floor
    W = hess(f) - Kinv
    sign, logdet = np.linalg.slogdet(np.eye(n * c) + Kbig @ W)
    log_ev = (Y * log_softmax(f.reshape(n, c), -1)).sum() - 0.5 * f @ Kinv @ f - 0.5 * logdet
    Ksbig = np.kron(Ks, np.eye(c))                                        # (M·C, N·C)
    mean = (Ksbig @ Kinv @ f).reshape(-1, c)
    cov = np.kron(np.diag(kss), np.eye(c)) - Ksbig @ W @ np.linalg.solve(np.eye(n * c) + Kbig @ W, Ksbig.T)
    m = Ks.shape[0]
    blocks = np.stack([cov[j * c:(j + 1) * c, j * c:(j + 1) * c] for j in range(m)])
    return mean, blocks, log_ev, opt


def test_exact_backend_equals_brute_force_dense_laplace():
    """The GP's mode, log evidence and probit predictive equal a dense numpy/scipy Laplace written from R&W."""
    data = tiny_splits(n=24, classes=3, dim=2, seed=1)
    ls, s = 0.5, 4.0                                                  # K well conditioned: dense K⁻¹ is safe
    gp = nb.methods.create("gp", likelihood="softmax", kernel="rbf", lengthscale=ls, outputscale=s,
                           link="probit").fit(data, seed=0)
    x, xt = data.train.x.double().numpy(), data.test.x.double().numpy()
    k = lambda a, b: s * np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * ls**2))  # noqa: E731
    Y = np.eye(3)[data.train.y.numpy()]
    mean, cov, log_ev, opt = _brute_force_laplace(k(x, x), Y, k(xt, x), np.full(len(xt), s))
    assert opt.newton_converged, (opt.gmax, opt.floor)                 # the reference's own convergence test
    # Ψ is λ-strongly convex with λ ≥ 1/λ_max(K) (H = W + K⁻¹, W ⪰ 0), so the reference mode is within
    # λ_max(K)·‖∇Ψ‖₂ (≤ 1.2e-9 here) of the exact one; the 1e-7 below is the exact backend's own stopping rule
    # (solve.DEFAULT_TOL on |ΔΨ|: measured 1.6e-8 from the reference) with a margin of ~6
    assert np.linalg.eigvalsh(k(x, x)).max() * np.sqrt(opt.x.size) * opt.floor < 1e-8
    assert np.allclose(gp.result_.f[0].numpy(), opt.x.reshape(-1, 3), atol=1e-7)
    assert gp.fit_info()["log_evidence"] == pytest.approx(log_ev, abs=1e-7)
    mu, sigma = gp._latent(data.test.x.double())
    assert np.abs(mu.numpy() - mean).max() < 1e-7 and np.abs(sigma.numpy() - cov).max() < 1e-7
    kappa = 1 / np.sqrt(1 + np.pi / 8 * np.einsum("mcc->mc", cov))
    probs = np.exp(mean * kappa) / np.exp(mean * kappa).sum(-1, keepdims=True)
    assert np.abs(gp.predict(data.test.x).probs.numpy() - probs).max() < 1e-7


@pytest.mark.parametrize(("kernel", "activation", "depth"), [("ntk", "erf", 3), ("nngp", "tanh", 2)])
def test_infinite_width_kernels_any_depth_and_activation(kernel, activation, depth):
    """nngp/ntk kernels are ``mlp_kernels`` of the requested MLP (closed form or quadrature), scaled by s."""
    from ntkbayes.ntk.analytic import mlp_kernels

    blobs = tiny_splits(n=30, classes=3, dim=4, seed=0)  # quadrature: 10⁴ nodes per entry

    gp = nb.methods.create("gp", likelihood="softmax", kernel=kernel, activation=activation, depth=depth,
                           outputscale=2.0, link="probit").fit(blobs, seed=0)
    x = blobs.train.x.double()
    nngp, ntk = mlp_kernels(x, depth=depth, activation=activation, w_std=gp.w_std, b_std=gp.b_std)
    K = 2.0 * (ntk if kernel == "ntk" else nngp)
    res = solve.newton_block(K, None, torch.nn.functional.one_hot(blobs.train.y, 3).double())
    # bound: the same newton_block on the same K (float64): identical up to reduction order, a few ulps × cond
    assert (gp.result_.f - res.f).abs().max() < 1e-10
    assert accuracy(gp.predict(blobs.test.x), blobs.test.y) > 0.8


def test_dirichlet_targets_are_gpytorchs():
    """The closed-form transform equals GPyTorch's DirichletClassificationLikelihood (targets and noise)."""
    from gpytorch.likelihoods import DirichletClassificationLikelihood

    y = torch.tensor([0, 2, 1, 2, 0, 1])
    lik = DirichletClassificationLikelihood(y, dtype=torch.float64)
    targets, var = dirichlet_targets(y, 3)
    # the same float64 operations in the same order: bit-equal results expected
    assert torch.equal(targets.t(), lik.transformed_targets) and torch.equal(var.t(), lik.noise)


def test_dirichlet_posterior_is_dense_gp_regression():
    """Predictive mean/variance and log marginal likelihood equal per-class GP regression written out in numpy
    (constant mean by generalized least squares, noise = transform variance + σ_n²), at the selected (ℓ, s, σ_n²)."""
    from scipy.stats import multivariate_normal

    data = tiny_splits(n=30, classes=3, dim=2, seed=1)
    gp = nb.methods.create("gp", lengthscale=0.7, outputscale=4.0).fit(data, seed=0)
    info = gp.fit_info()
    assert info["likelihood"] == "dirichlet" and [g[2] for g in info["grid"]] == list(NOISE_GRID)
    x, xt = data.train.x.double().numpy(), data.test.x.double().numpy()
    k = lambda a, b: 4.0 * np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * 0.7**2))  # noqa: E731
    targets, var = (t.numpy() for t in dirichlet_targets(data.train.y, 3))
    mu, sigma = gp._latent(data.test.x.double())
    lml = 0.0
    for c in range(3):
        A = k(x, x) + np.diag(var[:, c] + info["noise"])
        one = np.ones(len(x))
        m = one @ np.linalg.solve(A, targets[:, c]) / (one @ np.linalg.solve(A, one))
        lml += multivariate_normal(m * one, A).logpdf(targets[:, c])
        mean = m + k(xt, x) @ np.linalg.solve(A, targets[:, c] - m)
        v = 4.0 - np.einsum("mn,nm->m", k(xt, x), np.linalg.solve(A, k(x, xt)))
        # float64 solves of a 30 × 30 system with cond(A) ≲ 1e3: agreement to ~1e-12, asserted at 1e-9
        assert np.abs(mu[:, c].numpy() - mean).max() < 1e-9 and np.abs(sigma[:, c, c].numpy() - v).max() < 1e-9
    assert (sigma - torch.diag_embed(sigma.diagonal(dim1=1, dim2=2))).abs().max() == 0  # independent classes
    assert info["log_marginal_likelihood"] == pytest.approx(lml, abs=1e-9)
    assert info["log_marginal_likelihood"] == max(g[3] for g in info["grid"])
