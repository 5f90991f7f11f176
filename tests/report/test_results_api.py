"""``ntkbayes.results``: the tidy frame, the cells table (parameters once per cell), the summary, and the round trip
with what the leaderboard shows on the committed ``results/default``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fake_store import METHODS, write_fake_store

from ntkbayes import results
from ntkbayes.report.export import write_csv
from ntkbayes.report.leaderboard import aggregate, load_tidy

COMMITTED = Path(__file__).resolve().parents[2] / "results" / "default"
SINGLE_MEMBER = ("map", "temperature", "logistic")


def test_load_is_tidy_with_parameters_as_columns(tmp_path):
    root = write_fake_store(tmp_path / "r")
    df = results.load(root)
    assert list(df.columns[:10]) == ["dataset", "method", "family", "seed", "metric", "value", "status", "error",
                                     "run_id", "method_name"]
    assert "param.members" in df.columns
    ok = df[df["status"] == "ok"]
    assert not ok.duplicated(["run_id", "metric"]).any()  # one row per cell × metric
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and failed["metric"].isna().all() and failed["error"].iloc[0] == "RuntimeError: boom"
    cells = results.cells(root)
    assert len(cells) == len(df["run_id"].unique()) and cells["run_id"].is_unique
    members = dict(zip(cells["method"], cells["param.members"]))
    assert {m: members[m] for m, _, _ in METHODS} == {m: s for m, _, s in METHODS}
    assert set(cells["family"]) == {"ntk", "laplace", "map", "gp"}  # gp: no family recorded → its method name
    # the S = 1 method has no member scores (never a constant)
    map_keys = set(ok.loc[ok["method"] == "map", "metric"])
    assert not any("/mutual_info/" in k or "/variance/" in k for k in map_keys)
    with pytest.raises(ValueError, match="not a results directory"):
        results.load(tmp_path / "nothing")


@pytest.mark.skipif(not (COMMITTED / "records.jsonl").exists(), reason="no committed results/default")
def test_committed_results_round_trip_with_the_leaderboard(tmp_path):
    tidy = results.load(COMMITTED)
    summary = results.summary(tidy).set_index(["dataset", "method", "metric"])
    agg = aggregate(load_tidy(COMMITTED)).set_index(["dataset", "method", "metric"])
    shown = agg[agg["n"] > 0]
    assert len(shown) > 100
    for key, row in shown.iterrows():
        s = summary.loc[key]
        assert s["n"] == row["n"]
        # the same mean and interval from the same values, summed in possibly another order: a few ulps
        assert s["mean"] == pytest.approx(row["mean"], rel=1e-13, abs=1e-15)
        if row["n"] > 1:
            assert (s["ci_low"], s["ci_high"]) == pytest.approx((row["ci_low"], row["ci_high"]), rel=1e-12, abs=1e-15)
    # single-member methods have no mutual-information scores in the summary (absent, not 0.5)
    single = summary[summary.index.get_level_values("method").isin(SINGLE_MEMBER)]
    assert len(single) > 0
    assert not any("/mutual_info/" in k for k in single.index.get_level_values("metric"))
    long, summ, cells = write_csv(COMMITTED, tmp_path / "leaderboard.csv")
    lines = long.read_text().splitlines()
    # parameters live in the cells CSV, once per cell: a long row holds ids, the metric and its value only (the old
    # rows repeating the parameter JSON averaged ~250 bytes)
    assert not any(c.startswith("param") for c in lines[0].split(","))
    assert long.stat().st_size < 120 * (len(lines) - 1)
    n_cells = len(tidy["run_id"].unique())
    assert len(cells.read_text().splitlines()) == n_cells + 1
    assert math.isfinite(float(summ.read_text().splitlines()[1].split(",")[4]))
