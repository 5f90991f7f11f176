"""Shared fixtures: tiny data and float64 helpers so every test runs in seconds on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkbayes.data.splits import DatasetSplits, make_splits


def tiny_splits(n: int = 120, classes: int = 3, dim: int = 4, seed: int = 0, name: str = "tiny") -> DatasetSplits:
    """Gaussian blobs: ``classes`` well-separated clusters in ``dim`` dimensions plus a far OOD set ``far``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, dim))
    y = np.arange(n) % classes
    x = centers[y] + rng.normal(size=(n, dim))
    far = rng.uniform(15, 20, size=(20, dim))
    return make_splits(name, x, y, seed=seed, extra_ood={"far": far})


@pytest.fixture
def tiny_data() -> DatasetSplits:
    return tiny_splits()


# Two intra-op threads on a 2-core CI box make small float64 kernels 20-40x slower than one
# (thread hand-off dominates), so the tests pin torch to one thread.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
