"""Reliability, results files: garbage lines, torn lines and records whose fields have the wrong type are skipped
with a ``StoreWarning`` naming the file and line (store.py's documented behaviour); what is read back is exactly
the good records, and the resume logic and ``ntkbayes leaderboard`` never crash on such a file."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntkbayes.cli import main
from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore, StoreWarning

EXAMPLES = 150
FIELD_EXAMPLES = 60  # each runs the leaderboard twice (pandas): ~0.15 s apiece
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
stats: dict[str, int] = {}


def _count(key: str) -> None:
    stats[key] = stats.get(key, 0) + 1


def good(i: int, status: str = "ok") -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": f"r{i}", "suite": "s", "dataset": "moons",
            "dataset_label": "moons", "dataset_options": {"n": 100}, "method": "map", "method_label": f"m{i % 2}",
            "params": {"width": 8}, "seed": i, "status": status,
            "error": None if status == "ok" else "RuntimeError: boom",
            "metrics": {"cls/acc": 0.5 + i / 100, "cal/nll": 0.7} if status == "ok" else {}}


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=60).filter(lambda b: b.strip() != b""), min_size=1, max_size=4),
       st.lists(st.integers(0, 5), min_size=4, max_size=4), st.booleans())
def test_garbage_lines_are_skipped_and_named(garbage, positions, torn_tail):
    with tempfile.TemporaryDirectory() as d:
        store = ResultsStore(d)
        lines = [json.dumps(good(i), separators=(",", ":")).encode() for i in range(5)]
        for junk, at in zip(garbage, positions):
            lines.insert(at, junk.replace(b"\n", b" ").replace(b"\r", b" "))
        raw = b"\n".join(lines) + b"\n"
        if torn_tail:  # a writer killed mid-record
            raw += json.dumps(good(9)).encode()[: len(garbage[0]) + 10]
        store.records_path.write_bytes(raw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recs = store.records()
        assert [r["run_id"] for r in recs] == [f"r{i}" for i in range(5)]
        msgs = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
        bad_lines = [n for n, line in enumerate(raw.split(b"\n"), 1)
                     if line.strip() and not line.startswith(b'{"schema_version"') or
                     (line.startswith(b'{"schema_version"') and not line.endswith(b"}"))]
        assert len(msgs) == len(bad_lines), (msgs, bad_lines)
        for msg, n in zip(msgs, bad_lines):
            assert msg.startswith(f"{store.records_path} line {n}: ") and msg.endswith("line skipped")
        with pytest.warns(StoreWarning):
            assert store.done_run_ids() == {f"r{i}" for i in range(5)}
        _count("garbage lines")


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(-1e300, 1e300),
                                     st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)


@settings(SETTINGS, max_examples=FIELD_EXAMPLES)
@given(st.sampled_from(sorted(good(0))), st.one_of(st.just("<delete>"), JSON_VALUES), st.sampled_from(["ok", "failed"]))
def test_records_with_wrongly_typed_fields(key, value, status):
    """A record with one field deleted or replaced by any JSON value: read back or skipped with a warning; the
    leaderboard (CLI) and the resume logic keep working on the rest."""
    with tempfile.TemporaryDirectory() as d:
        store = ResultsStore(d)
        for i in range(3):
            store.append(good(i))
        bad = good(7, status)
        if value == "<delete>":
            bad.pop(key)
        else:
            bad[key] = value
        with open(store.records_path, "a") as f:
            f.write(json.dumps(bad) + "\n")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recs = store.records()
            store.latest()
            store.done_run_ids()
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                codes = [main(["leaderboard", d, "--format", fmt]) for fmt in ("md", "csv")]
        assert codes == [0, 0], err.getvalue()
        assert [r["run_id"] for r in recs[:3]] == ["r0", "r1", "r2"]
        skipped = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
        if len(recs) == 3:
            assert skipped and all(m.startswith(f"{store.records_path} line 4: ") for m in skipped), skipped
            _count(f"bad field: skipped ({key})")
        else:
            assert len(recs) == 4 and not skipped
            _count("bad field: accepted")


def test_leaderboard_on_a_garbled_store_warns_and_shows_the_rest(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(good(0))
    with open(store.records_path, "ab") as f:
        f.write(b'{"schema_version": 1, "run_id": "r1", "metr\n\xff\xfe\n')
    store.append(good(2, "failed"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["leaderboard", str(tmp_path)]) == 0
        assert main(["leaderboard", str(tmp_path), "--format", "csv"]) == 0  # same process: not said again
    assert "| m0 | 1, failed (1/2) | **0.500** ¹ | **0.700** ¹ |" in out.getvalue()
    # each bad line once, as one plain line naming the file and line number (no source line, no category)
    lines = err.getvalue().splitlines()
    assert [line.split(": ", 2)[2].split(" line ")[1][0] for line in lines] == ["2", "3"], lines
    assert all(line.startswith(f"ntkbayes: warning: {store.records_path} line ") and line.endswith("line skipped")
               for line in lines), lines


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\n[hostile records] {sum(stats.values())} files: {json.dumps(stats, sort_keys=True)}")
