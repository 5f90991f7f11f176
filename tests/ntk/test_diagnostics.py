"""ntk.diagnostics: kernel drift, linearization gap, parameter movement, max |logit| and the LazyTracker, each
against a direct computation (empirical NTK, explicit forward passes, norms of concatenated parameters)."""

import math

import pytest
import torch
from fp_bounds import EPS, gamma, ulps
from torch.func import functional_call, stack_module_state

from ntkbayes.models import MLP
from ntkbayes.ntk import (
    LazyTracker,
    empirical_ntk,
    kernel_drift,
    linearization_gap,
    linearize,
    logit_gap,
    parameter_movement,
    relative_kernel_drift,
)
from ntkbayes.ntk.diagnostics import METRICS

DT = torch.float64


def _net(width=16, depth=2, seed=0):
    torch.manual_seed(seed)
    model = MLP(3, 2, width=width, depth=depth, activation="erf").to(DT)
    return model, {k: v.detach().clone() for k, v in model.named_parameters()}


def _norm_rel(p0):
    """Relative error of a ratio of two norms over the P parameters: sums of P squares, 2·γ_P each."""
    return 4 * gamma(sum(v.numel() for v in p0.values())) + 8 * EPS


def _drift_rel(p0, drift):
    """Relative error of a kernel drift whose kernels were computed twice: each Θ entry is off by ≤ 64·P·ε of
    max|Θ| (see test_empirical), and Θ_t − Θ_0 divides that by the drift."""
    return 2 * 64 * sum(v.numel() for v in p0.values()) * EPS / max(drift, 1e-300)


#: Logits from a vmapped and a single forward pass: per layer the width-16 dot products may be blocked differently
#: (2·γ_16 relative to |W||h|), over 3 layers, with cancellation between terms ≤ 100×: about 1e-12 relative.
FORWARD_REL = 3 * 2 * gamma(16) * 100


def _moved(p0, eps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: v + eps * torch.randn(v.shape, generator=g, dtype=DT) for k, v in p0.items()}


def test_parameter_movement_and_kernel_drift_direct():
    model, p0 = _net()
    theta = _moved(p0, 0.05)
    flat = lambda d: torch.cat([v.reshape(-1) for v in d.values()])  # noqa: E731
    assert float(parameter_movement(p0, theta)) == pytest.approx(float((flat(theta) - flat(p0)).norm()
                                                                       / flat(p0).norm()), rel=_norm_rel(p0))
    assert float(parameter_movement(p0, p0)) == 0.0
    x = torch.randn(6, 3, dtype=DT)
    k0, kt = empirical_ntk(model, x, params=p0), empirical_ntk(model, x, params=theta)
    expect = float(torch.sqrt(((kt - k0) ** 2).sum() / (k0**2).sum()))
    assert float(kernel_drift(model, p0, theta, x)) == pytest.approx(expect, rel=_drift_rel(p0, expect))
    assert float(kernel_drift(model, p0, theta, x, ntk0=k0)) == pytest.approx(expect, rel=_drift_rel(p0, expect))
    assert float(kernel_drift(model, p0, p0, x)) <= 2 * 64 * sum(v.numel() for v in p0.values()) * EPS
    drift_tr = kernel_drift(model, p0, theta, x, trace=True, implementation="jacobian")
    k0t, ktt = k0.diagonal(dim1=2, dim2=3).mean(-1), kt.diagonal(dim1=2, dim2=3).mean(-1)
    expect_tr = float((ktt - k0t).norm() / k0t.norm())
    assert float(drift_tr) == pytest.approx(expect_tr, rel=_drift_rel(p0, expect_tr))
    # stacked (S, N, M) kernels → (S,) per-member drifts
    stacked = relative_kernel_drift(torch.stack([ktt, k0t]), torch.stack([k0t, k0t]))
    assert stacked.shape == (2,) and float(stacked[1]) == 0.0
    with pytest.raises(ValueError, match="theta_t"):
        relative_kernel_drift(kt, k0t)
    with pytest.raises(ValueError, match="missing"):
        parameter_movement(p0, {})


def test_drift_shrinks_with_width_for_the_same_relative_move():
    """Lazy regime (Lee et al. 2019): a parameter move of fixed relative size changes wide nets' NTK less."""
    x = torch.randn(8, 3, dtype=DT, generator=torch.Generator().manual_seed(2))
    drifts = []
    for width in (16, 256):
        model, p0 = _net(width)
        theta = {k: v + 0.2 * v.std() * torch.randn_like(v) for k, v in p0.items()}
        drifts.append(float(kernel_drift(model, p0, theta, x, trace=True)))
    assert drifts[1] < drifts[0]


def test_linearization_gap_taylor_twin_and_logit_gap():
    model, p0 = _net()
    x = torch.randn(7, 3, dtype=DT)
    zero = linearization_gap(model, p0, p0, x)
    f0 = functional_call(model, p0, (x,))
    assert all(float(v) <= ulps(f0, 4) for v in zero.values())                  # f(θ0) vs f0 + J·0: ulps
    gaps = [float(linearization_gap(model, p0, _moved(p0, eps), x)["max_logit"]) for eps in (2e-2, 1e-2)]
    assert 3.5 < gaps[0] / gaps[1] < 4.5                                        # Taylor remainder O(ε²)
    theta, twin = _moved(p0, 0.1, 3), _moved(p0, 0.1, 4)
    got = linearization_gap(model, p0, theta, x, lin_params=twin)
    net = functional_call(model, theta, (x,))
    lin = linearize(model, p0)(twin, x)
    d = (net - lin).abs()
    tv = 0.5 * (net.softmax(-1) - lin.softmax(-1)).abs().sum(-1)
    for key, val in (("max_logit", d.max()), ("mean_logit", d.mean()), ("tv_mean", tv.mean()), ("tv_max", tv.max())):
        # the same elementwise values, reduced over ≤ 14 entries: γ_14 relative, with room for the softmax's ulps
        assert float(got[key]) == pytest.approx(float(val), rel=64 * EPS)
    a = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=DT)
    lg = logit_gap(a, torch.zeros(2, 2, dtype=DT))                              # probs (1/2,1/2) vs (3/4,1/4)
    assert float(lg["tv_max"]) == pytest.approx(0.25) and float(lg["tv_mean"]) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="logits"):
        logit_gap(a, a[0])


def test_lazy_tracker_records_members_and_matches_direct_values():
    models = [_net(seed=s)[0] for s in range(2)]
    p0, _ = stack_module_state(models)
    p0 = {k: v.detach() for k, v in p0.items()}
    x = torch.randn(5, 3, dtype=DT)
    tracker = LazyTracker(models[0], p0, x, steps=[0, 10], ntk_trace=True)
    theta = {k: v + 0.05 * torch.randn_like(v) for k, v in p0.items()}
    assert tracker.record(3, theta) is None                                     # not a configured step
    row0 = tracker.record(0, p0, loss=1.5)
    row = tracker.record(10, theta)
    assert set(METRICS) <= set(row) and row["members"] == 2 and row["lin_gap_kind"] == "taylor"
    # θ = θ0: the movement is exactly 0; the drift compares two computations of one kernel (_drift_rel's numerator)
    assert row0["loss"] == 1.5 and row0["param_movement"] == 0.0
    assert row0["kernel_drift"] <= 2 * 64 * sum(v[0].numel() for v in p0.values()) * EPS
    for i in range(2):
        pi, ti = {k: v[i] for k, v in p0.items()}, {k: v[i] for k, v in theta.items()}
        member = tracker.member_history[2 + i]
        assert member["member"] == i and member["step"] == 10
        drift = float(kernel_drift(models[0], pi, ti, x, trace=True))
        assert member["kernel_drift"] == pytest.approx(drift, rel=_drift_rel(pi, drift))
        assert member["param_movement"] == pytest.approx(float(parameter_movement(pi, ti)), rel=_norm_rel(pi))
        logits = functional_call(models[0], ti, (x,))
        assert member["max_abs_logit"] == pytest.approx(float(logits.abs().max()), rel=FORWARD_REL)
        gap = linearization_gap(models[0], pi, ti, x)
        # a small difference of two logits, each computed vmapped here and single there: FORWARD_REL of |logits|
        assert member["lin_gap_max_logit"] == pytest.approx(float(gap["max_logit"]), rel=0,
                                                            abs=FORWARD_REL * float(logits.abs().max()))
    twin_row = tracker.record(10, theta, lin_params=p0)
    assert twin_row["lin_gap_kind"] == "twin"
    assert len(tracker.frame()) == 3 and len(tracker.frame(per_member=True)) == 6
    with pytest.raises(ValueError, match="probe_x"):
        LazyTracker(models[0], p0, torch.zeros(0, 3))
