"""One contract for every registered method (issue 5): parametrized over ``ntkbayes.methods.available()``, so a new
method file is tested without touching this one.

Each method is fitted on a tiny dataset with small settings: :data:`FAST` gives generic small values for common
parameter names (used only where the method has that parameter), :data:`FAST_BY_METHOD` per-method extras; a method
unknown to both runs with its defaults plus whichever generic names apply.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from toydata import tiny_splits

from ntkbayes import methods
from ntkbayes.methods.base import NotFittedError

#: Small values for parameter names many methods share (applied only where the method accepts the name).
FAST = {"width": 16, "members": 2, "epochs": 60, "patience": 5, "max_iter": 60, "num_samples": 4,
        "train_iters": 5, "max_train": 200}
#: Per-method extras on top of :data:`FAST`.
FAST_BY_METHOD: dict[str, dict] = {
    "ntk_ensemble": {"depth": 1},
    "laplace": {"depth": 1},
}
#: A tiny problem must fit and predict within this many seconds (generous: the CI box is shared).
TIME_LIMIT_S = 30.0

NAMES = [n for n in methods.available() if not n.startswith("_")]  # "_"-names are registry-test throwaways


def fast_params(name: str) -> dict:
    known = methods.get(name).param_defaults()
    params = {k: v for k, v in FAST.items() if k in known}
    params.update(FAST_BY_METHOD.get(name, {}))
    return params



@pytest.fixture(scope="module")
def data():
    return tiny_splits(n=90, classes=3, dim=3, seed=1)


_FITTED: dict[str, tuple] = {}


def fitted(name: str, data):
    """(method, seconds) fitted once per module on ``data`` with seed 0."""
    if name not in _FITTED:
        m = methods.create(name, **fast_params(name))
        t0 = time.perf_counter()
        out = m.fit(data, seed=0)
        pred = m.predict(data.test.x)
        _FITTED[name] = (m, out, pred, time.perf_counter() - t0)
    return _FITTED[name]


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name):
    params = fast_params(name)
    m = methods.create(name, **params)
    got = m.get_params()
    assert set(got) == set(methods.get(name).param_defaults())
    assert {k: got[k] for k in params} == params
    again = methods.create(name, **got)
    assert again.get_params() == got
    assert repr(again) == repr(m)


@pytest.mark.parametrize("name", NAMES)
def test_predict_before_fit_raises(name, data):
    with pytest.raises(NotFittedError):
        methods.create(name, **fast_params(name)).predict(data.test.x)


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_keeps_params(name, data):
    m, out, _, _ = fitted(name, data)
    assert out is m
    assert m.get_params() == methods.create(name, **fast_params(name)).get_params()  # fit stored no params
    json.dumps(m.fit_info())  # fit_info is JSON-serializable


@pytest.mark.parametrize("name", NAMES)
def test_predictive_is_valid(name, data):
    m, _, pred, _ = fitted(name, data)
    s, n, c = pred.member_probs.shape
    assert (n, c) == (len(data.test), data.num_classes) and s >= 1
    assert torch.allclose(pred.member_probs.sum(-1), torch.ones(s, n, dtype=pred.member_probs.dtype), atol=1e-6)
    assert (pred.member_probs >= 0).all()
    ood = m.predict(data.ood["far"])
    assert ood.member_probs.shape == (s, data.ood["far"].shape[0], c)
    acc = (pred.probs.argmax(1) == data.test.y).double().mean()
    assert acc > 1.0 / c  # well-separated blobs: anything fitted beats chance


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name, data):
    _, _, pred, _ = fitted(name, data)
    again = methods.create(name, **fast_params(name)).fit(data, seed=0).predict(data.test.x)
    torch.testing.assert_close(again.member_probs, pred.member_probs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_problem_runs_in_seconds(name, data):
    *_, seconds = fitted(name, data)
    assert seconds < TIME_LIMIT_S, f"{name}: fit + predict on {len(data.train)} points took {seconds:.1f} s"
