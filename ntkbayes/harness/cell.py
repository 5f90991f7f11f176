"""One cell of a suite: load data → create the method → fit → predict → score → a record (design.md "Execution").

One cell = load data → create the method → fit → predict on test and every OOD set (and a 64×64 grid for 2-D
data) → ``ntkbayes.metrics.evaluate`` → a record with full provenance. :func:`run_cell` does that for one cell and
is pure and top-level (no closures, no store access), so any executor (:mod:`ntkbayes.harness.executors`) can ship
it to another process or machine. Whatever goes wrong inside a cell — an exception in loading, fitting, predicting
or scoring, a NaN that makes the ``Predictive`` invalid, a memory-estimate refusal — becomes a record with status
``failed`` and the error text, and the suite goes on.

Every record carries the method's comparison ``family`` (the method class's ``family`` attribute, else its name).

Measurements:

- ``fit_seconds``: wall time of ``method.fit`` (``fit_cpu_seconds``: the process's CPU time over it, all threads,
  which tells a busy machine from a slow method); ``predict_seconds``: wall time of predicting test and every OOD set
  (not the grid). CUDA is synchronized before each clock read.
- ``peak_memory_bytes`` over fit + predict, how it was measured in ``peak_memory_kind``: on CUDA
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` ("cuda_max_allocated": tensors only); on
  Linux CPU the process's peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the
  resident size before fit ("rss_peak_delta": everything the cell added, caches included); elsewhere the growth
  of ``ru_maxrss`` ("ru_maxrss_delta": a lower bound, 0 unless the cell beats the process's earlier peak).
  The RSS delta misses memory the allocator reuses from earlier cells, so small cells read near 0;
  ``peak_rss_bytes`` adds the process's absolute peak RSS over fit + predict (Linux; libraries included).

Threads: a suite's ``threads`` (or ``--threads``) sets ``torch.set_num_threads`` before each cell. Small networks
on a busy CPU train far faster with one thread: measured on this 2-core machine under load, the smoke suite's MAP
fit on digits took 131 s wall / 33 s CPU with 2 threads and 6 s / 1.5 s with 1 (OpenMP threads spin while waiting).

TF32: a suite's ``tf32 = true`` lets CUDA matmuls and convolutions in float32 use TensorFloat-32
(``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``,
``torch.set_float32_matmul_precision("high")``), about 10 bits of mantissa in the products: several times faster
on Ampere and later GPUs and harmless for training networks, while float64 work (kernel solves, GP and Laplace
linear algebra, metrics) is unaffected. It is set (on or off) before every cell and recorded (``tf32``,
``float32_matmul_precision``); on a CPU it changes nothing.

Shift: a dataset's ``shift`` kinds make each of its cells also predict on the test inputs corrupted at severities
1-5 (``ntkbayes.data.shifted``, seeded by the cell seed) and add ``shift/<kind>/<severity>/{acc,nll,ece}`` to the
metrics (Ovadia et al. 2019); only the metrics are kept, not the shifted predictions.

Stand-in data: a cell with ``stand_in`` set (the dry run) loads ``ntkbayes.data.load(..., stand_in=True)``: random
data of the dataset's real shapes, classes and OOD set names, reading no file.

Validation metrics: every cell also scores the fitted method on ``data.val`` (``val/nll``, ``val/acc``) and on at
most ``TRAIN_ACC_POINTS`` training points (``train/acc``, a stratified subset drawn from the cell seed): the tuner's
objective and the leaderboard's underfit flag. A tuning trial (``Cell.validation_only``, :mod:`ntkbayes.harness.tune`)
stops there: its method is fitted on a view of the data whose test split is the validation split and which has no
OOD sets (:func:`validation_view`), nothing else is predicted, and no predictions file is written, so a selection
cannot depend on test or OOD data.

Determinism: everything (python, numpy, torch) is seeded from the cell seed right before the method is created,
and data splits are a function of the same seed, so a cell gives the same record on any executor (timings aside).
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import resource
import socket
import subprocess
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ntkbayes.harness.config import Cell, canonical_json
from ntkbayes.harness.store import SCHEMA_VERSION, STATUS_FAILED, STATUS_OK, json_safe, prediction_arrays

#: Datasets kept in memory within one process, keyed by (name, options, seed, root). Cells are ordered dataset ×
#: seed × method, so 2 entries let every method of a (dataset, seed) reuse one load while bounding memory for
#: image datasets.
DATA_CACHE_SIZE = 2

#: Side of the uncertainty-map grid saved for 2-D datasets (G = GRID_SIZE², as the report draws it).
GRID_SIZE = 64

#: Margin of the grid around the standardized training data, in standardized units.
GRID_MARGIN = 3.0

#: Traceback lines kept in a failed record (the end of the trace, where the error is raised; plus the header).
TRACEBACK_LINES = 15

#: Distributions whose versions go into every record.
VERSIONED_PACKAGES = ("ntkbayes", "torch", "numpy", "scipy", "scikit-learn", "pandas", "gpytorch",
                      "laplace-torch", "torch-uncertainty", "mnist1d")

#: Metrics kept per shift kind and severity: the record key's last part → the ``metrics.evaluate`` key.
SHIFT_METRICS = {"acc": "cls/acc", "nll": "cal/nll", "ece": "cal/ece"}

#: Training points (at most) on which ``train/acc`` is measured: a stratified subset, so the cost stays small on
#: image datasets.
TRAIN_ACC_POINTS = 2048

_DATA_CACHE: OrderedDict[tuple, Any] = OrderedDict()


# -- provenance ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, Any]:
    """Package versions, git commit (of the ntkbayes checkout, when it is one), hostname; computed once."""
    versions = {"python": platform.python_version()}
    for dist in VERSIONED_PACKAGES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    versions["torch"] = torch.__version__  # with the build tag, e.g. "+cu130"
    versions["cuda"] = torch.version.cuda
    commit, dirty = _git_state()
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty, "hostname": socket.gethostname()}


def _git_state() -> tuple[str | None, bool | None]:
    repo = Path(__file__).resolve().parents[2]  # the checkout holding ntkbayes/, if it is one

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != repo:
            return None, None  # an installed copy: a surrounding repository is not ours
        commit = git("rev-parse", "HEAD").stdout.strip() or None
        # dirty = the code differs from the commit; results/ (which the run itself appends to) does not count
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results").stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- memory ----------------------------------------------------------------------------------------------------
def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS through /proc/self/clear_refs (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_kb("VmHWM") is not None


class _PeakMemory:
    """Peak memory of a code region on ``dev`` (see the module docstring for the three kinds)."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        self.hwm_reset = _reset_hwm()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            self.kind = "cuda_max_allocated"
            return
        self.start = _proc_status_kb("VmRSS")
        if self.hwm_reset and self.start is not None:
            self.kind = "rss_peak_delta"
        else:
            self.kind = "ru_maxrss_delta"
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def host_peak_bytes(self) -> int | None:
        """Peak resident set size of the whole process over the region (libraries included), when measurable."""
        hwm = _proc_status_kb("VmHWM") if self.hwm_reset else None
        return None if hwm is None else hwm * 1024

    def peak_bytes(self) -> int:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.dev)
            return int(torch.cuda.max_memory_allocated(self.dev))
        if self.kind == "rss_peak_delta":
            return max(0, (_proc_status_kb("VmHWM") or 0) - self.start) * 1024
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is kB on Linux, bytes on macOS
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.start) * scale


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# -- one cell --------------------------------------------------------------------------------------------------
def load_data(cell: Cell):
    """``ntkbayes.data.load`` for the cell, through the per-process cache of ``DATA_CACHE_SIZE`` entries."""
    from ntkbayes import data

    key = (cell.dataset, canonical_json(cell.dataset_options), cell.seed, cell.data_root, cell.download,
           cell.stand_in)
    if key in _DATA_CACHE:
        _DATA_CACHE.move_to_end(key)
        return _DATA_CACHE[key]
    splits = data.load(cell.dataset, root=cell.data_root, seed=cell.seed, download=cell.download,
                       stand_in=cell.stand_in, **dict(cell.dataset_options))
    _DATA_CACHE[key] = splits
    while len(_DATA_CACHE) > DATA_CACHE_SIZE:
        _DATA_CACHE.popitem(last=False)
    return splits


def clear_data_cache() -> None:
    """Drop the datasets cached by :func:`load_data`."""
    _DATA_CACHE.clear()


def grid_points(train_x: torch.Tensor, size: int = GRID_SIZE, margin: float = GRID_MARGIN) -> torch.Tensor:
    """(G, 2) float32 grid, G = size², over the bounding box of ``train_x`` (N, 2) ± ``margin``; row-major with
    the first coordinate varying fastest: ``grid[k] = (xs[k % size], ys[k // size])``."""
    x = train_x.detach().to("cpu", torch.float64)
    lo, hi = x.min(0).values - margin, x.max(0).values + margin
    xs = torch.linspace(float(lo[0]), float(hi[0]), size, dtype=torch.float64)
    ys = torch.linspace(float(lo[1]), float(hi[1]), size, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).to(torch.float32)


def method_family(name: str) -> str:
    """The comparison family of method ``name``: its class's ``family`` attribute, else the name itself (also for
    a method that is not registered)."""
    from ntkbayes import methods

    if name not in methods.available():
        return name
    return str(getattr(methods.get(name), "family", name))


def base_record(cell: Cell) -> dict[str, Any]:
    """The record fields known before the cell runs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": cell.run_id,
        "suite": cell.suite,
        "dataset": cell.dataset,
        "dataset_label": cell.dataset_label,
        "dataset_options": dict(cell.resolved_options),
        "method": cell.method,
        "method_label": cell.method_label,
        "family": method_family(cell.method),
        "params": dict(cell.resolved_params),
        "seed": cell.seed,
        "explicit_params": dict(cell.params),
        "selection": None if cell.selection is None else dict(cell.selection),
        **({"validation_only": True} if cell.validation_only else {}),
    }


def data_info(data) -> dict[str, Any]:
    """The record's ``data_info``: the loader's info, classes, input shape and the size of every split."""
    return json_safe({
        **dict(data.info),
        "num_classes": data.num_classes,
        "feature_shape": list(data.feature_shape),
        "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test),
                  **{f"ood/{k}": int(v.shape[0]) for k, v in data.ood.items()}},
    })


def run_cell(cell: Cell, device: str = "auto") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run one cell; never raises for a problem inside the cell.

    Returns:
        (record, arrays): the record (status "ok" or "failed") and the predictions-file arrays
        (``test_probs`` (S, N, C), ``test_labels`` (N,), ``ood_<set>_probs`` (S, M, C), and ``grid_x`` (G, 2),
        ``grid_probs`` (S, G, C) for 2-D data); ``arrays`` is empty for a failed cell.
    """
    from ntkbayes import methods, metrics
    from ntkbayes.utils import resolve_device, seed_everything

    record = base_record(cell)
    prov = provenance()
    record.update(versions=prov["versions"], git_commit=prov["git_commit"], git_dirty=prov["git_dirty"],
                  hostname=prov["hostname"], device_requested=str(device), tf32=cell.tf32)
    record["conventions"] = json_safe(getattr(metrics, "CONVENTIONS", {}))
    stage = "device"
    arrays: dict[str, np.ndarray] = {}
    try:
        if cell.threads is not None:
            torch.set_num_threads(int(cell.threads))
        record["torch_threads"] = torch.get_num_threads()
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        record.update(device=str(dev), device_name=_device_name(dev), **set_tf32(cell.tf32))
        stage = "load"
        data = load_data(cell)
        record["data_info"] = data_info(data)
        if cell.validation_only:
            data = validation_view(data)
        stage = "create"
        seed_everything(cell.seed)
        method = methods.create(cell.method, **dict(cell.params))
        stage = "fit"
        mem = _PeakMemory(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        method.fit(data, seed=cell.seed, device=dev)
        _sync(dev)
        fit_seconds, fit_cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        stage = "predict"  # validation predictions first (a bad Predictive fails here)
        val_scores = validation_metrics(method, data, cell.seed)
        if cell.validation_only:
            record.update(_ok_fields(method, val_scores, fit_seconds, fit_cpu_seconds, None, mem, None))
            record["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            return json_safe(record), {}
        stage = "predict"
        t0 = time.perf_counter()
        test_pred = method.predict(data.test.x)
        ood_preds = {name: method.predict(x) for name, x in data.ood.items()}
        _sync(dev)
        predict_seconds = time.perf_counter() - t0
        peak, host_peak = mem.peak_bytes(), mem.host_peak_bytes()
        arrays = prediction_arrays(test_pred, data.test.y, ood_preds)
        if data.feature_shape == (2,):
            stage = "grid"
            grid = grid_points(data.train.x)
            arrays["grid_x"] = grid.numpy()
            arrays["grid_probs"] = method.predict(grid).member_probs.numpy().astype(np.float32)
        stage = "evaluate"
        # near/far OOD sets (docs/benchmarks.md)
        scores = metrics.evaluate(test_pred, data.test.y, ood=ood_preds, ood_groups=data.ood_groups)
        shift_seconds = None
        if cell.shift:
            stage = "shift"
            t0 = time.perf_counter()
            scores.update(shift_metrics(method, data, cell.shift, cell.seed))
            shift_seconds = time.perf_counter() - t0
        record.update(_ok_fields(method, {**scores, **val_scores}, fit_seconds, fit_cpu_seconds, predict_seconds,
                                 mem, f"predictions/{cell.run_id}.npz", peak=(peak, host_peak)))
        record["shift_seconds"] = shift_seconds
    except Exception as e:  # noqa: BLE001 - any failure of a cell is recorded, the suite goes on
        tb = traceback.format_exc().rstrip().splitlines()
        if len(tb) > TRACEBACK_LINES:  # the header, then the end of the trace where the error is raised
            tb = [tb[0], "  ...", *tb[-TRACEBACK_LINES:]]
        _mark_failed(record, f"{type(e).__name__}: {e}", stage, "\n".join(tb))
        arrays = {}
    record["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return json_safe(record), arrays


def _ok_fields(method, scores, fit_seconds, fit_cpu_seconds, predict_seconds, mem, predictions,
               peak=None) -> dict[str, Any]:
    """The fields of an ``ok`` record (``peak``: (peak, host peak) measured earlier, else now)."""
    peak_bytes, host_peak = peak if peak is not None else (mem.peak_bytes(), mem.host_peak_bytes())
    return dict(status=STATUS_OK, error=None, failed_stage=None, metrics={k: float(v) for k, v in scores.items()},
                fit_info=json_safe(method.fit_info()), fit_seconds=fit_seconds, fit_cpu_seconds=fit_cpu_seconds,
                predict_seconds=predict_seconds, shift_seconds=None, peak_memory_bytes=int(peak_bytes),
                peak_memory_kind=mem.kind, peak_rss_bytes=host_peak, predictions=predictions)


def validation_view(data):
    """``data`` as a tuning trial sees it: the test split replaced by the validation split, no OOD sets."""
    import dataclasses

    return dataclasses.replace(data, test=data.val, ood={}, ood_groups={})


def validation_metrics(method, data, seed: int) -> dict[str, float]:
    """``val/nll``, ``val/acc`` on ``data.val`` and ``train/acc`` on at most ``TRAIN_ACC_POINTS`` training points
    (stratified, drawn from ``seed``) of a fitted ``method``."""
    from ntkbayes.data.splits import stratified_subset
    from ntkbayes.metrics.calibration import accuracy, nll

    val = method.predict(data.val.x)
    idx = torch.as_tensor(stratified_subset(data.train.y, TRAIN_ACC_POINTS, seed))
    train = method.predict(data.train.x[idx])
    return {"val/nll": nll(val, data.val.y), "val/acc": accuracy(val, data.val.y),
            "train/acc": accuracy(train, data.train.y[idx])}


def _mark_failed(record: dict[str, Any], error: str, stage: str, tb: str | None) -> None:
    record.update(
        status=STATUS_FAILED, error=error, failed_stage=stage, traceback=tb, metrics={}, fit_info={},
        fit_seconds=None, fit_cpu_seconds=None, predict_seconds=None, shift_seconds=None, peak_memory_bytes=None,
        peak_memory_kind=None, peak_rss_bytes=None, predictions=None,
    )
    record.setdefault("device", None)


def failed_record(cell: Cell, device: str, error: str, stage: str) -> dict[str, Any]:
    """The record of a cell that failed outside :func:`run_cell` (an executor's worker died): status "failed",
    ``error`` and ``failed_stage`` as given, the driver's provenance."""
    from ntkbayes import metrics

    record = base_record(cell)
    prov = provenance()
    record.update(versions=prov["versions"], git_commit=prov["git_commit"], git_dirty=prov["git_dirty"],
                  hostname=None, device_requested=str(device), tf32=cell.tf32,
                  conventions=json_safe(getattr(metrics, "CONVENTIONS", {})))
    _mark_failed(record, error, stage, None)
    record["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return json_safe(record)


def set_tf32(enabled: bool) -> dict[str, Any]:
    """Allow (or forbid) TF32 in CUDA float32 matmuls and convolutions (module docstring); returns the record
    fields ``tf32`` and ``float32_matmul_precision``."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    return {"tf32": bool(enabled), "float32_matmul_precision": torch.get_float32_matmul_precision()}


def shift_metrics(method, data, kinds: Iterable[str], seed: int) -> dict[str, float]:
    """``shift/<kind>/<severity>/{acc,nll,ece}`` of a fitted ``method`` on ``data.test.x`` (N, ...) corrupted by
    each kind at severities 1-5 (``ntkbayes.data.shifted`` with ``seed``); labels ``data.test.y`` (N,)."""
    from ntkbayes import metrics
    from ntkbayes.data import shifted
    from ntkbayes.data.shift import SEVERITIES

    out: dict[str, float] = {}
    for kind in kinds:
        for severity in SEVERITIES:
            scores = metrics.evaluate(method.predict(shifted(data, kind, severity, seed)), data.test.y)
            for short, key in SHIFT_METRICS.items():
                out[f"shift/{kind}/{severity}/{short}"] = float(scores[key])
    return out
