"""Rank-normalized split R-hat and bulk ESS: against a direct numpy transcription of Vehtari et al. (2021) and
against chains whose behaviour is known (iid, AR(1), shifted chains, constants)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm, rankdata

from ntkbayes.samplers import ESS_MIN, RHAT_MAX, bulk_ess, rhat, summarize


def _numpy_rank_rhat(x):
    """x (chains, n) for one quantity: max of the split R-hats of the rank-normalized and folded draws (eqs. 4, 14
    and 3.2 of Vehtari et al. 2021), written out with numpy."""
    def split_rhat(z):
        half = z.shape[1] // 2
        z = np.concatenate([z[:, :half], z[:, -half:]], 0)
        m, n = z.shape
        b = n * z.mean(1).var(ddof=1)
        w = z.var(1, ddof=1).mean()
        return math.sqrt(((n - 1) / n * w + b / n) / w)

    def normal_scores(z):
        r = rankdata(z.reshape(-1)).reshape(z.shape)
        return norm.ppf((r - 0.375) / (z.size + 0.25))

    folded = np.abs(x - np.median(x))
    return max(split_rhat(normal_scores(x)), split_rhat(normal_scores(folded)))


def test_rhat_matches_numpy_transcription():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 101, 3))  # odd n: the middle draw is dropped when splitting
    x[1, :, 1] += 1.0  # one chain shifted
    x[2, :, 2] *= 3.0  # one chain wider (caught by the folded term)
    got = rhat(torch.tensor(x))
    want = [_numpy_rank_rhat(x[..., q]) for q in range(3)]
    # same arithmetic in another order: a few ulps of values O(1)
    assert got.numpy() == pytest.approx(want, rel=1e-12)
    assert got[1] > 1.05 and got[2] > 1.05 and got[0] < 1.02


def test_bulk_ess_iid_and_ar1():
    rng = np.random.default_rng(1)
    chains, n = 4, 2000
    iid = rng.standard_normal((chains, n))
    rho = 0.6
    ar = np.zeros((chains, n))
    ar[:, 0] = rng.standard_normal(chains)
    for t in range(1, n):
        ar[:, t] = rho * ar[:, t - 1] + math.sqrt(1 - rho**2) * rng.standard_normal(chains)
    ess = bulk_ess(torch.tensor(np.stack([iid, ar], -1)))
    total = chains * n
    # the ESS estimator's own sampling error is ~5-10 % here; AR(1) has ESS = S(1 − ρ)/(1 + ρ)
    assert abs(float(ess[0]) / total - 1) < 0.15
    assert abs(float(ess[1]) / (total * (1 - rho) / (1 + rho)) - 1) < 0.2


def test_constant_quantities_are_nan_and_skipped():
    rng = np.random.default_rng(2)
    x = np.stack([rng.standard_normal((2, 50)), np.ones((2, 50))], -1)
    r, e = rhat(torch.tensor(x)), bulk_ess(torch.tensor(x))
    assert math.isnan(r[1]) and math.isnan(e[1]) and not math.isnan(r[0])
    s = summarize(torch.tensor(x))
    assert s["num_constant"] == 1 and s["rhat"] == float(r[0]) and s["ess_bulk"] == float(e[0])
    assert s["flagged"] == (s["rhat"] > RHAT_MAX or s["ess_bulk"] < ESS_MIN)


def test_too_few_draws_is_an_error():
    with pytest.raises(ValueError, match="at least 4 draws"):
        rhat(torch.zeros(2, 3))
