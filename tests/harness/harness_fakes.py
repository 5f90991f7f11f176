"""A tiny method and datasets for harness tests, registered only while a test needs them (and in subprocesses).

- method ``_test_logreg``: multinomial logistic regression fitted by full-batch gradient descent in float64 in a
  few steps; ``members`` > 1 gives a bootstrap ensemble (S > 1); ``fail="raise"`` raises in fit, ``fail="nan"``
  makes the weights NaN so the Predictive is invalid; ``sleep`` seconds of pretend work; ``alloc_mb`` MiB
  allocated and freed in fit.
- datasets ``_tiny`` (Gaussian blobs from ``tests/conftest.py``'s ``tiny_splits``; ``dim = 2`` makes it 2-D) and
  ``_missing`` (raises ``DataMissingError``).
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path

import torch

from ntkbayes import data as nbdata
from ntkbayes.methods import base
from ntkbayes.methods.base import Method
from ntkbayes.predictive import Predictive

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for toydata when run as a script
from toydata import tiny_splits  # noqa: E402

METHOD = "_test_logreg"
DATASETS = ("_tiny", "_missing")


class FakeLogReg(Method):
    """Logistic regression, a few gradient steps (test-only)."""

    name = METHOD
    family = "fake"
    dry_run_params = {"members": 2, "steps": 5}

    def __init__(self, steps: int = 30, lr: float = 0.5, members: int = 1, fail: str = "none", sleep: float = 0.0,
                 alloc_mb: int = 0):
        self.steps = steps
        self.lr = lr
        self.members = members
        self.fail = fail
        self.sleep = sleep
        self.alloc_mb = alloc_mb

    def _fit(self, data, seed, device):
        if self.fail == "raise":
            raise RuntimeError("boom in fit")
        time.sleep(self.sleep)
        if self.alloc_mb:  # a transient allocation the runner's peak-memory measurement must see
            scratch = torch.ones(self.alloc_mb * 2**20 // 8, dtype=torch.float64)
            del scratch
        g = torch.Generator().manual_seed(seed)
        x, y = data.train.x.double(), data.train.y
        ws = []
        for _ in range(self.members):
            idx = torch.randint(0, len(y), (len(y),), generator=g) if self.members > 1 else torch.arange(len(y))
            w = torch.zeros(x.shape[1] + 1, self.num_classes_, dtype=torch.float64)
            xb = torch.cat([x[idx], torch.ones(len(idx), 1, dtype=torch.float64)], 1)
            onehot = torch.nn.functional.one_hot(y[idx], self.num_classes_).double()
            for _ in range(self.steps):
                p = torch.softmax(xb @ w, -1)
                w = w - self.lr * xb.T @ (p - onehot) / len(idx)
            ws.append(w)
        self.w_ = torch.stack(ws)
        if self.fail == "nan":
            self.w_ = self.w_ * float("nan")
        self.info_ = {"steps": self.steps, "members": self.members}

    def _predict(self, x):
        xb = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        return Predictive.from_logits(torch.einsum("nd,sdc->snc", xb, self.w_))


base._REGISTRY.pop(METHOD, None)  # registered only while a test asks for it


def _load_tiny(root, seed, download, *, n: int = 90, classes: int = 3, dim: int = 4):
    return tiny_splits(n=n, classes=classes, dim=dim, seed=seed, name="_tiny")


def _load_missing(root, seed, download, *, n: int = 10):
    raise nbdata.DataMissingError("_missing", Path(root) / "_missing" / "data.bin")


def _tiny_stand_in(options: dict):
    """The stand-in of ``_tiny`` (what a dry run loads): its input shape and classes."""
    from ntkbayes.data.splits import StandIn

    return StandIn(feature_shape=(options["dim"],), num_classes=options["classes"])


def register_fakes() -> None:
    """Add the fake method and datasets to the registries (idempotent)."""
    base._REGISTRY[METHOD] = FakeLogReg
    stand_in = "stand_in" in inspect.signature(nbdata.register).parameters  # data loaders declare stand-ins
    for name, fn in (("_tiny", _load_tiny), ("_missing", _load_missing)):
        nbdata._REGISTRY.pop(name, None)
        extra = {"stand_in": _tiny_stand_in} if stand_in and name == "_tiny" else {}
        nbdata.register(name, family="synthetic", **extra)(fn)


def unregister_fakes() -> None:
    """Remove them again."""
    base._REGISTRY.pop(METHOD, None)
    for name in DATASETS:
        nbdata._REGISTRY.pop(name, None)


def run_cli(argv: list[str]) -> int:
    """``ntkbayes`` main with the fakes registered (for subprocess tests)."""
    from ntkbayes.cli import main

    register_fakes()
    return main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
