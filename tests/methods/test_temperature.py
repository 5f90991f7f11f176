"""Temperature scaling with a prior on log T: the grid minimizer against scipy, and the anchors on a separable
validation set (T stays near 1 under the prior; plain temperature scaling runs to the bound and is flagged)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar
from toydata import tiny_splits

from ntkbayes import methods
from ntkbayes.methods.temperature import LOG_T_STEP, T_MAX, T_MIN, fit_log_temperature, log_t_grid

#: ĝ is a grid point: within half a step of the continuous minimizer (scipy's xatol 1e-10 adds nothing visible).
GRID_TOL = LOG_T_STEP / 2 + 1e-9


def objective(z: torch.Tensor, y: torch.Tensor, sd: float):
    def f(g: float) -> float:
        ce = float(torch.nn.functional.cross_entropy(z / math.exp(g), y, reduction="sum"))
        return ce + (g * g / (2 * sd * sd) if math.isfinite(sd) else 0.0)

    return f


@pytest.mark.parametrize("sd", [0.3, 1.0, float("inf")])
def test_grid_minimizer_matches_scipy_on_overlapping_classes(sd):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    z = 4.0 * torch.nn.functional.one_hot(y, 3).double() + 2.0 * torch.randn(300, 3, generator=gen, dtype=torch.float64)
    ref = minimize_scalar(objective(z, y, sd), bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                          options={"xatol": 1e-10})
    assert math.log(T_MIN) + 0.1 < ref.x < math.log(T_MAX) - 0.1  # interior: the grid and scipy see the same problem
    assert abs(fit_log_temperature(z, y, sd) - ref.x) <= GRID_TOL


def test_separable_validation_keeps_t_near_one_under_the_prior():
    y = torch.arange(90) % 2
    z = 6.0 * (2.0 * torch.nn.functional.one_hot(y, 2).double() - 1.0)  # every point right, margin 12
    n_nll = float(torch.nn.functional.cross_entropy(z, y, reduction="sum"))
    assert fit_log_temperature(z, y, float("inf")) == float(log_t_grid()[0])  # Guo et al.: collapse to the bound
    for sd in (0.3, 1.0):
        g = fit_log_temperature(z, y, sd)
        # the anchor: ĝ²/(2σ²) ≤ objective(ĝ) ≤ objective(0) = Σ CE at T = 1 (plus the grid's half step)
        assert abs(g) <= sd * math.sqrt(2 * n_nll) + GRID_TOL
        assert g <= 0  # a separable set can only sharpen (T = 1 is a grid point)


def test_temperature_method_on_a_separable_validation_set_stays_within_bounds():
    data = tiny_splits(n=150, classes=3, dim=4, seed=3)  # well-separated blobs: the MAP makes no validation error
    kw = dict(width=16, depth=1, dtype="float64", epochs=200)
    m = methods.create("temperature", **kw).fit(data, seed=0)
    info = m.fit_info()
    assert info["val_errors"] == 0
    assert not info["temperature_at_bound"]
    n = len(data.val)
    assert abs(math.log(info["temperature"])) <= 0.3 * math.sqrt(2 * n * info["val_nll_before"]) + GRID_TOL
    plain = methods.create("temperature", log_t_prior_sd=float("inf"), **kw).fit(data, seed=0).fit_info()
    assert plain["temperature_at_bound"] and plain["temperature"] == pytest.approx(T_MIN, rel=LOG_T_STEP)
    base = methods.create("map", **kw).fit(data, seed=0).predict(data.test.x)
    torch.testing.assert_close(m.predict(data.test.x).member_logits, base.member_logits / m.temperature_)


@pytest.mark.parametrize("sd", [0.0, -1.0, float("nan")])
def test_bad_prior_sd_is_a_one_line_value_error(sd):
    with pytest.raises(ValueError, match="log_t_prior_sd"):
        fit_log_temperature(torch.zeros(2, 2), torch.tensor([0, 1]), sd)
