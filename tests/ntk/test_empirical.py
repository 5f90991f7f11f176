"""ntk.empirical: every implementation equals a per-example autograd loop (math.md (b)); blocks, traces, layout,
parameter subsets, stacked members and the memory guard."""

import pytest
import torch
from fp_bounds import EPS, matmul_bound

from ntkbayes import utils
from ntkbayes.models import CNN, MLP
from ntkbayes.ntk.empirical import (
    empirical_ntk,
    empirical_ntk_stacked,
    flatten_ntk,
    ntk_memory_estimate,
)
from ntkbayes.utils import MemoryEstimateError

IMPLEMENTATIONS = ["jacobian", "per_example", "ntk_vp", "structured", "naive"]


def reference_ntk(model, x1, x2, params=None):
    """Θ[n,m,c,d] from one torch.autograd.grad call per (example, output) — the obviously correct reference."""
    params = dict(model.named_parameters()) if params is None else params

    def jac(x):
        rows = []
        for i in range(x.shape[0]):
            out = torch.func.functional_call(model, params, (x[i:i + 1],))[0]
            for c in range(out.shape[0]):
                g = torch.autograd.grad(out[c], list(params.values()), retain_graph=True)
                rows.append(torch.cat([t.reshape(-1) for t in g]))
        return torch.stack(rows).reshape(x.shape[0], out.shape[0], -1)

    j1, j2 = jac(x1), jac(x2)
    return torch.einsum("ncp,mdp->nmcd", j1, j2)


def _check_all(model, x1, x2, impls, block_sizes=(3, 256)):
    full = reference_ntk(model, x1, x1 if x2 is None else x2)
    # Θ is a length-P dot product of Jacobian rows (γ_P·|J||J'|, P ≤ 200 here), each Jacobian entry a product
    # along ≤ 4 layers of width ≤ 6 (a few hundred ulps at most); relative to max|Θ| with cancellation between
    # parameters ≤ 100×: 64·P·ε·100 ≈ 3e-10 bounds it, 1e-10 ≈ 64·P·ε·30 is what we use (measured ≤ 1e-14)
    num_params = sum(p.numel() for p in model.parameters())
    tol = 30 * 64 * num_params * EPS
    diag = full.diagonal(dim1=2, dim2=3)
    cases = [(False, bs, full) for bs in block_sizes]
    cases += [("sum", block_sizes[0], diag.sum(-1)), (True, block_sizes[0], diag.mean(-1))]
    for impl in impls:
        for trace, bs, expect in cases:
            got = empirical_ntk(model, x1, x2, implementation=impl, trace=trace, block_size=bs, chunk_size=4)
            assert got.shape == expect.shape and got.dtype == torch.float64
            err = (got - expect).abs().max() / expect.abs().max()
            assert err < tol, (impl, bs, trace, err.item())


@pytest.mark.parametrize(("activation", "depth", "parameterization"), [
    ("relu", 2, "ntk"), ("erf", 1, "ntk"), ("gelu", 3, "ntk"), ("tanh", 2, "standard"),
    ("softplus", 1, "ntk"), ("identity", 2, "ntk"), ("relu", 0, "ntk"),
])
@pytest.mark.parametrize("square", [True, False])
def test_mlp_implementations_match_autograd_loop(activation, depth, parameterization, square):
    torch.manual_seed(3)
    model = MLP(4, 3, width=6, depth=depth, activation=activation, parameterization=parameterization).double()
    x1 = torch.randn(7, 4, dtype=torch.float64)
    x2 = None if square else torch.randn(5, 4, dtype=torch.float64)
    _check_all(model, x1, x2, IMPLEMENTATIONS)


@pytest.mark.parametrize("square", [True, False])
def test_cnn_generic_implementations_match_autograd_loop(square):
    torch.manual_seed(4)
    model = CNN(2, 3, width=4, depth=2, activation="gelu").double()
    x1 = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    x2 = None if square else torch.randn(4, 2, 6, 6, dtype=torch.float64)
    _check_all(model, x1, x2, ["jacobian", "per_example", "ntk_vp", "naive", "auto"], block_sizes=(2, 64))
    with pytest.raises(ValueError, match="structured"):
        empirical_ntk(model, x1, implementation="structured")


def test_kernel_properties_and_layout():
    torch.manual_seed(5)
    model = MLP(3, 4, width=16, depth=2).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    theta = empirical_ntk(model, x)
    flat = flatten_ntk(theta)
    assert flat.shape == (24, 24)
    assert flat[2 * 4 + 1, 5 * 4 + 3] == theta[2, 5, 1, 3]  # sample-major n*C + c (math.md (0))
    # mirrored blocks are exact copies; diagonal blocks are Grams of the same features: a few ulps of max|Θ|
    assert torch.allclose(flat, flat.T, rtol=0, atol=8 * EPS * float(flat.abs().max()))
    # a Gram matrix is PSD; eigh's backward error is n·ε·‖Θ‖ (n = NC = 24)
    assert torch.linalg.eigvalsh(flat).min() >= -24 * EPS * float(torch.linalg.matrix_norm(flat, 2))
    with pytest.raises(ValueError, match="theta"):
        flatten_ntk(theta[0])


def test_parameter_subset_gives_readout_kernel():
    """The NTK with respect to the readout only is (s_w² h·h' + s_b²) ⊗ I_C (math.md (a) readout split)."""
    torch.manual_seed(6)
    model = MLP(3, 2, width=8, depth=2).double()
    x1, x2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    sub = {k: v for k, v in model.named_parameters() if k.startswith("layers.2.")}
    got = empirical_ntk(model, x1, x2, params=sub, implementation="jacobian")
    ro = model.layers[2]
    with torch.no_grad():
        h1, h2 = model.features(x1), model.features(x2)
        k = ro.w_scale**2 * h1 @ h2.T + ro.b_scale**2
    # the same width-8 feature products in another order (jacobian contraction vs h·h'): 2·γ_8|h||h'| scaled
    tol = ro.w_scale**2 * matmul_bound(h1, h2.T, 2) + 8 * EPS * float(k.abs().max())
    assert torch.allclose(got, k[..., None, None] * torch.eye(2, dtype=torch.float64), rtol=0, atol=tol)
    assert torch.allclose(got, reference_ntk(model, x1, x2, sub), rtol=0, atol=tol)
    with pytest.raises(ValueError, match="params"):
        empirical_ntk(model, x1, params=sub, implementation="structured")


def test_functional_params_and_stacked_members():
    torch.manual_seed(7)
    members = [MLP(3, 2, width=8, depth=1).double() for _ in range(3)]
    params, _ = torch.func.stack_module_state(members)
    x = torch.randn(4, 3, dtype=torch.float64)
    stacked = empirical_ntk_stacked(members[0], x, params=params, trace="mean")
    assert stacked.shape == (3, 4, 4)
    for i, m in enumerate(members):
        # the same structured computation on the same numbers: a few ulps of max|Θ|
        want = empirical_ntk(m, x, trace="mean")
        assert torch.allclose(stacked[i], want, rtol=0, atol=8 * EPS * float(want.abs().max()))
        own = {k: v[i] for k, v in params.items()}
        # NTK-vector products vs the autograd loop: same dot products over P parameters in another order, plus
        # the Jacobians' rounding (see _check_all): 64·P·ε relative to max|Θ|
        ref = reference_ntk(m, x, x)
        tol = 64 * sum(p.numel() for p in m.parameters()) * EPS * float(ref.abs().max())
        assert torch.allclose(empirical_ntk(members[0], x, params=own, implementation="ntk_vp"), ref, rtol=0,
                              atol=tol)


def test_dtype_dropout_and_bad_options():
    model = MLP(3, 2, width=8, depth=1, dropout=0.5)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="eval"):
        empirical_ntk(model, x, implementation="structured")
    model.eval()
    assert empirical_ntk(model, x).dtype == torch.float32
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(model, x, implementation="fast")
    with pytest.raises(ValueError, match="trace"):
        empirical_ntk(model, x, trace="max")
    with pytest.raises(ValueError, match="block_size"):
        empirical_ntk(model, x, block_size=0)
    with pytest.raises(ValueError, match="x2"):
        empirical_ntk(model, x, torch.randn(2, 5))


@pytest.mark.parametrize("impl", ["jacobian", "structured", "ntk_vp"])
def test_memory_guard_names_the_option(monkeypatch, impl):
    model = MLP(10, 3, width=32, depth=2).double()
    x = torch.randn(20, 10, dtype=torch.float64)
    est = ntk_memory_estimate(model, x, implementation=impl, block_size=8)
    assert est["total"] == est["output"] + est["working"] + est["cache"] and est["output"] == 20 * 20 * 9 * 8
    assert est["num_params"] == sum(p.numel() for p in model.parameters()) and est["num_outputs"] == 3
    assert ntk_memory_estimate(model, x, implementation=impl, block_size=4)["working"] < est["working"]
    monkeypatch.setattr(utils, "available_memory", lambda device: est["output"])
    with pytest.raises(MemoryEstimateError, match="block_size"):
        empirical_ntk(model, x, implementation=impl, block_size=8)
    monkeypatch.setattr(utils, "available_memory", lambda device: 100 * est["total"])
    assert empirical_ntk(model, x, implementation=impl, block_size=8).shape == (20, 20, 3, 3)


def test_memory_guard_jacobian_suggests_structured(monkeypatch):
    model = MLP(10, 3, width=32, depth=2)
    monkeypatch.setattr(utils, "available_memory", lambda device: 10_000)
    with pytest.raises(MemoryEstimateError, match="implementation='structured'"):
        empirical_ntk(model, torch.randn(20, 10), implementation="jacobian")
