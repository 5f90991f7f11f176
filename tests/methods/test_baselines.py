"""Baselines against independent references: map (early stopping), deep_ensemble (= separately trained MAPs),
mc_dropout (S masks), temperature (scipy scalar minimization), logistic (scikit-learn), devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from toydata import tiny_splits

from ntkbayes import methods
from ntkbayes.data.splits import make_splits
from ntkbayes.methods.temperature import LOG_T_STEP

SMALL = {"width": 16, "depth": 1, "dtype": "float64"}



@pytest.fixture(scope="module")
def blobs():
    return tiny_splits(n=90, classes=3, dim=3, seed=2)


@pytest.fixture(scope="module")
def noisy():
    """Overlapping classes with label noise, so that training past the best validation NLL overfits."""
    rng = np.random.default_rng(0)
    y = np.arange(160) % 2
    x = rng.normal(size=(160, 2)) + 0.8 * y[:, None]
    return make_splits("noisy", x, y, seed=0)


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float(-probs.gather(1, y.reshape(-1, 1)).log().mean())


def test_map_early_stopping_keeps_best_validation_nll(noisy):
    kw = dict(SMALL, width=64, lr=0.05, epochs=300, patience=10, batch_size=32)
    m = methods.create("map", **kw).fit(noisy, seed=0)
    rep = m.fit_info()["training"]
    assert rep["stop_reason"] == ["early_stopping"] and rep["best_epoch"][0] < rep["epochs_run"][0]
    # the kept parameters are the best-validation ones: their val NLL is the recorded best ...
    # bound: same float64 parameters, two summation orders (batched vs whole): N·ε ≈ 1e-14 relative
    assert nll(m.predict(noisy.val.x).probs, noisy.val.y) == pytest.approx(rep["best_val_nll"][0], rel=1e-10)
    # ... and are exactly the parameters after best_epoch epochs of the same run without early stopping
    ref = methods.create("map", **dict(kw, epochs=rep["best_epoch"][0], patience=10**6)).fit(noisy, seed=0)
    torch.testing.assert_close(ref.predict(noisy.test.x).member_probs, m.predict(noisy.test.x).member_probs)


def test_map_lbfgs_reaches_a_stationary_point(blobs):
    # smooth activation: with ReLU kinks L-BFGS may stop on a stalled loss at ‖∇‖ ~ 1e-3
    m = methods.create("map", **SMALL, optimizer="lbfgs", weight_decay=1e-2, activation="tanh").fit(blobs, seed=0)
    rep = m.fit_info()["training"]
    assert rep["converged"] == [True] and rep["grad_norm"][0] < 1e-5


def test_deep_ensemble_members_are_separately_trained_maps(blobs):
    kw = dict(SMALL, epochs=40)
    ens = methods.create("deep_ensemble", members=3, **kw).fit(blobs, seed=1)
    pred = ens.predict(blobs.test.x)
    assert pred.member_probs.shape == (3, len(blobs.test), 3)
    p = pred.member_probs
    assert all(not torch.allclose(p[i], p[j], atol=1e-3) for i in range(3) for j in range(i))  # members differ
    # member 0 of seed s is initialized and shuffled like the MAP of seed s (seeding.member_seeds): trained alone
    # it must give the same network, so the vectorized training is S independent runs. Bound: float64, 40 epochs
    # of Adam whose batched and single reductions differ in order: a few hundred ulps of O(1) probabilities
    single = methods.create("map", **kw).fit(blobs, seed=1).predict(blobs.test.x)
    torch.testing.assert_close(p[0], single.member_probs[0], atol=1e-8, rtol=0)
    torch.testing.assert_close(pred.probs, p.mean(0))


def test_mc_dropout_draws_num_samples_distinct_masks(blobs):
    m = methods.create("mc_dropout", dropout=0.3, num_samples=7, epochs=30, **SMALL).fit(blobs, seed=0)
    pred = m.predict(blobs.test.x)
    assert pred.member_probs.shape == (7, len(blobs.test), 3)
    logits = pred.member_logits
    assert all(not torch.allclose(logits[i], logits[j]) for i in range(7) for j in range(i))
    torch.testing.assert_close(m.predict(blobs.test.x).member_probs, pred.member_probs)  # seeded masks
    assert pred.mutual_info.mean() > 0
    # reference: the S passes written out by hand — one hidden layer, inverted dropout h·mask/(1−p), readout —
    # drawing the masks from the same seeded RNG stream (all S·N rows in one call, as the method documents)
    from ntkbayes import training
    from ntkbayes.seeding import derive_seed

    params = {k: v[0] for k, v in m.params_.items()}
    x = blobs.test.x.double().repeat(7, 1)
    with training.seeded_rng(derive_seed(0, "dropout_predict"), "cpu"):
        h = torch.relu(x @ params["layers.0.weight"].T + params["layers.0.bias"])
        h = torch.nn.functional.dropout(h, 0.3, training=True)
    ref = (h @ params["layers.1.weight"].T + params["layers.1.bias"]).reshape(7, len(blobs.test), 3)
    torch.testing.assert_close(logits, ref)


def test_temperature_minimizes_validation_nll(noisy):
    # log_t_prior_sd = inf: plain temperature scaling (Guo et al.); the prior is tested in test_temperature.py
    kw = dict(SMALL, width=128, lr=0.05, epochs=150, patience=1000, batch_size=32)  # miscalibrated on purpose
    m = methods.create("temperature", log_t_prior_sd=float("inf"), **kw).fit(noisy, seed=0)
    logits = m._logits(noisy.val.x)[0].double()
    y = noisy.val.y

    def f(log_t):
        return float(torch.nn.functional.cross_entropy(logits / np.exp(log_t), y))

    ref = minimize_scalar(f, bounds=(-2.9, 2.9), method="bounded", options={"xatol": 1e-10})
    assert abs(ref.x) > 0.1  # a case where scaling matters
    # the fit is a grid point in log T: within half a grid step of the continuous minimizer
    assert abs(np.log(m.fit_info()["temperature"]) - ref.x) <= LOG_T_STEP / 2 + 1e-9
    assert m.fit_info()["val_nll_after"] == pytest.approx(ref.fun, abs=1e-4)  # f is flat at ref.x: O(step²)
    # bound: the same float64 cross-entropy of the same logits (÷1 is exact): a few ulps
    assert m.fit_info()["val_nll_before"] == pytest.approx(f(0.0), rel=1e-12)
    base = methods.create("map", **kw).fit(noisy, seed=0).predict(noisy.test.x)
    pred = m.predict(noisy.test.x)
    assert torch.equal(pred.probs.argmax(1), base.probs.argmax(1))  # T changes confidence, not the argmax
    torch.testing.assert_close(pred.member_logits, base.member_logits / m.temperature_)


def test_logistic_matches_scikit_learn(blobs):
    from sklearn.linear_model import LogisticRegression

    lam = 1e-2
    m = methods.create("logistic", weight_decay=lam).fit(blobs)
    x, y = blobs.train.x.double().numpy(), blobs.train.y.numpy()
    # sklearn minimizes C·Σ CE + ½‖W‖² (intercept unpenalized): ours × 1/λ when C = 1/(λN)
    sk = LogisticRegression(C=1.0 / (lam * len(y)), tol=1e-12, max_iter=10_000).fit(x, y)
    ref = sk.predict_proba(blobs.test.x.double().numpy())
    np.testing.assert_allclose(m.predict(blobs.test.x).probs.numpy(), ref, atol=1e-6)
    assert m.fit_info()["grad_norm"] < 1e-7  # L-BFGS tolerance_grad = 1e-9 is on the max entry; ‖g‖₂ ≤ √P·that


def test_bad_options_are_one_line_value_errors(blobs):
    with pytest.raises(ValueError, match="optimizer"):
        methods.create("map", optimizer="sgd", **SMALL).fit(blobs)
    with pytest.raises(ValueError, match="members"):
        methods.create("deep_ensemble", members=0, **SMALL).fit(blobs)
    with pytest.raises(ValueError, match="dropout"):
        methods.create("mc_dropout", dropout=1.5, **SMALL).fit(blobs)
    with pytest.raises(ValueError, match="not NTK-parameterizable"):
        from ntkbayes.models import build_model

        build_model((3, 8, 8), 2, arch="resnet", parameterization="ntk")
    with pytest.raises(ValueError, match="weight_decay"):
        methods.create("logistic", weight_decay=-1.0).fit(blobs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["map", "deep_ensemble", "mc_dropout", "temperature", "laplace", "logistic"])
def test_cuda_matches_cpu(name, blobs):
    """Device-agnostic code: the same float64 fit on CUDA gives the CPU predictive (up to reduction order)."""
    kw = {} if name == "logistic" else dict(SMALL, epochs=20)
    if name == "laplace":
        kw["link"] = "probit"
    preds = [methods.create(name, **kw).fit(blobs, seed=0, device=d).predict(blobs.test.x) for d in ("cpu", "cuda")]
    torch.testing.assert_close(preds[1].member_probs, preds[0].member_probs, atol=1e-6, rtol=1e-6)


def test_deep_ensemble_and_laplace_train_a_resnet_on_images():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = rng.normal(size=(40, 3, 8, 8)) + y[:, None, None, None]
    images = make_splits("images", x, y, seed=0)
    kw = {"arch": "resnet", "depth": 20, "width": 8, "epochs": 1}
    pred = methods.create("deep_ensemble", members=2, **kw).fit(images, seed=0).predict(images.test.x)
    assert pred.member_probs.shape == (2, len(images.test), 2)
    la = methods.create("laplace", link="probit", **kw).fit(images, seed=0)
    assert la.predict(images.test.x).member_probs.shape == (1, len(images.test), 2)
    assert la.fit_info()["laplace_params"] == 32 * 2 + 2  # readout of a width-8 ResNet-20: 4·8 features, 2 classes


def test_label_smoothing_reaches_the_shared_training_loop(blobs):
    """A MAP-family option declared once (label_smoothing) is the ε of the loss every subclass trains on."""
    from ntkbayes import training

    kw = dict(SMALL, optimizer="lbfgs", weight_decay=1e-2, activation="tanh", max_iter=200)
    for name in ("map", "deep_ensemble"):
        m = methods.create(name, label_smoothing=0.3, **kw).fit(blobs, seed=0)
        rep = m.fit_info()["training"]
        loss = training.make_loss(m.fn_, 1e-2, None, 0.3)
        s = training.num_members(m.params_)
        x, y = blobs.train.x.double(), blobs.train.y
        want = loss(m.params_, x.expand(s, *x.shape), y.expand(s, -1))
        # bound: the same float64 objective summed in the same order: a few ulps
        torch.testing.assert_close(torch.tensor(rep["final_train_loss"], dtype=torch.float64), want.detach(),
                                   rtol=1e-12, atol=0)
        plain = methods.create(name, **kw).fit(blobs, seed=0)
        assert abs(plain.fit_info()["training"]["final_train_loss"][0] - rep["final_train_loss"][0]) > 1e-2
