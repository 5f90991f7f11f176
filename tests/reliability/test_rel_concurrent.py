"""Reliability: several ``ntkbayes run`` processes on the same suite and store at once record every cell exactly
once, with no torn or interleaved line, and a runner killed among them leaves nothing lost or doubled."""

from __future__ import annotations

import json
import re
import textwrap
import time
import warnings

import rel_support

from ntkbayes.harness.store import ResultsStore, StoreWarning

SUITE = """
    seeds = [0, 1, 2]
    device = "cpu"
    threads = 1
    [datasets._rel_blobs]
    n = 60
    [methods._rel_fake]
    sleep = 0.05
    steps = [1, 2, 3, 4]
    members = [1, 3]
"""
CELLS = 24


def _check_store(out_dir) -> dict[str, dict]:
    store = ResultsStore(out_dir)
    raw = store.records_path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert all(isinstance(json.loads(line), dict) for line in lines)  # whole records only
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        recs = store.records()
    ids = [r["run_id"] for r in recs]
    assert len(ids) == len(set(ids)) == CELLS, f"{len(ids)} records for {len(set(ids))} cells"
    assert all(r["status"] == "ok" for r in recs)
    for run_id in ids:  # every record's predictions exist and load
        test, labels, ood = store.load_predictions(run_id)
        assert test.num_points == labels.shape[0] and set(ood) == {"far"}
    assert not list((out_dir / "claims").glob("*.json"))
    return {r["run_id"]: r for r in recs}


def _ran(out: str) -> int:
    return int(re.search(r"ran (\d+) ", out).group(1))


def test_three_runners_share_one_store(cli, tmp_path):
    suite = tmp_path / "c.toml"
    suite.write_text(textwrap.dedent(SUITE))
    argv = ["run", str(suite), "--out", str(tmp_path / "shared"), "--no-progress"]
    procs = [cli.start(argv, f"c{i}") for i in range(3)]
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0], [cli.output(f"c{i}", "err") for i in range(3)]
    ran = [_ran(cli.output(f"c{i}", "out")) for i in range(3)]
    assert sum(ran) == CELLS, ran  # no cell run twice, none skipped
    shared = _check_store(tmp_path / "shared")
    # the same cells as one runner alone, bit for bit (timings aside)
    code, _, err = cli.run(["run", str(suite), "--out", str(tmp_path / "alone"), "--no-progress"], "alone")
    assert code == 0, err
    alone = _check_store(tmp_path / "alone")
    assert {k: rel_support.strip(v) for k, v in shared.items()} == {k: rel_support.strip(v) for k, v in alone.items()}


def test_a_runner_killed_among_others(cli, tmp_path):
    suite = tmp_path / "k.toml"
    # cells long enough (24 × 0.3 s over 3 runners) that the victim is still working when the first record lands
    suite.write_text(textwrap.dedent(SUITE).replace("sleep = 0.05", "sleep = 0.3"))
    argv = ["run", str(suite), "--out", str(tmp_path / "shared"), "--no-progress"]
    procs = [cli.start(argv, f"k{i}") for i in range(3)]
    records = tmp_path / "shared" / "records.jsonl"
    deadline = time.monotonic() + 60
    while not (records.exists() and records.read_bytes().count(b"\n")) and time.monotonic() < deadline:
        time.sleep(0.02)
    procs[0].kill()  # SIGKILL one runner while all three work
    for p in procs:
        p.join(120)
    assert procs[0].exitcode == -9 and [p.exitcode for p in procs[1:]] == [0, 0]
    # the survivors may have skipped the cell the victim held (its claim looked live); a rerun finishes it
    code, out, err = cli.run(argv, "k-resume")
    assert code == 0, err
    _check_store(tmp_path / "shared")
