"""Leaderboards from a results store: per dataset, methods × metrics, mean ± std over seeds (design.md).

Reads only ``records.jsonl`` (no model, no GPU). For each dataset (label) and each method row (the method label,
swept parameters included, e.g. ``ens[members=8]``), over the seeds whose newest record is ``ok``:

- mean and the *sample* standard deviation (``ddof=1``; shown without ± when one seed), with the seed count n;
- the best mean per metric marked (bold in Markdown, LaTeX and HTML; ``best = "*"`` in CSV), using the metric's
  direction from ``ntkbayes.metrics.metric_info`` (fallback by key: acc/auroc/aupr higher is better, else lower);
  exact ties are all best;
- the rank per metric (1 = best, ties share the lowest rank, pandas ``method="min"``), shown as a superscript, and
  the row's mean rank over the shown metrics;
- failed cells are shown, never dropped: ``n`` reads e.g. "2, failed (1/3)", and a row whose every seed failed
  shows "failed" in its metric cells.

Exports: Markdown, CSV (long format: one row per dataset, method, seed and metric, values at full precision
``repr(float)``, with ``best`` and ``rank`` of the aggregate), LaTeX (booktabs, caption with the conventions) and
HTML (a fragment, or a standalone page). Default metrics (:data:`DEFAULT_METRICS`): accuracy, NLL, Brier, ECE,
adaptive ECE, AURC, and per OOD set the AUROC of MSP and of mutual information.
"""

from __future__ import annotations

import csv
import enum
import fnmatch
import hashlib
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

#: In-distribution metrics a leaderboard shows by default (benchmarks.md §1 keys).
DEFAULT_METRICS = ("cls/acc", "cal/nll", "cal/brier", "cal/ece", "cal/aece", "sel/aurc")

#: OOD scores whose AUROC a leaderboard shows by default for every OOD set: the plain max-softmax baseline and
#: the epistemic (mutual-information) score that Bayesian predictives should improve.
DEFAULT_OOD_SCORES = ("msp", "mutual_info")

#: Fallback directions when ``ntkbayes.metrics`` cannot tell: keys ending in these are higher-is-better.
HIGHER_IS_BETTER_SUFFIXES = ("acc", "auroc", "aupr", "aupr_in", "aupr_out")

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


class Format(str, enum.Enum):
    """Leaderboard output formats."""

    MD = "md"
    """Markdown tables, one per dataset."""
    CSV = "csv"
    """Long format, one row per (dataset, method, seed, metric), full precision."""
    LATEX = "latex"
    """booktabs tables with a caption stating the conventions."""
    HTML = "html"
    """HTML tables (a standalone page or a fragment)."""


# -- reading -----------------------------------------------------------------------------------------------------
def effective_records(source) -> list[dict]:
    """The newest ``ok`` record per run_id (else the newest failed one), in first-appearance order.

    ``source``: a results directory, a :class:`~ntkbayes.harness.store.ResultsStore`, or a list of records.
    """
    if isinstance(source, (str, Path)):
        from ntkbayes.errors import UserError
        from ntkbayes.harness.store import RECORDS_FILE, ResultsStore

        if not (Path(source) / RECORDS_FILE).is_file():
            raise UserError(f"{source}: not a results directory (no {RECORDS_FILE})")
        source = ResultsStore(source)
    if hasattr(source, "latest"):
        return list(source.latest().values())
    latest: dict[str, dict] = {}
    for rec in source:
        prev = latest.get(rec["run_id"])
        if prev is None or rec["status"] == "ok" or prev["status"] != "ok":
            latest[rec["run_id"]] = rec
    return list(latest.values())


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:6]


def long_frame(records: Iterable[Mapping]) -> pd.DataFrame:
    """One row per (record, metric); a failed record gives one row with metric ``None``.

    Columns: dataset, method (row label), method_name, params (canonical JSON), seed, run_id, status, error,
    metric, value. Rows that share a label but differ in parameters (two suites in one store) get a short hash.
    """
    rows = []
    runs = []
    for rec in records:
        ds = rec.get("dataset_label") or rec["dataset"]
        ds_key = json.dumps([rec["dataset"], rec.get("dataset_options", {})], sort_keys=True, default=str)
        label = rec.get("method_label") or rec["method"]
        params = json.dumps(rec.get("params", {}), sort_keys=True, separators=(",", ":"), default=str)
        runs.append((rec, ds, ds_key, label, json.dumps([rec["method"], params])))
    ds_keys: dict[str, set] = {}
    row_keys: dict[tuple, set] = {}
    for _, ds, ds_key, label, row_key in runs:
        ds_keys.setdefault(ds, set()).add(ds_key)
        row_keys.setdefault((ds, label), set()).add(row_key)
    for rec, ds, ds_key, label, row_key in runs:
        ds_name = ds if len(ds_keys[ds]) == 1 else f"{ds} #{_short_hash(ds_key)}"
        row = label if len(row_keys[(ds, label)]) == 1 else f"{label} #{_short_hash(row_key)}"
        base = {"dataset": ds_name, "method": row, "method_name": rec["method"],
                "params": json.loads(row_key)[1], "seed": rec["seed"], "run_id": rec["run_id"],
                "status": rec["status"], "error": rec.get("error")}
        metrics = rec.get("metrics") or {}
        if rec["status"] != "ok" or not metrics:
            rows.append({**base, "metric": None, "value": None})
            continue
        for key, value in metrics.items():
            v = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
            rows.append({**base, "metric": key, "value": v})
    cols = ["dataset", "method", "method_name", "params", "seed", "run_id", "status", "error", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)


# -- metric selection and direction ------------------------------------------------------------------------------
def higher_is_better(key: str) -> bool:
    """Direction of a metric key: ``ntkbayes.metrics.metric_info`` when it knows the key, else by its suffix."""
    try:
        from ntkbayes.metrics import metric_info

        return str(getattr(metric_info(key).direction, "value", "")) == "higher"
    except (ImportError, ValueError, AttributeError):
        return key.rsplit("/", 1)[-1] in HIGHER_IS_BETTER_SUFFIXES


def default_metrics(keys: Iterable[str]) -> list[str]:
    """DEFAULT_METRICS present in ``keys``, then ``ood/<set>/<score>/auroc`` for each set and default score."""
    keys = list(dict.fromkeys(k for k in keys if isinstance(k, str)))
    out = [k for k in DEFAULT_METRICS if k in keys]
    sets = list(dict.fromkeys(k.split("/")[1] for k in keys if k.startswith("ood/") and k.count("/") == 3))
    for s in sets:
        out += [k for k in (f"ood/{s}/{score}/auroc" for score in DEFAULT_OOD_SCORES) if k in keys]
    return out


def select_metrics(keys: Iterable[str], patterns: Iterable[str] | None) -> list[str]:
    """Keys matching ``patterns`` (exact keys or shell patterns like ``ood/*/entropy/auroc``), in pattern order."""
    keys = list(dict.fromkeys(k for k in keys if isinstance(k, str)))
    if not patterns:
        return default_metrics(keys)
    out: list[str] = []
    for p in patterns:
        out += [k for k in keys if fnmatch.fnmatchcase(k, p) and k not in out]
    return out


# -- aggregation -------------------------------------------------------------------------------------------------
def aggregate(long: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Per (dataset, method, metric): mean, std (ddof=1), n (seeds with a finite value), best, rank.

    Also per row: n_ok, n_failed, n_runs (seeds recorded). ``metrics`` are patterns (see :func:`select_metrics`);
    None = the default selection per dataset. Rows keep the order in which they first appear in the store.
    """
    out = []
    for ds, dsdf in long.groupby("dataset", sort=False):
        chosen = select_metrics(dsdf["metric"].dropna().unique(), list(metrics) if metrics else None)
        runs = dsdf.drop_duplicates("run_id")
        row_order = list(dict.fromkeys(runs["method"]))
        counts = {m: (int((g["status"] == "ok").sum()), int((g["status"] != "ok").sum()), len(g))
                  for m, g in runs.groupby("method", sort=False)}
        if not chosen:  # nothing to tabulate (every run failed): keep the rows so the failures show
            out += [{"dataset": ds, "method": m, "metric": None, "mean": math.nan, "std": math.nan, "n": 0,
                     "n_ok": counts[m][0], "n_failed": counts[m][1], "n_runs": counts[m][2],
                     "higher_is_better": False} for m in row_order]
        for key in chosen:
            higher = higher_is_better(key)
            vals = dsdf[(dsdf["metric"] == key) & (dsdf["status"] == "ok")]
            stats = {}
            for m, g in vals.groupby("method", sort=False):
                v = g["value"].astype(float)
                v = v[v.map(math.isfinite)]
                n = len(v)
                stats[m] = (float(v.mean()) if n else math.nan, float(v.std(ddof=1)) if n > 1 else math.nan, n)
            for m in row_order:
                mean, std, n = stats.get(m, (math.nan, math.nan, 0))
                n_ok, n_failed, n_runs = counts[m]
                out.append({"dataset": ds, "method": m, "metric": key, "mean": mean, "std": std, "n": n,
                            "n_ok": n_ok, "n_failed": n_failed, "n_runs": n_runs, "higher_is_better": higher})
    cols = ["dataset", "method", "metric", "mean", "std", "n", "n_ok", "n_failed", "n_runs", "higher_is_better"]
    agg = pd.DataFrame(out, columns=cols)
    agg["rank"] = math.nan
    agg["best"] = False
    for _, g in agg.groupby(["dataset", "metric"], sort=False):
        ok = g[g["mean"].map(math.isfinite)]
        if ok.empty:
            continue
        higher = bool(ok["higher_is_better"].iloc[0])
        agg.loc[ok.index, "rank"] = ok["mean"].rank(method="min", ascending=not higher)
        best = ok["mean"].max() if higher else ok["mean"].min()
        agg.loc[ok.index[ok["mean"] == best], "best"] = True
    return agg


def _decimals(means: Iterable[float]) -> int:
    """Decimals so the column's smallest non-zero |mean| shows two significant digits (3 to 6)."""
    nz = [abs(v) for v in means if math.isfinite(v) and v != 0]
    if not nz:
        return 3
    return max(3, min(6, math.ceil(-math.log10(min(nz))) + 1))


def _cell_parts(r: Mapping, d: int) -> tuple[str, str | None]:
    """(text, rank) of one aggregate row: "0.953 ± 0.004" (or "failed"/"–") and the rank as a string."""
    if r["n"] == 0:
        return ("failed" if r["n_ok"] == 0 and r["n_failed"] else "–"), None
    text = f"{r['mean']:.{d}f}" + (f" ± {r['std']:.{d}f}" if r["n"] > 1 else "")
    if r["n"] != r["n_ok"]:
        text += f" (n={r['n']})"
    return text, (str(int(r["rank"])) if math.isfinite(r["rank"]) else None)


def _n_text(n_ok: int, n_failed: int, n_runs: int) -> str:
    return f"{n_ok}" if not n_failed else f"{n_ok}, failed ({n_failed}/{n_runs})"


def _tables(agg: pd.DataFrame):
    """Per dataset: (dataset, metric keys, rows) with rows = (method, n text, [(text, rank, best)], mean rank)."""
    for ds, g in agg.groupby("dataset", sort=False):
        keys = [k for k in dict.fromkeys(g["metric"]) if isinstance(k, str)]
        dec = {k: _decimals(g.loc[g["metric"] == k, "mean"]) for k in keys}
        rows = []
        for m, gm in g.groupby("method", sort=False):
            cells = []
            for k in keys:
                r = gm[gm["metric"] == k].iloc[0]
                text, rank = _cell_parts(r, dec[k])
                cells.append((text, rank, bool(r["best"])))
            ranks = gm["rank"].dropna()
            r0 = gm.iloc[0]
            rows.append((m, _n_text(int(r0["n_ok"]), int(r0["n_failed"]), int(r0["n_runs"])), cells,
                         f"{ranks.mean():.2f}" if len(ranks) else "–"))
        yield ds, keys, rows


def conventions_text(records: Iterable[Mapping] = ()) -> str:
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


def summary_text() -> str:
    return ("Mean ± sample std (ddof = 1) over n seeds (seed = initialization and data split); "
            "best mean per column in bold; superscript = rank (1 = best).")


def _arrow(key: str) -> str:
    return "↑" if higher_is_better(key) else "↓"


# -- renderers ---------------------------------------------------------------------------------------------------
def to_markdown(agg: pd.DataFrame, *, title: str = "Leaderboard", conventions: str = "") -> str:
    """Markdown: a heading and a table per dataset."""
    lines = [f"# {title}", "", summary_text() + (" " + conventions if conventions else ""), ""]
    for ds, keys, rows in _tables(agg):
        header = ["method", "n", *(f"{k} {_arrow(k)}" for k in keys), "mean rank"]
        lines += [f"## {ds}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for m, n, cells, mean_rank in rows:
            parts = []
            for text, rank, best in cells:
                t = f"**{text}**" if best else text
                parts.append(t + (f" {rank.translate(_SUPERSCRIPT)}" if rank else ""))
            lines.append("| " + " | ".join([_md_escape(m), n, *parts, mean_rank]) + " |")
        lines.append("")
    return "\n".join(lines)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    """Escape LaTeX special characters."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(s))


_LATEX_ARROW = {True: r"$\uparrow$", False: r"$\downarrow$"}


def to_latex(agg: pd.DataFrame, *, conventions: str = "") -> str:
    """LaTeX: one booktabs ``table`` per dataset, best in ``\\textbf``, rank as ``\\textsuperscript``."""
    out = ["% requires \\usepackage{booktabs}"]
    for ds, keys, rows in _tables(agg):
        caption = f"{latex_escape(ds)}: {latex_escape(summary_text())} {latex_escape(conventions)}"
        caption = caption.replace("±", r"$\pm$").replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption.strip()}}}",
                rf"\label{{tab:leaderboard-{re.sub(r'[^A-Za-z0-9]+', '-', ds)}}}",
                r"\begin{tabular}{ll" + "c" * len(keys) + "c}", r"\toprule",
                " & ".join(["Method", "$n$", *(f"{latex_escape(k)} {_LATEX_ARROW[higher_is_better(k)]}"
                                               for k in keys), "mean rank"]) + r" \\", r"\midrule"]
        for m, n, cells, mean_rank in rows:
            parts = []
            for text, rank, best in cells:
                t = latex_escape(text).replace("±", r"$\pm$").replace("–", "--")
                t = rf"\textbf{{{t}}}" if best else t
                parts.append(t + (rf"\textsuperscript{{{rank}}}" if rank else ""))
            out.append(" & ".join([latex_escape(m), latex_escape(n), *parts, mean_rank.replace("–", "--")])
                       + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


_HTML_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em}table.ntkbayes-leaderboard{border-collapse:"
               "collapse;margin-bottom:2em}table.ntkbayes-leaderboard th,table.ntkbayes-leaderboard td{padding:"
               "4px 10px;border-bottom:1px solid #ccc;text-align:right;white-space:nowrap}"
               "table.ntkbayes-leaderboard td:first-child,table.ntkbayes-leaderboard th:first-child{text-align:left}")


def to_html(agg: pd.DataFrame, *, title: str = "Leaderboard", conventions: str = "",
            standalone: bool = True) -> str:
    """HTML tables (class ``ntkbayes-leaderboard``); ``standalone`` wraps them in a page with a title."""
    esc = html.escape
    body = [f"<p>{esc(summary_text())} {esc(conventions)}</p>"]
    for ds, keys, rows in _tables(agg):
        body += [f"<h2>{esc(ds)}</h2>", '<table class="ntkbayes-leaderboard">', "<thead><tr><th>method</th>"
                 "<th>n</th>" + "".join(f"<th>{esc(k)} {_arrow(k)}</th>" for k in keys)
                 + "<th>mean rank</th></tr></thead>", "<tbody>"]
        for m, n, cells, mean_rank in rows:
            tds = []
            for text, rank, best in cells:
                t = f"<b>{esc(text)}</b>" if best else esc(text)
                tds.append(f"<td>{t}{f'<sup>{rank}</sup>' if rank else ''}</td>")
            body.append(f"<tr><td>{esc(m)}</td><td>{esc(n)}</td>{''.join(tds)}<td>{mean_rank}</td></tr>")
        body += ["</tbody>", "</table>"]
    fragment = "\n".join(body)
    if not standalone:
        return fragment + "\n"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n"
            f"{fragment}\n</body>\n</html>\n")


def to_csv(long: pd.DataFrame, agg: pd.DataFrame) -> str:
    """Long CSV: dataset, method, params, seed, metric, value (``repr``), best ("*" or ""), rank, status, error,
    run_id. Only the metrics in ``agg`` (failed runs always appear, with empty metric and value)."""
    marks = {(r.dataset, r.method, r.metric): (r.best, r.rank) for r in agg.itertuples()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "method", "params", "seed", "metric", "value", "best", "rank", "status", "error",
                "run_id"])
    for r in long.itertuples():
        metric = r.metric if isinstance(r.metric, str) else ""
        if r.status == "ok" and (r.dataset, r.method, metric) not in marks:
            continue
        best, rank = marks.get((r.dataset, r.method, metric), (False, math.nan))
        value = "" if not metric or pd.isna(r.value) else repr(float(r.value))
        error = r.error if isinstance(r.error, str) else ""
        w.writerow([r.dataset, r.method, r.params, r.seed, metric, value, "*" if best else "",
                    "" if not math.isfinite(rank) else int(rank), r.status, error, r.run_id])
    return buf.getvalue()


def leaderboard(source, fmt: str | Format = Format.MD, *, metrics: Iterable[str] | None = None,
                datasets: Iterable[str] | None = None, standalone: bool = True, title: str | None = None) -> str:
    """Render the leaderboard of a results directory (or store, or records) in ``fmt``.

    Args:
        metrics: metric keys or shell patterns; default: :data:`DEFAULT_METRICS` and the default OOD AUROCs
            (for CSV: every metric). A pattern that matches nothing is an error.
        datasets: only these dataset labels.
        standalone: HTML only: a full page (default) or just the tables.
    """
    from ntkbayes.errors import UserError

    try:
        fmt = Format(fmt)
    except ValueError:
        raise UserError(f"format: expected one of {', '.join(f.value for f in Format)}, got {fmt!r}") from None
    records = effective_records(source)
    if title is None:
        title = f"Leaderboard: {Path(source).name}" if isinstance(source, (str, Path)) else "Leaderboard"
    long = long_frame(records)
    if datasets:
        unknown = sorted(set(datasets) - set(long["dataset"]))
        if unknown:
            have = ", ".join(long["dataset"].unique())
            raise UserError(f"--datasets: no records for {', '.join(unknown)}; have {have}")
        long = long[long["dataset"].isin(list(datasets))]
    if metrics:
        keys = long["metric"].dropna().unique()
        for p in metrics:
            if not any(fnmatch.fnmatchcase(k, p) for k in keys):
                raise UserError(f"--metrics: {p!r} matches no metric in the records")
    if long.empty:
        raise UserError(f"{source}: no records to tabulate")
    if fmt is Format.CSV:
        return to_csv(long, aggregate(long, metrics or ["*"]))
    agg = aggregate(long, metrics)
    conv = conventions_text(records)
    if fmt is Format.MD:
        return to_markdown(agg, title=title, conventions=conv)
    if fmt is Format.LATEX:
        return to_latex(agg, conventions=conv)
    return to_html(agg, title=title, conventions=conv, standalone=standalone)
