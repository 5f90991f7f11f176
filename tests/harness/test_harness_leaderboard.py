"""Leaderboard on a synthetic store with known numbers: mean, sample std, n, best, rank, failed rows, and the
Markdown / CSV / LaTeX / HTML exports."""

from __future__ import annotations

import csv
import io
import statistics

import pytest

from ntkbayes.errors import UserError
from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore
from ntkbayes.report.leaderboard import (
    aggregate,
    default_metrics,
    effective_records,
    higher_is_better,
    leaderboard,
    long_frame,
)

ECE_A = [0.1234567890123456789, 0.2, 0.3]
#: method label → per seed: metrics or None (failed)
D1 = {
    "A": [{"cls/acc": 0.9, "cal/nll": 0.3, "cal/ece": ECE_A[0], "ood/far/msp/auroc": 0.6,
           "ood/far/mutual_info/auroc": 0.5, "ood/far/msp/fpr95": 0.4},
          {"cls/acc": 0.8, "cal/nll": 0.5, "cal/ece": ECE_A[1], "ood/far/msp/auroc": 0.7,
           "ood/far/mutual_info/auroc": 0.5, "ood/far/msp/fpr95": 0.4},
          {"cls/acc": 0.7, "cal/nll": 0.4, "cal/ece": ECE_A[2], "ood/far/msp/auroc": 0.8,
           "ood/far/mutual_info/auroc": 0.5, "ood/far/msp/fpr95": 0.4}],
    "B[members=4]": [{"cls/acc": 0.95, "cal/nll": 0.2, "cal/ece": 0.05, "ood/far/msp/auroc": 0.9,
                      "ood/far/mutual_info/auroc": 0.6, "ood/far/msp/fpr95": 0.3},
                     {"cls/acc": 0.85, "cal/nll": 0.4, "cal/ece": 0.07, "ood/far/msp/auroc": 0.8,
                      "ood/far/mutual_info/auroc": 0.7, "ood/far/msp/fpr95": 0.2},
                     None],
    "C": [None],
}
D2 = {"A": [{"cls/acc": 0.5, "cal/nll": 0.7}], "B[members=4]": [{"cls/acc": 0.5, "cal/nll": 0.9}]}


def write_store(root) -> ResultsStore:
    store = ResultsStore(root)
    for ds, table in (("d1", D1), ("d2", D2)):
        for label, seeds in table.items():
            for seed, metrics in enumerate(seeds):
                rid = f"{ds}-{label.replace('[', '').replace(']', '').replace('=', '')}-{seed}"
                base = {"schema_version": SCHEMA_VERSION, "run_id": rid, "suite": "s", "dataset": "tiny",
                        "dataset_label": ds, "dataset_options": {"ds": ds}, "method": label[0],
                        "method_label": label, "params": {"members": 4} if "members" in label else {},
                        "seed": seed, "conventions": {"ece_bins": 15}}
                if metrics is None:
                    store.append({**base, "status": "failed", "error": "RuntimeError: boom", "metrics": {}})
                else:
                    if label == "A" and ds == "d1" and seed == 0:  # an earlier failure, superseded by the ok one
                        store.append({**base, "status": "failed", "error": "E: transient", "metrics": {}})
                    store.append({**base, "status": "ok", "error": None, "metrics": metrics})
    store.append({"schema_version": SCHEMA_VERSION, "run_id": "d3-X-0", "dataset": "tiny", "dataset_label": "d3",
                  "method": "X", "params": {}, "seed": 0, "status": "failed", "error": "MemoryError: too big"})
    return store


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "res")


def test_aggregate_mean_std_n_best_rank(store):
    long = long_frame(effective_records(store))
    agg = aggregate(long).set_index(["dataset", "method", "metric"])
    a = agg.loc[("d1", "A", "cls/acc")]
    assert a["mean"] == pytest.approx(statistics.mean([0.9, 0.8, 0.7]), abs=1e-15)
    assert a["std"] == pytest.approx(statistics.stdev([0.9, 0.8, 0.7]), abs=1e-15)  # ddof = 1
    assert (a["n"], a["n_ok"], a["n_failed"], a["rank"], a["best"]) == (3, 3, 0, 2, False)
    b = agg.loc[("d1", "B[members=4]", "cls/acc")]
    assert b["mean"] == pytest.approx(0.9, abs=1e-15) and b["std"] == pytest.approx(statistics.stdev([0.95, 0.85]))
    assert (b["n"], b["n_ok"], b["n_failed"], b["n_runs"], b["rank"], b["best"]) == (2, 2, 1, 3, 1, True)
    nll_a, nll_b = agg.loc[("d1", "A", "cal/nll")], agg.loc[("d1", "B[members=4]", "cal/nll")]
    assert nll_b["best"] and not nll_a["best"] and (nll_a["rank"], nll_b["rank"]) == (2, 1)  # lower is better
    c = agg.loc[("d1", "C", "cls/acc")]
    assert c["n"] == 0 and c["n_failed"] == 1 and not c["best"] and c["rank"] != c["rank"]  # NaN rank
    # default selection: ID metrics present, then per OOD set the MSP and mutual-information AUROC
    assert list(dict.fromkeys(agg.loc["d1"].index.get_level_values("metric"))) == [
        "cls/acc", "cal/nll", "cal/ece", "ood/far/msp/auroc", "ood/far/mutual_info/auroc"]
    # exact ties are all best and share rank 1
    t = agg.loc["d2"]
    assert list(t.loc[(slice(None), "cls/acc"), "best"]) == [True, True]
    assert list(t.loc[(slice(None), "cls/acc"), "rank"]) == [1, 1]


def test_markdown(store):
    md = leaderboard(store.root, "md")
    lines = md.splitlines()
    assert lines[0] == "# Leaderboard: res"
    assert "ddof = 1" in md and "15 equal-width bins" in md and "OOD = positive class" in md
    i = lines.index("## d1")
    assert lines[i + 2] == ("| method | n | cls/acc ↑ | cal/nll ↓ | cal/ece ↓ | ood/far/msp/auroc ↑ | "
                            "ood/far/mutual_info/auroc ↑ | mean rank |")
    assert lines[i + 4] == ("| A | 3 | 0.800 ± 0.100 ² | 0.400 ± 0.100 ² | 0.208 ± 0.089 ² | 0.700 ± 0.100 ² | "
                            "0.500 ± 0.000 ² | 2.00 |")
    assert lines[i + 5] == ("| B[members=4] | 2, failed (1/3) | **0.900 ± 0.071** ¹ | **0.300 ± 0.141** ¹ | "
                            "**0.060 ± 0.014** ¹ | **0.850 ± 0.071** ¹ | **0.650 ± 0.071** ¹ | 1.00 |")
    assert lines[i + 6] == "| C | 0, failed (1/1) | failed | failed | failed | failed | failed | – |"
    j = lines.index("## d2")
    assert lines[j + 4] == "| A | 1 | **0.500** ¹ | **0.700** ¹ | 1.00 |"  # one seed: no ±
    assert lines[j + 5] == "| B[members=4] | 1 | **0.500** ¹ | 0.900 ² | 1.50 |"
    k = lines.index("## d3")  # every run failed: the dataset and its rows are still shown
    assert lines[k + 2: k + 5] == ["| method | n | mean rank |", "|---|---|---|", "| X | 0, failed (1/1) | – |"]
    only = leaderboard(store.root, "md", metrics=["ood/*/msp/*"], datasets=["d1"])
    assert "ood/far/msp/fpr95 ↓" in only and "cls/acc" not in only and "## d2" not in only


def test_csv_long_format_full_precision(store):
    rows = list(csv.DictReader(io.StringIO(leaderboard(store.root, "csv"))))
    assert list(rows[0]) == ["dataset", "method", "params", "seed", "metric", "value", "best", "rank", "status",
                             "error", "run_id"]
    ece = [r for r in rows if r["dataset"] == "d1" and r["method"] == "A" and r["metric"] == "cal/ece"]
    assert [r["value"] for r in ece] == [repr(v) for v in ECE_A] and [r["seed"] for r in ece] == ["0", "1", "2"]
    assert [float(r["value"]) for r in ece] == ECE_A  # round-trips exactly
    acc_b = [r for r in rows if r["dataset"] == "d1" and r["method"] == "B[members=4]" and r["metric"] == "cls/acc"]
    assert {(r["best"], r["rank"]) for r in acc_b} == {("*", "1")}
    assert acc_b[0]["params"] == '{"members":4}'
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["dataset"], r["method"], r["seed"], r["metric"], r["value"], r["error"]) for r in failed] == [
        ("d1", "B[members=4]", "2", "", "", "RuntimeError: boom"), ("d1", "C", "0", "", "", "RuntimeError: boom"),
        ("d3", "X", "0", "", "", "MemoryError: too big")]
    # every metric by default (fpr95 too), each ok (run, metric) exactly once: the superseded failure is gone
    assert len([r for r in rows if r["status"] == "ok"]) == 3 * 6 + 2 * 6 + 2 * 2
    assert not any(r["error"] == "E: transient" for r in rows)


def test_latex(store):
    tex = leaderboard(store.root, "latex")
    assert tex.count(r"\begin{table}") == 3 and tex.count(r"\toprule") == 3 and tex.count(r"\bottomrule") == 3
    assert r"X & 0, failed (1/1) & -- \\" in tex
    assert r"\caption{d1: Mean $\pm$ sample std (ddof = 1)" in tex
    assert "ECE with 15 equal-width bins, top-label, L1" in tex and "OOD = positive class" in tex
    assert "FPR95 = FPR at 95 \\% TPR" in tex
    assert r"ood/far/mutual\_info/auroc $\uparrow$" in tex and r"cal/nll $\downarrow$" in tex
    assert (r"B[members=4] & 2, failed (1/3) & \textbf{0.900 $\pm$ 0.071}\textsuperscript{1} & "
            r"\textbf{0.300 $\pm$ 0.141}\textsuperscript{1}") in tex
    assert r"A & 3 & 0.800 $\pm$ 0.100\textsuperscript{2}" in tex
    assert r"\label{tab:leaderboard-d1}" in tex


def test_html(store):
    page = leaderboard(store.root, "html")
    assert page.startswith("<!DOCTYPE html>") and "<title>Leaderboard: res</title>" in page
    assert "<td>B[members=4]</td><td>2, failed (1/3)</td><td><b>0.900 ± 0.071</b><sup>1</sup></td>" in page
    assert "<td>C</td><td>0, failed (1/1)</td><td>failed</td>" in page
    frag = leaderboard(store.root, "html", standalone=False)
    assert "<html" not in frag and frag.startswith("<p>") and '<table class="ntkbayes-leaderboard">' in frag


def test_directions_and_default_metric_selection():
    assert higher_is_better("cls/acc") and not higher_is_better("cal/nll")
    assert higher_is_better("ood/far/msp/auroc") and higher_is_better("ood/far/entropy/aupr_in")
    assert not higher_is_better("ood/far/msp/fpr95") and not higher_is_better("sel/aurc")
    assert higher_is_better("custom/thing/acc") and not higher_is_better("custom/loss")  # fallback by suffix
    keys = ["ood/b/msp/auroc", "cal/brier", "cls/acc", "ood/a/mutual_info/auroc", "ood/a/msp/auroc",
            "ood/b/entropy/auroc", "cal/mce", "sel/aurc"]
    assert default_metrics(keys) == ["cls/acc", "cal/brier", "sel/aurc", "ood/b/msp/auroc", "ood/a/msp/auroc",
                                     "ood/a/mutual_info/auroc"]


def test_user_errors(store, tmp_path):
    with pytest.raises(UserError, match="not a results directory"):
        leaderboard(tmp_path / "nothing", "md")
    with pytest.raises(UserError, match="format"):
        leaderboard(store.root, "pdf")
    with pytest.raises(UserError, match="matches no metric"):
        leaderboard(store.root, "md", metrics=["cal/nothing"])
    with pytest.raises(UserError, match="no records for d9"):
        leaderboard(store.root, "md", datasets=["d9"])


def test_same_label_different_params_are_separate_rows(tmp_path):
    store = ResultsStore(tmp_path)
    for i, width in enumerate((64, 128)):
        store.append({"schema_version": SCHEMA_VERSION, "run_id": f"r{i}", "dataset": "d", "method": "map",
                      "method_label": "map", "params": {"width": width}, "seed": 0, "status": "ok",
                      "metrics": {"cls/acc": 0.5 + i / 10}})
    methods = list(aggregate(long_frame(effective_records(store)))["method"])
    assert len(set(methods)) == 2 and all(m.startswith("map #") for m in methods)


def test_shift_metrics_are_tolerated_and_selectable(tmp_path):
    """Records with ``shift/<kind>/<severity>/{acc,nll,ece}`` keys (runner shift evaluation): the default tables
    leave them out, patterns select them, and their directions follow the last part of the key."""
    store = ResultsStore(tmp_path)
    for seed, (acc, nll) in enumerate([(0.9, 0.3), (0.7, 0.5)]):
        for label, shift_acc in (("A", 0.6), ("B", 0.4)):
            store.append({"schema_version": SCHEMA_VERSION, "run_id": f"{label}{seed}", "suite": "s",
                          "dataset": "tiny", "dataset_label": "d", "dataset_options": {}, "method": label,
                          "method_label": label, "params": {}, "seed": seed, "status": "ok", "error": None,
                          "metrics": {"cls/acc": acc, "cal/nll": nll, "shift/rotation/3/acc": shift_acc + seed / 10,
                                      "shift/rotation/3/nll": 1 - shift_acc, "shift/rotation/3/ece": 0.1}})
    md = leaderboard(tmp_path, "md")
    assert "cls/acc" in md and "shift/" not in md
    assert higher_is_better("shift/rotation/3/acc") and not higher_is_better("shift/rotation/3/nll")
    assert not higher_is_better("shift/rotation/3/ece")
    agg = aggregate(long_frame(effective_records(tmp_path)), ["shift/rotation/*"])
    assert set(agg["metric"]) == {"shift/rotation/3/acc", "shift/rotation/3/nll", "shift/rotation/3/ece"}
    best = agg[agg["metric"] == "shift/rotation/3/acc"].set_index("method")
    assert best.loc["A", "mean"] == pytest.approx(0.65) and best.loc["A", "n_ok"] == 2
    assert "shift/rotation/3/nll" in leaderboard(tmp_path, "csv")
