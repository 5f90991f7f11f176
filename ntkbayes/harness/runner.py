"""Run a suite: expand the grid, send cells through an executor, write records, resume (design.md "Execution").

:func:`run_suite` expands a suite into cells, leaves out those the store has done, checks the rest before any
runs (:func:`preflight`: each dataset loads, each method is created), then sends them through an executor
(:mod:`ntkbayes.harness.executors`); each cell is claimed in the store just before it runs, and as cells finish
the driver saves their predictions and then appends their records (:mod:`ntkbayes.harness.store`). What one cell
does is :mod:`ntkbayes.harness.cell`. An interrupted run (Ctrl-C) releases its claims; the next run resumes.

Dry run (:func:`dry_run_suite`): the same suite with tiny data, the parameter caps each method declares in its
``dry_run_params`` class attribute (an integer parameter is lowered to the cap, never raised; any other is
replaced), the first seed and the CPU, into its own results directory. Its cells load stand-in data of the real
shapes (``ntkbayes.data.load(..., stand_in=True)``), so no dataset file is needed, and run the same code path
(fit, predict, shift, records): a GPU suite can be checked on a laptop or in CI.

After the cells, :func:`run_suite` scores every dataset's rows against the dataset's ``reference`` row, where the
suite names one (:func:`ntkbayes.harness.reference.compute_references`, ``reference.jsonl``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ntkbayes.errors import UserError
from ntkbayes.harness.cell import clear_data_cache, load_data
from ntkbayes.harness.config import Cell, Device, Suite, _dataset_options, canonical_json, load_suite
from ntkbayes.harness.executors import Executor, get_executor, local_executor
from ntkbayes.harness.reference import ReferenceSummary, compute_references
from ntkbayes.harness.store import STATUS_FAILED, STATUS_OK, ResultsStore

#: Dataset options set in a dry run where the dataset has them: 120 training images is the least a 10-class
#: image dataset accepts with its 10 % validation split (one image per class there); 30 test and OOD images.
DRY_RUN_OPTIONS = {"subset": 120, "test_subset": 30}


# -- the suite -------------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What :func:`run_suite` did. ``failures`` lists (cell label, error)."""

    suite: str
    out_dir: str
    cells: int
    already_done: int
    ran: int = 0
    ok: int = 0
    failed: int = 0
    claimed_elsewhere: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    selection: str | None = None
    """The selection file whose tuned parameters the cells use (None: none)."""
    unselected: int = 0
    """Cells the selection file has no entry for (they run with the suite's parameters)."""
    reference: ReferenceSummary | None = None
    """The posterior-fidelity rows written after the cells (None: no dataset of the suite names a reference)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, cell: Cell, record: dict[str, Any]) -> None:
        """Count one finished cell."""
        self.ran += 1
        if record["status"] == STATUS_OK:
            self.ok += 1
        else:
            self.failed += 1
            self.failures.append((cell.label, record["error"]))

    def __str__(self) -> str:
        s = (f"suite {self.suite}: {self.cells} cells, {self.already_done} already done, ran {self.ran} "
             f"({self.ok} ok, {self.failed} failed) in {self.seconds:.1f} s → {self.out_dir}")
        if self.claimed_elsewhere:
            s += f"; {self.claimed_elsewhere} left to another runner"
        if self.selection:
            s += f"; tuned parameters from {self.selection}"
            if self.unselected:
                s += f" ({self.unselected} cells not in it: suite parameters; rerun `ntkbayes tune`)"
        return s + (f"\n{self.reference}" if self.reference is not None else "")


def preflight(suite: Suite, cells: list[Cell]) -> None:
    """Before any cell runs: load each pending dataset once and create each method, so missing files and bad
    options stop the run with a message instead of failing every cell. Missing data raise as they are."""
    from ntkbayes import methods

    checked: set[tuple] = set()
    for cell in cells:
        key = ("data", cell.dataset_label)
        if key not in checked:
            checked.add(key)
            try:
                load_data(cell)
            except FileNotFoundError:
                raise
            except (ValueError, TypeError) as e:
                raise UserError(f"{suite.path}: [datasets.{cell.dataset_label}]: {e}") from None
        key = ("method", cell.method_label)
        if key not in checked and cell.method in methods.available():  # unknown ones fail in their cells
            checked.add(key)
            try:
                methods.create(cell.method, **dict(cell.params))
            except (ValueError, TypeError) as e:
                raise UserError(f"{suite.path}: [methods.{cell.method_label}]: {e}") from None


def _cap(value: Any, cap: Any) -> Any:
    """A dry-run cap: ``min(value, cap)`` for an integer parameter, else the cap replaces the value."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and isinstance(cap, (int, float)) and not isinstance(cap, bool):
        return min(value, type(value)(cap))
    return cap


def dry_run_suite(suite: Suite) -> Suite:
    """The dry-run version of ``suite`` (module docstring): name ``<name>-dry-run``, first seed, CPU, one thread,
    dataset options :data:`DRY_RUN_OPTIONS` where the dataset has them, method parameters capped by the method
    class's ``dry_run_params`` (swept values too; a sweep whose values coincide after capping keeps one, and so
    does a set of rows that the caps make the same cell)."""
    from ntkbayes import methods

    datasets = []
    for ds in suite.datasets:
        known = _dataset_options(ds.name) or {}
        datasets.append(dataclasses.replace(ds, options={**ds.options, **{k: _cap(ds.options.get(k, v), v)
                                                                          for k, v in DRY_RUN_OPTIONS.items()
                                                                          if k in known}}))
    specs = []
    for ms in suite.methods:
        registered = ms.name in methods.available()
        cls = methods.get(ms.name) if registered else None
        defaults = cls.param_defaults() if registered else {}
        caps = {k: c for k, c in dict(cls.dry_run_params if cls else {}).items() if k in defaults}
        params = {**ms.params, **{k: _cap(ms.params.get(k, defaults[k]), c) for k, c in caps.items()
                                  if k not in ms.sweep}}
        sweep = {}
        for k, values in ms.sweep.items():
            unique = list({canonical_json(v): v for v in (_cap(v, caps[k]) if k in caps else v
                                                          for v in values)}.values())
            if len(unique) > 1:
                sweep[k] = tuple(unique)
            else:
                params[k] = unique[0]
        specs.append(dataclasses.replace(ms, params=params, sweep=sweep))
    return dataclasses.replace(suite, name=f"{suite.name}-dry-run", seeds=suite.seeds[:1], device=Device.CPU,
                               threads=1, datasets=tuple(datasets), methods=tuple(specs), merge_duplicates=True)


def _resolve_device(suite: Suite, device: str | None, run: Executor, threads: int | None) -> str:
    """The device string of the run (the suite's unless given), after checking it and ``threads``."""
    device = str(device if device is not None else suite.device.value)
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device: expected auto, cpu or cuda, got {device!r}")
    if run is local_executor and device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA device is available (use --device cpu or auto)")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads: expected an integer ≥ 1, got {threads!r}")
    return device


def _drive(store: ResultsStore, pending: list[Cell], run: Executor, device: str, summary: RunSummary,
           progress: bool, name: str) -> None:
    """Claim, run and record ``pending`` through ``run``; on any exit (Ctrl-C included) release the claims of
    cells in flight so the next run takes them."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), desc=name, unit="cell", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    in_flight: set[str] = set()

    def claimed() -> Iterator[Cell]:
        for cell in pending:
            if store.try_claim(cell.run_id):
                in_flight.add(cell.run_id)
                bar.set_postfix_str(cell.label, refresh=True)
                yield cell
            else:
                summary.claimed_elsewhere += 1
                bar.update(1)

    try:
        for cell, record, arrays in run(claimed(), device):
            if record["status"] == STATUS_OK and arrays:
                store.save_arrays(cell.run_id, arrays)  # predictions first: a record never points at nothing
            store.append(record)
            store.release(cell.run_id)
            in_flight.discard(cell.run_id)
            summary.add(cell, record)
            if record["status"] != STATUS_OK:
                tqdm.write(f"failed: {cell.label}: {record['error']}", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
        for run_id in in_flight:  # interrupted: let the next run take these cells
            store.release(run_id)


def run_suite(suite: Suite | str | os.PathLike, out_dir: str | os.PathLike, *, device: str | None = None,
              seeds: Iterable[int] | None = None, executor: str | Executor = "local", progress: bool = True,
              download: bool = False, data_root: str | None = None, address: str | None = None,
              retry_failed: bool = True, threads: int | None = None, dry_run: bool = False,
              selection: str | os.PathLike | bool | None = None) -> RunSummary:
    """Run every cell of ``suite`` not yet done in the store at ``out_dir``.

    Args:
        suite: a :class:`Suite` or the path of a suite file.
        device: "auto" | "cpu" | "cuda"; default the suite's.
        seeds: override the suite's seeds.
        executor: "local", "ray", or an executor callable (:mod:`ntkbayes.harness.executors`).
        download: let data loaders download missing files.
        data_root: override the suite's data root.
        retry_failed: run cells again whose newest record is "failed" (default), else leave them.
        threads: torch CPU threads in each cell (overrides the suite's ``threads``).
        dry_run: run :func:`dry_run_suite` of the suite instead, on stand-in data (the CPU; ``device`` and
            ``seeds`` must be unset); a dry run applies no selection.
        selection: the tuned parameters (:mod:`ntkbayes.harness.selection`): None = the suite's
            ``<stem>.selected.toml`` when it exists, a path = that file, False = none.
    """
    from ntkbayes.harness.selection import apply_selection, find_selection, load_selection

    t_start = time.perf_counter()
    if not isinstance(suite, Suite):
        suite = load_suite(suite, unknown_methods="fail" if dry_run else "error")
    if dry_run:
        if device not in (None, "cpu") or seeds is not None:
            raise UserError("a dry run uses the CPU and the suite's first seed; drop --device and --seeds")
        suite = dry_run_suite(suite)
    cells = suite.cells(seeds, data_root=data_root, download=download, threads=threads)
    if dry_run:
        cells = [dataclasses.replace(c, stand_in=True) for c in cells]
    path = None if dry_run or selection is False else (find_selection(suite.path) if selection in (None, True)
                                                         else selection)
    unselected = 0
    if path is not None:
        cells, missing = apply_selection(cells, load_selection(path), path)
        unselected = len(missing)
    summary = run_cells(suite, cells, out_dir, device=device, executor=executor, progress=progress,
                        address=address, retry_failed=retry_failed, threads=threads, t_start=t_start)
    summary.selection, summary.unselected = None if path is None else str(path), unselected
    references = {ds.label: ds.reference for ds in suite.datasets if ds.reference is not None}
    if references:  # after the cells: every row against its dataset's reference (ntkbayes.harness.reference)
        summary.reference = compute_references(out_dir, references, prefer=[c.run_id for c in cells])
        summary.seconds = time.perf_counter() - t_start
    return summary


def run_cells(suite: Suite, cells: list[Cell], out_dir: str | os.PathLike, *, device: str | None = None,
              executor: str | Executor = "local", progress: bool = True, address: str | None = None,
              retry_failed: bool = True, threads: int | None = None, t_start: float | None = None) -> RunSummary:
    """Run the ``cells`` (of ``suite``) not yet done in the store at ``out_dir``: claim, run, record, resume
    (the tuner's trials come through here too). Arguments as in :func:`run_suite`."""
    t_start = time.perf_counter() if t_start is None else t_start
    run = get_executor(executor, address=address)
    device = _resolve_device(suite, device, run, threads)
    store = ResultsStore(out_dir)
    store.cleanup_temp()
    done = store.done_run_ids()
    failed_before = {k for k, r in store.latest().items() if r["status"] == STATUS_FAILED}
    pending = [c for c in cells if c.run_id not in done and (retry_failed or c.run_id not in failed_before)]
    summary = RunSummary(suite=suite.name, out_dir=str(out_dir), cells=len(cells),
                         already_done=len(cells) - len(pending))
    clear_data_cache()
    try:
        if pending:
            preflight(suite, pending)
            _drive(store, pending, run, device, summary, progress, suite.name)
    finally:
        clear_data_cache()
    summary.seconds = time.perf_counter() - t_start
    return summary
