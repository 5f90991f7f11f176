"""Small synthetic data for tests (importable as ``toydata``: pyproject puts tests/ on the pytest path)."""

from __future__ import annotations

import numpy as np

from ntkbayes.data.splits import DatasetSplits, make_splits


def tiny_splits(n: int = 120, classes: int = 3, dim: int = 4, seed: int = 0, name: str = "tiny") -> DatasetSplits:
    """Gaussian blobs: ``classes`` well-separated clusters in ``dim`` dimensions plus a far OOD set ``far``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, dim))
    y = np.arange(n) % classes
    x = centers[y] + rng.normal(size=(n, dim))
    far = rng.uniform(15, 20, size=(20, dim))
    return make_splits(name, x, y, seed=seed, extra_ood={"far": far}, ood_groups={"far": "far"})
