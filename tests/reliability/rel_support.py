"""Support for the reliability tests: a test-only method and dataset, and fast CLI processes.

- method ``_rel_fake``: softmax regression by a few full-batch gradient steps in float64 (deterministic);
  ``sleep`` seconds of pretend work inside fit (so a SIGKILL lands inside a cell), ``fail="raise"`` raises in fit,
  ``fail="nan_loss"`` makes the training loss NaN and raises :class:`ntkbayes.training.NonFiniteLossError` as a real
  method does, ``fail="nan_output"`` returns NaN probabilities (the ``Predictive`` must refuse them).
- dataset ``_rel_blobs``: Gaussian blobs through the real ``make_splits`` (``n`` points, ``classes``, ``dim``), with an
  OOD set ``far``.
- :class:`CliProcesses`: ``ntkbayes.cli.main`` run in separate processes forked from a ``multiprocessing``
  forkserver that has imported torch and ntkbayes once (a fresh interpreter spends 7–10 s importing them on this
  busy 2-core machine; a fork takes milliseconds), so a test can start, SIGKILL and resume a runner dozens of times.
  Each process is a real OS process with its own pid, file descriptors and locks: exactly what a crash or a second
  runner does to the store. ``python rel_support.py ARGS`` runs the same CLI as a fresh interpreter.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ntkbayes import data as nbdata
from ntkbayes.data.splits import make_splits
from ntkbayes.methods import base
from ntkbayes.methods.base import Method
from ntkbayes.predictive import Predictive

METHOD = "_rel_fake"
DATASET = "_rel_blobs"

#: Record fields that legitimately differ between two runs of one cell (timings, machine load, provenance that
#: changes when someone edits the checkout while a test runs).
VOLATILE_KEYS = ("timestamp", "fit_seconds", "fit_cpu_seconds", "predict_seconds", "peak_memory_bytes",
                 "peak_rss_bytes", "peak_memory_kind", "git_dirty", "git_commit", "traceback")


class RelFake(Method):
    """Softmax regression by gradient descent (test-only; failure modes for the reliability tests)."""

    name = METHOD

    def __init__(self, steps: int = 10, lr: float = 0.5, members: int = 1, sleep: float = 0.0, fail: str = "none"):
        self.steps = steps
        self.lr = lr
        self.members = members
        self.sleep = sleep
        self.fail = fail

    def _fit(self, data, seed, device):
        from ntkbayes.training import NonFiniteLossError

        if self.fail == "raise":
            raise RuntimeError("fake method exploded in fit")
        if self.sleep:
            time.sleep(self.sleep)
        g = torch.Generator().manual_seed(seed)
        x = torch.cat([data.train.x.double(), torch.ones(len(data.train), 1, dtype=torch.float64)], 1)
        onehot = torch.nn.functional.one_hot(data.train.y, self.num_classes_).double()
        w = 0.1 * torch.randn(self.members, x.shape[1], self.num_classes_, generator=g, dtype=torch.float64)
        lr = float("nan") if self.fail == "nan_loss" else self.lr
        for step in range(self.steps):
            logits = torch.einsum("nd,sdc->snc", x, w)
            loss = -(torch.log_softmax(logits, -1) * onehot).sum(-1).mean(-1)
            if not torch.isfinite(loss).all():
                raise NonFiniteLossError(f"training diverged: non-finite loss at step {step}; lower lr")
            p = torch.softmax(logits, -1)
            w = w - lr * torch.einsum("nd,snc->sdc", x, p - onehot) / len(x)
        self.w_ = w
        self.info_ = {"steps": self.steps, "final_loss": loss.tolist()}

    def _predict(self, x):
        xb = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        logits = torch.einsum("nd,sdc->snc", xb, self.w_)
        if self.fail == "nan_output":
            return Predictive(torch.full_like(logits, float("nan")))
        return Predictive.from_logits(logits)


base._REGISTRY.pop(METHOD, None)  # registered only while a test asks for it (test_registry lists the real ones)


def _load_blobs(root, seed, download, *, n: int = 60, classes: int = 3, dim: int = 2):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, dim))
    y = np.arange(n) % classes
    x = centers[y] + rng.normal(size=(n, dim))
    return make_splits(DATASET, x, y, seed=seed, extra_ood={"far": rng.uniform(15, 20, size=(10, dim))},
                       ood_groups={"far": "far"})


def register() -> None:
    """Add ``_rel_fake`` and ``_rel_blobs`` to the registries (idempotent)."""
    base._REGISTRY[METHOD] = RelFake
    nbdata._REGISTRY.pop(DATASET, None)
    nbdata.register(DATASET, family="synthetic")(_load_blobs)


def unregister() -> None:
    """Remove them again."""
    base._REGISTRY.pop(METHOD, None)
    nbdata._REGISTRY.pop(DATASET, None)


def strip(record: dict) -> dict:
    """A record without its volatile fields (:data:`VOLATILE_KEYS`)."""
    return {k: v for k, v in record.items() if k not in VOLATILE_KEYS}


# -- CLI in forked processes -----------------------------------------------------------------------------------
def cli_child(argv: list[str], cwd: str, stdout: str, stderr: str) -> None:
    """Body of a forked CLI process: redirect fds 1 and 2 to files, run ``ntkbayes.cli.main``, exit with its status.

    An exception escaping ``main`` prints a traceback to ``stderr`` and exits 1, as the console script would.
    """
    for fd, path in ((1, stdout), (2, stderr)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.chdir(cwd)
    torch.set_num_threads(1)
    register()
    from ntkbayes.cli import main

    try:
        code = main(argv)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class CliProcesses:
    """Start ``ntkbayes`` CLI processes quickly (forkserver with torch and ntkbayes preloaded).

    ``start(argv, tag)`` returns a started ``multiprocessing.Process``; its output goes to ``<logs>/<tag>.out`` and
    ``.err``. ``kill()`` on it is SIGKILL.
    """

    def __init__(self, logs: Path, cwd: Path) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["torch", "ntkbayes.cli", "ntkbayes.harness.runner", "ntkbayes.methods",
                                         "ntkbayes.metrics", "ntkbayes.data", "sklearn.model_selection",
                                         "rel_support"])
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cwd = Path(cwd)

    def start(self, argv: list[str], tag: str):
        p = self.ctx.Process(target=cli_child, args=(list(argv), str(self.cwd), str(self.logs / f"{tag}.out"),
                                                     str(self.logs / f"{tag}.err")), daemon=True)
        p.start()
        return p

    def run(self, argv: list[str], tag: str, timeout: float = 120.0) -> tuple[int, str, str]:
        """Run to the end: (exit status, stdout, stderr)."""
        p = self.start(argv, tag)
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
            p.join()
            raise TimeoutError(f"ntkbayes {' '.join(argv)} did not finish in {timeout} s")
        return p.exitcode, self.output(tag, "out"), self.output(tag, "err")

    def output(self, tag: str, which: str) -> str:
        return (self.logs / f"{tag}.{which}").read_text(errors="replace")


if __name__ == "__main__":  # a fresh interpreter: python rel_support.py run SUITE --out DIR
    from ntkbayes.cli import main as _main

    torch.set_num_threads(1)
    register()
    sys.exit(_main(sys.argv[1:]))
