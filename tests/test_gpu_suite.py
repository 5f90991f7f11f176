"""GPU suite (docs/benchmarks.md) without a GPU: benchmarks/suites/gpu.toml parses, asks for CUDA without a silent
CPU fallback, and its dry run (``ntkbayes run gpu --dry-run``) runs every cell through the same code path on
stand-in data with no dataset file (an empty data root) — the standard OOD pairs, fit, predict, distribution
shift, records with device and TF32 — and the leaderboard reads the shift metrics. Methods not registered yet fail
their cells and the dry run goes on; the last test requires every method the suite names to exist."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from ntkbayes import data, methods
from ntkbayes.cli import main
from ntkbayes.data.shift import SEVERITIES
from ntkbayes.harness.config import load_suite
from ntkbayes.harness.runner import dry_run_suite
from ntkbayes.harness.store import ResultsStore
from ntkbayes.report.export import leaderboard

REPO = Path(__file__).resolve().parents[1]
GPU_TOML = REPO / "benchmarks" / "suites" / "gpu.toml"

#: The pairs of benchmarks.md §2 (ID dataset → OOD sets).
PAIRS = {"mnist": {"fashion_mnist", "kmnist"}, "fashion_mnist": {"mnist", "kmnist"}, "cifar10": {"svhn", "cifar100"}}


def _method_names() -> set[str]:
    suite = load_suite(GPU_TOML, unknown_methods="fail")
    return {m.name for m in suite.methods}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """An empty data root: the dry run reads no file (stand-in data)."""
    return tmp_path_factory.mktemp("no-data")


def test_suite_asks_for_cuda_tf32_shift_and_the_standard_pairs():
    suite = load_suite(GPU_TOML, unknown_methods="fail")
    assert suite.device.value == "cuda" and suite.tf32 and len(suite.seeds) >= 3
    assert {d.name: set(d.options["ood"]) for d in suite.datasets} == PAIRS
    assert all({"rotation", "gaussian_noise"} <= set(d.shift) for d in suite.datasets)
    assert {"ntk_ensemble", "deep_ensemble", "laplace", "gp", "map"} <= _method_names()
    modes = {c.params["mode"] for c in suite.cells() if c.method == "ntk_ensemble"}
    assert modes == {"network", "linearized", "kernel"}
    resnet = [c for c in suite.cells() if c.params.get("arch") == "resnet"]
    assert resnet and {c.method for c in resnet} == {"deep_ensemble"}
    dry = dry_run_suite(suite)
    assert dry.device.value == "cpu" and dry.seeds == suite.seeds[:1] and dry.name == "gpu-dry-run"
    for cell in dry.cells():
        caps = getattr(methods.get(cell.method), "dry_run_params", {}) if cell.method in methods.available() else {}
        for key, cap in caps.items():
            value = cell.params.get(key, cap)
            assert value <= cap if isinstance(cap, int) and not isinstance(cap, bool) else value == cap, cell.label
        assert cell.dataset_options["subset"] == 120 and cell.dataset_options["test_subset"] == 30
        assert cell.tf32 and cell.shift


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_real_run_without_cuda_is_a_one_line_error(tmp_path, capsys):
    rc = main(["run", str(GPU_TOML), "--out", str(tmp_path / "o"), "--root", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "'cuda'" in err and "no CUDA device" in err, err
    assert not (tmp_path / "o" / "records.jsonl").exists()


@pytest.mark.skipif("stand_in" not in inspect.signature(data.load).parameters,
                    reason="ntkbayes.data.load has no stand_in yet")
def test_dry_run_runs_every_cell_on_the_cpu(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "gpu", "--dry-run", "--root", str(data_root), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    records = ResultsStore(out).records()
    cells = dry_run_suite(load_suite(GPU_TOML, unknown_methods="fail")).cells()
    assert len(records) == len(cells) == 3 * len({(c.method_label) for c in cells})
    assert f"{len(cells)} cells, 0 already done, ran {len(cells)}" in summary
    registered = set(methods.available())
    for r in records:
        where = f"{r['dataset']} {r['method_label']}"
        if r["method"] not in registered:  # written by a teammate, not there yet: the cell fails, the run goes on
            assert r["status"] == "failed" and r["failed_stage"] == "create", where
            continue
        assert r["status"] == "ok", (where, r["error"], r.get("traceback"))
        assert r["family"] == getattr(methods.get(r["method"]), "family", r["method"]), where
        assert r["suite"] == "gpu-dry-run" and r["device"] == "cpu" and r["device_requested"] == "cpu"
        assert r["tf32"] is True and r["float32_matmul_precision"] == "high"
        assert r["data_info"]["sizes"]["test"] <= 30 and r["data_info"]["feature_shape"][0] in (1, 3)
        m = r["metrics"]
        sets = {k.split("/")[1] for k in m if k.startswith("ood/")} - {"near", "far"}  # per set; group means aside
        assert sets == PAIRS[r["dataset"]], where
        for kind in ("rotation", "gaussian_noise"):
            for s in SEVERITIES:
                for name in ("acc", "nll", "ece"):
                    v = m[f"shift/{kind}/{s}/{name}"]
                    assert v == v and (0 <= v <= 1 or name == "nll"), (where, kind, s, name, v)
        assert r["shift_seconds"] > 0
    # a rerun resumes: nothing ok is run again
    assert main(argv + ["--no-retry-failed"]) == 0
    assert f"{len(cells)} already done, ran 0" in capsys.readouterr().out
    # the leaderboard tolerates (ignores by default) and selects (on request) the shift keys
    md = leaderboard(out, "md")
    assert "cls/acc" in md and "shift/" not in md
    assert "shift/rotation/5/acc" in leaderboard(out, "md", metrics=["shift/rotation/*/acc"])
    json.dumps(records)  # every record is plain JSON


def test_every_method_of_the_suite_is_registered():
    """Checked last: a method named in gpu.toml that nobody has written is a failure of the suite, not a skip."""
    missing = _method_names() - set(methods.available())
    assert not missing, f"gpu.toml names unregistered method(s) {sorted(missing)}"
