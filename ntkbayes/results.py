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
- :func:`flags`: one row per dataset × method: the sanity flags (:data:`FLAGS`, docs/tuning.md) and the parameters
  the row ran with (``params``: what the suite and the selection file set, per seed where they differ).

Cell columns after the parameters' identity: ``converged`` (False when the fit says ``converged = false``, for one
member or all; None when it does not say), ``temperature`` (a fitted temperature, NaN when none), ``grid_edge``
(the tuned keys whose selected value lies on the edge of their grid, comma-separated), ``tuned`` (the selected
parameters, canonical JSON, "" when none), ``explicit`` (the parameters the suite and the selection set,
canonical JSON), ``reference`` (the method row the cell's ``ref/*`` metrics compare it with, "" when none) and
``reference_flagged`` (that reference cell's sampler flag; None when it has none). A method row whose parameters
differ only in tuned keys across seeds (each seed has its own selection) is one row.

Read from a results directory, :func:`records` joins the posterior-fidelity rows of ``reference.jsonl``
(:mod:`ntkbayes.harness.reference`) into each ok cell's metrics (``ref/agreement``, ``ref/tv``, ``ref/kl``) and
adds ``reference`` (label, run_id, flagged) to the record.

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

#: Per-cell columns after ``CELL_COLUMNS`` (module docstring).
INFO_COLUMNS = ["converged", "temperature", "grid_edge", "tuned", "explicit", "reference", "reference_flagged"]

#: Sanity flags of a leaderboard row: name → (marker, meaning). Shown, never hidden (docs/tuning.md).
FLAGS = {
    "underfit": ("u", "mean training accuracy more than 0.1 below the best method's on this dataset"),
    "not_converged": ("c", "a fit reported converged = false"),
    "grid_edge": ("e", "a tuned or fitted hyperparameter lies on the edge of its search grid"),
    "degenerate_temperature": ("t", "a fitted temperature outside [0.2, 5]"),
}

#: "Far below": the underfit flag's gap in training accuracy (absolute) to the dataset's best method.
UNDERFIT_GAP = 0.1

#: Temperatures outside this range are degenerate (a collapse to near-hard or near-uniform predictions).
TEMPERATURE_RANGE = (0.2, 5.0)




def records(source) -> list[dict]:
    """The effective record of every cell (``ResultsStore.latest()``), in first-appearance order.

    ``source``: a results directory, a ``ResultsStore``, or an iterable of records (taken as effective already).
    From a directory or store, the rows of ``reference.jsonl`` are joined in (module docstring). Raises ValueError
    when a directory has no ``records.jsonl``.
    """
    from ntkbayes.harness.store import RECORDS_FILE, ResultsStore

    if isinstance(source, (str, Path)):
        if not (Path(source) / RECORDS_FILE).is_file():
            raise ValueError(f"{source}: not a results directory (no {RECORDS_FILE})")
        source = ResultsStore(source)
    if not isinstance(source, ResultsStore):
        return [_drop_constant_member_scores(r) for r in source]
    from ntkbayes.harness.reference import rows_by_run_id

    rows = rows_by_run_id(source.root)
    return [_join_reference(_drop_constant_member_scores(r), rows) for r in source.latest().values()]


def _join_reference(rec: dict, rows: Mapping[str, list[dict]]) -> dict:
    """``rec`` with the ``ref/*`` metrics of its reference row (same run_id and dataset label) and ``reference``."""
    match = [r for r in rows.get(rec["run_id"], ()) if r["dataset_label"] == rec.get("dataset_label")]
    if rec["status"] != "ok" or not match:
        return rec
    row = match[-1]  # one per dataset label unless the file was edited by hand: the last in file order
    return {**rec, "metrics": {**(rec.get("metrics") or {}), **row["metrics"]},
            "reference": {"label": row["reference_label"], "run_id": row["reference_run_id"],
                          "flagged": row.get("reference_flagged")}}


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
        tuned = (rec.get("selection") or {}).get("params") or {}
        untuned = {k: v for k, v in (rec.get("params") or {}).items() if k not in tuned}
        row_key = json.dumps([rec["method"], untuned, sorted(tuned)], sort_keys=True, default=str)
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
        row.update(_info(rec))
        for k, v in (rec.get("params") or {}).items():
            row[PARAM_PREFIX + k] = _param_value(v)
        rows.append(row)
    first = CELL_COLUMNS + INFO_COLUMNS
    frame = pd.DataFrame(rows, columns=first + sorted({k for r in rows for k in r} - set(first)))
    return frame.astype({"seed": "int64"})


def _converged(fit_info: Mapping) -> bool | None:
    """False when ``fit_info`` says a fit did not converge (``converged``: a bool or one per member; or per member
    in ``members``), True when it says every one did, None when it does not say."""
    values = fit_info.get("converged")
    if values is None and isinstance(fit_info.get("members"), list):
        values = [m.get("converged") for m in fit_info["members"] if isinstance(m, Mapping)]
    values = values if isinstance(values, list) else [values]
    values = [v for v in values if isinstance(v, bool)]
    return None if not values else all(values)


#: fit_info keys by which a method says its own hyperparameter fit ended on the edge of its grid (Laplace's prior
#: precision — at the upper edge Laplace is the MAP's predictive —, the GP's kernel hyperparameters, a temperature).
FITTED_EDGE_KEYS = {"prior_precision_at_edge": "prior_precision", "at_grid_edge": "kernel_hyperparameters",
                    "temperature_at_bound": "temperature"}


def _fitted_edges(fit_info: Mapping) -> list[str]:
    """Names of the hyperparameters the fit itself chose on the edge of its grid (``FITTED_EDGE_KEYS``)."""
    return [name for key, name in FITTED_EDGE_KEYS.items() if fit_info.get(key) is True]


def _info(rec: Mapping) -> dict[str, Any]:
    """The ``INFO_COLUMNS`` of a record."""
    fit_info = rec.get("fit_info") or {}
    temp = fit_info.get("temperature")
    sel = rec.get("selection") or {}
    ref = rec.get("reference") if isinstance(rec.get("reference"), Mapping) else {}
    explicit = rec.get("explicit_params")
    explicit = explicit if isinstance(explicit, Mapping) else (sel.get("params") or {})
    return {"converged": _converged(fit_info),
            "temperature": float(temp) if isinstance(temp, (int, float)) and not isinstance(temp, bool) else math.nan,
            "grid_edge": ",".join([*(sel.get("grid_edge") or []), *_fitted_edges(fit_info)]),
            "tuned": _param_value(sel["params"]) if sel.get("params") else "",
            "explicit": _param_value(dict(explicit)),
            "reference": str(ref.get("label") or ""),
            "reference_flagged": ref.get("flagged") if isinstance(ref.get("flagged"), bool) else None}


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


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def params_text(explicit_by_seed: list[dict], label: str = "") -> str:
    """Compact "k=v, k=v0/v1/v2" of the parameters a row ran with (per seed, seed order, where they differ);
    keys already named in the label's brackets are left out."""
    keys = sorted({k for p in explicit_by_seed for k in p if f"{k}=" not in label})
    parts = []
    for k in keys:
        vals = [_short(p[k]) if k in p else "default" for p in explicit_by_seed]
        parts.append(f"{k}={vals[0] if len(set(vals)) == 1 else '/'.join(vals)}")
    return ", ".join(parts)


def flags(tidy: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × method: the sanity flags (:data:`FLAGS`; bool columns), ``markers`` (their markers joined)
    and ``params`` (:func:`params_text` of the cells' explicit parameters). ``tidy``: :func:`load`'s frame."""
    cells_ = tidy.drop_duplicates("run_id")
    acc = tidy[(tidy["metric"] == "train/acc") & (tidy["status"] == "ok")]
    train = acc.groupby(["dataset", "method"], sort=False)["value"].mean()
    best = train.groupby(level=0).max()
    rows = []
    for (ds, method), g in cells_.groupby(["dataset", "method"], sort=False):
        ok = g[g["status"] == "ok"].sort_values("seed")
        temps = [t for t in ok.get("temperature", pd.Series(dtype=float)) if math.isfinite(float(t))]
        lo, hi = TEMPERATURE_RANGE
        f = {"underfit": bool((ds, method) in train.index and train[(ds, method)] < best[ds] - UNDERFIT_GAP),
             "not_converged": any(c is False for c in ok.get("converged", [])),
             "grid_edge": any(bool(e) for e in ok.get("grid_edge", [])),
             "degenerate_temperature": any(not lo <= float(t) <= hi for t in temps)}
        explicit = [json.loads(e) if isinstance(e, str) and e else {} for e in ok.get("explicit", [])]
        rows.append({"dataset": ds, "method": method, **f,
                     "markers": "".join(FLAGS[k][0] for k, on in f.items() if on),
                     "params": params_text(explicit, method)})
    return pd.DataFrame(rows, columns=["dataset", "method", *FLAGS, "markers", "params"])


__all__ = ["CELL_COLUMNS", "FLAGS", "INFO_COLUMNS", "PARAM_PREFIX", "TEMPERATURE_RANGE", "UNDERFIT_GAP", "cells",
           "flags", "load", "metric_frame", "params_text", "records", "summary"]
