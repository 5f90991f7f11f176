"""Leaderboards from a results store: methods × metrics per dataset, with intervals and tests over seeds (design.md).

Reads the records through ``ntkbayes.results`` (the store's ``latest()``; no model, no GPU). For each dataset label
and method row (the method label, swept parameters included, e.g. ``ntk_ensemble[mode=network]``), over the seeds
whose effective record is ``ok``:

- the mean and a 95 % Student-t confidence interval over seeds, shown as mean ± half-width (no ± for one seed),
  with the seed count n (``ntkbayes.stats``);
- **bold** = not significantly worse than the best mean (one-sided paired t-test over seeds, level 0.05);
- the rank of the mean per metric (1 = best, ties share the lowest rank) and the row's mean rank over the table's
  metrics with its interval [mean of the lowest, mean of the highest rank the pairwise tests allow];
- a metric a method cannot produce (e.g. mutual information of a single network) is absent: "—", no rank, no bold,
  left out of the mean rank; failed cells are shown, never dropped ("2, failed (1/3)"; "failed" when every seed
  failed).

Sanity flags (``ntkbayes.results.FLAGS``: underfit, not converged, a tuned value on a grid edge, a degenerate
temperature) and the parameters each row ran with on each dataset (``ntkbayes.results.flags``) are joined to every
row of the aggregate (columns ``markers``, ``params`` and one bool column per flag); the renderers show them as
superscript markers with a legend, never hidden.

Rows are in the same order in every table: by family (``record["family"]``, else the method name; ``FAMILY_ORDER``
first), then by label. Directions come from ``ntkbayes.metrics.METRIC_INFO`` (a key it does not know is shown but
neither ranked nor bold). A dataset whose suite names a reference row (``reference.jsonl``) also gets the
``ref/*`` columns and a footnote naming that row (:func:`reference_notes`). Exports (``render``): Markdown, CSV
(long, full precision ``repr(float)``; with ``write_csv`` also a cells CSV holding each cell's parameters once and a
summary CSV), LaTeX (booktabs, tables cut to fit the text width) and HTML (tables cut to fit 1400 px, grouped
headers, sticky first column).
"""

from __future__ import annotations

import enum
import fnmatch
import math
from collections.abc import Iterable

import pandas as pd

from ntkbayes import results as _results
from ntkbayes.metrics import OOD_GROUPS, REFERENCE_METRICS
from ntkbayes.metrics import higher_is_better as _direction
from ntkbayes.stats import compare_methods, t_interval

#: In-distribution metrics a leaderboard shows by default (benchmarks.md §1 keys).
DEFAULT_METRICS = ("cls/acc", "cal/nll", "cal/brier", "cal/ece", "cal/aece", "sel/aurc")

#: OOD scores whose AUROC a leaderboard shows by default: the plain max-softmax baseline and the epistemic
#: (mutual-information) score that Bayesian predictives should improve. Near / far group means replace the
#: per-set columns when the records have them.
DEFAULT_OOD_SCORES = ("msp", "mutual_info")

#: Family order of the rows (families not listed follow, alphabetically): baselines first, the NTK ensembles last.
FAMILY_ORDER = ("map", "linear", "logistic", "temperature", "dropout", "ensemble", "laplace", "gp", "ntk")


class Format(str, enum.Enum):
    """Leaderboard output formats."""

    MD = "md"
    """Markdown tables, one per dataset (or per metric with ``Layout.DATASETS``)."""
    CSV = "csv"
    """Long format, one row per (dataset, method, seed, metric), full precision."""
    LATEX = "latex"
    """booktabs tables that fit the text width, with a legend of abbreviations."""
    HTML = "html"
    """HTML tables that fit 1400 px (a standalone page or a fragment)."""


class Layout(str, enum.Enum):
    """How tables are cut (LaTeX, HTML and Markdown)."""

    GROUPS = "groups"
    """Per dataset, methods × metrics, the metrics cut into groups (ID, each OOD set or group) to fit the width."""
    DATASETS = "datasets"
    """Per metric, methods × datasets, with the mean rank over datasets (the usual paper table)."""


def higher_is_better(key: str) -> bool | None:
    """The direction of a metric key from ``METRIC_INFO``; None when it does not know the key."""
    return _direction(key)


def family_rank(family: str) -> tuple[int, str]:
    """Sort key of a family: its place in ``FAMILY_ORDER``, then its name."""
    return (FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER), family)


def method_order(cells: pd.DataFrame) -> list[str]:
    """Every method label once, by family then label: the row order of every table."""
    first = cells.drop_duplicates("method")
    return sorted(first["method"], key=lambda m: (*family_rank(first.loc[first["method"] == m, "family"].iloc[0]), m))


def default_metrics(keys: Iterable[str]) -> list[str]:
    """``DEFAULT_METRICS`` and the ``ref/*`` metrics present in ``keys``, then the AUROC of each
    ``DEFAULT_OOD_SCORES`` per near / far group when the keys have group means, else per OOD set (in
    first-appearance order)."""
    keys = list(dict.fromkeys(k for k in keys if isinstance(k, str)))
    out = [k for k in (*DEFAULT_METRICS, *REFERENCE_METRICS) if k in keys]
    sets = list(dict.fromkeys(k.split("/")[1] for k in keys if k.startswith("ood/") and k.count("/") == 3))
    groups = [g for g in OOD_GROUPS if g in sets]
    chosen = groups if groups and any(s not in OOD_GROUPS for s in sets) else sets
    for s in chosen:
        out += [k for k in (f"ood/{s}/{score}/auroc" for score in DEFAULT_OOD_SCORES) if k in keys]
    return out


def select_metrics(keys: Iterable[str], patterns: Iterable[str] | None) -> list[str]:
    """Keys matching ``patterns`` (exact keys or shell patterns like ``ood/*/entropy/auroc``), in pattern order;
    no patterns: :func:`default_metrics`."""
    keys = list(dict.fromkeys(k for k in keys if isinstance(k, str)))
    if not patterns:
        return default_metrics(keys)
    out: list[str] = []
    for p in patterns:
        out += [k for k in keys if fnmatch.fnmatchcase(k, p) and k not in out]
    return out


def aggregate(tidy: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Per (dataset, method, metric): mean, std (ddof = 1), n, ci_low, ci_high, rank, rank_low, rank_high, best.

    Args:
        tidy: ``ntkbayes.results.load``'s frame.
        metrics: patterns (see :func:`select_metrics`); None = the default selection per dataset.

    Also per row: family, n_ok, n_failed, n_runs (seeds recorded) and higher_is_better (True / False / None).
    ``n`` = seeds with a finite value; ``n == 0`` with ``n_ok > 0`` means the metric is absent for that method.
    Rows are in :func:`method_order` within each dataset, datasets in first-appearance order.
    """
    cells = tidy.drop_duplicates("run_id")
    order = method_order(cells)
    out = []
    for ds, dsdf in tidy.groupby("dataset", sort=False):
        chosen = select_metrics(dsdf["metric"].dropna().unique(), list(metrics) if metrics else None)
        runs = dsdf.drop_duplicates("run_id")
        rows = [m for m in order if m in set(runs["method"])]
        counts = {m: (int((g["status"] == "ok").sum()), int((g["status"] != "ok").sum()), len(g),
                      str(g["family"].iloc[0])) for m, g in runs.groupby("method", sort=False)}
        base = {m: {"dataset": ds, "method": m, "family": c[3], "n_ok": c[0], "n_failed": c[1], "n_runs": c[2]}
                for m, c in counts.items()}
        if not chosen:  # nothing to tabulate (every run failed): keep the rows so the failures show
            out += [{**base[m], "metric": None, "n": 0} for m in rows]
        for key in chosen:
            higher = higher_is_better(key)
            vals = dsdf[(dsdf["metric"] == key) & (dsdf["status"] == "ok")]
            per_seed = {m: {int(s): float(v) for s, v in zip(g["seed"], g["value"]) if math.isfinite(float(v))}
                        for m, g in vals.groupby("method", sort=False)}
            ranks = compare_methods(per_seed, higher) if higher is not None else {}
            for m in rows:
                v = list(per_seed.get(m, {}).values())
                mean, low, high = t_interval(v)
                std = float(pd.Series(v).std(ddof=1)) if len(v) > 1 else math.nan
                r = ranks.get(m, {})
                out.append({**base[m], "metric": key, "mean": mean, "std": std, "n": len(v), "ci_low": low,
                            "ci_high": high, "rank": r.get("rank", math.nan),
                            "rank_low": r.get("rank_low", math.nan), "rank_high": r.get("rank_high", math.nan),
                            "best": bool(r.get("best", False)), "higher_is_better": higher})
    cols = ["dataset", "method", "family", "metric", "mean", "std", "n", "ci_low", "ci_high", "rank", "rank_low",
            "rank_high", "best", "higher_is_better", "n_ok", "n_failed", "n_runs"]
    agg = pd.DataFrame(out, columns=cols)
    agg["best"] = agg["best"].fillna(False).astype(bool)
    agg = agg.merge(_results.flags(tidy), on=["dataset", "method"], how="left")
    for flag in _results.FLAGS:
        agg[flag] = agg[flag].fillna(False).astype(bool)
    agg[["markers", "params"]] = agg[["markers", "params"]].fillna("")
    agg = agg.merge(reference_notes(tidy), on="dataset", how="left")
    agg["reference"] = agg["reference"].fillna("")
    return agg


def reference_notes(tidy: pd.DataFrame) -> pd.DataFrame:
    """Per dataset whose cells have ``ref/*`` metrics: ``reference``, the footnote naming the reference row
    (:func:`reference_text`). ``tidy``: :func:`ntkbayes.results.load`'s frame."""
    cells = tidy.drop_duplicates("run_id")
    rows = []
    for ds, g in cells.groupby("dataset", sort=False):
        labels = sorted({str(x) for x in g.get("reference", ()) if isinstance(x, str) and x})
        if labels:
            flagged = g[g.get("reference_flagged", pd.Series(index=g.index, dtype=object)).eq(True)]
            rows.append({"dataset": ds, "reference": reference_text(labels, sorted(set(flagged["seed"])))})
    return pd.DataFrame(rows, columns=["dataset", "reference"])


def reference_text(labels: Iterable[str], flagged_seeds: Iterable[int] = ()) -> str:
    """The footnote of a dataset's ``ref/*`` columns: which row is the reference and what was measured."""
    names = " / ".join(labels)
    text = (f"Reference: {names}. The ref/* columns compare each row's predictive mean with the reference row's "
            "(same seed) on the ID test points: top-1 agreement ↑, total variation ↓, KL(reference ‖ row) ↓ in nats "
            "with the row's probabilities floored at 1e-12; the reference row itself has none.")
    seeds = ", ".join(str(int(s)) for s in flagged_seeds)
    return text + (f" Its sampler diagnostics flagged seed(s) {seeds} (R-hat or ESS out of bounds)." if seeds else "")


def mean_ranks(agg: pd.DataFrame, by: str = "dataset") -> pd.DataFrame:
    """Mean rank per (``by``, method) over the ranked metrics (``by="dataset"``) or per (metric, method) over the
    datasets (``by="metric"``): columns mean_rank, mean_rank_low, mean_rank_high, n_ranked."""
    ranked = agg[agg["rank"].notna()]
    g = ranked.groupby([by, "method"], sort=False)
    out = pd.DataFrame({"mean_rank": g["rank"].mean(), "mean_rank_low": g["rank_low"].mean(),
                        "mean_rank_high": g["rank_high"].mean(), "n_ranked": g["rank"].size()})
    return out.reset_index()


def load_tidy(source, datasets: Iterable[str] | None = None, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """``results.load`` with the leaderboard's user checks: a dataset or metric pattern that matches nothing, or no
    records at all, is a ``UserError`` naming it."""
    from ntkbayes.errors import UserError

    try:
        tidy = _results.load(source)
    except ValueError as e:
        raise UserError(str(e)) from None
    if tidy.empty:
        raise UserError(f"{source}: no records to tabulate")
    if datasets:
        unknown = sorted(set(datasets) - set(tidy["dataset"]))
        if unknown:
            have = ", ".join(tidy["dataset"].unique())
            raise UserError(f"--datasets: no records for {', '.join(unknown)}; have {have}")
        tidy = tidy[tidy["dataset"].isin(list(datasets))]
    keys = tidy["metric"].dropna().unique()
    for p in metrics or ():
        if not any(fnmatch.fnmatchcase(k, p) for k in keys):
            raise UserError(f"--metrics: {p!r} matches no metric in the records")
    return tidy


def conventions_text(records: Iterable[dict] = ()) -> str:
    """One sentence of the metric conventions (ECE bins from the records' ``conventions`` when present)."""
    bins = 15
    for rec in records:
        conv = rec.get("conventions") or {}
        if isinstance(conv.get("ece_bins"), int):
            bins = conv["ece_bins"]
            break
    return (f"ECE with {bins} equal-width bins, top-label, L1 (adaptive ECE: {bins} equal-count bins); "
            "NLL in nats from the averaged predictive; Brier summed over classes; "
            "OOD = positive class, larger score = more OOD; AUROC ties averaged; FPR95 = FPR at 95 % TPR.")


def flags_text(markers: Iterable[str]) -> str:
    """The legend of the flag markers used (e.g. "u: mean training accuracy ..."); "" when none is."""
    used = set("".join(markers))
    return "; ".join(f"{m}: {meaning}" for m, meaning in _results.FLAGS.values() if m in used)


def summary_text() -> str:
    """What the numbers, bold and ranks mean (printed above every leaderboard)."""
    return ("Mean ± half-width of the 95 % Student-t confidence interval over n seeds (seed = initialization and "
            "data split); bold = not significantly worse than the best mean (one-sided paired t-test over seeds, "
            "α = 0.05); rank of the mean (1 = best); mean rank over the table's metrics with its interval from the "
            "same pairwise tests; — = the method cannot produce this metric.")


__all__ = ["DEFAULT_METRICS", "DEFAULT_OOD_SCORES", "FAMILY_ORDER", "Format", "Layout", "aggregate",
           "conventions_text", "default_metrics", "flags_text", "family_rank", "higher_is_better", "load_tidy",
           "mean_ranks", "method_order", "reference_notes", "reference_text", "select_metrics", "summary_text"]
