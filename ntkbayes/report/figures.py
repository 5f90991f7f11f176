"""Figures of the report: reliability diagrams, OOD score histograms, risk–coverage curves, uncertainty
maps over the plane, generic (lazy-regime) line plots (comparison heatmaps: ``report.heatmaps``).

Every function takes plain data (arrays, tensors, DataFrames keyed by method label) and an output path *stem*
(``figures/reliability_moons``), writes ``<stem>.png`` and ``<stem>.pdf`` (``FORMATS``) and returns those paths.
Figures are built on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through ``pyplot``'s global
state, so they work headless, from threads, and leak no open figures. Conventions follow benchmarks.md §1:
reliability bins are the ECE bins (15 equal-width on top-label confidence, last bin closed:
``metrics.reliability_bins``), risk–coverage is ``metrics.risk_coverage``, uncertainty scores are ``Predictive``'s
(natural log).

Figures are sized to be read at 1400 px: at most ``MAX_COLUMNS`` panels per row at ``DPI``; grids with more methods
than that (OOD histograms; comparison heatmaps: ``report.heatmaps``) are split into
pages ``<stem>.png``, ``<stem>_p2.png``, … (``page_stems``). Each figure has at most one colour bar. Files are
byte-deterministic: no creation dates or software versions in PNG or PDF metadata, layout computed once per figure
(constrained layout on the first save, then frozen, which also halves the drawing time).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ntkbayes.metrics.calibration import DEFAULT_N_BINS, reliability_bins, top_label
from ntkbayes.predictive import Predictive

#: Raster resolution of the PNGs: sharp in a browser at 100 %, a 4-panel row (~12 in) fits 1400 px, and small files.
DPI = 100

#: File formats of every figure: PNG for the HTML report. Add "pdf" for vector figures for a paper
#: (``figures.FORMATS = ("png", "pdf")``); the report links a figure's PDF when it exists. PNG only by default: the
#: PDF pass costs about a fifth of the drawing time and few readers use it.
FORMATS = ("png",)

#: Panels per row before a multi-method figure wraps (or pages), so every figure fits 1400 px at ``DPI``.
MAX_COLUMNS = 4

#: Metadata written into every file: none that varies between runs or machines (dates, versions).
_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}

#: Side of one panel in inches.
PANEL = 3.0

#: Scores drawn in OOD histograms by default: the confidence-based baseline and the epistemic part (the total
#: entropy ranks points almost like 1 − max p; its AUROCs are in the leaderboard).
DEFAULT_HIST_SCORES = ("msp", "mutual_info")

#: A score whose range over ID and OOD points is below this (relative) is drawn as "constant" instead of as a
#: histogram with one spike (mutual information and variance of S = 1 predictors are exactly 0).
CONSTANT_SCORE_TOL = 1e-12

SCORE_LABELS = {
    "msp": "1 − max p",
    "entropy": "predictive entropy H(p)",
    "expected_entropy": "expected entropy",
    "mutual_info": "mutual information",
    "variance": "member variance",
    "energy": "energy −logsumexp z̄",
    "max_logit": "−max logit",
}


def page_stems(stem: str | Path, pages: int) -> list[Path]:
    """The stems of a figure's pages: ``stem`` then ``stem_p2``, ``stem_p3``, …"""
    stem = Path(stem)
    return [stem] + [stem.with_name(f"{stem.name}_p{i}") for i in range(2, pages + 1)]


def _save(fig: Figure, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for ext in FORMATS:  # constrained layout already fits everything: no extra bbox_inches="tight" draw
        paths.append(stem.with_name(f"{stem.name}.{ext}"))
        fig.savefig(paths[-1], dpi=DPI, metadata=_METADATA.get(ext))
        fig.set_layout_engine("none")  # keep the positions of the first save: one layout pass per figure
    return paths


def _figure(width: float, height: float) -> Figure:
    with sns.axes_style("whitegrid"):
        return Figure(figsize=(width, height), layout="constrained")


def _suptitle(fig: Figure, text: str) -> None:
    """Figure title, wrapped to the figure's width (about 9 characters per inch at the default size)."""
    fig.suptitle(textwrap.fill(text, max(30, int(fig.get_figwidth() * 9))))


def _grid(fig: Figure, n: int, ncols: int | None = None, **kw):
    ncols = min(n, ncols or MAX_COLUMNS)
    nrows = math.ceil(n / ncols)
    with sns.axes_style("whitegrid"):
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, **kw)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _check_mapping(data: Mapping, name: str) -> None:
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{name}: expected a non-empty mapping of method label -> data")


def method_palette(labels: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per method label (sorted order), so one method has one colour in every figure."""
    labels = sorted(set(labels))
    colours = sns.color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))
    return dict(zip(labels, colours))


def reliability_diagrams(
    data: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    stem: str | Path,
    *,
    n_bins: int = DEFAULT_N_BINS,
    title: str | None = None,
) -> list[Path]:
    """One reliability diagram per method: accuracy vs mean confidence in the ECE bins.

    Args:
        data: method label → (probs (N, C) averaged predictive or a ``Predictive``, labels (N,)).
        stem: output path without suffix.
        n_bins: equal-width bins (the ECE convention, last bin closed).
        title: figure title.

    Returns:
        The written paths, [PNG, PDF].
    """
    _check_mapping(data, "reliability_diagrams: data")
    n = len(data)
    ncols = min(n, MAX_COLUMNS)
    fig = _figure(PANEL * ncols, (PANEL + 0.4) * math.ceil(n / ncols) + 0.6)
    axes = _grid(fig, n, sharex=True, sharey=True)
    for ax, (label, (probs, labels)) in zip(axes, data.items()):
        conf, correct = top_label(probs, labels)
        bins = reliability_bins(conf, correct, n_bins)
        lower, upper = bins.lower.numpy(), bins.upper.numpy()
        acc, mconf, counts = bins.acc.numpy(), bins.conf.numpy(), bins.counts.numpy()
        ne = counts > 0
        width = (upper - lower)[ne]
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfect calibration")
        ax.bar(lower[ne], acc[ne], width=width, align="edge", color="tab:blue", alpha=0.85, edgecolor="white",
               label="accuracy")
        lo, hi = np.minimum(acc, mconf)[ne], np.maximum(acc, mconf)[ne]
        ax.bar(lower[ne], hi - lo, bottom=lo, width=width, align="edge", facecolor="none", edgecolor="tab:red",
               hatch="////", lw=0.8, label="|accuracy − confidence|")
        ax.set_title(f"{label}\nECE {bins.ece():.3f}, N = {conf.shape[0]}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("confidence (max p)", fontsize=9)
        ax.set_ylabel("accuracy", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    _suptitle(fig, title or f"Reliability diagrams ({n_bins} equal-width bins, last bin closed)")
    return _save(fig, stem)


def ood_histograms(
    data: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    stem: str | Path,
    *,
    ood_name: str = "OOD",
    title: str | None = None,
    bins: int = 30,
) -> list[Path]:
    """Histograms of uncertainty scores on in-distribution test points vs OOD points, a row per score and a column
    per method (densities, so sets of different sizes compare).

    Args:
        data: method label → score name → (ID scores (N,), OOD scores (M,)).
        stem: output path without suffix.
        ood_name: legend name of the OOD set.
        title: figure title.
        bins: histogram bins (shared by ID and OOD within a panel).

    Returns:
        The written paths, [PNG, PDF] of each page (``MAX_COLUMNS`` methods per page, ``page_stems``).
    """
    _check_mapping(data, "ood_histograms: data")
    methods = list(data)
    scores = list(dict.fromkeys(s for per in data.values() for s in per))
    pages = [methods[i:i + MAX_COLUMNS] for i in range(0, len(methods), MAX_COLUMNS)]
    paths = []
    for k, (page, page_stem) in enumerate(zip(pages, page_stems(stem, len(pages)))):
        part = f" ({k + 1}/{len(pages)})" if len(pages) > 1 else ""
        paths += _ood_page({m: data[m] for m in page}, scores, page_stem, ood_name, (title or "") + part, bins)
    return paths


def _ood_page(data, scores: list[str], stem, ood_name: str, title: str, bins: int) -> list[Path]:
    methods = list(data)
    fig = _figure(2.8 * len(methods) + 0.4, 2.2 * len(scores) + 0.8)
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(len(scores), len(methods), squeeze=False)
    for j, method in enumerate(methods):
        for i, score in enumerate(scores):
            ax = axes[i, j]
            if i == 0:
                ax.set_title(method, fontsize=9)
            if score not in data[method]:  # e.g. mutual information of a single network: absent, not constant
                ax.text(0.5, 0.5, "not available\n(single member)" if score in ("mutual_info", "variance",
                        "expected_entropy") else "not available", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="0.4")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(SCORE_LABELS.get(score, score), fontsize=8)
                continue
            id_s, ood_s = (np.asarray(v, dtype=np.float64).ravel() for v in data[method][score])
            lo, hi = float(min(id_s.min(), ood_s.min())), float(max(id_s.max(), ood_s.max()))
            ax.set_xlabel(SCORE_LABELS.get(score, score), fontsize=8)
            if hi - lo <= CONSTANT_SCORE_TOL * max(1.0, abs(hi)):
                # e.g. mutual information of a single network (S = 1): identically 0, nothing to separate
                ax.text(0.5, 0.5, f"constant: {hi:.3g}\n(no spread to show)", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="0.4")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            edges = np.linspace(lo, hi, bins + 1)
            for values, colour, name in ((id_s, "tab:blue", "ID test"), (ood_s, "tab:orange", ood_name)):
                density = np.histogram(values, bins=edges, density=True)[0]  # one artist per histogram, not bins
                ax.stairs(density, edges, fill=True, alpha=0.55, color=colour, label=name)
            if j == 0:
                ax.set_ylabel("density")
            ax.tick_params(labelsize=7)
    handles = [h for ax in axes.ravel() for h in [ax.get_legend_handles_labels()] if h[0]]
    if handles:
        fig.legend(*handles[0], loc="outside lower center", ncols=2, fontsize=8)
    _suptitle(fig, title or f"Uncertainty scores: ID test vs {ood_name} (larger = more OOD)")
    return _save(fig, stem)


def risk_coverage_curves(
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    stem: str | Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """Risk–coverage curves of all methods in one panel (``metrics.risk_coverage``: most confident first).

    Args:
        data: method label → (coverage (N,), risk (N,)); the AURC in the legend is mean(risk).
        stem: output path without suffix.
        title: figure title.

    Returns:
        The written paths, [PNG, PDF].
    """
    _check_mapping(data, "risk_coverage_curves: data")
    palette = method_palette(list(data))
    fig = _figure(6.5, 4.2)
    with sns.axes_style("whitegrid"):
        ax = fig.subplots()
    for label, (coverage, risk) in data.items():
        coverage, risk = np.asarray(coverage, dtype=np.float64), np.asarray(risk, dtype=np.float64)
        ax.plot(coverage, risk, color=palette[label], lw=1.6, label=f"{label} (AURC {risk.mean():.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (fraction of most confident test points kept)")
    ax.set_ylabel("risk (error rate among kept points)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(textwrap.fill(title or "Risk–coverage curves (lower is better)", 60))
    return _save(fig, stem)


def _grid_shape(grid_x: np.ndarray) -> tuple[int, int]:
    """(ny, nx) of a row-major grid with x fastest; ValueError if grid_x is not such a grid."""
    g = grid_x.shape[0]
    nx = int(np.argmax(grid_x[:, 1] != grid_x[0, 1])) if (grid_x[:, 1] != grid_x[0, 1]).any() else g
    ny = g // max(nx, 1)
    ok = nx > 1 and ny > 1 and nx * ny == g
    if ok:
        xs, ys = grid_x[:nx, 0], grid_x[::nx, 1]
        ok = bool(np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0)
                  and np.allclose(grid_x.reshape(ny, nx, 2)[..., 0], xs[None, :])
                  and np.allclose(grid_x.reshape(ny, nx, 2)[..., 1], ys[:, None]))
    if not ok:
        raise ValueError(f"grid_x: expected a row-major (G, 2) grid with x fastest, got shape {grid_x.shape}")
    return ny, nx


def uncertainty_maps(
    grid_x: np.ndarray,
    grid_probs: Mapping[str, np.ndarray | torch.Tensor],
    stem: str | Path,
    *,
    points: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    title: str | None = None,
) -> list[Path]:
    """Maps over the plane for 2-D datasets, every method side by side with its decision boundaries (white lines):
    ``<stem>_confidence`` (the probability of the predicted class) and ``<stem>_mi`` (mutual information; shared
    colour scale, so maps compare; "not available" for single-member predictives). One colour bar per figure.

    Args:
        grid_x: (G, 2) grid points, row-major with x fastest (the runner's 64 × 64 grid).
        grid_probs: method label → (S, G, C) member probabilities on the grid (or a ``Predictive``).
        stem: output path without suffix.
        points: optional (P, 2) points to overlay (e.g. training data), coloured by ``point_labels`` (P,).
        title: figure title (the quantity is appended).

    Returns:
        The written paths: [PNG, PDF] of the confidence map, then of the mutual-information map.
    """
    _check_mapping(grid_probs, "uncertainty_maps: grid_probs")
    grid_x = np.asarray(grid_x, dtype=np.float64)
    if grid_x.ndim != 2 or grid_x.shape[1] != 2:
        raise ValueError(f"grid_x: expected shape (G, 2), got {grid_x.shape}")
    ny, nx = _grid_shape(grid_x)
    maps = {}
    for label, gp in grid_probs.items():
        pred = gp if isinstance(gp, Predictive) else Predictive(torch.as_tensor(np.asarray(gp)))
        if pred.num_points != grid_x.shape[0]:
            raise ValueError(f"grid_probs[{label!r}]: {pred.num_points} points, grid_x has {grid_x.shape[0]}")
        p = pred.probs.numpy()
        mi = pred.mutual_info.numpy().reshape(ny, nx) if "mutual_info" in pred.available_scores else None
        maps[label] = (p.max(-1).reshape(ny, nx), mi, p.argmax(-1).reshape(ny, nx), p.shape[-1])
    c_max = max(m[3] for m in maps.values())
    mi_max = max((float(m[1].max()) for m in maps.values() if m[1] is not None), default=0.0) or 1e-12
    stem = Path(stem)
    base = title or "Predictive uncertainty over the plane"
    draw = (grid_x, ny, nx, points, point_labels)
    paths = _map_figure({k: (m[0], m[2], m[3]) for k, m in maps.items()}, draw, (1.0 / c_max, 1.0), "viridis",
                        "max_c p (confidence)", stem.with_name(f"{stem.name}_confidence"), f"{base}: confidence")
    paths += _map_figure({k: (m[1], m[2], m[3]) for k, m in maps.items()}, draw, (0.0, mi_max), "magma",
                         "mutual information (nats)", stem.with_name(f"{stem.name}_mi"), f"{base}: mutual information")
    return paths


def _map_figure(maps, draw, lim, cmap: str, label: str, stem: Path, title: str) -> list[Path]:
    grid_x, ny, nx, points, point_labels = draw
    extent = (grid_x[0, 0], grid_x[nx - 1, 0], grid_x[0, 1], grid_x[-1, 1])
    n = len(maps)
    ncols = min(n, MAX_COLUMNS)
    fig = _figure(2.7 * ncols + 1.0, 2.6 * math.ceil(n / ncols) + 0.7)
    with sns.axes_style("white"):
        axes = _grid(fig, n, sharex=True, sharey=True)
    im = None
    for ax, (name, (img, cls, c)) in zip(axes, maps.items()):
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        if img is None:
            ax.text(0.5, 0.5, "not available\n(single member)", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="0.4")
            continue
        im = ax.imshow(img, origin="lower", extent=extent, aspect="auto", cmap=cmap, vmin=lim[0], vmax=lim[1],
                       interpolation="nearest")
        if c > 1:
            ax.contour(grid_x[:nx, 0], grid_x[::nx, 1], cls, levels=np.arange(c) + 0.5, colors="white",
                       linewidths=0.7)
        if points is not None:
            pts = np.asarray(points)
            ax.scatter(pts[:, 0], pts[:, 1], c=point_labels if point_labels is not None else "k", s=4,
                       cmap="tab10", edgecolors="none", alpha=0.7)
    if im is not None:
        fig.colorbar(im, ax=list(axes), label=label, shrink=0.9)
    _suptitle(fig, title)
    return _save(fig, stem)


def lazy_curves(
    df: pd.DataFrame,
    stem: str | Path,
    *,
    logx: bool = False,
    logy: bool = False,
    xlabel: str = "x",
    ylabel: str = "y",
    hue_title: str | None = None,
    title: str | None = None,
    errorbar: str | None = "sd",
) -> list[Path]:
    """Generic line plot for the lazy-regime study: y against x, one line per ``hue``, one panel per ``facet``.

    Args:
        df: long DataFrame with columns ``x`` and ``y`` (numbers) and optional ``hue`` and ``facet`` (labels).
            Several rows with the same (facet, hue, x) — e.g. seeds — are drawn as their mean with a ±1 std band
            (``errorbar="sd"``; ``None`` draws the mean only).
        stem: output path without suffix.
        logx, logy: logarithmic axes (non-positive values are then left out of the drawing).
        xlabel, ylabel: axis labels; hue_title: legend title; title: figure title.

    Returns:
        The written paths, [PNG, PDF].
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise ValueError("lazy_curves: df: expected a non-empty DataFrame with columns x, y[, hue, facet]")
    missing = [c for c in ("x", "y") if c not in df.columns]
    if missing:
        raise ValueError(f"lazy_curves: df: missing column(s) {', '.join(missing)}")
    df = df.copy()
    df["x"] = df["x"].astype(np.float64)
    df["y"] = df["y"].astype(np.float64)
    if logx:
        df = df[df["x"] > 0]
    if logy:
        df = df[df["y"] > 0]
    has_hue = "hue" in df.columns
    facets = list(dict.fromkeys(df["facet"])) if "facet" in df.columns else [None]
    palette = method_palette([str(h) for h in df["hue"]]) if has_hue else None
    if has_hue:
        df["hue"] = df["hue"].astype(str)
    ncols = min(len(facets), 3)
    fig = _figure(4.3 * ncols + (1.8 if has_hue else 0), 3.4 * math.ceil(len(facets) / ncols) + 0.4)
    axes = _grid(fig, len(facets), ncols=ncols)
    for ax, facet in zip(axes, facets):
        part = df if facet is None else df[df["facet"] == facet]
        sns.lineplot(data=part, x="x", y="y", hue="hue" if has_hue else None, palette=palette, marker="o",
                     errorbar=errorbar, ax=ax, legend=ax is axes[0] and has_hue)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if facet is not None:
            ax.set_title(str(facet), fontsize=10)
    if has_hue and axes[0].get_legend() is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].get_legend().remove()
        fig.legend(handles, labels, title=hue_title, loc="outside right center", fontsize=8)
    if title:
        _suptitle(fig, title)
    return _save(fig, stem)


__all__ = [
    "DEFAULT_HIST_SCORES",
    "DPI",
    "FORMATS",
    "MAX_COLUMNS",
    "page_stems",
    "lazy_curves",
    "method_palette",
    "ood_histograms",
    "reliability_diagrams",
    "risk_coverage_curves",
    "uncertainty_maps",
]
