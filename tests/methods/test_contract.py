"""One contract for every registered method: parametrized over ``ntkbayes.methods.available()``, so a new method
file is tested without touching this one.

Each method is fitted on a tiny dataset with its own fast settings, the class attribute ``test_params``; the
class attributes every method declares (family, dry-run caps, search space) are checked against its parameters.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from toydata import tiny_splits

from ntkbayes import methods
from ntkbayes.methods.base import NotFittedError

#: A tiny problem must fit and predict within this many seconds (generous: the CI box is shared).
TIME_LIMIT_S = 30.0

NAMES = [n for n in methods.available() if not n.startswith("_")]  # "_"-names are registry-test throwaways


def fast_params(name: str) -> dict:
    return dict(methods.get(name).test_params)


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
    # same seed, same process: every random stream is derived from the seed, so the run repeats bit for bit
    torch.testing.assert_close(again.member_probs, pred.member_probs, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_problem_runs_in_seconds(name, data):
    *_, seconds = fitted(name, data)
    assert seconds < TIME_LIMIT_S, f"{name}: fit + predict on {len(data.train)} points took {seconds:.1f} s"


@pytest.mark.parametrize("name", NAMES)
def test_class_attributes_name_real_parameters(name):
    cls = methods.get(name)
    known = cls.param_defaults()
    assert isinstance(cls.family, str) and cls.family
    for table in ("test_params", "dry_run_params", "search_space", "param_bounds", "param_checks"):
        unknown = set(getattr(cls, table)) - set(known)
        assert not unknown, f"{name}.{table}: {sorted(unknown)} are not parameters"
    for key, value in {**cls.test_params, **cls.dry_run_params}.items():
        assert cls.check_param(key, value) == value
    for key, values in cls.search_space.items():
        assert values and all(cls.check_param(key, v) == v for v in values), key
    for key, default in known.items():  # every default passes its own check
        cls.check_param(key, default)
