"""Method × method comparison heatmaps (``ntkbayes compare``), one panel per measure, pages of
``HEATMAP_PANELS_PER_PAGE`` panels two per row so each page fits 1400 px; figure conventions of ``report.figures``."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from ntkbayes.report.figures import _check_mapping, _figure, _grid, _save, _suptitle, page_stems

#: Heatmap panels per page of a comparison figure (2 × 2).
HEATMAP_PANELS_PER_PAGE = 4


def comparison_heatmaps(
    matrices: Mapping[str, pd.DataFrame],
    stem: str | Path,
    *,
    styles: Mapping[str, Mapping] | None = None,
    title: str | None = None,
    fmt: str = ".3f",
) -> list[Path]:
    """Method × method heatmaps, one panel per measure; +inf and NaN cells are grey and written as ∞ / n/a.

    Args:
        matrices: panel title → (M, M) DataFrame (rows and columns method labels; row a, column b = measure(a, b)).
        stem: output path without suffix.
        styles: optional panel title → dict with ``vmin``, ``vmax`` (None or absent: from the finite values),
            ``cmap`` for that panel.
        title: figure title.
        fmt: number format of the cell annotations (written when M ≤ 10).

    Returns:
        The written paths, [PNG, PDF] of each page (``HEATMAP_PANELS_PER_PAGE`` panels, 2 per row, ``page_stems``).
    """
    _check_mapping(matrices, "comparison_heatmaps: matrices")
    names = list(matrices)
    pages = [names[i:i + HEATMAP_PANELS_PER_PAGE] for i in range(0, len(names), HEATMAP_PANELS_PER_PAGE)]
    paths = []
    for k, (page, page_stem) in enumerate(zip(pages, page_stems(stem, len(pages)))):
        part = f" ({k + 1}/{len(pages)})" if len(pages) > 1 else ""
        paths += _heatmap_page({t: matrices[t] for t in page}, page_stem, styles or {},
                               (title or "Method-to-method comparison") + part, fmt)
    return paths


def _heatmap_page(matrices: Mapping[str, pd.DataFrame], stem, styles, title: str, fmt: str) -> list[Path]:
    n = len(matrices)
    m = max(df.shape[0] for df in matrices.values())
    longest = max(len(str(lab)) for df in matrices.values() for lab in df.index)
    side = min(6.0, max(3.4, 0.42 * m + 0.07 * longest + 1.2))  # two panels per row stay within 1400 px
    ncols = min(n, 2)
    fig = _figure(side * ncols, side * math.ceil(n / ncols) + 0.4)
    axes = _grid(fig, n, ncols=ncols)
    for ax, (name, df) in zip(axes, matrices.items()):
        values = df.to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        style = dict(styles.get(name, {}))
        cmap = matplotlib.colormaps[style.get("cmap", "viridis")].with_extremes(bad="0.85")
        shown = finite.any()
        vmin, vmax = style.get("vmin"), style.get("vmax")
        vmin = vmin if vmin is not None else (float(values[finite].min()) if shown else 0.0)
        vmax = vmax if vmax is not None else (float(values[finite].max()) if shown else 1.0)
        im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1)
        ax.grid(False)
        if m <= 10:
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    v = values[i, j]
                    if np.isfinite(v):
                        rgba = cmap(im.norm(v))
                        light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5
                        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                                color="black" if light else "white")
                    else:
                        ax.text(j, i, "∞" if np.isinf(v) else "n/a", ha="center", va="center", fontsize=7,
                                color="0.3")
        ax.set_xticks(range(df.shape[1]), [str(c) for c in df.columns], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(df.shape[0]), [str(i) for i in df.index], fontsize=7)
        ax.set_title(textwrap.fill(name, 34), fontsize=9)
        ax.set_xlabel("method b", fontsize=8)
        ax.set_ylabel("method a", fontsize=8)
        cbar = fig.colorbar(im, ax=ax, shrink=0.7)  # one scale per measure, beside its own panel
        cbar.ax.tick_params(labelsize=7)
    _suptitle(fig, title)
    return _save(fig, stem)


__all__ = ["HEATMAP_PANELS_PER_PAGE", "comparison_heatmaps"]
