"""ntk.analytic: closed forms and quadrature vs independent scipy integration, the recursion of math.md (a), and
convergence of wide networks' empirical NTK to it."""

import math

import numpy as np
import pytest
import torch
from fp_bounds import EPS
from scipy import integrate, special

from ntkbayes.models import MLP
from ntkbayes.ntk.analytic import (
    gaussian_expectations,
    mlp_kernels,
    mlp_kernels_diag,
    readout_split,
)
from ntkbayes.ntk.empirical import empirical_ntk

#: Accuracy of the scipy references: quad/dblquad are asked for epsrel 1e-13 / epsabs 1e-13 and report error
#: estimates ≤ 4e-13 for every case here; a match within 100× the requested accuracy is "equal to the reference".
REF_TOL = 100 * 1e-13
COVARIANCES = [(1.0, 1.0, 0.5), (2.0, 3.0, 1.0), (0.7, 1.8, -0.9), (1.5, 1.5, 1.4), (0.3, 2.5, 0.05)]


def _pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cond(k11, k22, k12, z):
    """v | u = √k11 z ~ N(μ, s²)."""
    return k12 / math.sqrt(k11) * z, math.sqrt(k22 - k12 * k12 / k11)


def _reference_closed(act, k11, k22, k12):
    """1-D adaptive quadrature over u with the inner expectation over v | u in closed form (math.md (a) check)."""
    quad = lambda g, a, b: integrate.quad(g, a, b, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    if act == "relu":
        def inner(z):
            mu, s = _cond(k11, k22, k12, z)
            return mu * special.ndtr(mu / s) + s * _pdf(mu / s)
        e = quad(lambda z: _pdf(z) * math.sqrt(k11) * z * inner(z), 0, np.inf)
        ed = quad(lambda z: _pdf(z) * special.ndtr(_cond(k11, k22, k12, z)[0] / _cond(k11, k22, k12, z)[1]),
                  0, np.inf)
        return e, ed

    def inner_erf(z):
        mu, s = _cond(k11, k22, k12, z)
        return special.erf(mu / math.sqrt(1 + 2 * s * s))

    def inner_derf(z):
        mu, s = _cond(k11, k22, k12, z)
        a = 1 + 2 * s * s
        return 2 / math.sqrt(math.pi) / math.sqrt(a) * math.exp(-mu * mu / a)

    u = lambda z: math.sqrt(k11) * z
    e = quad(lambda z: _pdf(z) * special.erf(u(z)) * inner_erf(z), -np.inf, np.inf)
    ed = quad(lambda z: _pdf(z) * 2 / math.sqrt(math.pi) * math.exp(-u(z) ** 2) * inner_derf(z), -np.inf, np.inf)
    return e, ed


_NP_ACTS = {  # independent numpy/scipy versions of φ and φ'
    "gelu": (lambda x: x * special.ndtr(x), lambda x: special.ndtr(x) + x * _pdf(x)),
    "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "softplus": (lambda x: math.log1p(math.exp(x)) if x < 30 else x, lambda x: special.expit(x)),
}


def _reference_dblquad(act, k11, k22, k12):
    phi, dphi = _NP_ACTS[act]
    l11 = math.sqrt(k11)
    l21, l22 = k12 / l11, math.sqrt(k22 - k12 * k12 / k11)
    out = []
    for g in (phi, dphi):
        val, _ = integrate.dblquad(lambda z2, z1, g=g: _pdf(z1) * _pdf(z2) * g(l11 * z1) * g(l21 * z1 + l22 * z2),
                                   -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-12)
        out.append(val)
    return out


def _t(v):
    return torch.tensor([v], dtype=torch.float64)


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("cov", COVARIANCES)
def test_closed_forms_match_adaptive_quadrature(act, cov):
    e, ed = gaussian_expectations(act, *map(_t, cov), method="closed_form")
    re, red = _reference_closed(act, *cov)
    # closed forms are exact up to a few ulps: the difference is the reference's quadrature error
    assert abs(e.item() - re) <= REF_TOL * max(1.0, abs(re))
    assert abs(ed.item() - red) <= REF_TOL * max(1.0, abs(red))


@pytest.mark.parametrize("act", ["gelu", "tanh", "softplus"])
@pytest.mark.parametrize("cov", [(1.0, 1.0, 0.5), (0.7, 1.8, -0.9), (1.5, 1.2, 1.0)])
def test_gauss_hermite_matches_scipy_dblquad(act, cov):
    e, ed = gaussian_expectations(act, *map(_t, cov))  # "auto" → quadrature for these activations
    re, red = _reference_dblquad(act, *cov)
    # the bound is the implementation's Gauss–Hermite error (not rounding): gelu and softplus reach REF_TOL;
    # tanh's poles at ±iπ/2 slow convergence to ~1e-9 at these variances (measured 1.1e-9 for φ' at cov[2])
    tol = 1e-8 if act == "tanh" else REF_TOL
    assert abs(e.item() - re) <= tol * max(1.0, abs(re))
    assert abs(ed.item() - red) <= tol * max(1.0, abs(red))


def test_quadrature_path_agrees_with_closed_forms():
    k11 = torch.tensor([[1.0], [2.0], [0.7]], dtype=torch.float64)
    k22 = torch.tensor([[1.2, 0.4, 3.0]], dtype=torch.float64)
    k12 = 0.6 * torch.sqrt(k11 * k22) * torch.tensor([[1.0, -0.5, 0.3]], dtype=torch.float64)
    # identity: 20 nodes integrate the quadratic exactly, so only the 20-term sums round (γ_20 ≈ 2e-15, ×50);
    # erf: entire integrand, 100 nodes reach 2e-14 (Gauss–Hermite error, measured), ×50; relu: the kink, 5e-3
    for act, nodes, tol in (("erf", 100, 1e-12), ("identity", 20, 1e-13), ("relu", 400, 5e-3)):
        closed = gaussian_expectations(act, k11, k22, k12, method="closed_form")
        quad = gaussian_expectations(act, k11, k22, k12, method="quadrature", nodes=nodes)
        for a, b in zip(closed, quad):
            assert a.shape == (3, 3)
            assert torch.allclose(a, b, rtol=tol, atol=tol), (act, (a - b).abs().max())
    # the kink converges slowly, but it does converge: more nodes, smaller error
    c = gaussian_expectations("relu", k11, k22, k12, method="closed_form")[0]
    errs = [(gaussian_expectations("relu", k11, k22, k12, method="quadrature", nodes=n)[0] - c).abs().max()
            for n in (20, 80, 320)]
    assert errs[0] > errs[1] > errs[2]


def _reference_recursion(x1, x2, depth, act, w_std, b_std):
    """math.md (a) written pair by pair on the union, expectations from the 1-D adaptive quadrature."""
    x = np.concatenate([x1, x2])
    d = x.shape[1]
    k = w_std**2 * x @ x.T / d + b_std**2
    theta = k.copy()
    for _ in range(depth):
        kn, tn = np.empty_like(k), np.empty_like(k)
        for i in range(len(x)):
            for j in range(len(x)):
                if i == j:  # degenerate covariance: E[φ(u)²] from the closed form on the diagonal
                    e, ed = (k[i, i] / 2, 0.5) if act == "relu" else (
                        2 / math.pi * math.asin(2 * k[i, i] / (1 + 2 * k[i, i])), 4 / math.pi / math.sqrt(
                            1 + 4 * k[i, i]))
                else:
                    e, ed = _reference_closed(act, k[i, i], k[j, j], k[i, j])
                kn[i, j] = w_std**2 * e + b_std**2
                tn[i, j] = kn[i, j] + w_std**2 * ed * theta[i, j]
        k, theta = kn, tn
    n = len(x1)
    return k[:n, n:], theta[:n, n:]


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_recursion_matches_pairwise_reference(act):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    nngp, ntk = mlp_kernels(torch.tensor(x1), torch.tensor(x2), depth=2, activation=act, w_std=1.3, b_std=0.2)
    rn, rt = _reference_recursion(x1, x2, 2, act, 1.3, 0.2)
    # two layers of expectations, each off by the reference's quadrature error REF_TOL (measured 3e-16 relative)
    assert np.allclose(nngp.numpy(), rn, rtol=2 * REF_TOL, atol=0)
    assert np.allclose(ntk.numpy(), rt, rtol=2 * REF_TOL, atol=0)


def test_identity_network_kernels_exact():
    x = torch.randn(4, 3, dtype=torch.float64)
    nngp, ntk = mlp_kernels(x, depth=2, activation="identity", w_std=1.5, b_std=0.1)
    k1 = 2.25 * x @ x.T / 3 + 0.01
    k2 = 2.25 * k1 + 0.01
    k3 = 2.25 * k2 + 0.01
    # the same few operations in another order: ulps of the largest entry (x·x' may cancel, so no rtol)
    ntk_ref = k3 + 2.25 * (k2 + 2.25 * k1)
    assert torch.allclose(nngp, k3, rtol=0, atol=64 * EPS * float(k3.abs().max()))
    assert torch.allclose(ntk, ntk_ref, rtol=0, atol=64 * EPS * float(ntk_ref.abs().max()))


@pytest.mark.parametrize("act", ["relu", "erf", "tanh"])
def test_blocks_cross_and_diag_consistent(act):
    # closed forms: exact up to rounding; tanh (quadrature): the cross block integrates (u, v) in the other order
    # than the square kernel's mirrored lower triangle, so they agree to the quadrature error only
    # (inputs scaled so the pre-activation variances stay ≲ 2, where 100 Gauss–Hermite nodes reach ~1e-9).
    # Closed forms: the blocks form the same D = 4 term products x·x' in other shapes (γ_4, a few ulps) and three
    # layers of the recursion, Lipschitz O(1) away from ρ = ±1 (distinct random points), carry that: 4096 ulps
    tol = 1e-8 if act == "tanh" else 4096 * EPS
    torch.manual_seed(1)
    x1, x2 = 0.5 * torch.randn(7, 4), 0.5 * torch.randn(5, 4)
    full = mlp_kernels(torch.cat([x1, x2]), depth=3, activation=act)
    cross = mlp_kernels(x1, x2, depth=3, activation=act, block_rows=3)
    sq = mlp_kernels(x1, depth=3, activation=act, block_rows=2)
    diag = mlp_kernels_diag(x1, depth=3, activation=act)
    for a, b, s, dg in zip(full, cross, sq, diag):
        assert a.dtype == torch.float64 and b.shape == (7, 5) and s.shape == (7, 7)
        assert torch.allclose(a[:7, 7:], b, rtol=tol, atol=tol)
        assert torch.allclose(a[:7, :7], s, rtol=tol, atol=tol)
        assert torch.equal(s, s.T)
        assert torch.allclose(torch.diagonal(s), dg, rtol=4096 * EPS, atol=4096 * EPS)  # same bound as tol
        # PSD up to eigh's backward error n·ε·‖s‖ (n = 7) plus the entries' own error
        assert torch.linalg.eigvalsh(s).min() >= -7 * (EPS + tol) * float(torch.linalg.matrix_norm(s, 2))


def test_readout_split_and_errors():
    x = torch.randn(5, 3)
    readout, rest = readout_split(x, depth=2, activation="relu")
    nngp, ntk = mlp_kernels(x, depth=2, activation="relu")
    assert torch.equal(readout, nngp) and torch.allclose(readout + rest, ntk)
    with pytest.raises(ValueError, match="activation"):
        mlp_kernels(x, depth=1, activation="swish")
    with pytest.raises(ValueError, match="closed form"):
        mlp_kernels(x, depth=1, activation="gelu", method="closed_form")
    with pytest.raises(ValueError, match="x2"):
        mlp_kernels(x, torch.randn(2, 4), depth=1)
    with pytest.raises(ValueError, match="depth"):
        mlp_kernels(x, depth=-1)
    # a callable activation goes through quadrature with an autograd derivative (= the analytic derivative)
    custom = mlp_kernels(x, depth=2, activation=lambda t: torch.erf(t), nodes=30)
    named = mlp_kernels(x, depth=2, activation="erf", method="quadrature", nodes=30)
    # same nodes and φ; φ' by autograd vs the formula: a few ulps per node, 30-term sums (γ_30 ≈ 3e-15, ×10)
    tol = 10 * 30 * EPS
    assert torch.allclose(custom.ntk, named.ntk, rtol=tol) and torch.allclose(custom.nngp, named.nngp, rtol=tol)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_wide_networks_converge_like_inverse_sqrt_width(act):
    """Empirical NTKs (C = 2 outputs, class-mean trace) of NTK-parameterized MLPs → analytic Θ (math.md (a)).

    The RMS single-init error over 8 inits falls like width^-1/2 (×4 for 16× the width; measured 3.4–4.7 over
    10 seeds), the error of the 8-init mean with it; the readout part w_s² h·h' + b_s² → the analytic NNGP (the
    readout split of math.md (a)).
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    nngp, ntk = mlp_kernels(x, depth=2, activation=act, w_std=1.5, b_std=0.05)
    rms, mean, nngp_rms = [], [], []
    for width in (64, 256, 1024):
        thetas, readouts = [], []
        for _ in range(8):
            model = MLP(5, 2, width=width, depth=2, activation=act).double()
            model.reset_parameters(gen)
            thetas.append(empirical_ntk(model, x, trace="mean", implementation="structured"))
            with torch.no_grad():
                h = model.features(x)
            ro = model.layers[-1]
            readouts.append(ro.w_scale**2 * h @ h.T + ro.b_scale**2)
        thetas, readouts = torch.stack(thetas), torch.stack(readouts)
        rms.append(((thetas - ntk).norm(dim=(1, 2)) / ntk.norm()).pow(2).mean().sqrt())
        mean.append((thetas.mean(0) - ntk).norm() / ntk.norm())
        nngp_rms.append(((readouts - nngp).norm(dim=(1, 2)) / nngp.norm()).pow(2).mean().sqrt())
    assert rms[0] > rms[1] > rms[2]
    assert 2.5 < rms[0] / rms[2] < 7
    assert 2.5 < nngp_rms[0] / nngp_rms[2] < 7
    assert mean[2] < mean[0] and mean[2] < 0.07
