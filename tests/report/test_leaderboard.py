"""Leaderboard on a synthetic store with known numbers: mean, t-interval, n, bold by test, ranks and their
intervals, absent metrics, family order, failed rows, and the Markdown / CSV / LaTeX / HTML exports."""

from __future__ import annotations

import csv
import io
import math
import statistics

import pytest
from scipy import stats as st

from ntkbayes.errors import UserError
from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore
from ntkbayes.report.export import leaderboard, write_csv
from ntkbayes.report.leaderboard import (
    aggregate,
    default_metrics,
    higher_is_better,
    load_tidy,
    mean_ranks,
)

ECE_A = [0.1234567890123456789, 0.2, 0.3]
#: method label → (family, per seed: metrics or None = failed). "A" is a single network: no mutual information.
D1 = {
    "A": ("map", [{"cls/acc": 0.9, "cal/nll": 0.3, "cal/ece": ECE_A[0], "ood/far/msp/auroc": 0.6,
                   "ood/far/msp/fpr95": 0.4},
                  {"cls/acc": 0.8, "cal/nll": 0.5, "cal/ece": ECE_A[1], "ood/far/msp/auroc": 0.7,
                   "ood/far/msp/fpr95": 0.4},
                  {"cls/acc": 0.7, "cal/nll": 0.4, "cal/ece": ECE_A[2], "ood/far/msp/auroc": 0.8,
                   "ood/far/msp/fpr95": 0.4}]),
    "B[members=4]": ("ensemble", [{"cls/acc": 0.95, "cal/nll": 0.2, "cal/ece": 0.05, "ood/far/msp/auroc": 0.9,
                                   "ood/far/mutual_info/auroc": 0.6, "ood/far/msp/fpr95": 0.3},
                                  {"cls/acc": 0.85, "cal/nll": 0.4, "cal/ece": 0.07, "ood/far/msp/auroc": 0.8,
                                   "ood/far/mutual_info/auroc": 0.7, "ood/far/msp/fpr95": 0.2},
                                  None]),
    "C": ("map", [None]),
}
D2 = {"B[members=4]": ("ensemble", [{"cls/acc": 0.5, "cal/nll": 0.9}]), "A": ("map", [{"cls/acc": 0.5,
                                                                                        "cal/nll": 0.7}])}


def write_store(root) -> ResultsStore:
    store = ResultsStore(root)
    for ds, table in (("d1", D1), ("d2", D2)):
        for label, (family, seeds) in table.items():
            for seed, metrics in enumerate(seeds):
                rid = f"{ds}-{label.replace('[', '').replace(']', '').replace('=', '')}-{seed}"
                base = {"schema_version": SCHEMA_VERSION, "run_id": rid, "suite": "s", "dataset": "tiny",
                        "dataset_label": ds, "dataset_options": {"ds": ds}, "method": label[0], "family": family,
                        "method_label": label, "params": {"members": 4} if "members" in label else {"width": 8},
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


def _agg(store, metrics=None):
    return aggregate(load_tidy(store.root), metrics).set_index(["dataset", "method", "metric"])


def test_aggregate_mean_interval_n_rank_bold(store):
    agg = _agg(store)
    a = agg.loc[("d1", "A", "cls/acc")]
    half = st.t.ppf(0.975, 2) * statistics.stdev([0.9, 0.8, 0.7]) / math.sqrt(3)
    # sums of three numbers of order 1: a few ulps
    assert a["mean"] == pytest.approx(0.8, abs=1e-15) and a["std"] == pytest.approx(0.1, abs=1e-15)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((0.8 - half, 0.8 + half), abs=1e-14)
    assert (a["n"], a["n_ok"], a["n_failed"], a["rank"]) == (3, 3, 0, 2)
    b = agg.loc[("d1", "B[members=4]", "cls/acc")]
    assert (b["n"], b["n_ok"], b["n_failed"], b["n_runs"], b["rank"], b["best"]) == (2, 2, 1, 3, 1, True)
    # A is worse by exactly 0.05 on both shared seeds: a zero-variance paired gap is significant, so not bold
    assert not a["best"]
    c = agg.loc[("d1", "C", "cls/acc")]
    assert c["n"] == 0 and c["n_failed"] == 1 and not c["best"] and math.isnan(c["rank"])
    # A cannot produce mutual information: absent, not ranked, not bold
    mi = agg.loc[("d1", "A", "ood/far/mutual_info/auroc")]
    assert mi["n"] == 0 and mi["n_ok"] == 3 and math.isnan(mi["rank"]) and not mi["best"]
    assert agg.loc[("d1", "B[members=4]", "ood/far/mutual_info/auroc"), "rank"] == 1
    assert list(dict.fromkeys(agg.loc["d1"].index.get_level_values("metric"))) == [
        "cls/acc", "cal/nll", "cal/ece", "ood/far/msp/auroc", "ood/far/mutual_info/auroc"]
    t = agg.loc["d2"]  # one seed each: exact ties are all best and share rank 1
    assert list(t.loc[(slice(None), "cls/acc"), "best"]) == [True, True]
    assert list(t.loc[(slice(None), "cls/acc"), "rank"]) == [1, 1]
    ranks = mean_ranks(aggregate(load_tidy(store.root))).set_index(["dataset", "method"])
    assert ranks.loc[("d1", "A"), "n_ranked"] == 4  # mutual information left out of A's mean rank
    assert ranks.loc[("d1", "B[members=4]"), "mean_rank"] == 1.0


def test_rows_in_family_order_in_every_table(store):
    agg = aggregate(load_tidy(store.root))
    # family "map" (A, C) before "ensemble" (B), whatever the order in the store
    assert list(dict.fromkeys(agg.loc[agg["dataset"] == "d1", "method"])) == ["A", "C", "B[members=4]"]
    assert list(dict.fromkeys(agg.loc[agg["dataset"] == "d2", "method"])) == ["A", "B[members=4]"]


def test_markdown(store):
    md = leaderboard(store.root, "md")
    lines = md.splitlines()
    assert lines[0] == "# Leaderboard: res"
    assert "95 % Student-t" in md and "paired t-test" in md and "15 equal-width bins" in md
    i = lines.index("## d1")
    assert lines[i + 2] == ("| method | n | cls/acc ↑ | cal/nll ↓ | cal/ece ↓ | ood/far/msp/auroc ↑ | "
                            "ood/far/mutual_info/auroc ↑ | mean rank |")
    a_row = lines[i + 4]
    assert a_row.startswith("| A | 3 | 0.800 ± 0.248 ² | ") and "| — |" in a_row
    assert lines[i + 5] == "| C | 0, failed (1/1) | failed | failed | failed | failed | failed | — |"
    assert lines[i + 6].startswith("| B[members=4] | 2, failed (1/3) | **0.900 ± 0.635** ¹ |")
    j = lines.index("## d2")
    assert lines[j + 4] == "| A | 1 | **0.500** ¹ | **0.700** ¹ | 1.0 [1.0, 2.0] |"  # one seed: no ±
    k = lines.index("## d3")  # every run failed: the dataset and its rows are still shown
    assert lines[k + 2: k + 5] == ["| method | n | mean rank |", "|---|---:|---:|", "| X | 0, failed (1/1) | — |"]
    only = leaderboard(store.root, "md", metrics=["ood/*/msp/*"], datasets=["d1"])
    assert "ood/far/msp/fpr95 ↓" in only and "cls/acc" not in only and "## d2" not in only
    by_metric = leaderboard(store.root, "md", layout="datasets").splitlines()
    m = by_metric.index("## cls/acc")
    assert by_metric[m + 2] == "| method | d1 ↑ | d2 ↑ | mean rank |"


def test_csv_long_summary_and_cells(store, tmp_path):
    rows = list(csv.DictReader(io.StringIO(leaderboard(store.root, "csv"))))
    assert list(rows[0]) == ["dataset", "method", "family", "seed", "metric", "value", "best", "rank", "status",
                             "error", "run_id"]
    ece = [r for r in rows if r["dataset"] == "d1" and r["method"] == "A" and r["metric"] == "cal/ece"]
    assert [float(r["value"]) for r in ece] == ECE_A and [r["seed"] for r in ece] == ["0", "1", "2"]
    failed = [(r["dataset"], r["method"], r["seed"], r["error"]) for r in rows if r["status"] == "failed"]
    assert failed == [("d1", "C", "0", "RuntimeError: boom"), ("d1", "B[members=4]", "2", "RuntimeError: boom"),
                      ("d3", "X", "0", "MemoryError: too big")]
    assert not any(r["error"] == "E: transient" for r in rows)
    assert not any("/mutual_info/" in r["metric"] and r["method"] == "A" for r in rows)
    long, summary, cells = write_csv(store.root, tmp_path / "out" / "leaderboard.csv")
    assert summary.name == "leaderboard_summary.csv" and cells.name == "leaderboard_cells.csv"
    srows = list(csv.DictReader(summary.open()))
    assert list(srows[0]) == ["dataset", "method", "family", "metric", "mean", "std", "n", "ci_low", "ci_high",
                              "best", "rank", "underfit", "not_converged", "grid_edge", "degenerate_temperature",
                              "params"]
    acc = next(r for r in srows if (r["dataset"], r["method"], r["metric"]) == ("d1", "A", "cls/acc"))
    # a mean of three numbers of order 1 written with repr: a few ulps
    assert float(acc["mean"]) == pytest.approx(0.8, abs=1e-15) and acc["n"] == "3" and acc["rank"] == "2"
    crows = list(csv.DictReader(cells.open()))
    assert len(crows) == 10 and "param.members" in crows[0] and "param.width" in crows[0]  # once per cell
    assert "params" not in long.read_text().splitlines()[0]


def test_latex_and_html(store):
    tex = leaderboard(store.root, "latex")
    assert tex.count(r"\begin{table}") == 4 and tex.count(r"\toprule") == 4  # d1 is cut in two to fit 345 pt
    assert "d1 (part 1 of 2)" in tex and r"continued from Table \ref{tab:leaderboard-d1-1}" in tex
    assert r"\multicolumn{3}{c}{ID}" in tex and r"\cmidrule(lr){3-5}" in tex
    assert r"\textbf{0.900{\scriptsize$\pm$0.635}}" in tex and "---" in tex  # bold with the CI, absent as —
    assert r"\label{tab:leaderboard-d2}" in tex and "FPR95 = FPR at 95 \\% TPR" in tex
    assert "MI: mutual information" in tex  # the legend of the abbreviations
    wide = leaderboard(store.root, "latex", table_env="table*", layout="datasets")
    assert r"\begin{table*}" in wide and r"\label{tab:leaderboard-cls-acc}" in wide
    page = leaderboard(store.root, "html")
    assert page.startswith("<!DOCTYPE html>") and "<title>Leaderboard: res</title>" in page
    assert '<td class="m">B[members=4]</td><td>2, failed (1/3)</td><td><b>0.900 <span class="pm">± 0.635</span>' \
        in page
    assert 'position:sticky' in page and '<th class="grp" colspan="2">OOD far</th>' in page
    assert '<td class="na">—</td>' in page
    frag = leaderboard(store.root, "html", standalone=False)
    assert "<html" not in frag and frag.startswith("<style>")


def test_directions_and_default_metric_selection():
    assert higher_is_better("cls/acc") and not higher_is_better("cal/nll")
    assert higher_is_better("ood/far/msp/auroc") and higher_is_better("ood/near/energy/aupr_in")
    assert not higher_is_better("ood/far/msp/fpr95") and not higher_is_better("sel/aurc")
    assert higher_is_better("custom/thing/acc") is None  # unknown keys: shown, never ranked
    keys = ["ood/b/msp/auroc", "cal/brier", "cls/acc", "ood/a/mutual_info/auroc", "ood/a/msp/auroc",
            "ood/b/entropy/auroc", "cal/mce", "sel/aurc"]
    assert default_metrics(keys) == ["cls/acc", "cal/brier", "sel/aurc", "ood/b/msp/auroc", "ood/a/msp/auroc",
                                     "ood/a/mutual_info/auroc"]
    grouped = keys + ["ood/near/msp/auroc", "ood/far/msp/auroc", "ood/far/mutual_info/auroc"]
    assert default_metrics(grouped)[3:] == ["ood/near/msp/auroc", "ood/far/msp/auroc", "ood/far/mutual_info/auroc"]


def test_unknown_and_shift_metrics(tmp_path):
    store = ResultsStore(tmp_path)
    for seed, (acc, nll) in enumerate([(0.9, 0.3), (0.7, 0.5)]):
        for label, shift_acc in (("A", 0.6), ("B", 0.4)):
            store.append({"schema_version": SCHEMA_VERSION, "run_id": f"{label}{seed}", "suite": "s",
                          "dataset": "tiny", "dataset_label": "d", "dataset_options": {}, "method": label,
                          "method_label": label, "params": {}, "seed": seed, "status": "ok", "error": None,
                          "metrics": {"cls/acc": acc, "cal/nll": nll, "shift/rotation/3/acc": shift_acc + seed / 10,
                                      "shift/rotation/3/nll": 1 - shift_acc, "custom/score": seed}})
    md = leaderboard(tmp_path, "md")
    assert "cls/acc" in md and "shift/" not in md
    agg = aggregate(load_tidy(tmp_path), ["shift/rotation/*", "custom/*"]).set_index(["method", "metric"])
    assert agg.loc[("A", "shift/rotation/3/acc"), "rank"] == 1 and agg.loc[("B", "shift/rotation/3/nll"), "rank"] == 2
    assert math.isnan(agg.loc[("A", "custom/score"), "rank"]) and not agg["best"][agg.index.get_level_values(
        "metric") == "custom/score"].any()


def test_user_errors(store, tmp_path):
    with pytest.raises(UserError, match="not a results directory"):
        leaderboard(tmp_path / "nothing", "md")
    with pytest.raises(UserError, match="formats"):
        leaderboard(store.root, "pdf")
    with pytest.raises(UserError, match="layouts"):
        leaderboard(store.root, "md", layout="wide")
    with pytest.raises(UserError, match="table-env"):
        leaderboard(store.root, "latex", table_env="figure")
    with pytest.raises(UserError, match="matches no metric"):
        leaderboard(store.root, "md", metrics=["cal/nothing"])
    with pytest.raises(UserError, match="no records for d9"):
        leaderboard(store.root, "md", datasets=["d9"])


def test_legacy_constant_member_scores_are_dropped(tmp_path):
    """Records written before absent scores existed: a single network's MI AUROC 0.5 / FPR95 1 on every set."""
    store = ResultsStore(tmp_path)
    legacy = {"cls/acc": 0.9, "ood/far/msp/auroc": 0.7, "ood/far/mutual_info/auroc": 0.5,
              "ood/far/mutual_info/fpr95": 1.0, "ood/far/variance/auroc": 0.5, "ood/far/expected_entropy/auroc": 0.7}
    real = {**legacy, "ood/far/mutual_info/auroc": 0.8, "ood/far/mutual_info/fpr95": 0.6}
    for label, metrics in (("map", legacy), ("ens", real)):
        store.append({"schema_version": SCHEMA_VERSION, "run_id": label, "dataset": "d", "method": label,
                      "params": {}, "seed": 0, "status": "ok", "metrics": metrics})
    agg = aggregate(load_tidy(tmp_path), ["ood/*"]).set_index(["method", "metric"])
    assert agg.loc[("map", "ood/far/mutual_info/auroc"), "n"] == 0  # absent, not a constant 0.5 ranked first
    assert agg.loc[("map", "ood/far/expected_entropy/auroc"), "n"] == 0
    assert agg.loc[("ens", "ood/far/mutual_info/auroc"), "rank"] == 1


def _flag_store(root) -> ResultsStore:
    """Three methods on one dataset, two seeds: "good"; "weak" (train acc 0.15 below: underfit; a member did not
    converge); "temp" (tuned weight_decay on a grid edge in seed 1, a temperature of 0.05 in seed 0)."""
    store = ResultsStore(root)
    for seed in (0, 1):
        for label, train_acc, fit_info, selection, explicit in (
                ("good", 0.95, {"converged": True}, None, {"width": 8}),
                ("weak", 0.80, {"converged": [True, False]}, None, {"width": 8}),
                ("temp", 0.93, {"temperature": 0.05 if seed == 0 else 1.2},
                 {"file": "s.selected.toml", "objective": "val/nll", "value": 0.1,
                  "params": {"weight_decay": [1e-5, 1e-3][seed]}, "grid_edge": ["weight_decay"] if seed else []},
                 {"weight_decay": [1e-5, 1e-3][seed], "width": 8})):
            params = {"width": 8, **(selection or {}).get("params", {})}
            store.append({"schema_version": SCHEMA_VERSION, "run_id": f"{label}-{seed}", "dataset": "tiny",
                          "dataset_label": "d", "method": label, "method_label": label, "family": "map",
                          "params": params, "explicit_params": explicit, "seed": seed, "status": "ok",
                          "error": None, "fit_info": fit_info, "selection": selection,
                          "metrics": {"cls/acc": 0.9, "cal/nll": 0.3, "train/acc": train_acc}})
    return store


def test_sanity_flags_and_parameters_are_shown(tmp_path):
    from ntkbayes import results

    store = _flag_store(tmp_path / "flags")
    fl = results.flags(results.load(store.root)).set_index("method")
    assert fl.loc["good", "markers"] == "" and fl.loc["weak", "markers"] == "uc" and fl.loc["temp", "markers"] == "et"
    assert fl.loc["temp", "params"] == "weight_decay=1e-05/0.001, width=8"  # per seed where the selection differs
    assert len(results.load(store.root).drop_duplicates("run_id").groupby("method")) == 3  # one row per method
    md = leaderboard(store.root, "md")
    assert "| weak ᵘᶜ |" in md and "| temp ᵉᵗ |" in md and "| good |" in md
    assert "Flags: u: mean training accuracy more than 0.1 below" in md and "t: a fitted temperature outside" in md
    assert "Parameters: " in md and "temp: weight_decay=1e-05/0.001, width=8" in md
    tex = leaderboard(store.root, "latex")
    assert r"weak\textsuperscript{uc}" in tex and "Flags: u: mean training accuracy" in tex
    page = leaderboard(store.root, "html")
    assert '<td class="m">temp<sup class="flag">et</sup></td>' in page and "Parameters: " in page
    by_ds = leaderboard(store.root, "md", layout="datasets")
    assert "| weak ᵘᶜ |" in by_ds and "weak: u on d, c on d" in by_ds
    srows = list(csv.DictReader(io.StringIO(__import__("ntkbayes.report.render", fromlist=["x"]).summary_csv(
        aggregate(load_tidy(store.root))))))
    weak = next(r for r in srows if r["method"] == "weak")
    assert (weak["underfit"], weak["not_converged"], weak["grid_edge"]) == ("*", "*", "")
