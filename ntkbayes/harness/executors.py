"""Executors: where a suite's cells run (design.md "Execution").

An executor is a callable ``executor(cells, device) -> iterator of (cell, record, arrays)``: it takes an iterable of
:class:`~ntkbayes.harness.config.Cell` (consumed lazily: each cell is claimed in the store just before the executor
pulls it) and the device string ("auto" | "cpu" | "cuda", resolved where the cell runs), and yields each cell with
:func:`~ntkbayes.harness.cell.run_cell`'s result as cells finish, in any order. Only the driver
(:func:`ntkbayes.harness.runner.run_suite`) touches the store: it saves the predictions, then appends the record.

``"local"`` (:func:`local_executor`) runs cells one after another in this process. Several local runners share
one store through its claims (``ntkbayes run --workers N`` starts them; :mod:`ntkbayes.harness.workers`).

``"ray"`` (:func:`ray_executor`; Ray is imported only when it runs):
``ntkbayes run SUITE --executor ray [--address ADDR]`` sends each cell to a Ray cluster (Moritz et al., "Ray: a
distributed framework for emerging AI applications", OSDI 2018) as one task that calls
:func:`ntkbayes.harness.cell.run_cell` and returns ``(record, arrays)``: a JSON-safe dict and the prediction
arrays (numpy), carried by Ray's own object transport. Only the driver (``run_suite``) touches the results store,
so claims, resume and the atomic append work exactly as with the local executor, and the same suite gives the
same records on either executor (timings, hostname and peak memory aside).

Resources per task: one GPU where the cluster has GPUs and the device is "auto" or "cuda" (``num_gpus=1``; Ray
sets ``CUDA_VISIBLE_DEVICES`` so the cell sees exactly that GPU), otherwise none — Ray then hides the GPUs and
"auto" resolves to the CPU in the worker — and ``num_cpus`` = the cell's ``threads`` (1 when unset; at most the
cluster's CPUs). Device "cuda" on a cluster without GPUs is an error before any cell runs (no silent fallback), and
an unreachable ``--address`` is one within :data:`CONNECT_TIMEOUT_S` seconds. Cells are submitted lazily, at
most :data:`IN_FLIGHT_PER_SLOT` × the number of slots (GPUs, else CPUs) at once, because pulling a cell claims it
in the store: a cell is claimed just before it is submitted, not for the whole run.

A worker that dies (killed for memory, a segfault in a native library) gives a ``failed`` record with the Ray
error; the suite goes on. Workers import ``ntkbayes`` themselves: on a multi-machine cluster every node needs the
same checkout installed (records carry each worker's versions, git commit and hostname). Relative data roots are
made absolute on the driver, so workers started elsewhere (Ray's session directory) find the same files; on a
cluster the data root must be on a shared filesystem or present at the same path on every node.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from ntkbayes.errors import UserError
from ntkbayes.harness.cell import failed_record, run_cell
from ntkbayes.harness.config import Cell

Executor = Callable[[Iterable[Cell], str], Iterator[tuple[Cell, dict, dict[str, np.ndarray]]]]

#: Executors by name (``ntkbayes run --executor``).
EXECUTORS = ("local", "ray")


def local_executor(cells: Iterable[Cell], device: str) -> Iterator[tuple[Cell, dict, dict[str, np.ndarray]]]:
    """Run cells one after another in this process, yielding each as it finishes."""
    for cell in cells:
        record, arrays = run_cell(cell, device)
        yield cell, record, arrays


def get_executor(executor: str | Executor = "local", *, address: str | None = None) -> Executor:
    """``"local"``, ``"ray"`` (``address`` passed on; UserError when Ray is not installed) or an executor callable."""
    if callable(executor):
        return executor
    if executor == "local":
        return local_executor
    if executor == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UserError("executor 'ray' is not available (ray is not installed)")
        return functools.partial(ray_executor, address=address)
    raise UserError(f"executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")


# -- Ray -------------------------------------------------------------------------------------------------------
#: Tasks kept submitted per slot (GPU, else CPU). 1 keeps claims tight (a cell is claimed only when a slot is
#: about to take it) while Ray's scheduling latency (~ms) is negligible next to a cell (seconds or more).
IN_FLIGHT_PER_SLOT = 1

#: Keyword arguments of ``ray.init`` when this executor starts Ray itself (no dashboard: it costs a process and
#: seconds of startup and is not needed to run a suite).
RAY_INIT_KWARGS: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}

#: Seconds to wait for a TCP connection to ``--address HOST:PORT`` before calling it unreachable; ``ray.init``
#: itself retries an unreachable address for minutes.
CONNECT_TIMEOUT_S = 5.0


def _run_remote(cell_dict: dict[str, Any], device: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Task body: rebuild the cell from its JSON form and run it (imports happen in the worker)."""
    return run_cell(Cell.from_dict(cell_dict), device)


def _absolute_root(cell: Cell) -> Cell:
    root = cell.data_root
    return cell if os.path.isabs(root) else replace(cell, data_root=os.path.abspath(root))


def check_reachable(address: str | None) -> None:
    """UserError unless ``address`` ("HOST:PORT" or "ray://HOST:PORT") accepts a TCP connection; "auto", "local"
    and None (start a local cluster) are not checked."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "localhost", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as e:
        raise UserError(f"executor 'ray': cannot reach a Ray cluster at {address!r} ({e})") from None


def _init_ray(address: str | None) -> bool:
    """Connect to (``address``) or start a local Ray cluster unless Ray is already initialized; True if we did."""
    import ray

    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        ray.init(address=address, **RAY_INIT_KWARGS)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"at {address!r}" if address else "locally"
        raise UserError(f"executor 'ray': cannot start or reach a Ray cluster {where}: {' '.join(str(e).split())}"
                        ) from None
    return True


def cluster_slots(device: str) -> tuple[int, float]:
    """(concurrent cells, GPUs per cell) for ``device`` on the connected cluster; "cuda" without GPUs is an error."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if device == "cuda" and gpus == 0:
        raise UserError("device 'cuda' requested but the Ray cluster has no GPU (use --device cpu or auto)")
    if gpus > 0 and device in ("auto", "cuda"):
        return gpus, 1.0
    return max(1, cpus), 0.0


def ray_executor(cells: Iterable[Cell], device: str, *, address: str | None = None
              ) -> Iterator[tuple[Cell, dict[str, Any], dict[str, np.ndarray]]]:
    """Executor (module docstring): run ``cells`` as Ray tasks, yield ``(cell, record, arrays)`` as they
    finish (any order). Starts a local cluster (or connects to ``address``, e.g. ``"auto"``) unless Ray is already
    initialized, and shuts down only what it started; unfinished tasks are cancelled when the caller stops."""
    import ray

    started = _init_ray(address)
    pending: dict[Any, Cell] = {}
    try:
        slots, num_gpus = cluster_slots(device)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))  # a task asking for more would never start
        task = ray.remote(max_retries=0)(_run_remote)
        source = iter(cells)
        exhausted = False
        while True:
            while not exhausted and len(pending) < slots * IN_FLIGHT_PER_SLOT:
                cell = next(source, None)
                if cell is None:
                    exhausted = True
                    break
                cell = _absolute_root(cell)
                num_cpus = min(cell.threads or 1, cpus)
                ref = task.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(cell.to_dict(), device)
                pending[ref] = cell
            if not pending:
                return
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ref)
            try:
                record, arrays = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a dead worker fails its cell, the suite goes on
                text = " ".join(str(e).split())[:2000]
                record, arrays = failed_record(cell, device, f"{type(e).__name__}: {text}", "ray"), {}
            yield cell, record, arrays
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
