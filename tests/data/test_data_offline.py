"""Offline datasets (moons, spirals, digits, breast_cancer, wine): shapes, determinism, splits, standardization
fitted on train only (checked against the same split loaded unstandardized), OOD sets and id_classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ntkbayes.data as data
from ntkbayes.data.synthetic import FAR_CENTER, FAR_HALF_WIDTH

OFFLINE = ["moons", "spirals", "digits", "breast_cancer", "wine"]
SHAPES = {"moons": (2, 2), "spirals": (2, 3), "digits": (64, 10), "breast_cancer": (30, 2), "wine": (13, 3)}


def _all_x(ds):
    return [ds.train.x, ds.val.x, ds.test.x, *ds.ood.values()]


@pytest.mark.parametrize("name", OFFLINE)
def test_shapes_dtypes_and_determinism(name):
    a, b, c = data.load(name, seed=0), data.load(name, seed=0), data.load(name, seed=1)
    dim, classes = SHAPES[name]
    assert a.num_classes == classes and a.feature_shape == (dim,)
    assert a.train.x.dtype == torch.float32 and a.train.y.dtype == torch.int64
    assert set(a.train.y.tolist()) == set(range(classes))
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
    assert not torch.equal(a.train.x, c.train.x)
    assert a.ood.keys() == b.ood.keys() and all(torch.equal(a.ood[k], b.ood[k]) for k in a.ood)
    n = len(a.train) + len(a.val) + len(a.test)
    assert len(a.test) == pytest.approx(0.25 * n, abs=1)
    assert len(a.val) == pytest.approx(0.2 * (len(a.train) + len(a.val)), abs=1)
    assert a.info["seed"] == 0 and a.info["options"]["id_classes"] is None


@pytest.mark.parametrize("name", OFFLINE)
def test_standardization_fitted_on_train_only(name):
    """Standardized splits equal (raw − train mean) / train std, with the raw split loaded with the same seed."""
    std, raw = data.load(name, seed=3), data.load(name, seed=3, standardize="none")
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(std, s).y, getattr(raw, s).y)
    r = raw.train.x.double()
    if std.info["preprocessing"]["standardize"] == "feature":
        mu, sd = r.mean(0), r.std(0, unbiased=False)
        sd = torch.where(sd <= 1e-12 * mu.abs(), torch.ones_like(sd), sd)  # the loader's rule for constant features
    else:
        mu, sd = r.mean(), r.std(unbiased=False)
        # two float64 sums of the same n numbers in other orders: γ_n·Σ|x| / n apart (the mean may be near 0)
        n = r.numel()
        bound = 2 * n * torch.finfo(torch.float64).eps * float(r.abs().mean())
        assert std.info["preprocessing"]["mean"] == pytest.approx([float(mu)], rel=0, abs=bound)
    for got, x in zip(_all_x(std), _all_x(raw)):
        torch.testing.assert_close(got.double(), (x.double() - mu) / sd, atol=2e-5, rtol=1e-5)
    assert std.train.x.double().mean().abs() < 1e-5
    assert std.test.x.double().mean().abs() > 1e-4  # the test split is not re-centred on its own statistics


@pytest.mark.parametrize("name", ["digits", "wine"])
def test_splits_are_disjoint_and_cover_the_data(name):
    """Validation comes out of training data, never test: raw rows partition the bundled dataset."""
    import sklearn.datasets

    raw = data.load(name, seed=2, standardize="none", **({"flatten": True} if name == "digits" else {}))
    full = getattr(sklearn.datasets, f"load_{name}")().data
    rows = torch.cat([raw.train.x, raw.val.x, raw.test.x]).double().numpy()
    got = np.unique(rows.round(3), axis=0)
    assert len(rows) == len(full)
    assert np.array_equal(got, np.unique(full.astype(np.float32).astype(np.float64).round(3), axis=0))


def test_different_seeds_give_different_splits_of_the_same_rows():
    a, b = data.load("wine", seed=0, standardize="none"), data.load("wine", seed=1, standardize="none")
    assert not torch.equal(a.test.x, b.test.x)
    rows_a = np.unique(torch.cat([a.train.x, a.val.x, a.test.x]).numpy(), axis=0)
    rows_b = np.unique(torch.cat([b.train.x, b.val.x, b.test.x]).numpy(), axis=0)
    assert np.array_equal(rows_a, rows_b)


@pytest.mark.parametrize("name", ["moons", "spirals"])
def test_far_ood_set_is_the_raw_box_standardized(name):
    raw = data.load(name, seed=0, standardize="none", n_far=50)
    far = raw.ood["far"].double()
    assert far.shape == (50, 2)
    lo, hi = np.array(FAR_CENTER) - FAR_HALF_WIDTH, np.array(FAR_CENTER) + FAR_HALF_WIDTH
    assert (far.numpy() >= lo).all() and (far.numpy() <= hi).all()
    assert raw.train.x.abs().max() < 3  # the data themselves are far from the box
    std = data.load(name, seed=0, n_far=50)
    dist = torch.cdist(std.ood["far"], std.train.x).min(1).values
    assert dist.min() > 3  # several standardized units away from every training point


def test_moons_noise_option_changes_the_sample():
    a, b = data.load("moons", noise=0.1), data.load("moons", noise=0.2)
    assert len(a.train) == len(b.train) and not torch.equal(a.train.x, b.train.x)
    assert len(data.load("moons", n=100).train) < len(a.train)


def test_spirals_classes_are_balanced_three_arms():
    ds = data.load("spirals", n=300, seed=0)
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    assert torch.bincount(y).tolist() == [100, 100, 100]


def test_digits_id_classes_make_heldout_and_noise_sets():
    ds = data.load("digits", seed=0, id_classes=[0, 1, 2, 3, 4])
    assert ds.num_classes == 5 and ds.classes == (0, 1, 2, 3, 4)
    assert set(ds.ood) == {"heldout", "noise"}
    n_test_all = len(data.load("digits", seed=0).test)
    assert len(ds.test) + len(ds.ood["heldout"]) == n_test_all  # held-out classes come from the test part
    assert int(ds.train.y.max()) == 4
    prep = ds.info["preprocessing"]
    noise = ds.ood["noise"].double() * prep["std"][0] + prep["mean"][0]  # back to raw pixel values
    assert torch.allclose(noise, noise.round(), atol=1e-4) and noise.min() > -1e-4 and noise.max() < 16 + 1e-4
    assert noise.shape == (500, 64)


def test_digits_images_unflattened_and_remapped_labels():
    ds = data.load("digits", seed=0, flatten=False, id_classes=[7, 3])
    assert ds.feature_shape == (1, 8, 8) and ds.ood["heldout"].shape[1:] == (1, 8, 8)
    assert ds.classes == (7, 3) and set(ds.train.y.tolist()) == {0, 1}
    assert ds.info["image_shape"] == [1, 8, 8] and ds.info["modality"] == "image"


def test_unknown_id_class_is_rejected():
    with pytest.raises(ValueError, match="id_classes"):
        data.load("wine", id_classes=[0, 7])
