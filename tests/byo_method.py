"""A method written in one file outside the package, for tests/test_byo_method.py: importing this module is all it
takes to register it (no edit anywhere in ntkbayes). Not collected by pytest (no ``test_`` prefix); the test loads
it in separate processes so the registry of the main test process stays as the package defines it.

``byo_centroid``: a bootstrap ensemble of nearest-class-mean classifiers, p(c | x) ∝ exp(−‖x − μ_c‖² / (2·τ·D)),
one member per bootstrap resample of the training set.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ntkbayes.methods.base import Method
from ntkbayes.predictive import Predictive
from ntkbayes.seeding import derive_seed


class BootstrapCentroid(Method):
    """Nearest class mean with a softmax over scaled squared distances; members = bootstrap resamples."""

    name = "byo_centroid"
    family = "byo"
    test_params: ClassVar[dict] = {"members": 3}
    dry_run_params: ClassVar[dict] = {"members": 2}
    search_space: ClassVar[dict] = {"tau": [0.1, 1.0]}
    param_bounds: ClassVar[dict] = {"members": (1, None), "tau": (1e-6, None)}

    def __init__(self, *, members: int = 4, tau: float = 0.5):
        self.members = members
        self.tau = tau

    def _fit(self, data, seed: int, device: torch.device) -> None:
        x, y = data.train.x.flatten(1).double(), data.train.y
        centroids = []
        for k in range(self.members):
            g = torch.Generator().manual_seed(derive_seed(seed, "bootstrap", k))
            idx = torch.randint(len(y), (len(y),), generator=g)
            xb, yb = x[idx], y[idx]
            centroids.append(torch.stack([
                xb[yb == c].mean(0) if (yb == c).any() else x[y == c].mean(0) for c in range(self.num_classes_)
            ]))
        self.centroids_ = torch.stack(centroids)  # (S, C, D)

    def _predict(self, x: torch.Tensor) -> Predictive:
        x = x.flatten(1).double()
        d2 = torch.cdist(x.unsqueeze(0).expand(self.members, -1, -1), self.centroids_) ** 2  # (S, N, C)
        return Predictive.from_logits(-d2 / (2 * self.tau * x.shape[1]))
