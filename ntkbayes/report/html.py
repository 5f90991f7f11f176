"""``ntkbayes report DIR``: one static HTML page of a results directory.

The page holds the run's provenance (suites, git commits, package versions, devices, metric conventions), the
leaderboards (``report.leaderboard``'s HTML export), the method-to-method comparison (``report.comparison``: the
NTK-vs-references headline, the main matrices and links to every table) and the figures, drawn from the saved
predictions when missing or older than ``records.jsonl``:

    figures/reliability_<dataset>                   reliability diagrams, test points pooled over seeds (ECE bins)
    figures/risk_coverage_<dataset>                 risk–coverage curves, pooled over seeds
    figures/ood_hist_<dataset>_<set>[_pK]           uncertainty-score histograms, ID test vs each OOD set (pages)
    figures/uncertainty_map_<dataset>_confidence    2-D datasets only: max p on the saved grid
    figures/uncertainty_map_<dataset>_mi            2-D datasets only: mutual information on the saved grid
    figures/compare_<dataset>_test[_pK]             comparison heatmaps (``ntkbayes compare``; pages)

It reads the results only through the store's API (``ntkbayes.results`` for records, ``ResultsStore
.load_predictions`` for the saved predictives, ``load_arrays`` only for the uncertainty-map grid the runner saved
as ``grid_x`` / ``grid_probs``). It needs no network: no CDN style sheets or scripts; images are
``<img src="figures/…png">`` links relative to the page (each linking its PDF). The page is byte-deterministic: no
build time, sorted orders.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkbayes import results as _results
from ntkbayes.errors import UserError
from ntkbayes.harness.store import RECORDS_FILE, ResultsStore
from ntkbayes.metrics.calibration import DEFAULT_N_BINS
from ntkbayes.metrics.selective import risk_coverage
from ntkbayes.report import figures as fg
from ntkbayes.report.comparison import (
    HEADLINE_INTRO,
    MATRIX_MEASURES,
    compare_dir,
    compare_store,
    headline_tables,
    heatmap_stem,
    load_runs,
    read_matrices,
    safe_name,
)
from ntkbayes.report.export import leaderboard
from ntkbayes.report.tables import format_number

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
def _pages(stem: Path) -> list[Path]:
    """The PNG pages a figure function wrote for ``stem`` (``figures.page_stems``), in page order."""
    pages, k = [], 1
    while True:
        page = fg.page_stems(stem, k)[-1]
        png = page.with_name(page.name + ".png")
        if not png.exists():
            return pages
        pages.append(png)
        k += 1


def _fresh(stem: Path, since: float) -> list[Path] | None:
    """The pages of ``stem`` when they exist and are newer than ``since``; None when they must be drawn."""
    pages = _pages(stem)
    return pages if pages and all(p.stat().st_mtime >= since for p in pages) else None


def _pngs(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.suffix == ".png"]


def build_figures(root: str | Path, *, force: bool = False) -> dict[str, list[tuple[str, Path]]]:
    """Draw the per-dataset figures of a results directory (only those missing or older than records.jsonl).

    Returns:
        dataset → [(caption, PNG path)] for the reliability diagrams, risk–coverage curves, OOD histograms and,
        for 2-D datasets, the uncertainty maps (one entry per page).
    """
    root = Path(root)
    runs = load_runs(root)
    store = ResultsStore(root)
    since = math.inf if force else (root / RECORDS_FILE).stat().st_mtime
    return {dataset: _dataset_figures(root, store, dataset, runs[dataset], since) for dataset in sorted(runs)}


def _dataset_figures(root: Path, store: ResultsStore, dataset: str, per_seed, since: float):
    seeds = {s: ms for s, ms in sorted(per_seed.items()) if ms}
    labels = sorted({lab for ms in seeds.values() for lab in ms})
    name = safe_name(dataset)
    figdir = root / "figures"
    preds = {(s, lab): store.load_predictions(rec["run_id"]) for s, ms in seeds.items() for lab, rec in ms.items()}
    n_seeds = len(seeds)
    pooled = f"test points of {n_seeds} seed{'s' if n_seeds > 1 else ''} pooled"
    entries: list[tuple[str, Path]] = []

    stem = figdir / f"reliability_{name}"
    tests = {lab: _pooled_test(preds, lab) for lab in labels}
    pages = _fresh(stem, since) or _pngs(fg.reliability_diagrams(
        tests, stem, title=f"{dataset}: reliability diagrams ({pooled}; {DEFAULT_N_BINS} equal-width bins, "
        "last bin closed)"))
    entries += [(f"Reliability diagrams ({pooled}).", p) for p in pages]
    stem = figdir / f"risk_coverage_{name}"
    pages = _fresh(stem, since) or _pngs(fg.risk_coverage_curves(
        {lab: tuple(t.numpy() for t in risk_coverage(*tests[lab])) for lab in labels}, stem,
        title=f"{dataset}: risk–coverage ({pooled})"))
    entries += [(f"Risk–coverage curves, ranked by max p ({pooled}).", p) for p in pages]
    for ood in sorted({o for _, _, per in preds.values() for o in per}):
        stem = figdir / f"ood_hist_{name}_{safe_name(ood)}"
        pages = _fresh(stem, since)
        if pages is None:
            data = {}
            for lab in labels:
                pairs = [(t, per[ood]) for (_, lb), (t, _, per) in preds.items() if lb == lab and ood in per]
                if pairs:
                    scores = [sc for sc in fg.DEFAULT_HIST_SCORES
                              if all(sc in p.available_scores for pair in pairs for p in pair)]
                    data[lab] = {sc: (torch.cat([t.score(sc) for t, _ in pairs]).numpy(),
                                      torch.cat([o.score(sc) for _, o in pairs]).numpy()) for sc in scores}
            pages = _pngs(fg.ood_histograms(
                data, stem, ood_name=f"OOD: {ood}", title=f"{dataset}: uncertainty scores, ID test vs OOD set "
                f"{ood!r} ({n_seeds} seed{'s' if n_seeds > 1 else ''} pooled; larger = more OOD)"))
        entries += [(f"Uncertainty scores on ID test points vs OOD set {ood}.", p) for p in pages]
    entries += _map_entries(store, figdir / f"uncertainty_map_{name}", dataset, seeds, labels, since)
    return entries


def _map_entries(store: ResultsStore, stem: Path, dataset: str, seeds, labels, since: float):
    """Uncertainty maps of the first seed, from the grid the runner saved beside the predictions."""
    first = next(iter(seeds))
    grids = {}
    for lab in labels:
        rec = seeds[first].get(lab)
        arrays = store.load_arrays(rec["run_id"]) if rec is not None else {}
        if "grid_probs" in arrays and "grid_x" in arrays:
            grids[lab] = (arrays["grid_x"], arrays["grid_probs"])
    if not grids:
        return []
    parts = [stem.with_name(f"{stem.name}_{q}") for q in ("confidence", "mi")]
    fresh = [_fresh(p, since) for p in parts]
    if any(f is None for f in fresh):
        grid_x = next(iter(grids.values()))[0]
        fg.uncertainty_maps(grid_x, {lab: g[1] for lab, g in grids.items()}, stem,
                            title=f"{dataset} (seed {first}), standardized inputs")
        fresh = [_pages(p) for p in parts]
    captions = ("Confidence max p over the plane", "Mutual information over the plane (shared scale)")
    return [(f"{c}, seed {first}; white lines: decision boundaries.", p) for c, ps in zip(captions, fresh)
            for p in ps]


def _pooled_test(preds, label: str):
    """Averaged test probabilities (N_total, C) float64 and labels (N_total,) of one method, seeds concatenated."""
    parts = [(test.probs, y) for (_, lab), (test, y, _) in preds.items() if lab == label]
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
    cells = _results.cells(root)
    families = dict(zip(cells["method"], cells["family"]))
    parts = ["<h3>How close are NTK ensembles to Bayesian references?</h3>", f"<p>{_esc(HEADLINE_INTRO)}</p>"]
    for ds, table in headline_tables(results, families).items():
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
            where = "test points" if split == "test" else f"OOD set {split[4:]}"
            for png in _pages(heatmap_stem(root, ds, split)):
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
    records = _results.records(root)
    runs = load_runs(root)  # UserError when there is no ok record
    since = math.inf if force else (root / RECORDS_FILE).stat().st_mtime
    summary = root / "compare" / "summary.md"
    stale = not summary.exists() or summary.stat().st_mtime < since
    if stale or not all(_compared_all(root, ds, seeds) for ds, seeds in runs.items()):
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


__all__ = ["INLINE_MATRICES", "build_figures", "build_report"]
