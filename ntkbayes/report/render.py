"""Leaderboard renderers: Markdown, LaTeX (booktabs, cut to the text width), HTML (cut to 1400 px) and CSV.

Every renderer draws the same :class:`Table` specs (``tables``): rows in the leaderboard's family order, one column
per metric (``Layout.GROUPS``) or per dataset (``Layout.DATASETS``), cells "mean ± CI half-width", bold = not
significantly worse than the best, a superscript rank (Markdown and HTML), "—" where a method cannot produce the
metric, and the mean rank with its interval in the last column. Wide tables are cut into consecutive parts whose
estimated width fits (``LATEX_TEXTWIDTH`` pt at ``\\footnotesize``, ``HTML_WIDTH`` px), each part repeating the
method column; the pdflatex test in tests/report checks the estimate.

Sanity flags (``ntkbayes.results.FLAGS``) follow the method label as superscript letters (u underfit, c not
converged, e grid edge, t degenerate temperature; ``Layout.DATASETS``: the union over datasets, with a note saying
on which dataset), explained under each table; the parameters each row ran with on the dataset (what the suite and
the selection file set, "a/b/c" where seeds differ) are listed under each table (``Layout.GROUPS``), so LaTeX keeps
its width budget.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import re
from dataclasses import dataclass, field

import pandas as pd

from ntkbayes.report.leaderboard import Layout, flags_text, mean_ranks, method_order, summary_text
from ntkbayes.report.tables import latex_escape, markdown_table

#: Text width of a standard 10 pt ``article`` page in pt (LaTeX's default \textwidth for letter and A4 paper).
LATEX_TEXTWIDTH = 345.0

#: Width in px that HTML tables must fit (the report page at 1400 px, minus the body margins).
HTML_WIDTH = 1400

#: Method labels longer than this are abbreviated in LaTeX tables (with a legend under the table).
LATEX_LABEL_CHARS = 16

_SUPERSCRIPT = str.maketrans("0123456789uect", "⁰¹²³⁴⁵⁶⁷⁸⁹ᵘᵉᶜᵗ")

#: Short column names (LaTeX and HTML headers) and what they stand for (the legend).
SHORT = {"cls/acc": "Acc", "cal/nll": "NLL", "cal/brier": "Brier", "cal/ece": "ECE", "cal/aece": "aECE",
         "cal/mce": "MCE", "cal/cwece": "cwECE", "sel/aurc": "AURC"}
SCORE_SHORT = {"msp": "MSP", "entropy": "H", "expected_entropy": "EH", "mutual_info": "MI", "variance": "Var",
               "energy": "Energy", "max_logit": "MaxLogit"}
OOD_SHORT = {"auroc": "AUROC", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out", "fpr95": "FPR95"}
#: The posterior-fidelity columns (group "vs reference"; ``ntkbayes.metrics.reference``) and their legend.
REF_SHORT = {"ref/agreement": "Agree", "ref/tv": "TV", "ref/kl": "KL"}
REF_LEGEND = {"Agree": "top-1 agreement with the reference row", "TV": "total variation to the reference row",
              "KL": "KL(reference ‖ row), nats"}
LEGEND = {"Acc": "accuracy", "NLL": "negative log-likelihood (nats)", "Brier": "Brier score",
          "ECE": "expected calibration error", "aECE": "adaptive ECE", "MCE": "maximum calibration error",
          "cwECE": "classwise ECE", "AURC": "area under the risk-coverage curve", "MSP": "1 − max p",
          "H": "predictive entropy", "EH": "expected entropy", "MI": "mutual information", "Var": "member variance",
          "Energy": "−logsumexp of the mean logits", "MaxLogit": "−max of the mean logits"}


@dataclass
class Column:
    """One column: its key (metric or dataset), group header, short header, direction and one cell per row."""

    key: str
    group: str
    short: str
    higher: bool | None
    cells: list[tuple[str, str, str | None, bool]] = field(default_factory=list)  # (mean, ±, rank, bold)


@dataclass
class Table:
    """One leaderboard table (or one part of a cut one)."""

    title: str
    rows: list[str]
    n: list[str] | None
    columns: list[Column]
    mean_rank: list[str] | None
    part: tuple[int, int] = (1, 1)
    markers: list[str] = field(default_factory=list)
    """Flag markers per row ("" for none)."""
    params: list[str] = field(default_factory=list)
    """Parameters per row ("" for none; ``Layout.GROUPS`` only)."""
    notes: list[str] = field(default_factory=list)
    """``Layout.DATASETS``: "method: u on digits" per flagged row."""
    reference: str = ""
    """The footnote naming the reference row of the ``ref/*`` columns ("" when the table has none)."""

    def marker(self, i: int) -> str:
        return self.markers[i] if i < len(self.markers) else ""

    def flags_legend(self) -> str:
        """The flags legend (and per-dataset notes) of this table, "" when no row is flagged."""
        text = flags_text(self.markers)
        if text and self.notes:
            text += "; flagged on: " + "; ".join(self.notes)
        return ("Flags: " + text) if text else ""

    def params_legend(self) -> str:
        """"Parameters: row: k=v, ...; ..." of the rows with parameters, "" when none has."""
        items = [f"{r}: {p}" for r, p in zip(self.rows, self.params) if p]
        return ("Parameters: " + "; ".join(items)) if items else ""


def column_names(key: str) -> tuple[str, str]:
    """(group header, short header) of a metric key: ("ID", "Acc"), ("OOD heldout", "MI AUROC")."""
    if key in SHORT:
        return "ID", SHORT[key]
    if key in REF_SHORT:
        return "vs reference", REF_SHORT[key]
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == "ood":
        return f"OOD {parts[1]}", f"{SCORE_SHORT.get(parts[2], parts[2])} {OOD_SHORT.get(parts[3], parts[3])}"
    if len(parts) == 4 and parts[0] == "shift":
        return f"shift {parts[1]} {parts[2]}", SHORT.get(f"cls/{parts[3]}", SHORT.get(f"cal/{parts[3]}", parts[3]))
    return "", key


def _decimals(means) -> int:
    """Decimals so the column's smallest non-zero |mean| shows two significant digits (3 to 6)."""
    nz = [abs(v) for v in means if math.isfinite(v) and v != 0]
    return 3 if not nz else max(3, min(6, math.ceil(-math.log10(min(nz))) + 1))


def _cell(r, d: int) -> tuple[str, str, str | None, bool]:
    if r is None or r["n"] == 0:
        failed = r is not None and r["n_ok"] == 0 and r["n_failed"] > 0
        return ("failed" if failed else "—"), "", None, False
    pm = f"{(r['ci_high'] - r['ci_low']) / 2:.{d}f}" if math.isfinite(r["ci_high"]) else ""
    mean = f"{r['mean']:.{d}f}" + (f" (n={r['n']})" if r["n"] != r["n_ok"] else "")
    return mean, pm, (str(int(r["rank"])) if math.isfinite(r["rank"]) else None), bool(r["best"])


def _n_text(r) -> str:
    return f"{r['n_ok']}" if not r["n_failed"] else f"{r['n_ok']}, failed ({r['n_failed']}/{r['n_runs']})"


def _rank_text(mr: pd.DataFrame, key: tuple) -> str:
    if key not in mr.index:
        return "—"
    r = mr.loc[key]
    return f"{r['mean_rank']:.1f} [{r['mean_rank_low']:.1f}, {r['mean_rank_high']:.1f}]"


def tables(agg: pd.DataFrame, layout: Layout = Layout.GROUPS) -> list[Table]:
    """The table specs of an aggregate (``leaderboard.aggregate``), uncut."""
    out = []
    if Layout(layout) is Layout.GROUPS:
        mr = mean_ranks(agg, "dataset").set_index(["dataset", "method"])
        for ds, g in agg.groupby("dataset", sort=False):
            rows = list(dict.fromkeys(g["method"]))
            first = g.drop_duplicates("method").set_index("method")
            cols = []
            for key in (k for k in dict.fromkeys(g["metric"]) if isinstance(k, str)):
                gk = g[g["metric"] == key].set_index("method")
                d = _decimals(gk["mean"])
                cols.append(Column(key, *column_names(key), gk["higher_is_better"].iloc[0],
                                   [_cell(gk.loc[m], d) for m in rows]))
            out.append(Table(ds, rows, [_n_text(first.loc[m]) for m in rows], cols,
                             [_rank_text(mr, (ds, m)) for m in rows],
                             markers=[_get(first, m, "markers") for m in rows],
                             params=[_get(first, m, "params") for m in rows],
                             reference=_reference(g, [c.key for c in cols])))
        return out
    mr = mean_ranks(agg, "metric").set_index(["metric", "method"])
    order = list(dict.fromkeys(agg["method"].sort_index(kind="stable")))
    fam = dict(zip(agg["method"], agg["family"]))
    from ntkbayes.report.leaderboard import family_rank

    order = sorted(order, key=lambda m: (*family_rank(fam[m]), m))
    for key, g in agg[agg["metric"].notna()].groupby("metric", sort=False):
        rows = [m for m in order if m in set(g["method"])]
        cols = []
        for ds, gd in g.groupby("dataset", sort=False):
            gd = gd.set_index("method")
            d = _decimals(gd["mean"])
            cols.append(Column(ds, "", ds, gd["higher_is_better"].iloc[0],
                               [_cell(gd.loc[m] if m in gd.index else None, d) for m in rows]))
        marks = {m: {} for m in rows}
        for ds, method, mk in zip(g["dataset"], g["method"], g.get("markers", [""] * len(g))):
            for c in mk or "":
                marks[method].setdefault(c, []).append(ds)
        notes = [f"{m}: " + ", ".join(f"{c} on {', '.join(d)}" for c, d in marks[m].items()) for m in rows if marks[m]]
        notes_ref = [f"{ds}: {_reference(gd, [key])}" for ds, gd in g.groupby("dataset", sort=False)
                     if _reference(gd, [key])]
        out.append(Table(key, rows, None, cols, [_rank_text(mr, (key, m)) for m in rows],
                         markers=["".join(marks[m]) for m in rows], notes=notes, reference=" ".join(notes_ref)))
    return out


def _reference(g: pd.DataFrame, keys: list[str]) -> str:
    """The dataset's reference footnote (``leaderboard.reference_notes``) when ``keys`` show a ``ref/*`` metric."""
    notes = [x for x in g.get("reference", ()) if isinstance(x, str) and x]
    return notes[0] if notes and any(k in REF_SHORT for k in keys) else ""


def _get(frame: pd.DataFrame, row: str, col: str) -> str:
    v = frame.loc[row, col] if col in frame.columns else ""
    return v if isinstance(v, str) else ""


def cut(table: Table, width, budget: float, fixed: float) -> list[Table]:
    """Cut a table's columns into consecutive parts of estimated width ≤ budget (each repeats the row labels and n;
    the last one carries the mean rank). ``width(column)`` estimates one column; ``fixed`` the row-label columns."""
    rank_w = width(Column("", "", "mean rank", None, [(t, "", None, False) for t in table.mean_rank or []]))
    parts, current, used = [], [], fixed
    for col in table.columns:
        w = width(col)
        if current and used + w > budget:
            parts.append(current)
            current, used = [], fixed
        current.append(col)
        used += w
    if current and used + rank_w > budget:
        parts.append(current)
        current = []
    parts.append(current)
    out = []
    for i, cols in enumerate(parts):
        last = i == len(parts) - 1
        out.append(dataclasses.replace(table, columns=cols, mean_rank=table.mean_rank if last else None,
                                       part=(i + 1, len(parts))))
    return out


def _arrow(higher: bool | None) -> str:
    return {True: "↑", False: "↓", None: ""}[higher]


# -- Markdown ----------------------------------------------------------------------------------------------------
def to_markdown(agg: pd.DataFrame, *, title: str = "Leaderboard", conventions: str = "",
                layout: Layout = Layout.GROUPS) -> str:
    """Markdown: a heading and one table per dataset (``GROUPS``) or per metric (``DATASETS``)."""
    lines = [f"# {title}", "", summary_text() + (" " + conventions if conventions else ""), ""]
    for t in tables(agg, layout):
        data = {}
        if t.n is not None:
            data["n"] = t.n
        for c in t.columns:
            texts = []
            for mean, pm, rank, bold in c.cells:
                text = mean + (f" ± {pm}" if pm else "")
                texts.append((f"**{text}**" if bold else text) + (f" {rank.translate(_SUPERSCRIPT)}" if rank else ""))
            data[f"{c.key} {_arrow(c.higher)}".strip()] = texts
        data["mean rank"] = t.mean_rank
        index = [r + (f" {t.marker(i).translate(_SUPERSCRIPT)}" if t.marker(i) else "") for i, r in enumerate(t.rows)]
        lines += [f"## {t.title}", "", markdown_table(pd.DataFrame(data, index=index), "method")]
        lines += [f"{x}\n" for x in (t.flags_legend(), t.params_legend(), t.reference) if x]
    return "\n".join(lines)


# -- LaTeX -------------------------------------------------------------------------------------------------------
def _abbreviate(labels: list[str]) -> dict[str, str]:
    """Short forms of long method labels: words cut to 4 letters, bracketed values to their first 3 letters."""
    out: dict[str, str] = {}
    for lab in labels:
        if len(lab) <= LATEX_LABEL_CHARS:
            out[lab] = lab
            continue
        name, _, rest = lab.partition("[")
        short = "_".join(w[:4] for w in name.split("_"))
        vals = [v.split("=")[-1][:3] for v in rest.rstrip("]").split(",") if v] if rest else []
        short += f"[{','.join(vals)}]" if vals else ""
        cand, i = short, 2
        while cand in out.values():
            cand, i = f"{short}{i}", i + 1
        out[lab] = cand
    return out


def _latex_width(col: Column) -> float:
    """Estimated width in pt at \\footnotesize, bold included (digits 4.7 pt, \\scriptsize ± part 3.9 pt per
    character plus 6.5 pt for ±, tabcolsep 2 × 3 pt); measured against pdflatex by the tests."""
    cells = max((4.7 * len(m) + (3.9 * len(p) + 6.5 if p else 0) for m, p, _, _ in col.cells), default=0.0)
    head = 6.0 * len(col.short) + 9.0  # capitals and the arrow
    return max(cells, head) + 6.0


def to_latex(agg: pd.DataFrame, *, conventions: str = "", layout: Layout = Layout.GROUPS,
             textwidth: float = LATEX_TEXTWIDTH, table_env: str = "table") -> str:
    """LaTeX: booktabs tables cut to ``textwidth`` pt, \\footnotesize, grouped headers with \\cmidrule, bold via
    \\textbf, long method labels abbreviated with a legend under each table."""
    out = ["% requires \\usepackage{booktabs}; tables fit a \\textwidth of "
           f"{textwidth:g} pt at \\footnotesize"]
    for t in tables(agg, layout):
        abbr = _abbreviate(t.rows)
        label_w = max(4.6 * len(abbr.get(r, r)) + 3.3 * len(t.marker(i))
                      for i, r in enumerate([*t.rows, "Method"])) + 6.0
        n_w = 0.0 if t.n is None else max(4.3 * len(_latex_n(n)) for n in [*t.n, "n"]) + 6.0
        for part in cut(t, _latex_width, textwidth, label_w + n_w):
            out += _latex_table(part, abbr, conventions, table_env)
    return "\n".join(out)


def _latex_n(n: str) -> str:
    m = re.match(r"(\d+), failed \((\d+)/(\d+)\)", n)
    return f"{m.group(1)}/{m.group(3)}" if m else n


def _latex_table(t: Table, abbr: dict[str, str], conventions: str, env: str) -> list[str]:
    what = "" if t.part == (1, 1) else f" (part {t.part[0]} of {t.part[1]})"
    base = re.sub(r"[^A-Za-z0-9]+", "-", t.title).strip("-")
    slug = base + (f"-{t.part[0]}" if t.part[1] > 1 else "")
    if t.part[0] == 1:
        caption = latex_escape(f"{t.title}{what}: {summary_text()} {conventions}".strip())
    else:
        caption = latex_escape(f"{t.title}{what}, continued from Table ") + rf"\ref{{tab:leaderboard-{base}-1}}."
    spec = "l" + ("r" if t.n is not None else "") + "r" * len(t.columns) + ("r" if t.mean_rank else "")
    lead = ["Method"] + (["$n$"] if t.n is not None else [])
    head1, rules, start = [""] * len(lead), [], len(lead) + 1
    for group, cols in _runs([c.group for c in t.columns]):
        if group:
            head1.append(rf"\multicolumn{{{cols}}}{{c}}{{{latex_escape(group)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + cols - 1}}}")
        else:
            head1 += [""] * cols
        start += cols
    head2 = lead + [f"{latex_escape(c.short)} {latex_escape(_arrow(c.higher))}".strip() for c in t.columns]
    if t.mean_rank:
        head1.append("")
        head2.append("Mean rank")
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{3pt}",
             rf"\caption{{{caption}}}", rf"\label{{tab:leaderboard-{slug}}}", rf"\begin{{tabular}}{{{spec}}}",
             r"\toprule"]
    if any(c.group for c in t.columns):
        lines += [" & ".join(head1) + r" \\", " ".join(rules)]
    lines += [" & ".join(head2) + r" \\", r"\midrule"]
    for i, row in enumerate(t.rows):
        mark = rf"\textsuperscript{{{t.marker(i)}}}" if t.marker(i) else ""
        parts = [latex_escape(abbr[row]) + mark] + ([latex_escape(_latex_n(t.n[i]))] if t.n is not None else [])
        for c in t.columns:
            mean, pm, _, bold = c.cells[i]
            text = latex_escape(mean) + (rf"{{\scriptsize$\pm${pm}}}" if pm else "")
            parts.append(rf"\textbf{{{text}}}" if bold else text)
        if t.mean_rank:
            parts.append(latex_escape(t.mean_rank[i]))
        lines.append(" & ".join(parts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    legend = [f"{a} = {full}" for full, a in abbr.items() if a != full]
    known = {**LEGEND, **REF_LEGEND}
    shorts = dict.fromkeys(w for c in t.columns for w in c.short.split() if w in known)
    legend += [f"{s}: {known[s]}" for s in shorts]
    legend += [x for x in (t.flags_legend(), t.params_legend() if t.part[0] == 1 else "",
                           t.reference if t.part[0] == 1 else "") if x]
    if legend:
        lines += [r"\par\smallskip\parbox{\linewidth}{\scriptsize " + latex_escape("; ".join(legend) + ".") + "}"]
    lines += [rf"\end{{{env}}}", ""]
    return lines


def _runs(groups: list[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for g in groups:
        if out and out[-1][0] == g:
            out[-1] = (g, out[-1][1] + 1)
        else:
            out.append((g, 1))
    return out


# -- HTML --------------------------------------------------------------------------------------------------------
LEADERBOARD_CSS = (
    ".lb-wrap{max-width:100%;overflow-x:auto;margin-bottom:1.6em}"
    "table.ntkbayes-leaderboard{border-collapse:collapse;font-size:13px}"
    "table.ntkbayes-leaderboard th,table.ntkbayes-leaderboard td{padding:3px 6px;border-bottom:1px solid #ddd;"
    "text-align:right;white-space:nowrap}"
    "table.ntkbayes-leaderboard th.grp{text-align:center;border-bottom:1px solid #888}"
    "table.ntkbayes-leaderboard .m{text-align:left;position:sticky;left:0;background:#fff;z-index:1}"
    "table.ntkbayes-leaderboard .pm{font-size:11px;color:#555}"
    "table.ntkbayes-leaderboard td.na{color:#999;text-align:center}"
    "table.ntkbayes-leaderboard sup.flag{color:#b00;font-weight:bold;margin-left:2px}"
)


def _html_width(col: Column) -> float:
    """Estimated width in px at 13 px (7.2 px per character, the ± part 6 px, padding 12 px)."""
    cells = max((7.2 * len(m) + 6.0 * (len(p) + 2 if p else 0) + (7 if r else 0) for m, p, r, _ in col.cells),
                default=0.0)
    return max(cells, 7.6 * (len(col.short) + 2)) + 12.0


def to_html(agg: pd.DataFrame, *, title: str = "Leaderboard", conventions: str = "", standalone: bool = True,
            layout: Layout = Layout.GROUPS, textwidth: float = HTML_WIDTH) -> str:
    """HTML tables (class ``ntkbayes-leaderboard``) cut to ``textwidth`` px; ``standalone`` wraps them in a page."""
    esc = html.escape
    body = [f"<style>{LEADERBOARD_CSS}</style>", f"<p>{esc(summary_text())} {esc(conventions)}</p>"]
    specs = tables(agg, layout)
    with_ref = any(t.reference for t in specs)
    legend = "; ".join(f"{k}: {v}" for k, v in {**LEGEND, **(REF_LEGEND if with_ref else {})}.items())
    body.append(f'<p class="note">Columns: {esc(legend)}.</p>')
    for t in specs:
        label_w = max(7.2 * len(r) + 6.0 * len(t.marker(i)) for i, r in enumerate([*t.rows, "method"])) + 12
        n_w = 0.0 if t.n is None else max(7.2 * len(n) for n in [*t.n, "n"]) + 12
        body.append(f"<h2>{esc(t.title)}</h2>")
        for part in cut(t, _html_width, textwidth - 60, label_w + n_w):
            body.append(_html_table(part))
        body += [f'<p class="note">{esc(x)}</p>' for x in (t.flags_legend(), t.params_legend(), t.reference) if x]
    fragment = "\n".join(body)
    if not standalone:
        return fragment + "\n"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>body{{font-family:system-ui,sans-serif;margin:2em}}</style>\n"
            f"</head>\n<body>\n<h1>{esc(title)}</h1>\n{fragment}\n</body>\n</html>\n")


def _html_table(t: Table) -> str:
    esc = html.escape
    grouped = any(c.group for c in t.columns)
    span = ' rowspan="2"' if grouped else ""
    head1 = [f'<th class="m"{span}>method</th>'] + ([f"<th{span}>n</th>"] if t.n is not None else [])
    head2 = []
    for group, cols in _runs([c.group for c in t.columns]) if grouped else []:
        head1.append(f'<th class="grp" colspan="{cols}">{esc(group)}</th>')
    for c in t.columns:
        th = f'<th title="{esc(c.key)}">{esc(c.short)} {_arrow(c.higher)}</th>'
        (head2 if grouped else head1).append(th)
    if t.mean_rank:
        head1.append(f"<th{span}>mean rank</th>")
    rows = []
    for i, row in enumerate(t.rows):
        mark = f'<sup class="flag">{esc(t.marker(i))}</sup>' if t.marker(i) else ""
        tds = [f'<td class="m">{esc(row)}{mark}</td>'] + ([f"<td>{esc(t.n[i])}</td>"] if t.n is not None else [])
        for c in t.columns:
            mean, pm, rank, bold = c.cells[i]
            if not pm and not rank and mean in ("—", "failed"):
                tds.append(f'<td class="na">{esc(mean)}</td>')
                continue
            text = esc(mean) + (f' <span class="pm">± {esc(pm)}</span>' if pm else "")
            tds.append(f"<td>{f'<b>{text}</b>' if bold else text}{f'<sup>{rank}</sup>' if rank else ''}</td>")
        if t.mean_rank:
            tds.append(f"<td>{esc(t.mean_rank[i])}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    heads = f"<tr>{''.join(head1)}</tr>" + (f"<tr>{''.join(head2)}</tr>" if grouped else "")
    return (f'<div class="lb-wrap"><table class="ntkbayes-leaderboard"><thead>{heads}</thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


# -- CSV ---------------------------------------------------------------------------------------------------------
def to_csv(tidy: pd.DataFrame, agg: pd.DataFrame) -> str:
    """Long CSV: dataset, method, family, seed, metric, value (``repr``), best ("*" or ""), rank, status, error,
    run_id; only the metrics in ``agg`` (failed runs always appear, with empty metric and value). Parameters are in
    the cells CSV (``export.write_csv``), once per cell."""
    marks = {(r.dataset, r.method, r.metric): (r.best, r.rank) for r in agg.itertuples()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "method", "family", "seed", "metric", "value", "best", "rank", "status", "error",
                "run_id"])
    ds_pos = {d: i for i, d in enumerate(dict.fromkeys(tidy["dataset"]))}
    m_pos = {m: i for i, m in enumerate(method_order(tidy.drop_duplicates("run_id")))}
    order = sorted(range(len(tidy)), key=lambda i: (ds_pos[tidy["dataset"].iat[i]], m_pos[tidy["method"].iat[i]],
                                                    int(tidy["seed"].iat[i])))  # stable: metric order kept
    for r in tidy.iloc[order].itertuples():
        metric = r.metric if isinstance(r.metric, str) else ""
        if r.status == "ok" and (r.dataset, r.method, metric) not in marks:
            continue
        best, rank = marks.get((r.dataset, r.method, metric), (False, math.nan))
        value = "" if not metric or pd.isna(r.value) else repr(float(r.value))
        error = r.error if isinstance(r.error, str) else ""
        w.writerow([r.dataset, r.method, r.family, r.seed, metric, value, "*" if best else "",
                    "" if not math.isfinite(rank) else int(rank), r.status, error, r.run_id])
    return buf.getvalue()


def summary_csv(agg: pd.DataFrame) -> str:
    """Summary CSV: dataset, method, family, metric, mean, std, n, ci_low, ci_high, best, rank (full precision),
    then the sanity flags (one column each, "*" when raised) and the row's parameters. A metric with no value (one
    the method cannot produce, or every seed failed: the long CSV has the status) has no row."""
    from ntkbayes.results import FLAGS

    cols = ["dataset", "method", "family", "metric", "mean", "std", "n", "ci_low", "ci_high", "best", "rank",
            *FLAGS, "params"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in agg[agg["metric"].notna() & (agg["n"] > 0)].itertuples():  # n = 0: a metric the method lacks
        num = [("" if not math.isfinite(v) else repr(float(v))) for v in (r.mean, r.std)]
        ci = [("" if not math.isfinite(v) else repr(float(v))) for v in (r.ci_low, r.ci_high)]
        w.writerow([r.dataset, r.method, r.family, r.metric, *num, r.n, *ci, "*" if r.best else "",
                    "" if not math.isfinite(r.rank) else int(r.rank),
                    *("*" if getattr(r, f, False) else "" for f in FLAGS), getattr(r, "params", "")])
    return buf.getvalue()


__all__ = ["HTML_WIDTH", "LATEX_TEXTWIDTH", "LEADERBOARD_CSS", "Column", "Table", "column_names", "cut", "tables",
           "to_csv", "to_html", "to_latex", "to_markdown"]
