"""mnist1d: offline generation, the npz cache (checked against direct generation), splits and OOD sets.

The full published set is generated once per test session (module fixture, a few seconds) into a tmp root.
"""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch

import ntkbayes.data as data
from ntkbayes.data import mnist1d as m1d

SMALL = {"num_samples": 200, "train_split": 0.5}


def _refuse(*a, **k):
    raise AssertionError("mnist1d.get_dataset downloads and must never be called")


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "get_dataset", _refuse)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    import mnist1d.data
    import sklearn.model_selection  # noqa: F401 - its first import draws from `random`; do it before seeding

    root = tmp_path_factory.mktemp("mnist1d_root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist1d.data, "get_dataset", _refuse)
        np.random.seed(123)  # noqa: NPY002 - checks that the generator's global reseeding is undone
        random.seed(123)
        ds = data.load("mnist1d", root=root, seed=0, id_classes=[0, 1, 2, 3, 4], n_ood=100)
        state_after = (np.random.rand(), random.random())  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    return root, ds, state_after, (np.random.rand(), random.random())  # noqa: NPY002


def test_published_split_and_ood_sets(loaded):
    root, ds, _, _ = loaded
    assert ds.feature_shape == (40,) and ds.num_classes == 5
    assert set(ds.ood) == {"heldout", "shuffled", "noisy"}
    assert ds.ood["shuffled"].shape == (100, 40) and ds.ood["noisy"].shape == (100, 40)
    with np.load(root / "mnist1d" / "mnist1d_default.npz", allow_pickle=False) as z:
        x, y, yt = z["x"], z["y"], z["y_test"]
        assert x.shape == (4000, 40) and z["x_test"].shape == (1000, 40)
        assert json.loads(str(z["args_json"]))["seed"] == 42
    # the published 1000 test sequences are the test set (ID part) and the held-out set
    assert len(ds.test) == int(np.isin(yt, [0, 1, 2, 3, 4]).sum())
    assert len(ds.ood["heldout"]) == int((yt >= 5).sum())
    # validation comes out of the 4000 training sequences
    assert len(ds.train) + len(ds.val) == int((y < 5).sum())
    # channel standardization: one mean/std from the training split
    assert abs(float(ds.train.x.double().mean())) < 1e-5
    assert abs(float(ds.train.x.double().std()) - 1) < 1e-3


def test_global_random_state_is_restored(loaded):
    _, _, after, expected = loaded
    assert after == expected


def test_second_load_uses_the_cache_and_is_identical(loaded, monkeypatch):
    root, ds, _, _ = loaded

    def no_generation(**kw):
        raise AssertionError("cache not used")

    monkeypatch.setattr(m1d, "generate", no_generation)
    again = data.load("mnist1d", root=root, seed=0, id_classes=[0, 1, 2, 3, 4], n_ood=100)
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)
    assert all(torch.equal(again.ood[k], ds.ood[k]) for k in ds.ood)
    other = data.load("mnist1d", root=root, seed=1, id_classes=[0, 1, 2, 3, 4], n_ood=100)
    assert not torch.equal(other.train.x, ds.train.x)
    # the published test set does not depend on the seed (only the train statistics used to standardize it do)
    assert torch.equal(other.test.y, ds.test.y)

    def raw(d):
        p = d.info["preprocessing"]
        return d.test.x.double() * p["std"][0] + p["mean"][0]

    torch.testing.assert_close(raw(other), raw(ds), atol=1e-5, rtol=1e-5)


def test_cache_equals_direct_generation_and_regenerates_when_stale(tmp_path):
    direct = m1d.generate(**SMALL)
    got = m1d.cached(tmp_path, "small", **SMALL)
    for k in direct:
        assert np.array_equal(got[k], direct[k])
    path = tmp_path / "mnist1d" / "mnist1d_small.npz"
    first = m1d.cached(tmp_path, "small", **SMALL)
    assert np.array_equal(first["x"], direct["x"])
    stale = m1d.cached(tmp_path, "small", **{**SMALL, "seed": 7})  # different args → regenerated and rewritten
    assert not np.array_equal(stale["x"], direct["x"])
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["args_json"]))["seed"] == 7
    path.write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = m1d.cached(tmp_path, "small", **SMALL)
    assert np.array_equal(again["x"], direct["x"]) and any("unreadable cache" in str(x.message) for x in w)


def test_ood_generators_differ_from_the_published_set():
    shuffled = m1d.generate(shuffle_seq=True, seed=m1d.OOD_SEEDS["shuffled"], **SMALL)
    plain = m1d.generate(seed=m1d.OOD_SEEDS["shuffled"], **SMALL)
    # shuffle_seq permutes the positions of every sequence with one permutation: same values per row
    assert np.allclose(np.sort(shuffled["x"], 1), np.sort(plain["x"], 1))
    assert not np.allclose(shuffled["x"], plain["x"])
    with pytest.raises(ValueError, match="unknown generator argument"):
        m1d.generate(bogus=1)


def test_non_finite_cached_arrays_are_value_errors_naming_the_split(tmp_path):
    """A cache holding NaN (e.g. edited by hand) is caught by DatasetSplits' validation through the loader."""
    direct = m1d.generate(**SMALL)
    bad = {**direct, "x": direct["x"].copy()}
    bad["x"][:, 5] = np.nan  # in every training row, wherever the split puts them
    path = tmp_path / "mnist1d" / "mnist1d_default.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, args_json=np.array(m1d._args_key({})), **bad)
    for tag in ("shuffled_n100", "noisy0.2_n100"):  # tiny OOD caches, so nothing is generated
        overrides = {"shuffle_seq": True, "seed": m1d.OOD_SEEDS["shuffled"]} if tag.startswith("shuffled") else {
            "iid_noise_scale": 0.2, "seed": m1d.OOD_SEEDS["noisy"]}
        key = m1d._args_key({**overrides, "num_samples": 100, "train_split": 0.0})
        np.savez(path.parent / f"mnist1d_{tag}.npz", args_json=np.array(key), **direct)
    with pytest.raises(ValueError, match="dataset 'mnist1d', split 'train': x contains NaN or inf"):
        data.load("mnist1d", root=tmp_path, n_ood=100)
