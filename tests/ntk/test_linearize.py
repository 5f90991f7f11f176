"""ntk.linearize: f_lin = f0 + J(θ − θ0) (math.md (b)) against an explicit Jacobian built by an autograd loop;
gradients, stacked members, the anchor-zero prior mean and errors."""

import pytest
import torch
from fp_bounds import matmul_bound, ulps
from torch.func import functional_call, stack_module_state

from ntkbayes.models import MLP
from ntkbayes.ntk import Linearized, linearize, linearized_apply, model_jvp

DT = torch.float64


def jacobian_loop(model, params, x):
    """J (N·C, P) from one torch.autograd.grad call per output entry, parameters flattened in dict order."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    out = functional_call(model, p, (x,))
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, list(p.values()), retain_graph=True)])
            for o in out.reshape(-1)]
    return out.detach(), torch.stack(rows)


def flat(d):
    return torch.cat([v.reshape(-1) for v in d.values()])


def jvp_tol(J, v, f0):
    """A jvp and the explicit J·v are the same length-P dot products rounded in another order: 2·γ_P|J||v|,
    plus a few ulps of the f0 they are added to (fp_bounds)."""
    return matmul_bound(J, v.reshape(-1, 1), 2) + ulps(f0, 4)


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = MLP(3, 2, width=12, depth=2, activation="tanh").to(DT)
    x = torch.randn(5, 3, dtype=DT)
    p0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    theta = {k: v + 0.3 * torch.randn_like(v) for k, v in p0.items()}
    return model, x, p0, theta


def test_equals_first_order_taylor_with_explicit_jacobian(net):
    model, x, p0, theta = net
    f0, J = jacobian_loop(model, p0, x)
    expect = f0 + (J @ (flat(theta) - flat(p0))).view_as(f0)
    lin = linearize(model)
    assert isinstance(lin, Linearized) and not lin.stacked and lin.members == 1
    tol = jvp_tol(J, flat(theta) - flat(p0), f0)
    assert (lin(theta, x) - expect).abs().max() <= tol
    assert (linearized_apply(model, p0, theta, x) - expect).abs().max() <= tol
    # zero tangent: f0 itself, rounded a few times
    assert (lin(p0, x) - f0).abs().max() <= ulps(f0, 4) and (lin.f0(x) - f0).abs().max() <= ulps(f0, 4)
    t = {k: torch.randn_like(v) for k, v in p0.items()}
    assert (model_jvp(model, p0, t, x) - (J @ flat(t)).view_as(f0)).abs().max() <= jvp_tol(J, flat(t), f0)
    zero_mean = f0 - (J @ flat(p0)).view_as(f0)                                       # anchor zero, math.md (c)
    assert (lin.prior_mean(x) - zero_mean).abs().max() <= jvp_tol(J, flat(p0), f0)
    # a missing name stays at θ0: the tangent only moves the readout
    part = {k: v for k, v in theta.items() if k.startswith("layers.2.")}
    idx = torch.cat([torch.full((v.numel(),), k.startswith("layers.2."), dtype=torch.bool) for k, v in p0.items()])
    d = torch.where(idx, flat(theta) - flat(p0), torch.zeros(()))
    assert (lin(part, x) - (f0 + (J @ d).view_as(f0))).abs().max() <= jvp_tol(J, d, f0)


def test_gradient_is_jacobian_transpose_and_remainder_is_second_order(net):
    model, x, p0, theta = net
    lin = linearize(model, p0)
    _, J = jacobian_loop(model, p0, x)
    params = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    w = torch.randn(5, 2, dtype=DT)
    (lin(params, x) * w).sum().backward()
    # a vjp and Jᵀw: the same length-NC sums in another order, 2·γ_NC|Jᵀ||w|
    tol = matmul_bound(J.T, w.reshape(-1, 1), 2)
    assert (flat({k: v.grad for k, v in params.items()}) - J.T @ w.reshape(-1)).abs().max() <= tol
    g = torch.func.grad(lambda p: (lin(p, x) * w).sum())(theta)
    assert (flat(g) - J.T @ w.reshape(-1)).abs().max() <= tol
    # f(θ0 + εδ) − f_lin(θ0 + εδ) = O(ε²)
    delta = {k: v - p0[k] for k, v in theta.items()}
    gaps = []
    for eps in (1e-2, 5e-3):
        th = {k: p0[k] + eps * delta[k] for k in p0}
        gaps.append(float((functional_call(model, th, (x,)) - lin(th, x)).abs().max()))
    assert 3.5 < gaps[0] / gaps[1] < 4.5


def test_stacked_members_are_vmapped(net):
    model, x, _, _ = net
    members = [MLP(3, 2, width=12, depth=2, activation="tanh").to(DT) for _ in range(3)]
    p0, _ = stack_module_state(members)
    p0 = {k: v.detach() for k, v in p0.items()}
    theta = {k: v + 0.1 * torch.randn_like(v) for k, v in p0.items()}
    lin = Linearized(model, p0)
    assert lin.stacked and lin.members == 3
    out = lin(theta, x)
    assert out.shape == (3, 5, 2)
    for i in range(3):
        p0_i = {k: v[i] for k, v in p0.items()}
        single = linearize(model, p0_i)
        # vmapped and single jvps: the same dot products, possibly blocked differently (jvp_tol)
        f0_i, J_i = jacobian_loop(model, p0_i, x)
        delta = flat({k: v[i] for k, v in theta.items()}) - flat(p0_i)
        assert (out[i] - single({k: v[i] for k, v in theta.items()}, x)).abs().max() <= jvp_tol(J_i, delta, f0_i)
        assert (lin.prior_mean(x)[i] - single.prior_mean(x)).abs().max() <= jvp_tol(J_i, flat(p0_i), f0_i)
    fresh = lin.init_params()
    assert all(v.requires_grad and v.is_leaf for v in fresh.values())


def test_errors(net):
    model, x, p0, theta = net
    with pytest.raises(ValueError, match="params0"):
        Linearized(model, {"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="params0"):
        Linearized(model, p0, stacked=True)
    with pytest.raises(ValueError, match="params"):
        linearize(model)({"other": torch.zeros(1)}, x)
    with pytest.raises(ValueError, match="tangents"):
        model_jvp(model, p0, {"other": torch.zeros(1)}, x)
