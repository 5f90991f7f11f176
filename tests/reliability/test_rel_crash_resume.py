"""Reliability: SIGKILL the ``ntkbayes run`` process at random moments, resume, and get exactly the records of an
uninterrupted run (timings aside): no cell lost, none duplicated, no corrupt line, predictions bit-identical.

The seed of the kill schedule is printed (``pytest -s``) and can be fixed with ``NTKBAYES_CRASH_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import textwrap
import time
import warnings

import numpy as np
import rel_support

from ntkbayes.harness.store import ResultsStore, StoreWarning

#: Kills that must land on a running process (at least 20, so every stage of a cell is hit).
MIN_KILLS = 24

#: Kill moments are uniform in [0, MAX_DELAY] seconds after the start. Here a forked runner needs about 0.3 s to
#: read the suite and the store and check data and methods, then about 0.1 s per cell, so kills land in every
#: phase: start-up, fitting, saving predictions, appending the record, releasing the claim.
MAX_DELAY = 1.0

SUITE = """
    seeds = [0, 1]
    device = "cpu"
    threads = 1
    [datasets._rel_blobs]
    n = 60
    [methods._rel_fake]
    sleep = 0.05
    steps = [1, 2, 3, 4, 5, 6, 7, 8]
    members = [1, 2]
"""


def _lines_state(store: ResultsStore) -> tuple[int, int]:
    """(complete records, bytes after the last newline) of records.jsonl; every complete line must be JSON."""
    try:
        raw = store.records_path.read_bytes()
    except FileNotFoundError:
        return 0, 0
    *lines, tail = raw.split(b"\n")
    for line in lines:
        json.loads(line)  # a torn or interleaved line fails here
    return len(lines), len(tail)


def _final(store: ResultsStore) -> dict[str, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # no corrupt line anywhere
        recs = store.records()
    ids = [r["run_id"] for r in recs]
    assert len(ids) == len(set(ids)), "a cell was recorded twice"
    return {r["run_id"]: r for r in recs}


def test_sigkill_at_random_moments_then_resume(cli, tmp_path, capsys):
    seed = int(os.environ.get("NTKBAYES_CRASH_SEED", random.SystemRandom().randrange(2**31)))
    with capsys.disabled():
        print(f"\n[crash-resume] kill schedule seed = {seed} (set NTKBAYES_CRASH_SEED to replay)")
    rng = random.Random(seed)
    suite = tmp_path / "crash.toml"
    suite.write_text(textwrap.dedent(SUITE))

    def argv(out):
        return ["run", str(suite), "--out", str(out), "--no-progress"]

    t_ref = time.perf_counter()
    code, out, err = cli.run(argv(tmp_path / "ref"), "ref")
    assert code == 0, err
    t_ref = time.perf_counter() - t_ref
    ref = _final(ResultsStore(tmp_path / "ref"))
    assert len(ref) == 32 and all(r["status"] == "ok" for r in ref.values())

    kills = runs_finished = rounds = 0
    seen = {"leftover_claims": 0, "orphan_predictions": 0, "temp_files": 0, "kills_before_first_record": 0}
    t0 = time.perf_counter()
    while kills < MIN_KILLS:
        rounds += 1
        out_dir = tmp_path / f"round{rounds}"
        store = ResultsStore(out_dir)
        for attempt in range(400):
            if kills >= MIN_KILLS:
                break
            before, _ = _lines_state(store)
            p = cli.start(argv(out_dir), f"r{rounds}-{attempt}")
            time.sleep(rng.uniform(0.0, MAX_DELAY))
            p.kill()  # SIGKILL (a no-op when it already finished)
            p.join(30)
            if p.exitcode == 0:
                runs_finished += 1
                break
            assert p.exitcode == -9, (p.exitcode, cli.output(f"r{rounds}-{attempt}", "err"))
            kills += 1
            after, tail = _lines_state(store)  # complete lines are whole JSON records after every kill
            seen["kills_before_first_record"] += after == before
            claims = list((out_dir / "claims").glob("*.json")) if (out_dir / "claims").is_dir() else []
            seen["leftover_claims"] += len(claims)
            preds = out_dir / "predictions"
            if preds.is_dir():
                seen["temp_files"] += len(list(preds.glob(".*.tmp")))
                recorded = {r["run_id"] for r in store.records()}
                seen["orphan_predictions"] += len({q.stem for q in preds.glob("*.npz")} - recorded)
            assert tail == 0, "a killed writer left half a record"
        code, out, err = cli.run(argv(out_dir), f"r{rounds}-final")  # resume to the end without kills
        assert code == 0, err
        got = _final(store)
        assert set(got) == set(ref), f"round {rounds}: lost {set(ref) - set(got)}, extra {set(got) - set(ref)}"
        for run_id, r in ref.items():
            assert rel_support.strip(got[run_id]) == rel_support.strip(r), run_id
            a, b = store.load_arrays(run_id), ResultsStore(tmp_path / "ref").load_arrays(run_id)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), run_id
        assert not list((out_dir / "predictions").glob(".*.tmp"))
        assert not list((out_dir / "claims").glob("*.json"))
        assert {q.stem for q in (out_dir / "predictions").glob("*.npz")} == set(ref)
    with capsys.disabled():
        print(f"[crash-resume] {kills} SIGKILLs survived in {rounds} round(s) of 32 cells, {runs_finished} runs "
              f"finished before their kill, {time.perf_counter() - t0:.1f} s (uninterrupted run: {t_ref:.1f} s); "
              f"seen after kills: {seen}")
