"""``ntkbayes report DIR``: one static HTML page of a results directory (issue 6).

The page holds the run's provenance (suites, git commits, package versions, devices, metric conventions), the
leaderboards (``report.leaderboard``'s HTML export), the method-to-method comparison (``report.comparison``: the
NTK-vs-references headline, the main matrices and links to every table) and the figures, drawn from the saved
predictions when missing or older than ``records.jsonl``:

    figures/reliability_<dataset>           reliability diagrams, test points pooled over seeds (ECE bins)
    figures/risk_coverage_<dataset>         risk–coverage curves, pooled over seeds
    figures/ood_hist_<dataset>_<set>        uncertainty-score histograms, ID test vs each OOD set
    figures/uncertainty_map_<dataset>       2-D datasets only: max p and mutual information on the saved grid
    figures/compare_<dataset>_<split>       comparison heatmaps (``ntkbayes compare``)

It needs no network: no CDN style sheets or scripts; images are ``<img src="figures/…png">`` links relative to the
page (each linking its PDF), so the page stays small and opens offline with the results directory.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkbayes.errors import UserError
from ntkbayes.harness.store import RECORDS_FILE, ResultsStore
from ntkbayes.metrics.calibration import DEFAULT_N_BINS
from ntkbayes.metrics.selective import risk_coverage
from ntkbayes.predictive import Predictive
from ntkbayes.report import figures as fg
from ntkbayes.report.comparison import (
    HEADLINE_INTRO,
    MATRIX_MEASURES,
    compare_dir,
    compare_store,
    format_number,
    headline_tables,
    heatmap_stem,
    load_runs,
    read_matrices,
    safe_name,
)
from ntkbayes.report.leaderboard import effective_records, leaderboard

#: Matrices shown inline on the page (all others are linked): the headline divergence, decision agreement and the
#: rank agreement of epistemic uncertainty, on test points.
INLINE_MATRICES = ("test/js", "test/agree", "test/spearman/mutual_info")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1400px;padding:1em 2em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.9em}
th,td{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #888}
table.kv td{text-align:left;white-space:normal}
figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}nav ul{columns:3}.note{color:#666;font-size:.9em}
"""


def _esc(x) -> str:
    return html.escape(str(x))


def _rel(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), page_dir.resolve())).as_posix()


def _table(df: pd.DataFrame, index_name: str = "") -> str:
    """An HTML table of a DataFrame, numbers through ``format_number`` (∞, n/a), all text escaped."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in [index_name or (df.index.name or ""), *df.columns])
    rows = []
    for idx, row in df.iterrows():
        cells = "".join(
            f"<td>{_esc(format_number(v) if isinstance(v, (float, int, np.floating, np.integer)) else v)}</td>"
            for v in row
        )
        rows.append(f"<tr><td>{_esc(idx)}</td>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _kv(items: Mapping) -> str:
    rows = "".join(f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in items.items())
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


# -- figures from saved predictions ------------------------------------------------------------------------------
def _stale(png: Path, since: float) -> bool:
    return not png.exists() or png.stat().st_mtime < since


def build_figures(root: str | Path, *, force: bool = False) -> dict[str, list[tuple[str, Path]]]:
    """Draw the per-dataset figures of a results directory (only those missing or older than records.jsonl).

    Returns:
        dataset → [(caption, PNG path)] for the reliability diagrams, risk–coverage curves, OOD histograms and,
        for 2-D datasets, the uncertainty maps.
    """
    root = Path(root)
    runs = load_runs(root)
    store = ResultsStore(root)
    since = math.inf if force else (root / RECORDS_FILE).stat().st_mtime
    out: dict[str, list[tuple[str, Path]]] = {}
    for dataset in sorted(runs):
        seeds = {s: ms for s, ms in sorted(runs[dataset].items()) if ms}
        labels = sorted({lab for ms in seeds.values() for lab in ms})
        name = safe_name(dataset)
        stems = {"rel": root / "figures" / f"reliability_{name}", "rc": root / "figures" / f"risk_coverage_{name}",
                 "map": root / "figures" / f"uncertainty_map_{name}"}
        arrays = {(s, lab): store.load_arrays(rec["run_id"]) for s, ms in seeds.items() for lab, rec in ms.items()}
        ood_sets = sorted({k[4:-6] for a in arrays.values() for k in a
                           if k.startswith("ood_") and k.endswith("_probs")})
        n_seeds = len(seeds)
        pooled = f"test points of {n_seeds} seed{'s' if n_seeds > 1 else ''} pooled"
        entries: list[tuple[str, Path]] = []

        tests = {lab: _pooled_test(arrays, lab) for lab in labels}
        png = stems["rel"].with_suffix(".png")
        if _stale(png, since):
            fg.reliability_diagrams(tests, stems["rel"], title=f"{dataset}: reliability diagrams ({pooled}; "
                                    f"{DEFAULT_N_BINS} equal-width bins, last bin closed)")
        entries.append((f"Reliability diagrams ({pooled}).", png))
        png = stems["rc"].with_suffix(".png")
        if _stale(png, since):
            curves = {lab: tuple(t.numpy() for t in risk_coverage(*tests[lab])) for lab in labels}
            fg.risk_coverage_curves(curves, stems["rc"], title=f"{dataset}: risk–coverage ({pooled})")
        entries.append((f"Risk–coverage curves, ranked by max p ({pooled}).", png))
        for ood in ood_sets:
            stem = root / "figures" / f"ood_hist_{name}_{safe_name(ood)}"
            png = stem.with_suffix(".png")
            if _stale(png, since):
                data = {}
                for lab in labels:
                    keyed = [(a["test_probs"], a[f"ood_{ood}_probs"]) for (s, lb), a in arrays.items()
                             if lb == lab and f"ood_{ood}_probs" in a]
                    if not keyed:
                        continue
                    pid = [Predictive(torch.from_numpy(t)) for t, _ in keyed]
                    pood = [Predictive(torch.from_numpy(o)) for _, o in keyed]
                    data[lab] = {sc: (torch.cat([p.score(sc) for p in pid]).numpy(),
                                      torch.cat([p.score(sc) for p in pood]).numpy()) for sc in fg.DEFAULT_HIST_SCORES}
                fg.ood_histograms(data, stem, ood_name=f"OOD: {ood}",
                                  title=f"{dataset}: uncertainty scores, ID test vs OOD set {ood!r} ({n_seeds} "
                                  f"seed{'s' if n_seeds > 1 else ''} pooled; larger = more OOD)")
            entries.append((f"Uncertainty scores on ID test points vs OOD set {ood}.", png))
        first = next(iter(seeds))
        grids = {lab: arrays[(first, lab)] for lab in labels if "grid_probs" in arrays.get((first, lab), {})}
        if grids:
            png = stems["map"].with_suffix(".png")
            if _stale(png, since):
                grid_x = next(iter(grids.values()))["grid_x"]
                fg.uncertainty_maps(grid_x, {lab: a["grid_probs"] for lab, a in grids.items()}, stems["map"],
                                    title=f"{dataset} (seed {first}): confidence and mutual information over the "
                                    "plane (standardized inputs)")
            entries.append((f"Confidence max p (top) and mutual information (bottom) over the plane, seed {first}; "
                            "white lines: decision boundaries.", png))
        out[dataset] = entries
    return out


def _pooled_test(arrays: Mapping[tuple[int, str], Mapping[str, np.ndarray]], label: str):
    """Averaged test probabilities (N_total, C) float64 and labels (N_total,) of one method, seeds concatenated."""
    parts = [(torch.from_numpy(a["test_probs"]).double().mean(0), torch.from_numpy(a["test_labels"]))
             for (_, lab), a in arrays.items() if lab == label]
    probs = torch.cat([p for p, _ in parts])
    return probs / probs.sum(-1, keepdim=True), torch.cat([y for _, y in parts]).long()


# -- the page ----------------------------------------------------------------------------------------------------
def _compared_all(root: Path, dataset: str, seeds: Mapping[int, Mapping[str, dict]]) -> bool:
    """Whether DIR/compare/<dataset>/ holds a test matrix over every method (not one filtered by --methods)."""
    path = compare_dir(root, dataset) / "test__js.csv"
    if not path.exists():
        return False
    labels = {lab for ms in seeds.values() for lab in ms}
    return set(pd.read_csv(path, index_col=0).index.astype(str)) == labels


def _provenance(records: list[dict]) -> str:
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]

    def values(key: str) -> str:
        vals = sorted({str(r.get(key)) for r in records if r.get(key) not in (None, "")})
        return ", ".join(vals) if vals else "—"

    commits = sorted({f"{r.get('git_commit')}{' (dirty)' if r.get('git_dirty') else ''}" for r in records
                      if r.get("git_commit")})
    stamps = sorted(str(r["timestamp"]) for r in records if r.get("timestamp"))
    devices = sorted({f"{r.get('device')} ({r['device_name']})" if r.get("device_name") else str(r.get("device"))
                      for r in ok if r.get("device")})
    facts = {
        "suite": values("suite"),
        "cells": f"{len(ok)} ok, {len(failed)} failed",
        "git commit": ", ".join(commits) or "—",
        "device": ", ".join(devices) or "—",
        "host": values("hostname"),
        "recorded": f"{stamps[0]} … {stamps[-1]}" if stamps else "—",
        "report built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    parts = [_kv(facts)]
    versions: dict[str, set[str]] = {}
    for r in records:
        for k, v in (r.get("versions") or {}).items():
            versions.setdefault(k, set()).add(str(v))
    if versions:
        parts.append("<h3>Package versions</h3>" + _kv({k: ", ".join(sorted(v)) for k, v in sorted(versions.items())}))
    conv = next((r["conventions"] for r in ok if r.get("conventions")), None)
    if conv:
        parts.append("<h3>Metric conventions</h3>"
                     + _kv({k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in conv.items()}))
    if failed:
        rows = pd.DataFrame([{"dataset": r.get("dataset_label") or r["dataset"],
                              "method": r.get("method_label") or r["method"], "seed": r["seed"],
                              "error": str(r.get("error"))[:200]} for r in failed]).set_index("dataset")
        parts.append("<h3>Failed cells</h3>" + _table(rows, "dataset"))
    return "\n".join(parts)


def _figure_html(caption: str, png: Path, page_dir: Path) -> str:
    pdf = png.with_suffix(".pdf")
    img = f'<img src="{_esc(_rel(png, page_dir))}" alt="{_esc(caption)}" loading="lazy">'
    if pdf.exists():
        img = f'<a href="{_esc(_rel(pdf, page_dir))}">{img}</a>'
    return f"<figure>{img}<figcaption>{_esc(caption)}</figcaption></figure>"


def _comparison_html(root: Path, datasets: list[str], page_dir: Path) -> str:
    results = {ds: read_matrices(root, ds) for ds in datasets}
    results = {ds: m for ds, m in results.items() if m}
    if not results:
        return '<p class="note">No comparison tables (run <code>ntkbayes compare DIR</code>).</p>'
    parts = ["<h3>How close are NTK ensembles to Bayesian references?</h3>", f"<p>{_esc(HEADLINE_INTRO)}</p>"]
    for ds, table in headline_tables(results).items():
        parts.append(f"<h4>{_esc(ds)}</h4>")
        if isinstance(table, str):
            parts.append(f'<p class="note">{_esc(table)}</p>')
        else:
            parts.append(_table(table, "NTK variant"))
            if table.attrs.get("ood_sets"):
                parts.append(f'<p class="note">OOD columns: mean over {_esc(", ".join(table.attrs["ood_sets"]))}.</p>')
    summary = root / "compare" / "summary.md"
    if summary.exists():
        parts.append(f'<p>Markdown: <a href="{_esc(_rel(summary, page_dir))}">compare/summary.md</a></p>')
    for ds, mats in results.items():
        parts.append(f'<h3 id="compare-{_esc(safe_name(ds))}">{_esc(ds)}: method × method</h3>')
        parts.append('<p class="note">Row a, column b = measure(a, b), mean over seeds; KL(p_a ‖ p_b) is the only '
                     "asymmetric one.</p>")
        for key in INLINE_MATRICES:
            if key in mats:
                split, measure = key.split("/", 1)
                parts.append(f"<p><b>{_esc(MATRIX_MEASURES[measure][1])}</b> ({_esc(split)})</p>")
                parts.append(_table(mats[key], "method"))
        for split in sorted({k.split("/", 1)[0] for k in mats}):
            png = heatmap_stem(root, ds, split).with_suffix(".png")
            if png.exists():
                where = "test points" if split == "test" else f"OOD set {split[4:]}"
                parts.append(_figure_html(f"{ds}: comparison heatmaps on {where}.", png, page_dir))
        links = [f'<a href="{_esc(_rel(p, page_dir))}">{_esc(p.name)}</a>'
                 for p in sorted(compare_dir(root, ds).glob("*.csv"))]
        parts.append(f'<p class="note">All tables (CSV, full precision; Markdown alongside): {", ".join(links)}</p>')
    return "\n".join(parts)


def build_report(dir: str | Path, output: str | Path | None = None, *, force: bool = False) -> Path:
    """Write the static report page of a results directory; returns its path.

    Args:
        dir: the results directory (records.jsonl + predictions/).
        output: the HTML file; default ``DIR/report.html``. Links to figures and tables are relative to it.
        force: redraw every figure and recompute the comparison even when they are newer than the records.

    Creates the comparison tables (``compare_store``) and figures (``build_figures``) when missing or stale.
    """
    root = Path(dir)
    if not (root / RECORDS_FILE).is_file():
        raise UserError(f"{root}: not a results directory (no {RECORDS_FILE})")
    page = Path(output) if output is not None else root / "report.html"
    page_dir = page.parent
    page_dir.mkdir(parents=True, exist_ok=True)
    records = effective_records(root)
    runs = load_runs(root)  # UserError when there is no ok record
    since = math.inf if force else (root / RECORDS_FILE).stat().st_mtime
    summary = root / "compare" / "summary.md"
    if _stale(summary, since) or not all(_compared_all(root, ds, seeds) for ds, seeds in runs.items()):
        compare_store(root)
    figs = build_figures(root, force=force)
    # the fragment titles each dataset with <h2>; one level down keeps this page's outline
    board = leaderboard(root, "html", standalone=False).replace("<h2>", "<h3>").replace("</h2>", "</h3>")
    datasets = sorted(runs)
    nav = "".join(f'<li><a href="#data-{_esc(safe_name(d))}">{_esc(d)}</a></li>' for d in datasets)
    body = [
        f"<h1>ntkbayes report: {_esc(root.resolve().name)}</h1>",
        '<nav><ul><li><a href="#provenance">Provenance</a></li><li><a href="#leaderboard">Leaderboards</a></li>'
        f'<li><a href="#comparison">Comparison</a></li>{nav}</ul></nav>',
        '<h2 id="provenance">Provenance</h2>', _provenance(records),
        '<h2 id="leaderboard">Leaderboards</h2>', board,
        '<h2 id="comparison">Comparison of predictive distributions</h2>', _comparison_html(root, datasets, page_dir),
    ]
    for ds in datasets:
        body.append(f'<h2 id="data-{_esc(safe_name(ds))}">Figures: {_esc(ds)}</h2>')
        body += [_figure_html(caption, png, page_dir) for caption, png in figs.get(ds, [])]
    text = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>ntkbayes report: {_esc(root.resolve().name)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
    tmp = page.with_name(page.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, page)
    return page


def main_report(args) -> int:
    """CLI ``ntkbayes report DIR [--output FILE]``: writes the page and prints its path."""
    path = build_report(args.dir, getattr(args, "output", None))
    print(f"report: {path}")
    return 0


__all__ = ["INLINE_MATRICES", "build_figures", "build_report", "main_report"]
