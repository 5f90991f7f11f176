"""``ntkbayes tune SUITE``: the same tuning protocol for every method, on validation data only (docs/tuning.md).

For each dataset × method row × seed of the suite:

1. **Search space.** The method class's ``search_space`` (parameter → candidate values, declared in the method's
   own file) minus every key the suite's table sets (a value or a sweep fixes the key: only unfixed keys are
   searched). Values are checked with the class's ``check_param``. An empty space means nothing to tune: the row
   runs with the suite's parameters.
   A key the method selects itself more cheaply (``Method.inner_search``, e.g. the NTK ensemble's λ in kernel
   mode, where one kernel serves every λ) is handed to the method as its whole list in one trial when the
   objective is validation NLL, the method's own criterion; the value it chose (its ``fit_info``) is the one
   selected.
2. **Trials.** The grid (product of the values, keys sorted) if it has at most ``max_trials`` points (default
   :data:`DEFAULT_MAX_TRIALS`, the same budget for every method); else a deterministic subsample of
   ``max_trials`` points: the grid points ranked by the SHA-256 of their canonical JSON, taking first points that
   add a value not yet tried (so every value of every key is tried once when the budget allows), then the rest in
   rank order, kept in grid order. The subsample depends only on the space and the budget, never on results.
3. **Cells.** Each trial is an ordinary cell (:class:`~ntkbayes.harness.config.Cell`) with
   ``validation_only=True`` in a tuning store (default ``results/<suite>/tuning``): it goes through
   :func:`ntkbayes.harness.runner.run_cells`, so records, resume, claims, ``--workers`` and the Ray executor work
   unchanged. A validation-only cell fits on a view of the data with the test split replaced by the validation
   split and no OOD sets, and records ``val/nll``, ``val/acc``, ``train/acc`` only — no predictions file, no
   test, OOD or shift evaluation (:mod:`ntkbayes.harness.cell`). Its run_id hashes ``validation_only``, so a
   trial never shares a run_id with a benchmark cell.
4. **Selection** per dataset, row and *seed*: the seed draws the train/validation/test split
   (``ntkbayes.data.splits.make_splits``), so the parameters chosen on seed s's validation split are applied to
   seed s only — selecting once per dataset from every seed's validation split would let seed s use parameters
   chosen on data that are seed t's test points. The objective (:class:`Objective`, validation NLL by default)
   of the ok trials decides; ties go to the earlier trial; failed trials are recorded and never chosen.
   A searched numeric key whose chosen value is the smallest or largest of its values is listed in ``grid_edge``
   (with two values every choice is an edge: the grid should be widened).
5. **File.** The choices are written to the suite's selection file (:mod:`ntkbayes.harness.selection`), and every
   trial to ``trials.csv`` in the tuning store.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import io
import itertools
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ntkbayes.errors import UserError
from ntkbayes.harness.config import Cell, MethodSpec, Suite, load_suite
from ntkbayes.harness.runner import RunSummary, run_cells
from ntkbayes.harness.selection import selection_path, write_selection
from ntkbayes.harness.store import STATUS_OK, ResultsStore
from ntkbayes.harness.values import canonical_json, check_param, evaluation_of, format_value, normalize, run_id_of

#: Trials per dataset × method row × seed at most (the same for every method).
DEFAULT_MAX_TRIALS = 8

#: Sub-directory of a suite's results directory holding its tuning store.
TUNING_DIR = "tuning"


class Objective(str, enum.Enum):
    """What a selection optimizes (a validation metric of every cell)."""

    VAL_NLL = "val/nll"
    """Negative log-likelihood of the validation split (nats; lower is better). The default: it rewards
    calibrated confidence as well as accuracy."""
    VAL_ACC = "val/acc"
    """Accuracy on the validation split (higher is better)."""

    @property
    def lower_is_better(self) -> bool:
        return self is Objective.VAL_NLL


@dataclass(frozen=True)
class Trial:
    """One trial: the suite's cell it tunes (``base``), the searched values (``point``) and its own cell."""

    base: Cell
    point: Mapping[str, Any]
    cell: Cell
    inner: tuple[str, ...] = ()
    """Searched keys the method chose itself in this trial (module docstring, step 1)."""


@dataclass
class TuneSummary:
    """What :func:`tune_suite` did."""

    run: RunSummary
    selection_path: str | None
    chosen: int = 0
    untuned: list[str] = field(default_factory=list)
    """Rows with nothing to search (empty space after the suite's fixed keys)."""
    no_choice: list[str] = field(default_factory=list)
    """Cells whose every trial failed (they run with the suite's parameters)."""
    grid_edge: int = 0

    def __str__(self) -> str:
        s = f"{self.run}\n{self.chosen} selections"
        if self.selection_path:
            s += f" written to {self.selection_path}"
        if self.grid_edge:
            s += f"; {self.grid_edge} on a grid edge (grid_edge in the file)"
        if self.untuned:
            s += f"\nnot tuned (nothing to search): {', '.join(self.untuned)}"
        if self.no_choice:
            s += f"\nno ok trial: {', '.join(self.no_choice)}"
        return s


def search_space(suite: Suite, ms: MethodSpec) -> dict[str, list]:
    """The searched grid of a method table: the class's ``search_space`` minus the keys the table sets; values
    checked by the class's ``check_param`` (a bad space is a UserError naming the class)."""
    from ntkbayes import methods

    if ms.name not in methods.available():
        return {}
    cls = methods.get(ms.name)
    fixed = set(ms.params) | set(ms.sweep)
    space = {}
    for key, values in sorted(dict(getattr(cls, "search_space", None) or {}).items()):
        if key in fixed:
            continue
        where = f"{cls.__module__}.{cls.__name__}.search_space:"
        if key not in cls.param_defaults():
            raise UserError(f"{where} {key}: not a parameter of method {ms.name!r}")
        if not isinstance(values, (list, tuple)) or not values:
            raise UserError(f"{where} {key}: expected a non-empty list of values, got {values!r}")
        space[key] = [check_param(cls, key, v, where) for v in values]
    return space


def inner_keys(ms: MethodSpec, space: Mapping[str, list], objective: Objective) -> dict[str, str]:
    """Searched key → list parameter, for the keys of ``space`` the method selects itself (validation NLL only)."""
    from ntkbayes import methods

    if objective is not Objective.VAL_NLL or not space:
        return {}
    inner = methods.get(ms.name).inner_search(dict(ms.params))
    return {k: v for k, v in inner.items() if k in space}


def trial_points(space: Mapping[str, list], max_trials: int = DEFAULT_MAX_TRIALS) -> list[dict[str, Any]]:
    """The trials of a space under a budget (module docstring, step 2); [] for an empty space."""
    if not space:
        return []
    keys = sorted(space)
    grid = [dict(zip(keys, vals)) for vals in itertools.product(*(space[k] for k in keys))]
    if len(grid) <= max_trials:
        return grid
    ranked = sorted(range(len(grid)), key=lambda i: hashlib.sha256(canonical_json(grid[i]).encode()).hexdigest())
    chosen: list[int] = []
    covered: set[tuple[str, str]] = set()
    for i in ranked:
        values = {(k, canonical_json(grid[i][k])) for k in keys}
        if len(chosen) < max_trials and not values <= covered:
            chosen.append(i)
            covered |= values
    chosen += [i for i in ranked if i not in chosen][: max_trials - len(chosen)]
    return [grid[i] for i in sorted(chosen)]


def grid_edge(space: Mapping[str, list], point: Mapping[str, Any]) -> list[str]:
    """Searched numeric keys (≥ 2 distinct values) whose value in ``point`` is the smallest or largest."""
    out = []
    for key, values in sorted(space.items()):
        nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) != len(values) or len(set(nums)) < 2:
            continue
        if point[key] in (min(nums), max(nums)):
            out.append(key)
    return out


def trials(suite: Suite, cells: list[Cell], max_trials: int = DEFAULT_MAX_TRIALS,
           objective: Objective = Objective.VAL_NLL) -> tuple[list[Trial], list[str]]:
    """The trials of every cell of the suite, and the row labels with nothing to search."""
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise UserError(f"--max-trials: expected an integer ≥ 1, got {max_trials!r}")
    specs = {ms.label: ms for ms in suite.methods}
    spaces: dict[str, tuple[dict[str, list], dict[str, str]]] = {}
    out, untuned = [], []
    for base in cells:
        table = base.method_label.split("[", 1)[0]
        if table not in spaces:
            space = search_space(suite, specs[table])
            spaces[table] = space, inner_keys(specs[table], space, objective)
        space, inner = spaces[table]
        outer = {k: v for k, v in space.items() if k not in inner}
        points = trial_points(outer, max_trials) or ([{}] if inner else [])
        if not points and base.method_label not in untuned:
            untuned.append(base.method_label)
        lists = {param: list(space[key]) for key, param in inner.items()}
        for point in points:
            point = normalize(point)
            resolved = normalize({**base.resolved_params, **point, **lists})
            rid = run_id_of(base.dataset, base.resolved_options, base.method, resolved, base.seed,
                            evaluation_of((), base.tf32, validation_only=True))
            tag = ",".join([f"{k}={format_value(v)}" for k, v in point.items()] + [f"{k}=inner" for k in inner])
            cell = dataclasses.replace(base, method_label=f"{base.method_label}[{tag}]",
                                       params={**base.params, **point, **lists}, resolved_params=resolved,
                                       run_id=rid, shift=(), validation_only=True)
            out.append(Trial(base, point, cell, tuple(inner)))
    return out, untuned


def select(all_trials: list[Trial], records: Mapping[str, dict], objective: Objective, spaces: Mapping[str, dict]
           ) -> tuple[dict[str, Any], list[str]]:
    """``select`` table of the selection file {dataset label: {row: {seed: choice}}} and the cells (labels) whose
    every trial failed or lacks the objective."""
    groups: dict[str, list[Trial]] = {}
    for t in all_trials:
        groups.setdefault(t.base.run_id, []).append(t)
    out: dict[str, Any] = {}
    no_choice = []
    for group in groups.values():
        base = group[0].base
        scored = []
        for i, t in enumerate(group):
            rec = records.get(t.cell.run_id)
            value = (rec.get("metrics") or {}).get(objective.value) if rec and rec["status"] == STATUS_OK else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                scored.append((value if objective.lower_is_better else -value, i, float(value), t))
        if not scored:
            no_choice.append(base.label)
            continue
        _, _, value, best = min(scored, key=lambda s: (s[0], s[1]))
        space = spaces[base.method_label.split("[", 1)[0]]
        fit_info = records[best.cell.run_id].get("fit_info") or {}
        if any(k not in fit_info for k in best.inner):
            no_choice.append(base.label)
            continue
        params = {**best.point, **{k: normalize({k: fit_info[k]})[k] for k in best.inner}}
        choice = {"params": params, "value": value, "trials": len(scored), "grid_edge": grid_edge(space, params)}
        out.setdefault(base.dataset_label, {}).setdefault(base.method_label, {})[str(base.seed)] = choice
    return out, no_choice


def trials_csv(all_trials: list[Trial], records: Mapping[str, dict], objective: Objective,
               sel: Mapping[str, Any]) -> str:
    """Every trial: dataset, method row, seed, params (canonical JSON), status, objective value, chosen."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "method", "seed", "params", "status", objective.value, "chosen", "run_id"])
    for t in all_trials:
        rec = records.get(t.cell.run_id) or {}
        value = (rec.get("metrics") or {}).get(objective.value)
        choice = sel.get(t.base.dataset_label, {}).get(t.base.method_label, {}).get(str(t.base.seed))
        outer = {k: v for k, v in (choice or {}).get("params", {}).items() if k not in t.inner}
        chosen = choice is not None and canonical_json(outer) == canonical_json(t.point)
        searched = {**t.point, **{k: t.cell.params[k] for k in t.cell.params if k not in t.base.params
                                  and k not in t.point}}
        w.writerow([t.base.dataset_label, t.base.method_label, t.base.seed, canonical_json(searched),
                    rec.get("status", "missing"), "" if value is None else repr(float(value)), "*" if chosen else "",
                    t.cell.run_id])
    return buf.getvalue()


def tune_suite(suite: Suite | str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
               objective: str | Objective = Objective.VAL_NLL, max_trials: int = DEFAULT_MAX_TRIALS,
               seeds: Iterable[int] | None = None, device: str | None = None, executor="local",
               progress: bool = True, download: bool = False, data_root: str | None = None,
               address: str | None = None, threads: int | None = None,
               selection_out: str | os.PathLike | None = None, run_trials: bool = True,
               write: bool = True) -> TuneSummary:
    """Run the trials of ``suite`` not yet done in the tuning store ``out_dir`` (default
    ``results/<suite>/tuning``), select per dataset, row and seed, and write the selection file (default beside
    the suite, :func:`~ntkbayes.harness.selection.selection_path`; ``write=False``: trials only, as an extra
    ``--workers`` runner does; ``run_trials=False``: select from the trials recorded, run nothing)."""
    t_start = time.perf_counter()
    try:
        objective = Objective(objective)
    except ValueError:
        raise UserError(f"--objective: expected one of {[o.value for o in Objective]}, got {objective!r}") from None
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    out_dir = Path(out_dir) if out_dir is not None else Path("results") / suite.name / TUNING_DIR
    cells = suite.cells(seeds, data_root=data_root, download=download, threads=threads)
    all_trials, untuned = trials(suite, cells, max_trials, objective)
    if run_trials:
        run = run_cells(suite, [t.cell for t in all_trials], out_dir, device=device, executor=executor,
                        progress=progress, address=address, threads=threads, t_start=t_start)
    else:
        run = RunSummary(suite=suite.name, out_dir=str(out_dir), cells=len(all_trials), already_done=0)
    summary = TuneSummary(run=run, selection_path=None, untuned=untuned)
    if not write:
        return summary
    records = ResultsStore(out_dir).latest()
    spaces = {ms.label: search_space(suite, ms) for ms in suite.methods}
    chosen, summary.no_choice = select(all_trials, records, objective, spaces)
    sel = {"suite": suite.name, "objective": objective.value, "max_trials": int(max_trials), "select": chosen}
    path = Path(selection_out) if selection_out is not None else selection_path(suite.path)
    write_selection(path, sel)
    (out_dir / "trials.csv").write_text(trials_csv(all_trials, records, objective, chosen), encoding="utf-8")
    summary.selection_path = str(path)
    summary.chosen = sum(len(seeds) for rows in chosen.values() for seeds in rows.values())
    summary.grid_edge = sum(bool(c["grid_edge"]) for rows in chosen.values() for s in rows.values()
                            for c in s.values())
    return summary


__all__ = ["DEFAULT_MAX_TRIALS", "TUNING_DIR", "Objective", "Trial", "TuneSummary", "grid_edge", "inner_keys",
           "search_space", "select", "trial_points", "trials", "trials_csv", "tune_suite"]
