"""Reliability, suite files: random bytes, non-UTF-8, truncated files and random TOML documents (unknown keys, values
of every type at every key) either load or raise a ValueError naming the file; the CLI answers every bad file with
exit status 2 and exactly one line on stderr, no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntkbayes.cli import main
from ntkbayes.harness.config import Suite, load_suite

#: Examples per property: enough to reach each kind of mutation many times, small enough for CI (≈ 10 s total).
EXAMPLES = 150

VALID = """\
name = "hostile"
seeds = [0, 1]
device = "cpu"
threads = 1
[datasets.moons]
n = 100
noise = 0.2
[datasets.wine2]
dataset = "wine"
id_classes = [0, 1]
[methods.map]
width = 8
epochs = 2
activation = "tanh"
[methods.ens]
method = "deep_ensemble"
members = [2, 3]
"""

SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

stats: dict[str, int] = {}


def _check_file(raw: bytes, kind: str) -> None:
    """The API loads ``raw`` or raises ValueError naming the file; the CLI then exits 2 with one line."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "suite.toml"
        path.write_bytes(raw)
        try:
            suite = load_suite(path)
        except ValueError as e:
            msg = str(e)
            assert str(path) in msg and "\n" not in msg.strip(), msg
            stats[f"{kind}: rejected"] = stats.get(f"{kind}: rejected", 0) + 1
        else:
            assert isinstance(suite, Suite) and suite.cells()
            stats[f"{kind}: valid"] = stats.get(f"{kind}: valid", 0) + 1
            return
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["run", str(path), "--out", str(Path(d) / "out"), "--no-progress"])
        lines = err.getvalue().splitlines()
        assert code == 2 and out.getvalue() == "", (code, out.getvalue())
        assert len(lines) == 1 and lines[0].startswith("ntkbayes: error: ") and str(path) in lines[0], lines
        assert not (Path(d) / "out").exists()  # nothing ran, nothing was written


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    _check_file(raw, "random bytes")


@SETTINGS
@given(st.integers(0, len(VALID.encode()) - 1))
def test_truncated_file(cut):
    _check_file(VALID.encode()[:cut], "truncated")


@SETTINGS
@given(st.integers(0, len(VALID.encode())), st.binary(min_size=1, max_size=4).filter(
    lambda b: not _utf8(b)))
def test_non_utf8_bytes_inserted(at, junk):
    raw = VALID.encode()
    _check_file(raw[:at] + junk + raw[at:], "non-UTF-8")


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- random documents ------------------------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, (int, str)):
        return json.dumps(v) if isinstance(v, str) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _dump(doc: dict) -> str:
    """A minimal TOML writer: top-level scalars, then one [a.b] table per dict of dicts (inline tables below)."""
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            tables.append((k, v))
        else:
            lines.append(f"{json.dumps(k)} = {_toml_value(v)}")
    for k, v in tables:
        for label, table in v.items():
            lines.append(f"[{json.dumps(k)}.{json.dumps(label)}]")
            lines += [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in table.items()]
    return "\n".join(lines) + "\n"


KEYS = st.sampled_from(["name", "seeds", "device", "threads", "data_root", "description", "method", "dataset",
                        "n", "noise", "width", "epochs", "members", "activation", "lr", "optimizer", "id_classes",
                        "root", "seed", "download", "bogus", "", "map", "moons", "ü", "a.b", "x y"])
SCALARS = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["cpu", "cuda", "tanh", "lbfgs", "moons", "map"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS, inner, max_size=3)), max_leaves=8)


def _base() -> dict:
    return {"seeds": [0, 1], "device": "cpu",
            "datasets": {"moons": {"n": 100}, "wine2": {"dataset": "wine", "id_classes": [0, 1]}},
            "methods": {"map": {"width": 8, "epochs": 2}, "ens": {"method": "deep_ensemble", "members": [2, 3]}}}


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["top", "datasets.moons", "datasets.wine2", "methods.map",
                                            "methods.ens", "datasets", "methods"]), KEYS, VALUES),
                min_size=1, max_size=3))
def test_random_documents(edits):
    doc = _base()
    for where, key, value in edits:  # set or replace a key with a random value somewhere in a valid suite
        target = doc
        if where != "top":
            for part in where.split("."):
                target = target.setdefault(part, {}) if isinstance(target, dict) else {}
        if isinstance(target, dict):
            target[key] = value
    _check_file(_dump(doc).encode(), "random document")


def test_the_valid_suite_is_valid():
    """The base of every mutation loads (so rejections come from the mutations)."""
    suite = load_suite(_write(VALID))
    assert len(suite.cells()) == 2 * 2 * 3
    assert len(load_suite(_write(_dump(_base()))).cells()) == 2 * 2 * 3


def _write(text: str) -> Path:
    d = Path(tempfile.mkdtemp())
    (d / "s.toml").write_text(text)
    return d / "s.toml"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\n[hostile suites] {sum(stats.values())} files generated: {json.dumps(stats)}")


def test_cli_process_answers_bad_files_with_one_line(cli, tmp_path):
    """The same through a separate ``ntkbayes`` process (real file descriptors: library warnings would show)."""
    cases = {"binary": bytes(range(256)), "latin1": "seeds = [0]\nname = \"caf\xe9\"\n".encode("latin-1"),
             "truncated": VALID.encode()[:100], "unknown_key": VALID.replace("threads", "thread").encode()}
    for name, raw in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_bytes(raw)
        code, out, err = cli.run(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"], f"bad-{name}")
        assert code == 2 and out == "", (name, code, out, err)
        assert len(err.splitlines()) == 1 and err.startswith(f"ntkbayes: error: {path}: "), (name, err)
    assert not (tmp_path / "out").exists()


#: Method values that are the right TOML type but not allowed (docs/benchmarks.md, suite format): each suite
#: stops at load, exit 2, one line naming the table and key and what is allowed; nothing is written. The
#: `mode` and `members` cases rely on the method class's ``check_param`` (enum membership, ``members ≥ 1``).
BAD_VALUES = {
    "bogus_mode": ('[methods.ntk]\nmethod = "ntk_ensemble"\nmode = "bogus"\n', "[methods.ntk] mode: ",
                   ("network", "linearized", "kernel")),
    "misspelled_method": ('[methods.ntk]\nmethod = "ntk_ensembel"\n', "[methods.ntk]: unknown method",
                          ("'ntk_ensembel'", "available: ", "ntk_ensemble")),
    "string_width": ('[methods.map]\nwidth = "wide"\n', "[methods.map] width: ", ("integer", "'wide'")),
    "zero_members": ('[methods.ens]\nmethod = "deep_ensemble"\nmembers = 0\n', "[methods.ens] members: ",
                     ("1", "0")),
    "zero_members_in_a_sweep": ('[methods.ens]\nmethod = "deep_ensemble"\nmembers = [2, 0]\n',
                                "[methods.ens] members: ", ("1", "0")),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_method_values_stop_at_load(case, tmp_path, capsys):
    table, where, allowed = BAD_VALUES[case]
    path = tmp_path / f"{case}.toml"
    path.write_text('seeds = [0]\ndevice = "cpu"\n[datasets.moons]\nn = 60\n' + table)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), "--no-progress"])
    stdout, err = capsys.readouterr()
    assert code == 2 and stdout == "", (code, stdout, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ntkbayes: error: {path}: {where}"), lines
    assert all(word in lines[0] for word in allowed), lines[0]
    assert not (out / "records.jsonl").exists() and not out.exists()
