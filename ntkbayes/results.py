"""Results as pandas tables: ``ntkbayes.results.load(DIR)`` and the per-cell and summary tables behind the leaderboard.

Reads a results directory only through the store's public API (``ResultsStore.latest()``): each cell's effective
record (the newest ``ok`` one, else the newest failure). Names follow the leaderboard: ``dataset`` is the suite's
dataset label and ``method`` the method label (swept parameters included, e.g. ``ntk_ensemble[mode=network]``); where
one label covers different options or parameters (two suites in one store), a short hash is appended.

Tables:

- :func:`cells`: one row per cell — run_id, dataset, method, method_name, family, seed, status, error, then one
  column per method parameter (``param.<name>``; lists and dicts as canonical JSON). Parameters live here once.
- :func:`load`: tidy, one row per cell × metric (a failed cell: one row with metric and value missing), the
  cell columns repeated so the frame filters and pivots on its own.
- :func:`summary`: one row per dataset × method × metric: mean, std (ddof = 1), n (seeds), and the 95 % Student-t
  interval over seeds ``ci_low``, ``ci_high`` (``ntkbayes.stats``).

Records written before the metrics left out scores a predictive cannot produce hold constant member scores for
single-member predictives (mutual information ≡ 0 → AUROC 0.5, FPR95 1 on every OOD set). :func:`records` drops
``expected_entropy``, ``mutual_info`` and ``variance`` OOD keys from such records, so they show as absent, never as a
constant that ranks.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ntkbayes.predictive import MEMBER_SCORES

#: Columns of :func:`cells` before the parameter columns.
CELL_COLUMNS = ["run_id", "dataset", "method", "method_name", "family", "seed", "status", "error"]

#: Prefix of the parameter columns.
PARAM_PREFIX = "param."




def records(source) -> list[dict]:
    """The effective record of every cell (``ResultsStore.latest()``), in first-appearance order.

    ``source``: a results directory, a ``ResultsStore``, or an iterable of records (taken as effective already).
    Raises ValueError when a directory has no ``records.jsonl``.
    """
    from ntkbayes.harness.store import RECORDS_FILE, ResultsStore

    if isinstance(source, (str, Path)):
        if not (Path(source) / RECORDS_FILE).is_file():
            raise ValueError(f"{source}: not a results directory (no {RECORDS_FILE})")
        source = ResultsStore(source)
    recs = list(source.latest().values()) if isinstance(source, ResultsStore) else list(source)
    return [_drop_constant_member_scores(r) for r in recs]


def _drop_constant_member_scores(rec: Mapping) -> dict:
    metrics = rec.get("metrics") or {}
    sets = {k.split("/")[1] for k in metrics if k.startswith("ood/") and k.count("/") == 3}
    constant = bool(sets) and all(metrics.get(f"ood/{s}/mutual_info/auroc") == 0.5
                                  and metrics.get(f"ood/{s}/mutual_info/fpr95") == 1.0 for s in sets)
    if not constant:
        return dict(rec)
    kept = {k: v for k, v in metrics.items()
            if not (k.startswith("ood/") and k.count("/") == 3 and k.split("/")[2] in MEMBER_SCORES)}
    return {**rec, "metrics": kept}


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _param_value(v: Any) -> Any:
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)
    return v


def cells(source) -> pd.DataFrame:
    """One row per cell: ``CELL_COLUMNS`` then ``param.<name>`` columns (sorted); see the module docstring."""
    recs = records(source)
    ds_keys: dict[str, set] = {}
    row_keys: dict[tuple, set] = {}
    names = []
    for rec in recs:
        ds = str(rec.get("dataset_label") or rec["dataset"])
        ds_key = json.dumps([rec["dataset"], rec.get("dataset_options", {})], sort_keys=True, default=str)
        label = str(rec.get("method_label") or rec["method"])
        row_key = json.dumps([rec["method"], rec.get("params", {})], sort_keys=True, default=str)
        ds_keys.setdefault(ds, set()).add(ds_key)
        row_keys.setdefault((ds, label), set()).add(row_key)
        names.append((ds, ds_key, label, row_key))
    rows = []
    for rec, (ds, ds_key, label, row_key) in zip(recs, names):
        row = {"run_id": rec["run_id"],
               "dataset": ds if len(ds_keys[ds]) == 1 else f"{ds} #{_short_hash(ds_key)}",
               "method": label if len(row_keys[(ds, label)]) == 1 else f"{label} #{_short_hash(row_key)}",
               "method_name": rec["method"], "family": str(rec.get("family") or rec["method"]),
               "seed": int(rec["seed"]), "status": rec["status"], "error": rec.get("error")}
        for k, v in (rec.get("params") or {}).items():
            row[PARAM_PREFIX + k] = _param_value(v)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=CELL_COLUMNS + sorted({k for r in rows for k in r} - set(CELL_COLUMNS)))
    return frame.astype({"seed": "int64"})


def metric_frame(source) -> pd.DataFrame:
    """Long metric values without parameters: run_id, metric, value (one row per ok cell × metric)."""
    rows = []
    for rec in records(source):
        if rec["status"] != "ok":
            continue
        for key, value in (rec.get("metrics") or {}).items():
            v = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
            rows.append((rec["run_id"], key, v))
    return pd.DataFrame(rows, columns=["run_id", "metric", "value"])


def load(source) -> pd.DataFrame:
    """Tidy results: one row per cell × metric, parameters as ``param.<name>`` columns.

    Columns: dataset, method, family, seed, metric, value, status, error, run_id, method_name, then the parameters.
    A failed cell gives one row with ``metric`` and ``value`` missing. ``source``: a results directory, a
    ``ResultsStore`` or records.
    """
    recs = records(source)
    frame = cells(recs).merge(metric_frame(recs), on="run_id", how="left")
    first = ["dataset", "method", "family", "seed", "metric", "value", "status", "error", "run_id", "method_name"]
    return frame[first + [c for c in frame.columns if c not in first]]


def summary(tidy: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Per dataset × method × metric: mean, std (ddof = 1), n, ci_low, ci_high (95 % t over seeds), family.

    Args:
        tidy: :func:`load`'s frame (only its ok rows with a finite value count).
        metrics: only these keys (default: all).
    """
    from ntkbayes.stats import t_interval

    ok = tidy[(tidy["status"] == "ok") & tidy["metric"].notna()]
    if metrics is not None:
        ok = ok[ok["metric"].isin(list(metrics))]
    rows = []
    for (ds, method, metric), g in ok.groupby(["dataset", "method", "metric"], sort=False):
        v = [float(x) for x in g["value"] if math.isfinite(float(x))]
        mean, low, high = t_interval(v)
        std = float(pd.Series(v).std(ddof=1)) if len(v) > 1 else math.nan
        rows.append({"dataset": ds, "method": method, "family": g["family"].iloc[0], "metric": metric,
                     "mean": mean, "std": std, "n": len(v), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["dataset", "method", "family", "metric", "mean", "std", "n", "ci_low",
                                       "ci_high"])


__all__ = ["CELL_COLUMNS", "PARAM_PREFIX", "cells", "load", "metric_frame", "records", "summary"]
