"""``ntkbayes run --workers 2``: two runners share a suite's cells, and an interrupt stops every one of them.

The suite is the smoke suite's MAP on moons over several seeds, 100 epochs without early stopping (a few seconds a
cell: the signal must arrive while cells are still running). The command runs in its
own session (process group), as ``make run`` does under a terminal or ``timeout -s INT``: SIGINT to the group
(Ctrl-C) and SIGTERM to the first runner only (``kill``) must each leave no runner alive, a readable store and no
live claim; the next run must finish the suite with every cell recorded exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ntkbayes.harness.store import ResultsStore

SUITE = """\
name = "workers"
seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
device = "cpu"
threads = 1
[datasets.moons]
n = 300
[methods.map]
width = 64
epochs = 100
patience = 100
"""

#: Cells of the suite: enough that an interrupt sent after the first record lands while cells still run (~1 s each).
N_CELLS = 12
#: Seconds to wait for the first record (a cold start imports torch in each runner) and for the runners to stop.
START_TIMEOUT_S, STOP_TIMEOUT_S = 120.0, 30.0


def _start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    (tmp_path / "s.toml").write_text(SUITE)
    argv = [sys.executable, "-m", "ntkbayes.cli", "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"),
            "--no-progress", *extra]
    # SIGINT back to its default in the child: a shell starts background jobs (`.ci/run &`) with SIGINT ignored, and
    # Python keeps an inherited SIG_IGN instead of raising KeyboardInterrupt, so Ctrl-C would never reach the runners
    return subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_records(store: ResultsStore, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(store.records()) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no record appeared"
        time.sleep(0.2)


def _runner_pids(pgid: int) -> list[int]:
    """Processes of the group (read from /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[2]) == pgid and stat[0] not in ("Z", "X"):
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("how", ["sigint_to_group", "sigterm_to_first_runner"])
def test_interrupt_stops_every_runner_and_the_next_run_resumes(tmp_path, how):
    from ntkbayes import methods

    if "map" not in methods.available():
        pytest.skip("map method not written yet")
    proc = _start(tmp_path, "--workers", "2")
    store = ResultsStore(tmp_path / "out")
    _wait_for_records(store, 1, proc)
    assert len(_runner_pids(proc.pid)) == 2  # the first runner and its worker, in one process group
    if how == "sigint_to_group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(proc.pid), f"runners left: {_runner_pids(proc.pid)}"
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, out, err)
    done = len(store.records())
    assert 1 <= done and (done < N_CELLS or how == "sigterm_to_first_runner")  # a worker may finish within its grace
    # an interrupted runner releases its claims; one killed by SIGKILL would leave claims the next run takes over
    live = [c for c in store.claims_dir.glob("*.json") if Path(f"/proc/{json.loads(c.read_text())['pid']}").exists()]
    assert not live, live
    if how != "sigint_to_group":
        return
    # the next run resumes: only the missing cells run, and every cell ends with exactly one record
    again = _start(tmp_path, "--workers", "2")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"{N_CELLS} cells, {done} already done" in out
    counts = Counter(r["run_id"] for r in store.records())
    assert len(counts) == N_CELLS and set(counts.values()) == {1}
    assert all(r["status"] == "ok" for r in store.records())
    json.dumps(store.records())
