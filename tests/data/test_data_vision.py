"""Image datasets from tiny files in torchvision's own formats (IDX, pickled CIFAR batches, SVHN .mat), loaded with
download=False: pixel values against the files, OOD pairings, options, and clean errors for bad files."""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from vision_files import (
    cifar_batch,
    write_cifar10,
    write_cifar100,
    write_idx,
    write_mnist_family,
    write_pickle,
    write_svhn,
)

import ntkbayes.data as data
from ntkbayes.data import DataMissingError, vision

_REAL_DOWNLOAD = vision._download


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("no test may download")

    monkeypatch.setattr(vision, "_download", refuse)


def test_mnist_loads_idx_files_exactly(mnist_root):
    raw = data.load("mnist", root=mnist_root, seed=0, standardize="none", val_fraction=0.2)
    files = write_mnist_family(mnist_root / "unused", "mnist")  # same seed → the arrays the fixture wrote
    x_test, y_test = files["t10k"]
    assert raw.feature_shape == (1, 28, 28) and raw.num_classes == 10
    assert torch.equal(raw.test.y, torch.as_tensor(y_test, dtype=torch.int64))  # test keeps file order
    torch.testing.assert_close(raw.test.x[:, 0], torch.as_tensor(x_test / 255, dtype=torch.float32))
    assert len(raw.train) + len(raw.val) == 100 and len(raw.val) == 20
    assert set(raw.ood) == {"fashion_mnist", "kmnist"} and raw.ood["kmnist"].shape == (30, 1, 28, 28)
    fm_test = write_mnist_family(mnist_root / "unused2", "fashion_mnist", seed=10)["t10k"][0]
    torch.testing.assert_close(raw.ood["fashion_mnist"][:, 0], torch.as_tensor(fm_test / 255, dtype=torch.float32))


def test_channel_standardization_uses_train_statistics(mnist_root):
    raw = data.load("mnist", root=mnist_root, seed=1, standardize="none", val_fraction=0.2)
    std = data.load("mnist", root=mnist_root, seed=1, val_fraction=0.2)
    r = raw.train.x.double()
    mu, sd = r.mean(), r.std(unbiased=False)
    # float64 sums of the same n numbers in other orders: γ_n relative for the mean of pixels ≥ 0 and for the sum
    # of squares (the std's square root halves it; the mean's error enters it squared)
    rel = 2 * r.numel() * torch.finfo(torch.float64).eps
    assert std.info["preprocessing"]["mean"] == pytest.approx([float(mu)], rel=rel)
    assert std.info["preprocessing"]["std"] == pytest.approx([float(sd)], rel=rel)
    for a, b in [(std.train.x, raw.train.x), (std.test.x, raw.test.x), (std.ood["kmnist"], raw.ood["kmnist"])]:
        torch.testing.assert_close(a.double(), (b.double() - mu) / sd, atol=1e-5, rtol=1e-5)
    assert abs(float(std.train.x.double().mean())) < 1e-5


def test_same_seed_same_split_other_seed_other_split(mnist_root):
    a, b, c = (data.load("fashion_mnist", root=mnist_root, seed=s, val_fraction=0.2) for s in (0, 0, 5))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert set(a.ood) == {"mnist", "kmnist"}


def test_options_flatten_subset_test_subset_id_classes_ood(mnist_root):
    ds = data.load("kmnist", root=mnist_root, seed=0, flatten=True, subset=60, test_subset=20, val_fraction=0.2,
                   id_classes=list(range(6)), ood=["mnist"])
    assert ds.feature_shape == (784,) and ds.info["image_shape"] == [1, 28, 28]
    assert len(ds.test) + len(ds.ood["heldout"]) == 20 and ds.ood["mnist"].shape == (20, 784)
    assert set(ds.ood) == {"heldout", "mnist"} and ds.num_classes == 6
    full = data.load("kmnist", root=mnist_root, seed=0, subset=60, val_fraction=0.2, ood=[])
    assert len(full.train) + len(full.val) == 60
    y = torch.cat([full.train.y, full.val.y])
    assert torch.bincount(y).tolist() == [6] * 10  # stratified
    assert full.ood == {}


def test_bad_ood_and_subset_options(mnist_root):
    with pytest.raises(ValueError, match="unknown OOD dataset 'svhm'"):
        data.load("mnist", root=mnist_root, ood=["svhm"])
    with pytest.raises(ValueError, match="'cifar10' has images"):
        data.load("mnist", root=mnist_root, ood=["cifar10"])
    with pytest.raises(ValueError, match="'ood' must be a list"):
        data.load("mnist", root=mnist_root, ood="kmnist")
    with pytest.raises(ValueError, match="option 'subset'"):
        data.load("mnist", root=mnist_root, subset=5)


def test_missing_ood_files_raise_unless_ood_is_empty(tmp_path):
    write_mnist_family(tmp_path, "mnist")
    with pytest.raises(DataMissingError, match="FashionMNIST/raw/t10k-images-idx3-ubyte"):
        data.load("mnist", root=tmp_path, val_fraction=0.2)
    ds = data.load("mnist", root=tmp_path, val_fraction=0.2, ood=[])
    assert ds.ood == {}


def test_empty_split_through_the_loader_names_dataset_and_split(tmp_path):
    write_mnist_family(tmp_path, "mnist")
    raw = tmp_path / "MNIST" / "raw"
    y = np.arange(30, dtype=np.uint8) % 5  # the test file holds classes 0..4 only
    write_idx(raw / "t10k-labels-idx1-ubyte", y)
    with pytest.raises(ValueError, match="dataset 'mnist', split 'test': empty split"):
        data.load("mnist", root=tmp_path, ood=[], val_fraction=0.2, id_classes=[5, 6, 7, 8, 9])


def test_truncated_or_malformed_idx_files_name_the_file(tmp_path):
    write_mnist_family(tmp_path, "mnist")
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    good = images.read_bytes()
    images.write_bytes(good[:-100])
    with pytest.raises(ValueError, match=f"{images}: IDX size mismatch"):
        data.load("mnist", root=tmp_path, ood=[])
    images.write_bytes(good[:10])
    with pytest.raises(ValueError, match="truncated IDX header"):
        data.load("mnist", root=tmp_path, ood=[])
    images.write_bytes(b"\x00\x00\x08\x01" + good[4:])
    with pytest.raises(ValueError, match="magic 0x00000803"):
        data.load("mnist", root=tmp_path, ood=[])
    images.write_bytes(good)
    write_idx(labels, np.full(100, 11, np.uint8))
    with pytest.raises(ValueError, match=f"{labels}: label out of range"):
        data.load("mnist", root=tmp_path, ood=[])
    write_idx(labels, np.zeros(99, np.uint8))
    with pytest.raises(ValueError, match="100 images but .* 99 labels"):
        data.load("mnist", root=tmp_path, ood=[])


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_batches_with_ood_svhn_and_cifar100(tmp_path, protocol):
    batches = write_cifar10(tmp_path, protocol=protocol)
    c100 = write_cifar100(tmp_path, train=False)
    svhn_x, _ = write_svhn(tmp_path, "test", 25)
    ds = data.load("cifar10", root=tmp_path, seed=0, standardize="none")
    assert ds.feature_shape == (3, 32, 32) and ds.num_classes == 10
    test = batches["test_batch"]
    torch.testing.assert_close(ds.test.x, torch.as_tensor(test["data"].reshape(-1, 3, 32, 32) / 255).float())
    assert ds.test.y.tolist() == test["labels"]
    assert set(ds.ood) == {"svhn", "cifar100"}
    c100_x = torch.as_tensor(c100["test"]["data"].reshape(-1, 3, 32, 32) / 255).float()
    torch.testing.assert_close(ds.ood["cifar100"], c100_x)
    # SVHN: X (H, W, C, N) → (N, C, H, W)
    torch.testing.assert_close(ds.ood["svhn"], torch.as_tensor(np.transpose(svhn_x, (0, 3, 1, 2)) / 255).float())
    std = data.load("cifar10", root=tmp_path, seed=0)
    prep = std.info["preprocessing"]
    assert len(prep["mean"]) == 3
    per_channel = std.train.x.double().transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 1e-5 and (per_channel.std(1) - 1).abs().max() < 1e-3


def test_python2_style_batches_with_bytes_keys_load(tmp_path):
    write_cifar10(tmp_path)
    b = cifar_batch(20, 10, 1)
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", {k.encode(): v for k, v in b.items()}, 2)
    ds = data.load("cifar10", root=tmp_path, ood=[], standardize="none")
    assert len(ds.train) + len(ds.val) == 100


def test_numpy1_global_names_of_the_original_cifar_files_are_accepted(tmp_path):
    """The published batches name numpy.core.multiarray (numpy 1); numpy 2 writes numpy._core."""
    write_cifar10(tmp_path)
    batch = cifar_batch(20, 10, 4)
    blob = pickle.dumps(batch, protocol=2)
    assert b"numpy._core.multiarray" in blob
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    ds = data.load("cifar10", root=tmp_path, ood=[], standardize="none")
    assert ds.test.y.tolist() == batch["labels"]
    torch.testing.assert_close(ds.test.x, torch.as_tensor(batch["data"].reshape(-1, 3, 32, 32) / 255).float())


def test_cifar100_fine_labels(tmp_path):
    batches = write_cifar100(tmp_path)
    ds = data.load("cifar100", root=tmp_path, seed=0, ood=[], val_fraction=0.5)
    assert ds.num_classes == 100 and ds.test.y.tolist() == batches["test"]["fine_labels"]


def test_svhn_labels_ten_means_zero(tmp_path):
    x, digits = write_svhn(tmp_path, "test", 30, seed=3)
    write_svhn(tmp_path, "train", 100, seed=4)
    ds = data.load("svhn", root=tmp_path, ood=[], standardize="none")
    assert ds.test.y.tolist() == digits.tolist() and 0 in ds.test.y.tolist()
    torch.testing.assert_close(ds.test.x, torch.as_tensor(np.transpose(x, (0, 3, 1, 2)) / 255).float())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: {**b, "data": b["data"][:, :100]}, r"'data' must be uint8 of shape \(N, 3072\)"),
        (lambda b: {**b, "data": b["data"].astype(np.float64)}, "'data' must be uint8"),
        (lambda b: {**b, "labels": [10] * len(b["labels"])}, "label out of range"),
        (lambda b: {**b, "labels": b["labels"][:-1]}, "'labels' must be 20 integers"),
        (lambda b: {"data": b["data"]}, "needs keys 'data' and 'labels'"),
        (lambda b: [b], "expected a pickled dict"),
    ],
)
def test_bad_cifar_batches_are_value_errors_naming_the_file(cifar_root, mutate, message):
    path = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    write_pickle(path, mutate(cifar_batch(20, 10, 3)))
    with pytest.raises(ValueError, match=message) as info:
        data.load("cifar10", root=cifar_root)
    assert str(path) in str(info.value)


class _Evil:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_code(tmp_path):
    target = tmp_path / "pwned"
    evil = _Evil()
    evil.target = str(target)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_cifar10(tmp_path)
    write_pickle(path, {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": evil})
    with pytest.raises(ValueError, match="not allowed"):
        data.load("cifar10", root=tmp_path, ood=[])
    assert not target.exists()
    path.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(ValueError, match=f"{path}: not a readable CIFAR batch"):
        data.load("cifar10", root=tmp_path, ood=[])


def test_bad_svhn_file(tmp_path):
    import scipy.io

    write_svhn(tmp_path, "train", 100)
    write_svhn(tmp_path, "test", 20)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 5), np.uint8),
                                                        "y": np.zeros((5, 1), np.uint8)})
    with pytest.raises(ValueError, match="test_32x32.mat: SVHN labels must be integers 1..10"):
        data.load("svhn", root=tmp_path, ood=[])
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="test_32x32.mat: not a readable SVHN"):
        data.load("svhn", root=tmp_path, ood=[])


def test_download_goes_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    """download=True calls torchvision's class with download=True (here a fake that writes fixture files; the fake
    module also spares the test torchvision's import time)."""
    calls = []

    class FakeKMNIST:
        def __init__(self, root, train, download):
            calls.append((Path(root), train, download))
            write_mnist_family(Path(root), "kmnist")

    fake_datasets = types.ModuleType("torchvision.datasets")
    fake_datasets.KMNIST = FakeKMNIST
    fake = types.ModuleType("torchvision")
    fake.datasets = fake_datasets
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_datasets)
    monkeypatch.setattr(vision, "_download", _REAL_DOWNLOAD)  # undo the autouse refusal
    with pytest.raises(DataMissingError):
        data.load("kmnist", root=tmp_path, ood=[])
    assert calls == []
    ds = data.load("kmnist", root=tmp_path, ood=[], download=True, val_fraction=0.2)
    assert calls == [(tmp_path, True, True), (tmp_path, False, True)] and len(ds.test) == 30
    data.load("kmnist", root=tmp_path, ood=[], download=True, val_fraction=0.2)
    assert len(calls) == 2  # files present: nothing fetched again

    class Offline:
        def __init__(self, *a, **k):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    fake_datasets.MNIST = Offline
    with pytest.raises(DataMissingError, match="download through torchvision failed: Error downloading"):
        data.load("mnist", root=tmp_path / "empty", ood=[], download=True)
