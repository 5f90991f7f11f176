"""ntk.ensemble_kernel: batched-matmul member paths against ntk.linearize (jvp) and per-member loops; GP prior draws."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from ntkbayes import training
from ntkbayes.models import MLP
from ntkbayes.ntk.analytic import mlp_kernels, mlp_kernels_diag
from ntkbayes.ntk.ensemble_kernel import GPPrior, RowTable, StackedMLP
from ntkbayes.ntk.linearize import Linearized, model_jvp

D, C, S = 5, 3, 3


def _setup(depth: int = 2, activation: str = "relu", width: int = 24):
    model = MLP(D, C, width=width, depth=depth, activation=activation, w_std=1.5, b_std=0.1,
                parameterization="ntk").double()
    params0 = training.init_stacked(model, [1, 2, 3], dtype=torch.float64)
    params = training.init_stacked(model, [7, 8, 9], dtype=torch.float64)
    params = {k: params0[k] + 0.3 * v for k, v in params.items()}  # a point away from θ0
    x = torch.randn(11, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, params0, params, x


@pytest.mark.parametrize("activation", ["relu", "tanh", "erf"])
def test_forward_matches_functional_call_per_member(activation):
    model, _, params, x = _setup(activation=activation)
    out = StackedMLP(model).forward(params, x)
    assert out.shape == (S, 11, C)
    for s in range(S):
        ref = functional_call(model, training.member(params, s), (x,))
        # bound: baddbmm vs functional_call, float64, O(1) logits: a few ulps
        torch.testing.assert_close(out[s], ref, rtol=0, atol=1e-13)
    per_member_x = x.expand(S, *x.shape) * torch.tensor([1.0, 2.0, 3.0], dtype=x.dtype).view(S, 1, 1)
    out2 = StackedMLP(model).forward(params, per_member_x)
    torch.testing.assert_close(out2[2], functional_call(model, training.member(params, 2), (3 * x,)))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_linearized_matches_ntk_linearize_jvp(depth):
    model, params0, params, x = _setup(depth=depth, activation="tanh")
    net = StackedMLP(model)
    got = net.linearized(params, params0, x)
    ref = Linearized(model, params0, stacked=True)(params, x)
    # bound: tangent propagation vs jvp, float64: a few ulps per layer
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    # bound: f_lin(θ0) = f0: the tangent term is exactly 0
    torch.testing.assert_close(net.linearized(params0, params0, x), net.forward(params0, x), rtol=0, atol=1e-13)


def test_linearized_gradient_matches_jvp_gradient():
    model, params0, params, x = _setup()
    net = StackedMLP(model)
    w = torch.randn(S, 11, C, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    p1 = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    p2 = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    (net.linearized(p1, params0, x) * w).sum().backward()
    (Linearized(model, params0, stacked=True)(p2, x) * w).sum().backward()
    for k in params:
        # bound: two float64 autograd paths of the same function: a few ulps
        torch.testing.assert_close(p1[k].grad, p2[k].grad, rtol=0, atol=1e-12)


def test_delta_is_jvp_of_non_readout_draws():
    """NTKGP δ(x) = J_{<readout}(x; θ0)·θ*_{<readout} (math.md (e)) against a per-member torch.func.jvp."""
    model, params0, theta_star, x = _setup()
    net = StackedMLP(model)
    delta = net.delta(params0, theta_star, x)
    assert set(net.readout_keys) == {"layers.2.weight", "layers.2.bias"}
    for s in range(S):
        t = {k: v[s] for k, v in theta_star.items() if k not in net.readout_keys}
        ref = model_jvp(model, training.member(params0, s), t, x)
        # bound: tangent propagation vs jvp, float64: a few ulps per layer
        torch.testing.assert_close(delta[s], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("linearized", [True, False])
def test_row_table_matches_direct_evaluation(cache, linearized):
    model, params0, params, x = _setup()
    net = StackedMLP(model)
    delta = torch.randn(S, 11, C, dtype=torch.float64)
    table = RowTable(net, x, params0, linearized=linearized, delta=delta, cache=cache)
    direct = (net.linearized(params, params0, x) if linearized else net.forward(params, x)) + delta
    # bound: cached vs recomputed θ0 activations: same float64 ops
    torch.testing.assert_close(table(params, table.rows().expand(S, 11, 1)), direct, rtol=0, atol=1e-13)
    torch.testing.assert_close(table(params, table.rows(4, start=6).expand(S, 4, 1)), direct[:, 6:10])
    idx = torch.stack([torch.randperm(11, generator=torch.Generator().manual_seed(s))[:5] for s in range(S)])
    got = table(params, idx.to(x.dtype).unsqueeze(-1))                                   # per-member rows
    want = torch.stack([direct[s, idx[s]] for s in range(S)])
    # bound: gathered rows vs direct evaluation: same float64 ops
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    if linearized:
        assert (table.cache is not None) == cache
    else:
        assert table.cache is None


def test_row_table_rejects_linearized_without_params0():
    model, _, _, x = _setup()
    with pytest.raises(ValueError, match="params0"):
        RowTable(StackedMLP(model), x, None, linearized=True)


def test_stacked_mlp_rejects_dropout():
    with pytest.raises(ValueError, match="dropout"):
        StackedMLP(MLP(D, C, width=8, depth=1, dropout=0.1))


def test_gp_prior_draws_have_the_kernel_covariance_and_condition_exactly_at_training_points():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, D, generator=g, dtype=torch.float64)
    args = dict(depth=2, activation="relu", w_std=1.5, b_std=0.1)
    nngp, _ = mlp_kernels(x, **args)
    prior = GPPrior.draw(nngp, 4000, 2, seed=5)
    assert prior.values.shape == (4000, 6, 2) and prior.jitter == 0.0
    f = prior.values.permute(0, 2, 1).reshape(-1, 6)                     # 8000 draws of f(X) for one output
    cov = f.t() @ f / f.shape[0]
    assert float((cov - nngp).norm() / nngp.norm()) < 0.06              # MC error ≈ √(2/8000) per entry
    # at the training points the conditional is the draw itself (zero variance)
    k_star, _ = mlp_kernels(x[:3], x, **args)
    kd, _ = mlp_kernels_diag(x[:3], **args)
    cond = prior.conditional(k_star, kd, x[:3])
    torch.testing.assert_close(cond, prior.values[:, :3], rtol=0, atol=1e-6)


def test_gp_prior_conditional_is_seeded_per_point_and_has_the_conditional_marginals():
    g = torch.Generator().manual_seed(2)
    x, xs = torch.randn(5, D, generator=g, dtype=torch.float64), torch.randn(4, D, generator=g, dtype=torch.float64)
    args = dict(depth=1, activation="erf", w_std=1.0, b_std=0.1)
    _, ntk = mlp_kernels(x, **args)
    prior = GPPrior.draw(ntk, 3000, 1, seed=9)
    _, k_sx = mlp_kernels(xs, x, **args)
    _, kd = mlp_kernels_diag(xs, **args)
    all_at_once = prior.conditional(k_sx, kd, xs)
    one_by_one = torch.cat([prior.conditional(k_sx[i:i + 1], kd[i:i + 1], xs[i:i + 1]) for i in range(4)], 1)
    # bound: per-point noise is seeded by the point; batch size only changes float64 reduction order
    torch.testing.assert_close(all_at_once, one_by_one, rtol=0, atol=1e-12)   # same draw whatever the batch
    # marginal over draws: N(0, k(x*, x*)) (joint prior on X ∪ X*)
    var = all_at_once[:, :, 0].var(0)
    assert torch.allclose(var, kd, rtol=0.1)
    assert GPPrior.draw(ntk, 2, 1, seed=9).values.equal(GPPrior.draw(ntk, 2, 1, seed=9).values)
