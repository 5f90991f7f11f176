"""Reliability: nothing in the package can run code while loading results, predictions or caches.

1. A scan of every module of ``ntkbayes/`` (its syntax tree, so docstrings that mention ``exec`` do not count):
   no pickle-family import (pickle, cPickle, dill, joblib, cloudpickle, marshal, shelve), no ``torch.load`` without
   ``weights_only=True``, no ``np.load`` with ``allow_pickle`` other than ``False``, no pandas ``read_pickle``,
   no ``yaml.load`` / ``unsafe_load``, no ``eval`` / ``exec`` / ``compile`` / ``__import__``.
2. A results directory crafted by someone else — predictions whose arrays are pickled objects that would create
   a file when unpickled, a records line that names a pickle — is read by every loader (store, leaderboard,
   comparison) without that file appearing, and the object arrays are refused with a ValueError.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ntkbayes
from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore

PACKAGE = Path(ntkbayes.__file__).resolve().parent
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "marshal", "shelve"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}

#: Reviewed exceptions. CIFAR's python batches are pickles; data/vision.py imports pickle only to subclass
#: ``pickle.Unpickler`` with a ``find_class`` that admits numpy's array-rebuilding functions and nothing else
#: (checked below, statically and with a trapped file).
ALLOWED = {"ntkbayes/data/vision.py: import pickle"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
        if kw.arg is None:  # **kwargs: cannot be checked statically
            return kw.value
    return None


def scan(source: str, filename: str) -> list[str]:
    """Unsafe-loading constructs in one module, as "file:line: what"."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            problems += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            problems.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in FORBIDDEN_CALLS:
                problems.append(f"{where}: {name}()")
            elif name.endswith("torch.load"):
                wo = _keyword(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                ap = _keyword(node, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where}: np.load with allow_pickle not False")
            elif last in ("read_pickle", "to_pickle", "unsafe_load", "full_load") or name in ("yaml.load",):
                problems.append(f"{where}: {name}()")
            elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads"):
                problems.append(f"{where}: {name}() (unrestricted unpickling)")
    return problems


def test_scanner_finds_what_it_looks_for():
    """The scan is not vacuous: each forbidden construct in a snippet is reported, safe ones are not."""
    bad = """
import pickle
from joblib import load
import dill.settings
x = torch.load(path)
y = torch.load(path, weights_only=False)
z = np.load(p, allow_pickle=True)
w = numpy.load(p, **opts)
eval(text)
exec(open(f).read())
df = pd.read_pickle(p)
yaml.load(s)
"""
    assert len(scan(bad, "bad.py")) == 11
    assert len(scan("x = pickle.loads(b)\nclass U(pickle.Unpickler): pass\nu = pickle.Unpickler(f)", "p.py")) == 2
    good = '''
"""Docstring that says exec and pickle."""
a = torch.load(p, weights_only=True)
b = np.load(p, allow_pickle=False)
c = np.load(p)
d = json.loads(s)
model.eval()
'''
    assert scan(good, "good.py") == []


def test_package_has_no_unsafe_loading():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files for p in scan(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE.parent)))]
    unexpected = [p for p in problems if p.split(":", 1)[0] + ":" + p.split(":", 2)[2] not in ALLOWED]
    assert unexpected == []


def test_the_cifar_unpickler_runs_nothing(tmp_path):
    """The one reviewed pickle reader: a batch that names any other global is refused before it can run."""
    from ntkbayes.data.vision import RestrictedUnpickler, restricted_load

    assert RestrictedUnpickler.find_class is not pickle.Unpickler.find_class
    ok = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [0, 1]}
    (tmp_path / "ok").write_bytes(pickle.dumps(ok, protocol=2))
    got = restricted_load(tmp_path / "ok")
    assert np.array_equal(got[b"data"], ok[b"data"]) and got[b"labels"] == [0, 1]
    marker = tmp_path / "PWNED"
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": _Trap(str(marker)), b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match="not allowed"):
        restricted_load(tmp_path / "evil")
    assert not marker.exists()


class _Trap:
    """Unpickling this creates ``path`` — evidence that loading ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _npy_bytes_with_pickle(obj) -> bytes:
    """A valid .npy file holding an object array: its payload is a pickle that unpickles ``obj``."""
    buf = io.BytesIO()
    np.save(buf, np.array([obj], dtype=object), allow_pickle=True)
    return buf.getvalue()


def test_a_malicious_results_directory_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    trap = _Trap(str(marker))
    # self-check: unpickling the payload does create the marker (so its absence below means something)
    pickle.loads(pickle.dumps(trap))
    assert marker.exists()
    marker.unlink()

    store = ResultsStore(tmp_path / "results")
    probs = np.full((1, 4, 2), 0.5, np.float32)
    store.save_arrays("evil1", {"test_probs": probs, "test_labels": np.array([0, 1, 0, 1])})
    (tmp_path / "results" / "predictions").mkdir(exist_ok=True)
    with zipfile.ZipFile(tmp_path / "results" / "predictions" / "evil1.npz", "w") as z:  # overwrite: trapped arrays
        z.writestr("test_probs.npy", _npy_bytes_with_pickle(trap))
        z.writestr("test_labels.npy", _npy_bytes_with_pickle(trap))
        z.writestr("ood_far_probs.npy", _npy_bytes_with_pickle(trap))
    np.save(tmp_path / "results" / "predictions" / "evil2.npy", np.array([trap], dtype=object), allow_pickle=True)
    (tmp_path / "results" / "predictions" / "evil2.npz").write_bytes(
        (tmp_path / "results" / "predictions" / "evil2.npy").read_bytes())  # a bare .npy renamed .npz
    record = {"schema_version": SCHEMA_VERSION, "run_id": "evil1", "suite": "s", "dataset": "moons",
              "dataset_label": "moons", "dataset_options": {}, "method": "map", "method_label": "map",
              "params": {"__reduce__": "os.system"}, "seed": 0, "status": "ok", "error": None,
              "metrics": {"cls/acc": 0.5}, "predictions": "predictions/evil1.npz"}
    store.append(record)
    store.append({**record, "run_id": "evil2", "seed": 1, "predictions": "predictions/evil2.npz"})

    for run_id in ("evil1", "evil2"):
        with pytest.raises(ValueError):
            store.load_arrays(run_id)
        with pytest.raises(ValueError):
            store.load_predictions(run_id)
    assert [r["run_id"] for r in store.records()] == ["evil1", "evil2"]
    from ntkbayes.report.export import leaderboard

    assert "map" in leaderboard(tmp_path / "results", "md")
    from ntkbayes.report.comparison import compare_store

    try:  # the comparison reads the predictions files; it may refuse them, but must not unpickle
        compare_store(tmp_path / "results", out_dir=tmp_path / "cmp")
    except (ValueError, FileNotFoundError):
        pass
    assert not marker.exists(), "loading the results directory ran code"
    assert json.loads(store.records_path.read_text().splitlines()[0])["params"] == {"__reduce__": "os.system"}
