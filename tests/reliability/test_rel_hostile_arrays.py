"""Reliability, data arrays: NaN, inf, huge values, wrong shapes and dtypes, empty splits and labels out of range go
through ``make_splits``, ``Predictive`` and ``metrics.evaluate``: either a ValueError naming the problem, or numbers
checked against an obvious reference — never silently wrong numbers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntkbayes.data.splits import DatasetSplits, make_splits
from ntkbayes.metrics import evaluate
from ntkbayes.predictive import Predictive

EXAMPLES = 150
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
stats: dict[str, int] = {}


def _count(key: str) -> None:
    stats[key] = stats.get(key, 0) + 1


# -- make_splits -----------------------------------------------------------------------------------------------
FLOATS = st.one_of(st.floats(-10, 10), st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e38, 1e-300,
                                                       0.0]))


@st.composite
def raw_datasets(draw):
    """(x, y, kind) with mostly plausible and sometimes hostile content, shape or dtype."""
    n = draw(st.sampled_from([0, 1, 5, 16, 24, 40]))
    d = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["clean", "values", "scale", "shape", "dtype", "labels"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    classes = draw(st.integers(1, 4))
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) + 3 * y[:, None]
    if kind == "values" and n:  # a few hostile entries
        for _ in range(draw(st.integers(1, 3))):
            x[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(FLOATS)
    elif kind == "scale":  # a whole feature of huge or tiny magnitude
        x[:, draw(st.integers(0, d - 1))] *= draw(st.sampled_from([1e-300, 1e-30, 1e30, 1e100, 1e160, 1e300]))
    elif kind == "shape":
        x = draw(st.sampled_from([x, x.reshape(-1), x[:-1] if n else x, x[:, None, :]]))
        y = draw(st.sampled_from([y, y[:, None], y[:-1] if n else y, y.reshape(1, -1)]))
    elif kind == "dtype":
        dt = draw(st.sampled_from([np.float64, np.float16, np.float32, np.int64, np.bool_, object, "U5"]))
        x = x.astype(dt) if dt != "U5" else x.astype(str).astype("U5")
        y = y.astype(draw(st.sampled_from([np.int64, np.int8, np.float64, np.bool_, object, "U1"])))
    elif kind == "labels":
        y = draw(st.sampled_from([y - 5, y * 1000, y + 0.5, y * np.nan if n else y, np.full(n, 7), -y]))
    return x, y, kind


def _reference_check(ds: DatasetSplits, x: np.ndarray, y: np.ndarray) -> None:
    """What a correct split must satisfy: finite float32 features, labels 0..C-1 that map back to the original
    classes with the original counts, train features centred and scaled (or constant in the input), and the
    rows themselves: every output row is (input row − μ) / σ for one input row, μ, σ of the training rows."""
    parts = [ds.train, ds.val, ds.test]
    assert all(torch.isfinite(s.x).all() and s.x.dtype == torch.float32 for s in parts)
    labels = torch.cat([s.y for s in parts]).numpy()
    assert labels.min() >= 0 and labels.max() < ds.num_classes
    got = np.asarray(ds.classes)[labels]
    classes, counts = np.unique(got, return_counts=True)
    ref_classes, ref_counts = np.unique(y.astype(np.float64), return_counts=True)
    assert np.array_equal(classes, ref_classes) and np.array_equal(counts, ref_counts), "labels were changed"
    xf = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    tr = ds.train.x.double().numpy().reshape(len(ds.train), -1)
    assert np.allclose(tr.mean(0), 0, atol=1e-4), "train features not centred"
    sd = tr.std(0)
    constant = np.ptp(xf, axis=0) == 0
    assert np.all((np.abs(sd - 1) < 1e-3) | constant), f"train features not scaled to 1: {sd}"
    tiny = np.abs(xf[xf != 0]).min(initial=np.inf)
    if np.abs(xf).max() >= 1e38 or tiny < 1e-30:
        return  # not representable in float32 before standardizing: no raw reference
    raw = make_splits("hostile", x, y, seed=0, test_fraction=0.25, val_fraction=0.25, standardize=False)
    r_tr = raw.train.x.double().numpy().reshape(len(raw.train), -1)
    mu, sig = r_tr.mean(0), r_tr.std(0)
    sig = np.where(sig <= 1e-12 * np.abs(mu), 1.0, sig)  # constant up to rounding, as make_splits
    for a, b in zip((raw.train, raw.val, raw.test), parts):
        want = (a.x.double().numpy().reshape(len(a), -1) - mu) / sig
        assert np.allclose(b.x.double().numpy().reshape(len(b), -1), want, rtol=1e-4, atol=1e-4)
    rows = np.concatenate([a.x.numpy().reshape(len(a), -1) for a in (raw.train, raw.val, raw.test)])
    assert np.array_equal(np.unique(rows, axis=0), np.unique(xf.astype(np.float32), axis=0)), "rows changed"


@SETTINGS
@given(raw_datasets())
def test_make_splits(case):
    x, y, kind = case
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ds = make_splits("hostile", x, y, seed=0, test_fraction=0.25, val_fraction=0.25)
    except ValueError as e:
        assert str(e) and "\n" not in str(e).strip()
        _count(f"make_splits {kind}: ValueError")
        return
    _count(f"make_splits {kind}: accepted")
    _reference_check(ds, x, y)


def _blobs(n: int = 40, d: int = 2):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    return rng.normal(size=(n, d)) + 3 * y[:, None], y


def test_make_splits_rejects_2d_labels():
    x, y = _blobs()
    with pytest.raises(ValueError, match="y"):
        make_splits("h", x, y[:, None], seed=0)


def test_make_splits_huge_feature_is_not_silently_zeroed():
    x, y = _blobs()
    x[:, 0] *= 1e200
    try:
        ds = make_splits("h", x, y, seed=0)
    except ValueError:
        return  # a clean refusal is fine
    assert ds.train.x[:, 0].std() > 0.5, "feature 0 became constant"


def test_make_splits_scales_small_features():
    x, y = _blobs()
    x[:, 0] *= 1e-9
    ds = make_splits("h", x, y, seed=0)
    assert abs(float(ds.train.x[:, 0].double().std(unbiased=False)) - 1) < 1e-3


def test_make_splits_rejects_complex_features():
    x, y = _blobs()
    with pytest.raises(ValueError, match="x"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_splits("h", x + 1j, y, seed=0)


def test_make_splits_rejects_zero_features():
    x, y = _blobs()
    with pytest.raises(ValueError, match="x"):
        make_splits("h", x[:, :0], y, seed=0)


# -- Predictive and metrics ------------------------------------------------------------------------------------
@st.composite
def predictions(draw):
    """(member_probs tensor, labels tensor, ood dict, kind)."""
    s, n, c = draw(st.integers(1, 3)), draw(st.integers(0, 12)), draw(st.integers(1, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    logits = torch.randn(s, n, c, generator=g, dtype=torch.float64) * draw(st.sampled_from([1.0, 30.0, 1e3]))
    probs = torch.softmax(logits, -1)
    labels = torch.randint(0, c, (n,), generator=g)
    ood = {"o": torch.softmax(torch.randn(s, draw(st.integers(0, 5)), c, generator=g, dtype=torch.float64), -1)}
    kind = draw(st.sampled_from(["clean", "values", "shape", "dtype", "labels", "ood"]))
    if kind == "values" and n:
        flat = probs.reshape(-1)
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([np.nan, np.inf, -1.0, 2.0, 1e300]))
    elif kind == "shape":
        probs = draw(st.sampled_from([probs[0, :, 0], probs[..., None], probs[:, :, :0], probs[:0]]))
    elif kind == "dtype":
        probs = probs.to(draw(st.sampled_from([torch.float16, torch.float32, torch.int64, torch.bool,
                                               torch.complex64])))
    elif kind == "labels":
        labels = draw(st.sampled_from([labels + c, labels - 1, labels.double(), labels[:, None], labels[:-1],
                                       labels.to(torch.bool), torch.full((n,), 2**40)]))
    elif kind == "ood":
        ood = draw(st.sampled_from([{"o": ood["o"][..., :1]}, {"o": ood["o"] * np.nan}, {"o": ood["o"][:, :0]}]))
    return probs, labels, ood, kind


@SETTINGS
@given(predictions())
def test_predictive_and_metrics(case):
    probs, labels, ood, kind = case
    try:
        pred = Predictive(probs)
        opred = {k: Predictive(v) for k, v in ood.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            scores = evaluate(pred, labels, ood=opred)
    except ValueError as e:
        assert str(e) and "\n" not in str(e).strip()
        _count(f"predictive/metrics {kind}: ValueError")
        return
    _count(f"predictive/metrics {kind}: accepted")
    # accepted: the numbers must agree with direct computations on the input
    p = probs.double() if probs.ndim == 3 else probs.double()[None]
    assert labels.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
    mean = p.mean(0)
    assert mean.shape[0] == labels.shape[0] > 0 and int(labels.min()) >= 0 and int(labels.max()) < mean.shape[1]
    acc = (mean.argmax(-1) == labels).double().mean().item()
    assert scores["cls/acc"] == pytest.approx(acc, abs=1e-12)
    nll = -torch.log(mean[torch.arange(len(labels)), labels].clamp_min(1e-300)).mean().item()
    assert scores["cal/nll"] == pytest.approx(nll, rel=1e-6, abs=1e-6) or nll > 30  # a floor may apply
    for key, v in scores.items():
        assert v is None or isinstance(v, float), key
        if v is not None and any(t in key for t in ("auroc", "aupr", "ece", "acc", "fpr95")):
            assert 0.0 <= v <= 1.0 or np.isnan(v), (key, v)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\n[hostile arrays] {sum(stats.values())} inputs: {json.dumps(stats, sort_keys=True)}")
