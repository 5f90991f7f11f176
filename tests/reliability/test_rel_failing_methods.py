"""Reliability: methods that raise, whose loss becomes NaN, or whose outputs are NaN are recorded as failed with the
reason; the suite goes on; ``ntkbayes leaderboard`` shows the failed rows instead of dropping them."""

from __future__ import annotations

import csv
import io
import textwrap

from ntkbayes.harness.store import ResultsStore

SUITE = """
    seeds = [0, 1]
    device = "cpu"
    threads = 1
    [datasets._rel_blobs]
    n = 60
    [methods.raises]
    method = "_rel_fake"
    fail = "raise"
    [methods.nan_loss]
    method = "_rel_fake"
    fail = "nan_loss"
    [methods.nan_output]
    method = "_rel_fake"
    fail = "nan_output"
    [methods.map_diverges]       # a real method: L-BFGS from weights of scale 1e30 has a non-finite loss
    method = "map"
    width = 8
    optimizer = "lbfgs"
    max_iter = 5
    w_std = 1e30
    [methods.fine]
    method = "_rel_fake"
"""

#: method label → (error text the record must hold, stage where it failed).
EXPECTED = {
    "raises": ("RuntimeError: fake method exploded in fit", "fit"),
    "nan_loss": ("NonFiniteLossError: training diverged: non-finite loss at step 1; lower lr", "fit"),
    "nan_output": ("ValueError: Predictive.member_probs: contains NaN", "predict"),
    "map_diverges": ("NonFiniteLossError: training diverged", "fit"),
}


def test_failures_are_recorded_and_shown(cli, tmp_path):
    suite = tmp_path / "f.toml"
    suite.write_text(textwrap.dedent(SUITE))
    out_dir = tmp_path / "out"
    code, out, err = cli.run(["run", str(suite), "--out", str(out_dir), "--no-progress"], "fail-run")
    assert code == 0, err
    assert "ran 10 (2 ok, 8 failed)" in out
    assert "Traceback" not in err and err.count("failed: _rel_blobs | ") == 16  # progress + summary lines
    recs = ResultsStore(out_dir).records()
    assert len(recs) == 10 and [r["seed"] for r in recs] == [0] * 5 + [1] * 5  # the suite went on in order
    for r in recs:
        label = r["method_label"]
        if label == "fine":
            assert r["status"] == "ok" and r["error"] is None and 0 <= r["metrics"]["cls/acc"] <= 1
            continue
        text, stage = EXPECTED[label]
        assert r["status"] == "failed" and r["error"].startswith(text), (label, r["error"])
        assert r["failed_stage"] == stage and r["metrics"] == {} and r["predictions"] is None
        assert "Traceback" in r["traceback"]
        assert not (out_dir / "predictions" / f"{r['run_id']}.npz").exists()

    code, md, err = cli.run(["leaderboard", str(out_dir)], "fail-md")
    assert code == 0, err
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    for label in EXPECTED:  # every failed row is there and says so
        row = rows[label]
        assert "failed (2/2)" in row and row.count("failed") >= 2, row
    assert "failed" not in rows["fine"]
    code, text, err = cli.run(["leaderboard", str(out_dir), "--format", "csv"], "fail-csv")
    assert code == 0, err
    failed = [r for r in csv.DictReader(io.StringIO(text)) if r["status"] == "failed"]
    assert {r["method"] for r in failed} == set(EXPECTED) and len(failed) == 8
    assert all(r["error"] for r in failed)
