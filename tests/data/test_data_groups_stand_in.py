"""Near/far OOD groups declared by the loaders, the one stratified_subset, and stand-in data that reads no file."""

from __future__ import annotations

import builtins
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from vision_files import MNIST_CLASSES, write_mnist_family

import ntkbayes.data as data
from ntkbayes.data import DatasetSplits, Split, splits, stratified_subset, vision
from ntkbayes.errors import UserError

# ---------------------------------------------------------------------------------------------- OOD groups


def _tiny(ood, groups=None):
    x, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    return DatasetSplits("t", 2, Split(x, y), Split(x, y), Split(x, y), ood=ood, ood_groups=groups or {})


def test_ood_groups_default_near_and_validation():
    ds = _tiny({"a": torch.ones(3, 2), "b": torch.ones(3, 2)}, {"b": data.OODGroup.FAR})
    assert ds.ood_groups == {"a": "near", "b": "far"} and set(ds.ood_groups) == set(ds.ood)
    assert all(type(v) is str for v in ds.ood_groups.values())  # plain strings: JSON-friendly
    assert _tiny({}).ood_groups == {}
    with pytest.raises(ValueError, match="'far'"):
        _tiny({"a": torch.ones(3, 2)}, {"a": "distant"})
    with pytest.raises(ValueError, match="not OOD sets"):
        _tiny({"a": torch.ones(3, 2)}, {"c": "far"})


@pytest.mark.parametrize(("name", "options", "groups"), [
    ("moons", {}, {"far": "far"}),
    ("spirals", {"id_classes": [0, 1]}, {"heldout": "near", "far": "far"}),
    ("digits", {"id_classes": [0, 1, 2, 3, 4]}, {"heldout": "near", "noise": "far"}),
    ("wine", {"id_classes": [0, 1]}, {"heldout": "near"}),
    ("breast_cancer", {}, {}),
])
def test_offline_loaders_declare_groups(name, options, groups):
    ds = data.load(name, seed=0, **options)
    assert ds.ood_groups == groups and set(ds.ood_groups) == set(ds.ood)


def test_vision_groups_follow_the_declared_pairs(tmp_path):
    for i, name in enumerate(MNIST_CLASSES):
        write_mnist_family(tmp_path, name, seed=10 * i)
    ds = data.load("mnist", root=tmp_path, seed=0, val_fraction=0.2, id_classes=list(range(8)))
    assert ds.ood_groups == {"heldout": "near", "fashion_mnist": "near", "kmnist": "near"}
    fm = data.load("fashion_mnist", root=tmp_path, seed=0, val_fraction=0.2)
    assert fm.ood_groups == {"mnist": "far", "kmnist": "far"}
    for spec in vision.SPECS.values():  # every declared near set is a possible OOD set of the dataset
        assert set(spec.near_ood) <= {o for o in vision.SPECS if vision.SPECS[o].image_shape == spec.image_shape}


# ---------------------------------------------------------------------------------------------- stratified_subset


def test_stratified_subset_proportional_sorted_deterministic():
    y = np.repeat(np.arange(3), [50, 30, 20])
    idx = stratified_subset(y, 10, seed=0)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [5, 3, 2]
    assert np.array_equal(idx, stratified_subset(y, 10, seed=0))
    assert not np.array_equal(idx, stratified_subset(y, 10, seed=1))
    assert np.array_equal(idx, stratified_subset(torch.as_tensor(y), 10, seed=0))  # tensors too
    assert vision.stratified_subset is stratified_subset is splits.stratified_subset  # one implementation


def test_stratified_subset_every_class_and_edges():
    y = np.repeat(np.arange(4), [97, 1, 1, 1])                       # proportional quotas would drop 3 classes
    idx = stratified_subset(y, 8, seed=0)
    assert len(idx) == 8 and set(y[idx].tolist()) == {0, 1, 2, 3}
    assert np.array_equal(stratified_subset(y, 100, seed=0), np.arange(100))
    assert np.array_equal(stratified_subset(y, 1000, seed=0), np.arange(100))
    assert len(stratified_subset(y, 2, seed=0)) == 2                 # fewer than the classes: proportional only
    with pytest.raises(ValueError, match="size"):
        stratified_subset(y, -1, seed=0)


# ---------------------------------------------------------------------------------------------- stand-ins


@pytest.fixture
def no_files(monkeypatch, tmp_path):
    """Fail on any file opened through Python (open, io.open, pathlib, np.load, scipy.io.loadmat)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"stand-in opened a file: {args[:1]}")

    import scipy.io

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    monkeypatch.setattr(np, "load", refuse)
    monkeypatch.setattr(scipy.io, "loadmat", refuse)
    monkeypatch.setattr(vision, "_download", refuse)
    return tmp_path / "nothing-here"


def _real_shape(name: str):
    """(feature shape, classes, OOD names) as the real loader gives them, where it needs no files."""
    if name in vision.SPECS:
        spec = vision.SPECS[name]
        return spec.image_shape, spec.num_classes, set(spec.default_ood)
    if name == "mnist1d":
        return (40,), 10, {"shuffled", "noisy"}
    ds = data.load(name, seed=0)
    return ds.feature_shape, ds.num_classes, set(ds.ood)


@pytest.mark.parametrize("name", data.available())
def test_stand_in_has_real_shape_and_touches_no_file(name, no_files):
    ds = data.load(name, root=no_files, seed=1, stand_in=True)
    assert ds.info["stand_in"] is True and not no_files.exists()
    assert ds.ood_groups.keys() == ds.ood.keys()
    assert len(ds.train) + len(ds.val) + len(ds.test) <= max(8 * ds.num_classes, 64)
    assert all(len(v) <= 16 for v in ds.ood.values())
    assert torch.equal(torch.unique(torch.cat([ds.train.y, ds.val.y, ds.test.y])), torch.arange(ds.num_classes))
    assert data.load(name, root=no_files, seed=1, stand_in=True).train.x.equal(ds.train.x)  # deterministic


@pytest.mark.parametrize("name", data.available())
def test_stand_in_matches_the_real_loader(name):
    shape, classes, ood = _real_shape(name)
    ds = data.load(name, stand_in=True)
    flat = data.describe(name).get("flatten", False)
    want = (int(np.prod(shape)),) if flat else tuple(shape)
    assert ds.feature_shape == want and ds.num_classes == classes and set(ds.ood) == ood


def test_stand_in_options_and_unknown_options(no_files):
    ds = data.load("cifar10", root=no_files, stand_in=True, flatten=True, id_classes=[0, 1, 2], ood=["svhn"])
    assert ds.feature_shape == (3 * 32 * 32,) and ds.num_classes == 3
    assert ds.ood_groups == {"heldout": "near", "svhn": "far"}
    with pytest.raises(UserError, match="bogus"):
        data.load("cifar10", root=no_files, stand_in=True, bogus=1)
    assert not Path(no_files).exists()


def test_the_no_files_guard_catches_real_loaders(no_files):
    """The guard is real: the loaders that read bundled or cached files trip it."""
    with pytest.raises(AssertionError, match="opened a file"):
        data.load("digits", root=no_files)
    with pytest.raises(AssertionError, match="opened a file"):
        data.load("mnist", root=no_files, download=True)
