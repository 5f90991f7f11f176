"""Fixtures: roots holding tiny image-dataset files in torchvision's formats (writers in vision_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vision_files import MNIST_CLASSES, write_cifar10, write_cifar100, write_mnist_family, write_svhn


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """MNIST, FashionMNIST and KMNIST fixtures under one root."""
    for i, name in enumerate(MNIST_CLASSES):
        write_mnist_family(tmp_path, name, seed=10 * i)
    return tmp_path


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """CIFAR-10 (train + test), CIFAR-100 test and SVHN test fixtures under one root."""
    write_cifar10(tmp_path)
    write_cifar100(tmp_path, train=False)
    write_svhn(tmp_path, "test", 25)
    return tmp_path
