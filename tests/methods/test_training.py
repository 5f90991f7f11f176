"""ntkbayes.training: vectorized members equal members trained one by one; convergence records; divergence raises."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from ntkbayes import training
from ntkbayes.models import MLP

D, C, N = 3, 3, 40


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _module(width: int = 16) -> MLP:
    return MLP(D, C, width=width, depth=1, activation="tanh", w_std=1.5, b_std=0.1,
               parameterization="ntk").double()


def _single(module: MLP, params: dict, x: torch.Tensor) -> torch.Tensor:
    return functional_call(module, params, (x,))


def test_stacked_forward_matches_per_member_calls():
    module = _module()
    params = training.init_stacked(module, [3, 4, 5], dtype=torch.float64)
    x, _ = _problem()
    out = training.predict_stacked(training.stacked_forward(module), params, x, batch_size=7)
    for s in range(3):
        # bound: vmap vs single float64 matmuls of width 16: a few ulps of O(1) logits
        torch.testing.assert_close(out[s], _single(module, training.member(params, s), x), rtol=0, atol=1e-13)


def test_loss_is_mean_soft_ce_plus_penalty_against_a_loop():
    module = _module()
    params = training.init_stacked(module, [0, 1], dtype=torch.float64)
    anchor = {k: torch.zeros_like(v) + 0.1 for k, v in params.items()}
    x, y = _problem()
    lam, eps = 0.03, 0.2
    loss = training.make_loss(training.stacked_forward(module), lam, anchor, eps)
    got = loss(params, x.expand(2, *x.shape), y.expand(2, N))
    for s in range(2):
        p = training.member(params, s)
        logp = torch.log_softmax(_single(module, p, x), -1)
        targets = torch.nn.functional.one_hot(y, C).double() * (1 - eps) + eps / C
        ce = -(targets * logp).sum(1).mean()
        pen = sum(((v - 0.1) ** 2).sum() for v in p.values())
        # bound: the same float64 sums in another order: N·ε relative
        torch.testing.assert_close(got[s], ce + lam / 2 * pen, rtol=1e-12, atol=0)


@pytest.mark.parametrize("chunk", [None, 16])
def test_lbfgs_vectorized_equals_members_one_by_one(chunk):
    """The batched L-BFGS gives each member the trajectory it follows alone (same iterations, same optimum)."""
    module = _module(8)
    seeds = [11, 12, 13]
    params = training.init_stacked(module, seeds, dtype=torch.float64)
    x, y = _problem()
    fn = training.stacked_forward(module)
    kw = dict(weight_decay=3e-2, anchor=params, max_iter=150, tol_grad=1e-6, tol_change=0.0, chunk_size=chunk)
    together = training.fit_lbfgs(fn, params, (x, y), **kw)
    for s in range(3):
        alone_p = {k: v[s:s + 1] for k, v in params.items()}
        alone = training.fit_lbfgs(fn, alone_p, (x, y), **{**kw, "anchor": alone_p})
        assert alone.report["iterations"][0] == together.report["iterations"][s]
        assert alone.report["stop_reason"][0] == together.report["stop_reason"][s]
        for k in params:
            # bound: same decisions per member; reduction order differs: ulps amplified over ~100 iterations
            torch.testing.assert_close(together.params[k][s], alone.params[k][0], rtol=0, atol=1e-10)
    assert all(together.report["converged"])
    assert max(together.report["grad_max"]) <= 1e-6


def test_lbfgs_reaches_the_optimum_of_a_strongly_convex_problem():
    """Linear model (depth 0) + λ>0: strictly convex; compare with a long float64 torch.optim.LBFGS run."""
    module = MLP(D, C, width=8, depth=0, parameterization="ntk").double()
    params = training.init_stacked(module, [7], dtype=torch.float64)
    x, y = _problem(1)
    fn = training.stacked_forward(module)
    # tol_grad 1e-9: ~1e5·ε·‖per-row gradient‖, reachable in float64 (1e-10 is not: ‖g‖_∞ stops near 1.4e-10)
    res = training.fit_lbfgs(fn, params, (x, y), weight_decay=1e-2, max_iter=500, tol_grad=1e-9, tol_change=0.0)
    assert res.report["converged"] == [True] and res.report["stop_reason"] == ["grad"]
    assert res.report["grad_max"][0] <= res.report["tol_grad"]
    ref = {k: v[0].clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.LBFGS(list(ref.values()), lr=1, max_iter=2000, tolerance_grad=1e-12, tolerance_change=0,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(_single(module, ref, x), -1)
        val = -logp.gather(1, y[:, None]).mean() + 0.5e-2 * sum((v ** 2).sum() for v in ref.values())
        val.backward()
        return val

    opt.step(closure)
    for k in ref:
        torch.testing.assert_close(res.params[k][0], ref[k].detach(), rtol=0, atol=1e-6)


def test_lbfgs_records_non_convergence_at_max_iter():
    module = _module()
    params = training.init_stacked(module, [0, 1], dtype=torch.float64)
    x, y = _problem()
    res = training.fit_lbfgs(training.stacked_forward(module), params, (x, y), weight_decay=1e-3, max_iter=3,
                             tol_grad=1e-12)
    assert res.report["iterations"] == [3, 3]
    assert res.report["converged"] == [False, False]
    assert res.report["stop_reason"] == ["max_iter", "max_iter"]
    assert len(res.history["train_loss"]) == 4
    losses = torch.tensor(res.history["train_loss"])
    # Armijo or approximate Wolfe: monotone up to the latter's slack of WOLFE_SLACK_ULPS ulps of max(1, |L|)
    slack = training.lbfgs.WOLFE_SLACK_ULPS * torch.finfo(torch.float64).eps * losses[:-1].abs().clamp(min=1.0)
    assert (losses[1:] <= losses[:-1] + slack).all()


def test_lbfgs_records_a_loss_stall_as_not_converged():
    """A stop on the loss change ("loss_change") is a stall, never "converged": the flag is the gradient test."""
    module = _module()
    params = training.init_stacked(module, [0, 1], dtype=torch.float64)
    x, y = _problem()
    res = training.fit_lbfgs(training.stacked_forward(module), params, (x, y), weight_decay=1e-3, max_iter=500,
                             tol_grad=1e-14, tol_change=1e-2)     # loose loss test, unreachable gradient test
    assert res.report["stop_reason"] == ["loss_change", "loss_change"]
    assert res.report["converged"] == [False, False]
    assert min(res.report["grad_max"]) > res.report["tol_grad"]


def test_adam_vectorized_equals_members_one_by_one_with_early_stopping():
    module = _module()
    seeds = [21, 22]
    params = training.init_stacked(module, seeds, dtype=torch.float64)
    x, y = _problem()
    xv, yv = _problem(5)
    fn = training.stacked_forward(module)
    kw = dict(weight_decay=1e-3, lr=3e-2, epochs=40, batch_size=16, patience=3)
    together = training.fit_adam(fn, params, (x, y), (xv, yv), seeds=seeds, **kw)
    for s in range(2):
        alone = training.fit_adam(fn, {k: v[s:s + 1] for k, v in params.items()}, (x, y), (xv, yv),
                                  seeds=[seeds[s]], **kw)
        assert alone.report["best_epoch"][0] == together.report["best_epoch"][s]
        for k in params:
            # bound: same minibatches and Adam steps; batched reductions: ulps amplified over 40 epochs
            torch.testing.assert_close(together.params[k][s], alone.params[k][0], rtol=1e-9, atol=1e-11)
    # early stopping: the kept parameters are those of the best validation epoch
    for s in range(2):
        best = together.report["best_epoch"][s]
        nll = [h[s] for h in together.history["val_nll"]][:together.report["epochs_run"][s]]  # until it stopped
        # bound: the same float64 value recorded twice (tensor → list): exact up to a few ulps
        assert math.isclose(together.report["best_val_nll"][s], min(nll), rel_tol=1e-12)
        assert nll[best - 1] == min(nll)
        if together.report["converged"][s]:
            assert together.report["epochs_run"][s] == best + 3


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_nan_loss_raises_non_finite_loss_error(optimizer):
    module = _module()
    params = training.init_stacked(module, [0, 1], dtype=torch.float64)
    params["layers.0.weight"][1, 0, 0] = float("nan")
    x, y = _problem()
    extra = {"max_iter": 5} if optimizer == "lbfgs" else {"epochs": 2}
    with pytest.raises(training.NonFiniteLossError, match=r"member\(s\) \[1\]"):
        training.fit(training.stacked_forward(module), params, (x, y), optimizer=optimizer, **extra)


def test_diverging_adam_raises():
    module = _module()
    params = training.init_stacked(module, [0], dtype=torch.float64)
    x, y = _problem()
    with pytest.raises(training.NonFiniteLossError, match="lower lr"):  # steps of 1e308 overflow the parameters
        training.fit_adam(training.stacked_forward(module), params, (x, y), lr=1e308, epochs=3, batch_size=8)


def test_bad_arguments_are_rejected():
    module = _module()
    params = training.init_stacked(module, [0], dtype=torch.float64)
    x, y = _problem()
    fn = training.stacked_forward(module)
    with pytest.raises(ValueError, match="optimizer"):
        training.fit(fn, params, (x, y), optimizer="sgd")
    with pytest.raises(ValueError, match="label_smoothing"):
        training.make_loss(fn, label_smoothing=1.0)
    with pytest.raises(ValueError, match="training data"):
        training.fit_lbfgs(fn, params, (x, y[:-1]))
    with pytest.raises(ValueError, match="seeds"):
        training.fit_adam(fn, params, (x, y), seeds=[0, 1])
