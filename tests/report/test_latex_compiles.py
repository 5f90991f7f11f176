"""Every LaTeX layout compiles on a plain ``article`` page with booktabs without ``Overfull \\hbox`` (skipped when
pdflatex is not installed), and every HTML table part fits 1400 px by the renderer's own estimate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore
from ntkbayes.report import render
from ntkbayes.report.export import leaderboard
from ntkbayes.report.leaderboard import aggregate, load_tidy

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "results" / "default"

#: Twelve methods with long labels, metrics of very different magnitudes, three OOD sets and near / far means.
METHODS = [f"ntk_ensemble[mode=linearized,width={w}]" for w in (64, 256, 1024)] + [
    "map", "temperature", "logistic", "mc_dropout[p=0.1]", "deep_ensemble[members=8]", "laplace[hessian=kron]",
    "gp", "ntk_infinite_smooth", "ntk_kernel[kernel=empirical]"]


def _stress_store(root: Path) -> Path:
    store = ResultsStore(root)
    for seed in range(3):
        for j, label in enumerate(METHODS):
            m = {"cls/acc": 0.9 - 0.01 * j + 0.001 * seed, "cal/nll": 0.3 + 0.02 * j, "cal/brier": 0.1 + 0.01 * seed,
                 "cal/ece": 0.01 * (j + 1), "cal/aece": 0.012 * (j + 1), "sel/aurc": 1.3e-5 * (j + 1 + seed)}
            for s in ("heldout", "shuffled", "noisy", "near", "far"):
                m[f"ood/{s}/msp/auroc"] = 0.6 + 0.01 * j
                if j % 3:
                    m[f"ood/{s}/mutual_info/auroc"] = 0.55 + 0.02 * j + 0.001 * seed
            store.append({"schema_version": SCHEMA_VERSION, "run_id": f"r{seed}-{j}", "dataset": "mnist1d",
                          "dataset_label": "mnist1d", "method": label.split("[")[0], "method_label": label,
                          "params": {}, "seed": seed, "status": "ok", "metrics": m})
    return root


def _compile(tex: str, tmp_path: Path, name: str) -> str:
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex + "\n\\end{document}\n"
    (tmp_path / f"{name}.tex").write_text(doc, encoding="utf-8")
    for _ in range(2):  # twice: the \ref to the first part of a cut table resolves on the second run
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
    return (tmp_path / f"{name}.log").read_text(errors="replace")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.parametrize("layout", ["groups", "datasets"])
def test_latex_tables_fit_an_article_page(tmp_path, layout):
    sources = [_stress_store(tmp_path / "stress")] + ([COMMITTED] if (COMMITTED / "records.jsonl").exists() else [])
    for i, source in enumerate(sources):
        tex = leaderboard(source, "latex", layout=layout)
        log = _compile(tex, tmp_path, f"t{i}")
        assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
        assert tex.count("\\begin{table}") >= 1


def test_html_parts_fit_1400_px(tmp_path):
    agg = aggregate(load_tidy(_stress_store(tmp_path / "stress")))
    for table in render.tables(agg):
        label_w = max(7.2 * len(r) for r in [*table.rows, "method"]) + 12
        n_w = max(7.2 * len(n) for n in [*table.n, "n"]) + 12
        parts = render.cut(table, render._html_width, render.HTML_WIDTH - 60, label_w + n_w)
        assert len(parts) > 1  # the stress table is wider than a page: it is cut, not scrolled
        for part in parts:
            width = label_w + n_w + sum(render._html_width(c) for c in part.columns)
            assert width <= render.HTML_WIDTH - 60 or len(part.columns) <= 1
    page = leaderboard(tmp_path / "stress", "html")
    assert "position:sticky" in page and 'class="grp"' in page
