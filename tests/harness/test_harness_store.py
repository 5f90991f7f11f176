"""Results store: atomic appends from several processes, bad lines skipped with a warning, newest-wins,
claims, predictions round-trip without pickle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore, StoreWarning
from ntkbayes.predictive import Predictive


def rec(run_id: str, status: str = "ok", **kw) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "dataset": "d", "method": "m", "params": {},
            "seed": 0, "status": status, "metrics": {"cls/acc": 0.5}, **kw}


def test_append_and_read_back(tmp_path):
    store = ResultsStore(tmp_path / "r")
    assert store.records() == [] and store.done_run_ids() == set()
    store.append(rec("a", metrics={"x": float("nan"), "y": np.float64(0.25), "z": 1 / 3}))
    store.append(rec("b", status="failed", error="RuntimeError: boom\nsecond line"))
    lines = (tmp_path / "r" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the newline inside the error is escaped: one record, one line
    got = store.records()
    assert got[0]["metrics"] == {"x": None, "y": 0.25, "z": 1 / 3}  # full precision, NaN → null
    assert got[1]["error"] == "RuntimeError: boom\nsecond line"
    assert [r["run_id"] for r in store.records("failed")] == ["b"]
    assert store.done_run_ids() == {"a"}
    with pytest.raises(ValueError, match="missing key"):
        store.append({"run_id": "c"})
    with pytest.raises(ValueError, match="schema_version"):
        store.append(rec("c", schema_version=2))
    with pytest.raises(ValueError, match="run_id"):
        store.append(rec("../../etc"))


def test_newest_ok_wins_and_failed_cells_are_retried(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(rec("a", status="failed", error="E: 1"))
    store.append(rec("b", metrics={"cls/acc": 0.1}))
    assert store.done_run_ids() == {"b"}  # a failed cell is not done: a rerun retries it
    store.append(rec("a", metrics={"cls/acc": 0.7}))
    store.append(rec("b", metrics={"cls/acc": 0.2}))
    store.append(rec("b", status="failed", error="E: late"))
    latest = store.latest()
    assert latest["a"]["status"] == "ok" and latest["b"]["metrics"]["cls/acc"] == 0.2
    assert store.done_run_ids() == {"a", "b"}


def test_garbled_and_truncated_lines_are_skipped_with_a_warning(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(rec("good1"))
    with open(store.records_path, "ab") as f:
        f.write(b"this is not json\n")
        f.write(b"[1, 2, 3]\n")
        f.write(json.dumps({"run_id": "x"}).encode() + b"\n")
        f.write(json.dumps(rec("v2", schema_version=2)).encode() + b"\n")
        f.write(b"\xff\xfe garbage bytes\n")
        f.write(json.dumps(rec("cut")).encode()[:40])  # a writer killed mid-line: no newline
    with pytest.warns(StoreWarning) as warned:
        got = store.records()
    assert [r["run_id"] for r in got] == ["good1"]
    msgs = [str(w.message) for w in warned]
    assert len(msgs) == 6
    for lineno, msg in zip((2, 3, 4, 5, 6, 7), msgs):
        assert msg.startswith(f"{store.records_path} line {lineno}:") and "skipped" in msg
    # the next append starts a fresh line instead of gluing onto the truncated one
    store.append(rec("good2"))
    with pytest.warns(StoreWarning):
        assert [r["run_id"] for r in store.records()] == ["good1", "good2"]
    assert store.try_claim("cut") is True  # the truncated record does not count as done


_WRITER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_store", sys.argv[1])  # store.py alone: no torch import
store_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(store_mod)
root, worker, n, payload = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
store = store_mod.ResultsStore(root)
for i in range(n):
    store.append({"schema_version": 1, "run_id": f"w{worker}-{i}", "dataset": "d", "method": "m", "params": {},
                  "seed": 0, "status": "ok", "blob": "x" * payload, "worker": worker})
"""


def test_concurrent_appends_never_interleave(tmp_path):
    # records of 70 kB: larger than a pipe buffer and a page, so only the lock + one write keep lines whole
    import ntkbayes.harness.store as store_mod

    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, store_mod.__file__, str(tmp_path), str(w), "15",
                               "70000"]) for w in range(4)]
    for p in procs:
        assert p.wait(120) == 0
    raw = (tmp_path / "records.jsonl").read_bytes().split(b"\n")
    assert raw[-1] == b"" and len(raw) == 61
    recs = [json.loads(line) for line in raw[:-1]]  # every line is a whole JSON record
    assert sorted(r["run_id"] for r in recs) == sorted(f"w{w}-{i}" for w in range(4) for i in range(15))
    assert all(len(r["blob"]) == 70_000 for r in recs)


def test_claims(tmp_path):
    store = ResultsStore(tmp_path)
    other = ResultsStore(tmp_path)
    assert store.try_claim("c1") and store.try_claim("c1")  # re-claiming one's own claim is fine
    # a claim by a live process elsewhere on this host blocks; a dead one is taken over
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from ntkbayes.harness.store import _process_start

        start = None
        for _ in range(100):
            start = _process_start(live.pid)
            if start:
                break
        claim = {"pid": live.pid, "host": socket.gethostname(), "start": start}
        (tmp_path / "claims" / "c2.json").write_text(json.dumps(claim))
        assert store.try_claim("c2") is False
        (tmp_path / "claims" / "c3.json").write_text(json.dumps({**claim, "host": "elsewhere"}))
        assert store.try_claim("c3") is False
    finally:
        live.kill()
        live.wait()
    assert store.try_claim("c2") is True  # its owner is gone
    (tmp_path / "claims" / "c4.json").write_text(json.dumps({**claim, "start": "1"}))
    assert store.try_claim("c4") is True  # pid reused by another process: the claim is stale
    (tmp_path / "claims" / "c5.json").write_text("{garbled")
    assert store.try_claim("c5") is True
    store.append(rec("c6"))
    assert other.try_claim("c6") is False  # done
    store.release("c1")
    assert not (tmp_path / "claims" / "c1.json").exists()
    other.release("c2")  # same process, so the same owner: released
    assert not (tmp_path / "claims" / "c2.json").exists()


def test_predictions_round_trip_float32_and_no_pickle(tmp_path):
    store = ResultsStore(tmp_path)
    g = torch.Generator().manual_seed(0)
    test = Predictive(torch.softmax(torch.randn(3, 7, 4, generator=g, dtype=torch.float64), -1))
    far = Predictive(torch.softmax(torch.randn(3, 5, 4, generator=g, dtype=torch.float64), -1))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    grid = np.zeros((9, 2), np.float32)
    path = store.save_predictions("abc", test, labels, {"far_set": far},
                                  extra={"grid_x": grid, "grid_probs": np.full((3, 9, 4), 0.25, np.float32)})
    assert path == tmp_path / "predictions" / "abc.npz" and not list(path.parent.glob(".*.tmp"))
    arrays = store.load_arrays("abc")
    assert arrays["test_probs"].dtype == np.float32 and arrays["test_probs"].shape == (3, 7, 4)
    assert arrays["test_labels"].dtype == np.int64 and arrays["grid_probs"].shape == (3, 9, 4)
    t, y, ood = store.load_predictions("abc")
    assert torch.equal(y, labels) and set(ood) == {"far_set"}
    assert torch.allclose(t.member_probs, test.member_probs, atol=1e-7, rtol=0)
    assert torch.allclose(ood["far_set"].member_probs, far.member_probs, atol=1e-7, rtol=0)
    # an object array would need pickle: refused on writing, and a foreign file with one is refused on reading
    with pytest.raises(ValueError, match="object"):
        store.save_arrays("bad", {"x": np.array([{"a": 1}], dtype=object)})
    np.savez(tmp_path / "predictions" / "evil.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        store.load_arrays("evil")
    with pytest.raises(FileNotFoundError, match="no saved predictions"):
        store.load_predictions("nothere")
    with pytest.raises(ValueError, match="run_id"):
        store.load_arrays("../x")


def test_cleanup_removes_temp_files_of_dead_writers_only(tmp_path):
    store = ResultsStore(tmp_path)
    (tmp_path / "predictions").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "predictions" / f".abc.{dead_pid}.x1.tmp").write_bytes(b"partial")
    (tmp_path / "predictions" / f".abd.{os.getpid()}.x2.tmp").write_bytes(b"mine, in progress")
    assert store.cleanup_temp() == 1
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == [f".abd.{os.getpid()}.x2.tmp"]


def test_records_with_wrongly_typed_fields_are_refused_and_skipped(tmp_path):
    store = ResultsStore(tmp_path)
    for field, value in (("seed", "0"), ("seed", True), ("params", [1]), ("method_label", ["x"]),
                         ("metrics", {"cls/acc": "high"}), ("metrics", {"cls/acc": True}), ("error", 3),
                         ("dataset", None)):
        with pytest.raises(ValueError, match=field if field != "metrics" else "metric"):
            store.append(rec("a", **{field: value}))
        with open(store.records_path, "a") as f:
            f.write(json.dumps(rec("b", **{field: value})) + "\n")
    store.append(rec("c", method_label=None, error=None, metrics={"x": None, "y": 2}))  # null optional fields
    with open(store.records_path, "ab") as f:
        f.write(b"[" * 100_000 + b"\n")  # nested too deep for the json module: RecursionError
        f.write(b'{"seed": ' + b"9" * 5000 + b"}\n")  # an int beyond Python's str→int limit: plain ValueError
    with pytest.warns(StoreWarning) as warned:
        assert [r["run_id"] for r in store.records()] == ["c"]
    assert len(warned) == 10 and "field 'seed' should be int" in str(warned[0].message)
    assert "RecursionError" in str(warned[8].message) and "line 10:" in str(warned[8].message)


def test_zombies_and_bad_pids_are_dead(tmp_path):
    from ntkbayes.harness.store import _alive, _process_start

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):  # exited but not reaped: a zombie, as a SIGKILLed runner is until its parent waits
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        import time

        time.sleep(0.05)
    assert _alive(child.pid, _process_start(child.pid)) is False
    child.wait()
    assert _alive(os.getpid(), _process_start(os.getpid())) is True
    assert not any(_alive(p, None) for p in (0, -1, True))


def test_cleanup_removes_claims_of_dead_runners(tmp_path):
    store = ResultsStore(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "claims").mkdir()
    me = {"host": socket.gethostname()}
    (tmp_path / "claims" / "dead.json").write_text(json.dumps({**me, "pid": int(dead.stdout), "start": "1"}))
    (tmp_path / "claims" / "garbled.json").write_text("{")
    (tmp_path / "claims" / "elsewhere.json").write_text(json.dumps({"host": "other", "pid": 1, "start": "1"}))
    assert store.try_claim("mine")
    assert store.cleanup_temp() == 2
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["elsewhere.json", "mine.json"]
