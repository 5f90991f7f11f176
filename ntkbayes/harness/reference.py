"""Posterior-fidelity rows: every method row of a dataset scored against the suite's reference row (benchmarks.md §1
"Posterior fidelity").

A dataset table may name a reference (``reference = "hmc"``, docs/suites.md): a method row label that runs on that
dataset. After the cells of a run (:func:`ntkbayes.harness.runner.run_suite` calls :func:`compute_references`; it
can also be called alone), each ok cell of that dataset label is compared with the ok reference cell of the same
dataset, options and seed, on the **ID test points** of both stored predictions files (``test_probs``), with
:func:`ntkbayes.metrics.reference.reference_metrics`: ``ref/agreement``, ``ref/tv`` and ``ref/kl`` of the cell's
predictive mean against the reference's. The reference row itself gets no row.

The rows live in ``DIR/reference.jsonl`` (:data:`REFERENCE_FILE`; small, committed with the records), one JSON
object per (cell ``run_id``, ``reference_run_id``)::

    {"dataset_label", "method_label", "seed", "run_id", "reference_label", "reference_run_id",
     "metrics": {"ref/agreement", "ref/tv", "ref/kl"}, "num_points",
     "reference_flagged", "reference_rhat"}     # from the reference cell's fit_info, null when it has none

sorted by (dataset_label, method_label, seed, run_id, reference_run_id), keys sorted, full-precision floats, and
written atomically (:func:`ntkbayes.harness.store.write_atomic`) under the store's lock, so the same inputs give the
same bytes and concurrent runners serialize. Predictions are not committed: a row whose cell or reference has no
predictions file is kept as it was (a fresh clone loses nothing); rows whose cell or reference no longer has an
ok record, or whose dataset now names another reference, are dropped. ``ntkbayes.results.records`` joins the rows
into each cell's metrics, so the leaderboard shows them like every other metric.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ntkbayes.errors import UserError
from ntkbayes.harness.store import STATUS_OK, ResultsStore, StoreWarning, json_safe, write_atomic
from ntkbayes.harness.values import canonical_json

#: The rows file in a results directory.
REFERENCE_FILE = "reference.jsonl"

#: Fields of a row and their types (a line without them is skipped with a ``StoreWarning``).
ROW_TYPES: dict[str, tuple[type, ...]] = {"dataset_label": (str,), "method_label": (str,), "seed": (int,),
                                          "run_id": (str,), "reference_label": (str,),
                                          "reference_run_id": (str,), "metrics": (dict,)}

#: Sort key of the rows (the file's order).
ROW_ORDER = ("dataset_label", "method_label", "seed", "run_id", "reference_run_id")


@dataclass
class ReferenceSummary:
    """What :func:`compute_references` did: rows in the file, rows computed now, rows kept without predictions,
    and notes on what was skipped (a seed whose reference cell is missing or failed, mismatched test points)."""

    rows: int = 0
    computed: int = 0
    kept: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        s = f"reference rows: {self.rows} ({self.computed} computed, {self.kept} kept without predictions)"
        return s + "".join(f"\n  skipped: {n}" for n in self.notes)


def check_references(path: Path, datasets: Iterable[Any], methods: Iterable[Any]) -> None:
    """Suite check (``config.parse_suite``): each ``DatasetSpec.reference`` must be a method row label (sweeps
    expanded, ``MethodSpec.variants``) whose table runs on that dataset; else a UserError naming the file, the
    dataset table and the labels available."""
    methods = list(methods)
    for ds in (d for d in datasets if d.reference is not None):
        rows = [row for ms in methods if ms.datasets is None or ds.label in ms.datasets for row, _ in ms.variants()]
        if ds.reference not in rows:
            raise UserError(f"{path}: [datasets.{ds.label}] reference: {ds.reference!r} is not a method row that "
                            f"runs on this dataset; expected one of {', '.join(rows) or 'none'}")


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    for key, types in ROW_TYPES.items():
        if not isinstance(row.get(key), types) or isinstance(row.get(key), bool):
            return f"field {key!r} should be {' or '.join(t.__name__ for t in types)}"
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))
           for v in row["metrics"].values()):
        return "a metric is not a number or null"
    return None


def read_rows(root: str | os.PathLike) -> list[dict]:
    """The rows of ``root/reference.jsonl`` ([] when there is none); a bad line is skipped with a
    :class:`~ntkbayes.harness.store.StoreWarning` naming the file and line."""
    path = Path(root) / REFERENCE_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            problem = f"not valid JSON ({type(e).__name__})"
        else:
            problem = _row_problem(row)
            if problem is None:
                out.append(row)
                continue
        warnings.warn(f"{path} line {lineno}: {problem}; line skipped", StoreWarning, stacklevel=2)
    return out


def write_rows(root: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` to ``root/reference.jsonl`` atomically, sorted by :data:`ROW_ORDER`, keys sorted."""
    rows = sorted((json_safe(dict(r)) for r in rows), key=lambda r: tuple(r[k] for k in ROW_ORDER))
    text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
                   for r in rows)
    return write_atomic(Path(root) / REFERENCE_FILE, text.encode("utf-8"))


def _group(rec: Mapping[str, Any]) -> tuple:
    """Cells on the very same test points: dataset label, dataset, options and seed."""
    return (rec.get("dataset_label"), rec["dataset"], canonical_json(rec.get("dataset_options") or {}), rec["seed"])


def _fit_facts(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The reference cell's sampler diagnostics, where its fit_info has them (``hmc``: flagged, rhat)."""
    info = rec.get("fit_info") or {}
    flagged, rhat = info.get("flagged"), info.get("rhat")
    return {"reference_flagged": flagged if isinstance(flagged, bool) else None,
            "reference_rhat": float(rhat) if isinstance(rhat, (int, float)) and not isinstance(rhat, bool) else None}


def compute_references(root: str | os.PathLike, references: Mapping[str, str] | None = None, *,
                       prefer: Iterable[str] = ()) -> ReferenceSummary:
    """Compute and write the reference rows of the store at ``root`` (module docstring).

    Args:
        root: the results directory.
        references: dataset label → reference method row label (a suite's ``DatasetSpec.reference``); None: the
            pairs already in ``reference.jsonl`` (recompute what is there, e.g. after predictions reappear).
        prefer: run_ids of the current suite's cells: where a dataset and seed have several ok reference cells
            (a stale one from older parameters), one of these is the reference; else the newest record's.

    Returns:
        A :class:`ReferenceSummary`. Nothing is written when no dataset has a reference and no file exists.
    """
    store = ResultsStore(root)
    prefer = set(prefer)
    with store.lock():
        old = read_rows(store.root)
        if references is None:
            references = {r["dataset_label"]: r["reference_label"] for r in old}
        references = dict(references)
        if not references and not old:
            return ReferenceSummary()
        order = list(store.latest().values())  # first-appearance order; the newest record of a run_id wins below
        ok = {r["run_id"]: r for r in order if r["status"] == STATUS_OK}
        refs: dict[tuple, dict] = {}
        for pos, rec in enumerate(order):
            label = rec.get("dataset_label")
            if rec["run_id"] in ok and label in references and rec.get("method_label") == references[label]:
                best = refs.get(_group(rec))
                if best is None or (rec["run_id"] in prefer, pos) >= (best["run_id"] in prefer, best["_pos"]):
                    refs[_group(rec)] = {**rec, "_pos": pos}
        summary, new, cache = ReferenceSummary(), {}, {}
        missing: dict[tuple, int] = {}
        for rec in ok.values():
            label = rec.get("dataset_label")
            if label not in references or rec.get("method_label") == references[label]:
                continue
            ref = refs.get(_group(rec))
            if ref is None:
                missing[(label, references[label], rec["seed"])] = missing.get((label, references[label],
                                                                                 rec["seed"]), 0) + 1
                continue
            row = _compare(store, rec, ref, references[label], cache, summary)
            if row is not None:
                new[rec["run_id"]] = row
        summary.notes += [f"{ds} seed {seed}: the reference row {ref!r} has no ok cell; {n} cell(s) not scored"
                          for (ds, ref, seed), n in sorted(missing.items())]
        kept = [r for r in old if r["run_id"] not in new and r["run_id"] in ok and r["reference_run_id"] in ok
                and references.get(r["dataset_label"], r["reference_label"]) == r["reference_label"]
                and ok[r["run_id"]].get("dataset_label") == r["dataset_label"]]
        summary.kept = sum(r["dataset_label"] in references for r in kept)
        summary.computed, rows = len(new), [*new.values(), *kept]
        summary.rows = len(rows)
        path = store.root / REFERENCE_FILE
        if rows or path.exists():
            write_rows(store.root, rows)
    return summary


def _compare(store: ResultsStore, rec: Mapping, ref: Mapping, ref_label: str, cache: dict,
             summary: ReferenceSummary) -> dict | None:
    """The row of one cell against its reference cell; None when either predictions file is missing (the old row
    is kept) or the two were not made on the same test points (noted)."""
    from ntkbayes.metrics.reference import reference_metrics

    try:
        if ref["run_id"] not in cache:
            cache[ref["run_id"]] = store.load_predictions(ref["run_id"])[:2]
        ref_test, ref_labels = cache[ref["run_id"]]
        test, labels = store.load_predictions(rec["run_id"])[:2]
    except FileNotFoundError:
        return None
    where = f"{rec.get('dataset_label')} | {rec.get('method_label')} | seed {rec['seed']}"
    if test.member_probs.shape[1:] != ref_test.member_probs.shape[1:] or not bool((labels == ref_labels).all()):
        summary.notes.append(f"{where}: its test points differ from the reference cell's {ref['run_id']}")
        return None
    metrics = reference_metrics(test, ref_test)
    return {"dataset_label": rec.get("dataset_label"), "method_label": rec.get("method_label"),
            "seed": int(rec["seed"]), "run_id": rec["run_id"], "reference_label": ref_label,
            "reference_run_id": ref["run_id"], "metrics": {k: float(v) if math.isfinite(v) else None
                                                           for k, v in metrics.items()},
            "num_points": int(test.num_points), **_fit_facts(ref)}


def rows_by_run_id(root: str | os.PathLike) -> dict[str, list[dict]]:
    """run_id → its rows (file order), for joining into the records (``ntkbayes.results.records``)."""
    out: dict[str, list[dict]] = {}
    for row in read_rows(root):
        out.setdefault(row["run_id"], []).append(row)
    return out


__all__ = ["REFERENCE_FILE", "ROW_ORDER", "ROW_TYPES", "ReferenceSummary", "check_references",
           "compute_references", "read_rows", "rows_by_run_id", "write_rows"]
