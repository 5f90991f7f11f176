"""Shared fixtures: tiny data and float64 helpers so every test runs in seconds on CPU."""

from __future__ import annotations

import pytest
import torch
from toydata import tiny_splits

from ntkbayes.data.splits import DatasetSplits


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
