"""Condition numbers of kernel systems and the ill-conditioned-interpolant warning (ntk.newton, ntk.solve)."""

from __future__ import annotations

import warnings

import pytest
import torch
from toydata import tiny_splits

from ntkbayes import methods
from ntkbayes.ntk import newton, solve


def _spd(eigs: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.t()


def test_condition_number_exact_and_cholesky_lower_bound(monkeypatch):
    A = _spd([1e-3, 0.5, 2.0, 10.0, 1e3])                         # cond 1e6
    cond, how = newton.condition_number(A)
    # eigvalsh is backward stable: relative error of λmin ≲ n·ε·‖A‖/λmin = 5·2.2e-16·1e6 ≈ 1e-9
    assert how == "eigvalsh" and abs(cond / 1e6 - 1) < 1e-8
    monkeypatch.setattr(newton, "EIGH_MAX_SIZE", 2)
    est, how = newton.condition_number(A)
    assert how == "cholesky_diag" and 1.0 <= est <= cond * (1 + 1e-8)     # a lower bound (docstring)


def test_interpolant_warns_once_above_the_threshold_and_records_cond():
    N, C = 6, 2
    theta = _spd([1e-11] + [1.0] * (N - 1))                      # scalar kernel Θ ⊗ I_C, cond 1e11 > 1e8
    Y = torch.full((N, C), 0.1, dtype=torch.float64)
    Y[:, 0] = 0.9
    with pytest.warns(newton.IllConditionedWarning, match="weight_decay") as rec:
        res = solve.interpolant_smoothed(theta, torch.zeros(N, C, dtype=torch.float64), Y)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    assert res.condition_method == "eigvalsh" and res.condition > newton.CONDITION_WARN_FLOAT64
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # well conditioned: no warning
        res = solve.interpolant_smoothed(_spd([0.5, 1.0, 2.0, 1.0, 3.0, 1.0]), torch.zeros(N, C,
                                         dtype=torch.float64), Y)
    assert 5.9 < res.condition < 6.1                              # 3.0 / 0.5 up to rounding


def test_threshold_follows_the_precision():
    assert newton.condition_threshold(torch.float64) == 1e8
    assert newton.condition_threshold(torch.float32) == pytest.approx(1e-2 / torch.finfo(torch.float32).eps)


def test_ntk_ensemble_records_the_condition_and_warns_once(monkeypatch):
    """Kernel mode, λ = 0: cond(Θ) per member in fit_info and ONE warning for all members above the threshold
    (lowered here: the tiny problem's Θ is well conditioned, cond ~1e3); λ > 0 records the Newton bound."""
    data = tiny_splits(n=20, classes=3, dim=4, seed=2)
    kw = dict(mode="kernel", members=2, width=16, depth=1, activation="tanh", dtype="float64")
    monkeypatch.setattr(newton, "CONDITION_WARN_FLOAT64", 10.0)
    with pytest.warns(newton.IllConditionedWarning, match="weight_decay") as rec:
        model = methods.create("ntk_ensemble", weight_decay=0.0, label_smoothing=0.2, **kw).fit(data, seed=0)
    assert len([r for r in rec if issubclass(r.category, newton.IllConditionedWarning)]) == 1
    info = model.fit_info()
    assert info["kernel_condition_method"] == "eigvalsh" and len(info["member_kernel_condition"]) == 2
    assert info["kernel_condition"] == max(info["member_kernel_condition"]) > 10.0
    monkeypatch.setattr(newton, "CONDITION_WARN_FLOAT64", 1e8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", newton.IllConditionedWarning)
        info = methods.create("ntk_ensemble", weight_decay=1e-2, **kw).fit(data, seed=0).fit_info()
    assert info["kernel_condition_method"] == "newton_trace_bound" and info["kernel_condition"] > 1.0
