"""Results store: append-only, schema-versioned JSON-lines records and per-cell predictions (design.md "Suites").

Layout of a store directory ``DIR``::

    records.jsonl            one JSON record per line, in the order they were appended
    records.jsonl.lock       flock(2) target that serializes writers (its content is meaningless)
    predictions/<run_id>.npz arrays of one cell (np.savez, loaded with allow_pickle=False)
    claims/<run_id>.json     "a runner is working on this cell" markers (see :meth:`ResultsStore.try_claim`)

Safety:

- A record is one line written by a single ``os.write`` to an ``O_APPEND`` descriptor while holding an exclusive
  ``flock`` on ``records.jsonl.lock``, then ``fsync``\\ ed. Two runners writing to one store never interleave
  lines; a crash loses at most the cell in progress. If the file does not end in a newline (a writer died in an
  earlier, partial write), the new record starts on a new line so it is never glued to the debris.
- Predictions are written to a temporary file in ``predictions/`` and ``os.replace``\\ d into place *before* the
  record is appended, so a record never points at missing or half-written predictions.
- Reading never fails on bad content: a truncated or garbled line (not JSON, not an object, missing keys, a field
  of the wrong type — see :func:`record_problem` —, another schema version) is reported with :class:`StoreWarning`
  naming the file and line number, and skipped; :meth:`ResultsStore.append` refuses such a record.
- Claims of runners that died (SIGKILL, power loss) are taken over by the next runner; a dead process is one that
  no longer exists, a zombie, or a reused pid with another start time. ``cleanup_temp`` (called before a run)
  removes such claims and temporary files, so a crash leaves nothing behind after the next run.
- No pickle: records are JSON, arrays are loaded with ``allow_pickle=False``; a run_id from a foreign file is
  checked against ``[0-9A-Za-z_-]+`` before it becomes part of a path.

Re-runs: a cell counts as done when the store holds an ``ok`` record for its run_id and the predictions file the
record names exists (predictions are not committed to git: a fresh clone reruns the cells to recreate them). A
failed cell is recorded (status ``failed``, with the error) and is retried on the next run; when a run_id has
several records, the newest ``ok`` record wins, and the newest ``failed`` one when there is no ``ok`` record
(:meth:`ResultsStore.latest`).

Arrays in ``predictions/<run_id>.npz``: ``test_probs`` (S, N, C) float32, ``test_labels`` (N,) int64,
``ood_<set>_probs`` (S, M, C) float32 per OOD set, and for 2-D datasets ``grid_x`` (G, 2) float32 and
``grid_probs`` (S, G, C) float32. Probabilities are stored in float32 to halve the size; rows still sum to one
within ``Predictive``'s tolerance, and metrics are recomputed from them in float64.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import re
import socket
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

#: Version of the record layout; readers skip records of another version (with a warning).
SCHEMA_VERSION = 1

#: Keys every record must have to be read back.
REQUIRED_KEYS = ("schema_version", "run_id", "dataset", "method", "params", "seed", "status")

#: Types of the fields readers rely on (the leaderboard, the resume logic): a record whose field has another type is
#: refused by :meth:`ResultsStore.append` and skipped by readers. Optional fields may be absent or null.
FIELD_TYPES: dict[str, tuple[type, ...]] = {"dataset": (str,), "method": (str,), "params": (dict,), "seed": (int,)}
OPTIONAL_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "suite": (str,), "dataset_label": (str,), "method_label": (str,), "family": (str,), "dataset_options": (dict,),
    "metrics": (dict,), "fit_info": (dict,), "error": (str,), "conventions": (dict,), "versions": (dict,),
}

#: Record statuses.
STATUS_OK = "ok"
STATUS_FAILED = "failed"

RECORDS_FILE = "records.jsonl"
PREDICTIONS_DIR = "predictions"
CLAIMS_DIR = "claims"

_RUN_ID_RE = re.compile(r"^[0-9A-Za-z_\-]{1,64}$")
_OOD_KEY_RE = re.compile(r"^ood_(.+)_probs$")


class StoreWarning(UserWarning):
    """A line of ``records.jsonl`` could not be read and was skipped."""


def _check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise ValueError(f"run_id: expected 1-64 characters of [0-9A-Za-z_-], got {run_id!r}")
    return run_id


def record_problem(rec: Any) -> str | None:
    """What makes ``rec`` unreadable as a record (missing key, wrong type or value), or None when it is fine."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    if rec["schema_version"] != SCHEMA_VERSION or isinstance(rec["schema_version"], bool):
        return f"schema_version {rec['schema_version']!r}, this reader knows {SCHEMA_VERSION}"
    if not isinstance(rec["run_id"], str) or not _RUN_ID_RE.match(rec["run_id"]):
        return f"bad run_id {rec['run_id']!r}"
    if rec["status"] not in (STATUS_OK, STATUS_FAILED):
        return f"unknown status {rec['status']!r}"
    for fields, optional in ((FIELD_TYPES, False), (OPTIONAL_FIELD_TYPES, True)):
        for key, types in fields.items():
            value = rec.get(key)
            if optional and value is None:
                continue
            if not isinstance(value, types) or isinstance(value, bool):
                names = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")
                return f"field {key!r} should be {names}, got {type(value).__name__}"
    bad = [k for k, v in (rec.get("metrics") or {}).items()
           if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    if bad:
        return f"metric {bad[0]!r} is not a number or null"
    return None


def json_safe(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays → Python, tuples → lists, non-finite floats → None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # a 0-d torch tensor
        with contextlib.suppress(Exception):
            return json_safe(value.item())
    return str(value)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the command name), or None where there is no such file."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat.rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), to detect pid reuse."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` (started at ``start``, when known) still runs. A zombie — a killed runner whose
    parent has not reaped it yet — counts as dead: it holds no lock and will write nothing more."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:  # 0 and -1 would address process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is not None and fields[0] in ("Z", "X"):
        return False
    now = fields[19] if fields is not None and len(fields) > 19 else None
    return start is None or now is None or now == start


class ResultsStore:
    """A results directory: records, predictions and claims. Directories are created on first write.

    Args:
        root: the directory (``results/<suite>`` by default in the CLI).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.records_path = self.root / RECORDS_FILE
        self.lock_path = self.root / (RECORDS_FILE + ".lock")
        self.predictions_dir = self.root / PREDICTIONS_DIR
        self.claims_dir = self.root / CLAIMS_DIR
        self._me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}
        self._offset = 0  # incremental scan of records.jsonl for the done set (try_claim)
        self._done: set[str] = set()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    # -- locking ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive ``flock`` on ``records.jsonl.lock`` (blocks until the other writer is done)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- records ------------------------------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> dict:
        """Append one record atomically (one ``os.write`` under the lock, then fsync); returns what was written.

        The record must have the keys of ``REQUIRED_KEYS``, ``schema_version == SCHEMA_VERSION`` and fields of the
        types in ``FIELD_TYPES`` / ``OPTIONAL_FIELD_TYPES`` (else ValueError naming the problem); non-finite floats
        are written as ``null``.
        """
        rec = json_safe(dict(record))
        problem = record_problem(rec)
        if problem is not None:
            raise ValueError(f"record: {problem}")
        line = json.dumps(rec, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        with self.lock():
            fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and not self._ends_with_newline(size):
                    data = b"\n" + data  # a previous writer died mid-line: start a fresh line
                written = os.write(fd, data)
                if written != len(data):  # only on a full disk or similar; never leave half a line silently
                    raise OSError(f"{self.records_path}: short write ({written} of {len(data)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
        return rec

    def _ends_with_newline(self, size: int) -> bool:
        with open(self.records_path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) == b"\n"

    def _parse_line(self, raw: bytes, lineno: int, warn: bool) -> dict | None:
        if not raw.strip():
            return None
        where = f"{self.records_path} line {lineno}"
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5000-digit number, nesting 10⁵ deep
            problem = f"not valid JSON ({type(e).__name__}: {str(e)[:80]})"
        else:
            problem = record_problem(rec)
            if problem is None:
                return rec
        if warn:
            warnings.warn(f"{where}: {problem}; line skipped", StoreWarning, stacklevel=3)
        return None

    def records(self, status: str | None = None) -> list[dict]:
        """Every readable record in file order (optionally only ``status`` "ok" or "failed").

        Bad lines are skipped with a :class:`StoreWarning` naming the file and line number.
        """
        if status not in (None, STATUS_OK, STATUS_FAILED):
            raise ValueError(f"status: expected None, 'ok' or 'failed', got {status!r}")
        try:
            data = self.records_path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            rec = self._parse_line(raw, lineno, warn=True)
            if rec is not None and (status is None or rec["status"] == status):
                out.append(rec)
        return out

    def latest(self) -> dict[str, dict]:
        """run_id → its effective record: the newest ``ok`` record, else the newest ``failed`` one."""
        out: dict[str, dict] = {}
        for rec in self.records():
            prev = out.get(rec["run_id"])
            if prev is None or rec["status"] == STATUS_OK or prev["status"] == STATUS_FAILED:
                out[rec["run_id"]] = rec
        return out

    def done_run_ids(self) -> set[str]:
        """run_ids that have an ``ok`` record whose predictions file exists (a rerun skips them; failed cells, and
        cells whose predictions are missing — a fresh clone of a repository that commits records but not
        predictions — are run again)."""
        return {r["run_id"] for r in self.records(STATUS_OK) if self._is_done(r)}

    def _is_done(self, rec: Mapping[str, Any]) -> bool:
        """An ``ok`` record that names no predictions file, or whose predictions file exists."""
        if rec["status"] != STATUS_OK:
            return False
        return not isinstance(rec.get("predictions"), str) or self.predictions_path(rec["run_id"]).exists()

    def _refresh_done(self) -> set[str]:
        """Update the done set from lines appended since the last call (complete lines only, no warnings)."""
        try:
            with open(self.records_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self._done
        end = data.rfind(b"\n")
        if end < 0:
            return self._done
        for raw in data[: end + 1].split(b"\n"):
            rec = self._parse_line(raw, 0, warn=False)
            if rec is not None and self._is_done(rec):
                self._done.add(rec["run_id"])
        self._offset += end + 1
        return self._done

    # -- claims -------------------------------------------------------------------------------------------------
    def try_claim(self, run_id: str) -> bool:
        """Mark ``run_id`` as being run by this process, unless it is done or another live runner holds it.

        Under the store lock: False if the store has an ``ok`` record for it, or a claim by a live process on
        this host (pid alive with the same start time) or by any process on another host (liveness cannot be
        checked there; delete ``claims/`` by hand after a crash on another machine). A claim left by a dead
        process is taken over. This makes two runners on one store record every cell exactly once.
        """
        _check_run_id(run_id)
        path = self.claims_dir / f"{run_id}.json"
        with self.lock():
            if run_id in self._refresh_done():
                return False
            try:
                owner = json.loads(path.read_text())
            except FileNotFoundError:
                owner = None
            except (OSError, ValueError):
                owner = None  # a garbled claim (crash while writing it) is void
            if isinstance(owner, dict) and not self._owns(owner):
                if owner.get("host") != self._me["host"]:
                    return False
                pid = owner.get("pid")
                if isinstance(pid, int) and _alive(pid, owner.get("start")):
                    return False
            self.claims_dir.mkdir(parents=True, exist_ok=True)
            claim = {**self._me, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            path.write_text(json.dumps(claim))
            return True

    def release(self, run_id: str) -> None:
        """Remove this process's claim on ``run_id`` (after its record is appended)."""
        path = self.claims_dir / f"{_check_run_id(run_id)}.json"
        with self.lock(), contextlib.suppress(FileNotFoundError):
            owner = json.loads(path.read_text())
            if isinstance(owner, dict) and self._owns(owner):
                path.unlink()

    def _owns(self, claim: dict) -> bool:
        return all(claim.get(k) == v for k, v in self._me.items())

    # -- predictions --------------------------------------------------------------------------------------------
    def predictions_path(self, run_id: str) -> Path:
        """``predictions/<run_id>.npz``."""
        return self.predictions_dir / f"{_check_run_id(run_id)}.npz"

    def save_arrays(self, run_id: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write arrays to ``predictions/<run_id>.npz`` atomically (temp file, fsync, ``os.replace``)."""
        final = self.predictions_path(run_id)
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        clean = {}
        for k, v in arrays.items():
            a = np.asarray(v)
            if a.dtype == object:
                raise ValueError(f"predictions {run_id}: array {k!r} has dtype object (no pickle)")
            clean[k] = a
        buf = io.BytesIO()
        np.savez(buf, **clean)
        return write_atomic(final, buf.getvalue(), tag=run_id)  # temp name .<run_id>.<pid>.*.tmp: see sweep

    def save_predictions(self, run_id: str, test_pred, labels, ood_preds: Mapping[str, Any] | None = None,
                         extra: Mapping[str, np.ndarray] | None = None) -> Path:
        """Save a cell's predictives: ``test_pred`` (Predictive, S×N×C), ``labels`` (N,), ``ood_preds`` name →
        Predictive (S×M×C), and ``extra`` arrays (e.g. ``grid_x`` (G, 2), ``grid_probs`` (S, G, C))."""
        arrays = prediction_arrays(test_pred, labels, ood_preds)
        arrays.update(extra or {})
        return self.save_arrays(run_id, arrays)

    def load_arrays(self, run_id: str) -> dict[str, np.ndarray]:
        """Every array of ``predictions/<run_id>.npz`` (``allow_pickle=False``: loading runs no code)."""
        path = self.predictions_path(run_id)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no saved predictions for run_id {run_id}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def load_predictions(self, run_id: str):
        """(test Predictive (S, N, C), labels (N,) int64 tensor, OOD set name → Predictive (S, M, C))."""
        import torch

        from ntkbayes.predictive import Predictive

        arrays = self.load_arrays(run_id)
        for key in ("test_probs", "test_labels"):
            if key not in arrays:
                raise ValueError(f"{self.predictions_path(run_id)}: missing array {key!r}")
        test = Predictive(torch.from_numpy(arrays["test_probs"]))
        labels = torch.from_numpy(arrays["test_labels"].astype(np.int64))
        ood = {}
        for key in sorted(arrays):
            m = _OOD_KEY_RE.match(key)
            if m:
                ood[m.group(1)] = Predictive(torch.from_numpy(arrays[key]))
        return test, labels, ood

    def cleanup_temp(self) -> int:
        """Remove what crashed runners on this host left behind: temporary prediction files
        (``.<run_id>.<pid>.*.tmp``) whose writer is gone, and claims whose owner is gone (a runner killed
        between appending a record and releasing its claim leaves a claim on a finished cell that nothing would
        ever take over). Claims of live processes and of other hosts stay. Returns the number of files removed."""
        n = self._cleanup_claims()
        if not self.predictions_dir.is_dir():
            return n
        for p in self.predictions_dir.glob(".*.tmp"):
            parts = p.name.split(".")
            pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
            if pid is not None and pid != os.getpid() and _alive(pid, None):
                continue
            if pid == os.getpid():
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n

    def _cleanup_claims(self) -> int:
        if not self.claims_dir.is_dir():
            return 0
        n = 0
        with self.lock():
            for path in self.claims_dir.glob("*.json"):
                try:
                    owner = json.loads(path.read_text())
                except FileNotFoundError:
                    continue
                except (OSError, ValueError):
                    owner = None  # garbled: its writer died while writing it
                if isinstance(owner, dict):
                    if self._owns(owner) or owner.get("host") != self._me["host"]:
                        continue
                    pid = owner.get("pid")
                    if isinstance(pid, int) and _alive(pid, owner.get("start")):
                        continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    n += 1
        return n


def write_atomic(path: str | os.PathLike, data: bytes, *, tag: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, fsync, ``os.replace`` (readers see the old
    file or the whole new one, never half of it). ``tag`` names the temporary file (default: the file's name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{tag or path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def prediction_arrays(test_pred, labels, ood_preds: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Arrays of the predictions file: member probabilities as float32, labels as int64."""
    out = {"test_probs": _probs32(test_pred), "test_labels": np.asarray(_numpy(labels), dtype=np.int64)}
    for name, pred in (ood_preds or {}).items():
        out[f"ood_{name}_probs"] = _probs32(pred)
    return out


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _probs32(pred) -> np.ndarray:
    probs = getattr(pred, "member_probs", pred)
    return np.ascontiguousarray(_numpy(probs), dtype=np.float32)
