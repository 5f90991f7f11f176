"""Plain table writers shared by the leaderboard, the comparison and the lazy-regime study: the one Markdown table
writer, the compact number format and LaTeX escaping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def format_number(value: float, digits: int = 4) -> str:
    """Compact display of a table cell: 4 significant digits, ∞ for +inf, n/a for NaN."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def markdown_table(df: pd.DataFrame, index_name: str = "") -> str:
    """A GitHub Markdown table of a DataFrame (numbers through ``format_number``, strings as they are, "|" escaped);
    the index is the first column, headed ``index_name`` (default: the index's name)."""
    def cell(v) -> str:
        if isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, bool):
            return format_number(v)
        return str(v).replace("|", "\\|")

    head = [index_name or (df.index.name or "")] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cell(h) for h in head) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([cell(str(idx))] + [cell(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "—": "---", "−": "$-$",
                  "≥": r"$\geq$", "≤": r"$\leq$", "·": r"$\cdot$", "‖": r"$\|$", "ρ": r"$\rho$", "★": r"$\star$",
                  "α": r"$\alpha$", "ε": r"$\varepsilon$", "λ": r"$\lambda$", "∞": r"$\infty$"}


def latex_escape(s: str) -> str:
    """Escape LaTeX special characters (and map the few Unicode symbols tables use to math)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(s))


__all__ = ["format_number", "latex_escape", "markdown_table"]
