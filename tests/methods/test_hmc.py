"""The ``hmc`` method: its potential is N × the MAP family's objective, fits are deterministic, the predictive and
``info_`` have the documented shape. (The sampler itself is validated in tests/samplers.)"""

from __future__ import annotations

import torch
from toydata import tiny_splits

from ntkbayes import methods
from ntkbayes.methods.hmc import HMC


def test_hmc_fit_predict_and_info():
    data = tiny_splits(n=60, classes=2, dim=2)
    m = methods.create("hmc", **HMC.test_params)
    m.fit(data, seed=0)
    pred = m.predict(data.test.x)
    p = HMC.test_params
    assert pred.member_probs.shape == (p["chains"] * (p["samples"] // p["thin"]), len(data.test), 2)
    assert pred.member_logits is not None
    info = m.fit_info()
    for key in ("rhat", "ess_bulk", "rhat_params", "flagged", "step_size", "divergences", "grad_evals",
                "prior_precision", "num_params"):
        assert key in info, key
    assert info["prior_precision"] == m.weight_decay * len(data.train)
    assert isinstance(info["flagged"], bool) and len(info["step_size"]) == p["chains"]
    again = methods.create("hmc", **HMC.test_params).fit(data, seed=0)
    assert torch.equal(m.samples_, again.samples_)
    other = methods.create("hmc", sampler_seed=1, **HMC.test_params).fit(data, seed=0)  # same split, new chains
    assert not torch.equal(m.samples_, other.samples_)
    assert HMC.family == "reference" and HMC.search_space == {}


def test_hmc_potential_is_n_times_the_map_objective():
    """At the MAP family's optimum (L-BFGS, same network and λ, float64; tanh so that L-BFGS reaches its gradient
    tolerance, which it does not on ReLU's kinks) the gradient of hmc's potential U = Σ CE + (λN/2)‖θ‖² is N times
    the MAP objective's, whose ‖·‖_∞ L-BFGS drove below its tolerance 1e-6."""
    data = tiny_splits(n=60, classes=3, dim=2)
    net = {"width": 6, "depth": 1, "weight_decay": 1e-2, "activation": "tanh"}
    map_ = methods.create("map", optimizer="lbfgs", max_iter=2000, dtype="float64", **net).fit(data, seed=0)
    report = map_.info_["training"]
    hmc = methods.create("hmc", chains=1, warmup=1, samples=4, thin=1, max_tree_depth=1, **net).fit(data, seed=0)
    theta = torch.cat([map_.params_[k][0].reshape(-1) for k in hmc.shapes_]).requires_grad_(True)
    (grad,) = torch.autograd.grad(hmc.potential_(theta), theta)
    n = len(data.train)
    assert report["stop_reason"] == ["grad"]
    # ∇U/N equals the MAP objective's gradient up to the rounding of a sum of N = 48 float64 terms (~1e-15)
    assert abs(float(grad.abs().max()) / n - report["grad_max"][0]) < 1e-12
