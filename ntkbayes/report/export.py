"""The leaderboard's entry points: render a results directory in one format, or write the CSV files.

:mod:`.leaderboard` aggregates (means, intervals, ranks), :mod:`.render` draws the tables; this module joins them
(so neither imports the other's caller).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ntkbayes import results as _results
from ntkbayes.errors import UserError
from ntkbayes.report import render
from ntkbayes.report.leaderboard import Format, Layout, aggregate, conventions_text, load_tidy


def leaderboard(source, fmt: str | Format = Format.MD, *, metrics: Iterable[str] | None = None,
                datasets: Iterable[str] | None = None, standalone: bool = True, title: str | None = None,
                layout: str | Layout = Layout.GROUPS, textwidth: float | None = None,
                table_env: str = "table") -> str:
    """Render the leaderboard of a results directory (or store, or records) in ``fmt``.

    Args:
        metrics: metric keys or shell patterns; default: :data:`DEFAULT_METRICS` and the default OOD AUROCs
            (for CSV: every metric). A pattern that matches nothing is an error.
        datasets: only these dataset labels.
        standalone: HTML only: a full page (default) or just the tables.
        layout: ``Layout.GROUPS`` (per dataset) or ``Layout.DATASETS`` (per metric, methods × datasets).
        textwidth: width the tables must fit: LaTeX in pt (default 345, a 10 pt ``article`` page), HTML in px
            (default 1400).
        table_env: LaTeX float, ``"table"`` or ``"table*"`` (two-column documents; set ``textwidth`` to the full
            width).
    """
    try:
        fmt, layout = Format(fmt), Layout(layout)
    except ValueError as e:
        raise UserError(f"leaderboard: {e}; formats {[f.value for f in Format]}, layouts "
                        f"{[x.value for x in Layout]}") from None
    if table_env not in ("table", "table*"):
        raise UserError(f"--table-env: expected 'table' or 'table*', got {table_env!r}")
    tidy = load_tidy(source, datasets, metrics)
    if fmt is Format.CSV:
        return render.to_csv(tidy, aggregate(tidy, metrics or ["*"]))
    if title is None:
        title = f"Leaderboard: {Path(source).name}" if isinstance(source, (str, Path)) else "Leaderboard"
    agg = aggregate(tidy, metrics)
    conv = conventions_text(_results.records(source))
    if fmt is Format.MD:
        return render.to_markdown(agg, title=title, conventions=conv, layout=layout)
    if fmt is Format.LATEX:
        return render.to_latex(agg, conventions=conv, layout=layout, textwidth=textwidth or render.LATEX_TEXTWIDTH,
                               table_env=table_env)
    return render.to_html(agg, title=title, conventions=conv, standalone=standalone, layout=layout,
                          textwidth=textwidth or render.HTML_WIDTH)


def write_csv(source, path: str | Path, *, metrics: Iterable[str] | None = None,
              datasets: Iterable[str] | None = None) -> list[Path]:
    """Write the long CSV at ``path`` and beside it ``<stem>_summary.csv`` (dataset, method, family, metric, mean,
    std, n, ci_low, ci_high, best, rank) and ``<stem>_cells.csv`` (one row per cell with its parameters)."""
    tidy = load_tidy(source, datasets, metrics)
    agg = aggregate(tidy, metrics or ["*"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary_path = path.with_name(f"{path.stem}_summary.csv")
    cells_path = path.with_name(f"{path.stem}_cells.csv")
    path.write_text(render.to_csv(tidy, agg), encoding="utf-8")
    summary_path.write_text(render.summary_csv(agg), encoding="utf-8")
    cells = _results.cells(_results.records(source))
    cells = cells[cells["run_id"].isin(set(tidy["run_id"]))]
    cells_path.write_text(cells.to_csv(index=False, lineterminator="\n"), encoding="utf-8")
    return [path, summary_path, cells_path]


__all__ = ["leaderboard", "write_csv"]
