"""Test helpers writing tiny dataset files in torchvision's on-disk formats (IDX, CIFAR pickles, SVHN .mat).

Pickle is used here only to WRITE CIFAR fixtures, as the real files are pickles; the loader reads them with a
restricted unpickler.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: big-endian magic 0x0000 08 ndim (uint8), ndim uint32 sizes, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.tobytes())


def class_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images (N, *shape) whose brightness depends on the label, plus noise."""
    rng = np.random.default_rng(seed)
    base = (labels.reshape(-1, *([1] * len(shape))) * 20).astype(np.int64)
    return np.clip(base + rng.integers(0, 60, size=(len(labels), *shape)), 0, 255).astype(np.uint8)


def balanced_labels(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % classes).astype(np.uint8)


def write_mnist_family(root: Path, name: str, n_train: int = 100, n_test: int = 30, seed: int = 0) -> dict:
    """Writes ``<root>/<ClassName>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; returns the arrays."""
    raw = root / MNIST_CLASSES[name] / "raw"
    out = {}
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        y = balanced_labels(n, 10, s)
        x = class_images(y, (28, 28), s)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        out[prefix] = (x, y)
    return out


def cifar_batch(n: int, classes: int, seed: int, label_key: str = "labels") -> dict:
    y = balanced_labels(n, classes, seed).astype(np.int64)
    x = class_images(y % 10, (3072,), seed)
    return {"batch_label": "fixture", "data": x, label_key: [int(v) for v in y], "filenames": ["f"] * n}


def write_pickle(path: Path, obj, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20, protocol: int = 2) -> dict:
    d = root / "cifar-10-batches-py"
    batches = {f"data_batch_{i}": cifar_batch(per_batch, 10, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n_test, 10, 99)
    for k, b in batches.items():
        write_pickle(d / k, b, protocol)
    write_pickle(d / "batches.meta", {"label_names": [str(i) for i in range(10)]}, protocol)
    return batches


def write_cifar100(root: Path, n_train: int = 300, n_test: int = 30, train: bool = True) -> dict:
    d = root / "cifar-100-python"
    out = {"test": cifar_batch(n_test, 100, 7, "fine_labels")}
    if train:
        out["train"] = cifar_batch(n_train, 100, 8, "fine_labels")
    for k, b in out.items():
        write_pickle(d / k, b)
    return out


def write_svhn(root: Path, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``<root>/<split>_32x32.mat`` with X (32, 32, 3, N) uint8 and y (N, 1) in 1..10 (10 meaning digit 0)."""
    import scipy.io

    digits = balanced_labels(n, 10, seed).astype(np.int64)
    x = class_images(digits, (32, 32, 3), seed)  # (N, H, W, C)
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": np.transpose(x, (1, 2, 3, 0)), "y": y})
    return x, digits
