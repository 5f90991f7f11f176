"""Runner: records with provenance, predictions and grids, resume, failed cells, determinism, executors,
preflight, two runners on one store."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import harness_fakes
import numpy as np
import pytest
import torch

from ntkbayes.harness import cell as cell_mod
from ntkbayes.harness import runner
from ntkbayes.harness.cell import grid_points, run_cell
from ntkbayes.harness.config import parse_suite
from ntkbayes.harness.runner import run_suite
from ntkbayes.harness.store import ResultsStore


@pytest.fixture(autouse=True)
def fakes():
    threads = torch.get_num_threads()
    harness_fakes.register_fakes()
    yield
    harness_fakes.unregister_fakes()
    torch.set_num_threads(threads)  # cells set it; leave other tests as they were


def suite(methods: dict | None = None, datasets: dict | None = None, seeds=(0, 1)):
    return parse_suite({"name": "t", "seeds": list(seeds), "device": "cpu", "threads": 1,
                        "datasets": datasets or {"_tiny": {"n": 60}},
                        "methods": methods or {"_test_logreg": {"steps": 5}}}, "t.toml")


def test_records_predictions_and_resume(tmp_path):
    s = suite({"_test_logreg": {"steps": 5}, "ens": {"method": "_test_logreg", "members": 3, "steps": 5}},
              {"_tiny": {"n": 60}, "plane": {"dataset": "_tiny", "n": 60, "dim": 2}}, seeds=(0,))
    summary = run_suite(s, tmp_path, progress=False)
    assert (summary.cells, summary.ran, summary.ok, summary.failed, summary.already_done) == (4, 4, 4, 0, 0)
    store = ResultsStore(tmp_path)
    recs = store.records()
    assert [(r["dataset_label"], r["method_label"]) for r in recs] == [
        ("_tiny", "_test_logreg"), ("_tiny", "ens"), ("plane", "_test_logreg"), ("plane", "ens")]
    r = recs[1]
    for key in ("schema_version", "run_id", "suite", "dataset", "dataset_options", "method", "params", "seed",
                "metrics", "fit_info", "fit_seconds", "predict_seconds", "peak_memory_bytes", "device",
                "versions", "git_commit", "timestamp", "status", "error", "conventions"):
        assert key in r, key
    assert r["status"] == "ok" and r["error"] is None and r["suite"] == "t" and r["device"] == "cpu"
    assert r["params"] == {"steps": 5, "lr": 0.5, "members": 3, "fail": "none", "sleep": 0.0,
                           "alloc_mb": 0}
    assert r["fit_info"] == {"steps": 5, "members": 3}
    assert r["versions"]["torch"] == torch.__version__ and r["conventions"]["ece_bins"] == 15
    assert r["fit_seconds"] > 0 and r["peak_memory_bytes"] >= 0 and r["timestamp"].endswith("+00:00")
    assert r["data_info"]["sizes"]["ood/far"] == 20
    assert 0 <= r["metrics"]["cls/acc"] <= 1 and "ood/far/mutual_info/auroc" in r["metrics"]
    # saved predictions reproduce the recorded metrics
    from ntkbayes.metrics import evaluate

    test, labels, ood = store.load_predictions(r["run_id"])
    assert test.num_members == 3 and set(ood) == {"far"}
    again = evaluate(test, labels, ood=ood)
    assert again["cls/acc"] == r["metrics"]["cls/acc"]
    assert abs(again["cal/nll"] - r["metrics"]["cal/nll"]) < 1e-5  # float32 storage
    # 2-D data: a 64×64 grid, x fastest
    arrays = store.load_arrays(recs[3]["run_id"])
    gx, gp = arrays["grid_x"], arrays["grid_probs"]
    assert gx.shape == (4096, 2) and gp.shape == (3, 4096, 3) and gp.dtype == np.float32
    assert gx[1, 0] > gx[0, 0] and gx[1, 1] == gx[0, 1] and gx[64, 1] > gx[0, 1] and gx[64, 0] == gx[0, 0]
    assert "grid_x" not in store.load_arrays(recs[0]["run_id"])
    # a rerun adds nothing
    again = run_suite(s, tmp_path, progress=False)
    assert (again.ran, again.already_done) == (0, 4)
    assert len(store.records()) == 4
    assert not list((tmp_path / "claims").glob("*.json"))


def test_threads_setting_is_applied_and_recorded(tmp_path):
    s = parse_suite({"seeds": [0], "threads": 1, "datasets": {"_tiny": {"n": 60}},
                     "methods": {"_test_logreg": {"steps": 3}}}, "t.toml")
    assert s.cells()[0].threads == 1 and s.cells(threads=2)[0].threads == 2
    assert s.cells()[0].run_id == s.cells(threads=2)[0].run_id  # not part of the cell's identity
    record, _ = run_cell(s.cells()[0], "cpu")
    assert record["torch_threads"] == 1 and torch.get_num_threads() == 1


def test_peak_memory_sees_a_transient_allocation():
    cell = suite({"_test_logreg": {"steps": 3, "alloc_mb": 256}}, seeds=(0,)).cells()[0]
    record, _ = run_cell(cell, "cpu")
    assert record["status"] == "ok", record.get("error")
    if record["peak_memory_kind"] == "rss_peak_delta":  # Linux
        assert 240 * 2**20 <= record["peak_memory_bytes"] <= record["peak_rss_bytes"]
        small, _ = run_cell(suite({"_test_logreg": {"steps": 3}}, seeds=(0,)).cells()[0], "cpu")
        assert small["peak_memory_bytes"] < 64 * 2**20
    else:
        assert record["peak_memory_kind"] == "ru_maxrss_delta" and record["peak_memory_bytes"] >= 0


def test_grid_covers_train_data_with_margin():
    x = torch.tensor([[0.0, -1.0], [2.0, 1.0]])
    g = grid_points(x, size=5, margin=3.0)
    assert g.shape == (25, 2) and g.dtype == torch.float32
    assert torch.allclose(g[:5, 0], torch.linspace(-3, 5, 5)) and torch.all(g[:5, 1] == -4)
    assert torch.allclose(g[::5, 1], torch.linspace(-4, 4, 5)) and torch.all(g[::5, 0] == -3)


def test_failed_cells_are_recorded_and_the_suite_goes_on(tmp_path):
    s = suite({"raises": {"method": "_test_logreg", "fail": "raise"},
               "nan": {"method": "_test_logreg", "fail": "nan"},
               "fine": {"method": "_test_logreg", "steps": 5}}, seeds=(0,))
    summary = run_suite(s, tmp_path, progress=False)
    assert (summary.ran, summary.ok, summary.failed) == (3, 1, 2)
    recs = {r["method_label"]: r for r in ResultsStore(tmp_path).records()}
    assert recs["raises"]["status"] == "failed" and recs["raises"]["error"] == "RuntimeError: boom in fit"
    assert recs["raises"]["failed_stage"] == "fit" and "boom in fit" in recs["raises"]["traceback"]
    assert recs["nan"]["error"].startswith("ValueError: Predictive.member_probs: contains NaN")
    assert recs["nan"]["failed_stage"] == "predict" and recs["nan"]["metrics"] == {}
    assert recs["fine"]["status"] == "ok"
    assert not (tmp_path / "predictions" / f"{recs['nan']['run_id']}.npz").exists()
    # failed cells are retried on a rerun (newest record wins), unless asked not to
    assert run_suite(s, tmp_path, progress=False, retry_failed=False).ran == 0
    assert run_suite(s, tmp_path, progress=False).ran == 2
    assert len(ResultsStore(tmp_path).records()) == 5


def test_run_cell_never_raises():
    cell = suite(datasets={"_missing": {}}).cells()[0]
    record, arrays = run_cell(cell, "cpu")
    assert record["status"] == "failed" and record["failed_stage"] == "load" and arrays == {}
    assert record["error"].startswith("DataMissingError: dataset '_missing': missing file")
    record, _ = run_cell(suite().cells()[0], "tpu")
    assert record["status"] == "failed" and record["failed_stage"] == "device"


def test_same_records_across_runs_and_executors(tmp_path):
    s = suite({"ens": {"method": "_test_logreg", "members": 2, "steps": 5}})
    run_suite(s, tmp_path / "a", progress=False)

    def reverse_executor(cells, device):  # finishes cells in another order, as a cluster might
        done = [(c, *run_cell(c, device)) for c in list(cells)]
        yield from reversed(done)

    run_suite(s, tmp_path / "b", progress=False, executor=reverse_executor)
    strip = ("timestamp", "fit_seconds", "fit_cpu_seconds", "predict_seconds", "peak_memory_bytes", "peak_rss_bytes")

    def load(d):
        return {r["run_id"]: {k: v for k, v in r.items() if k not in strip} for r in ResultsStore(d).records()}

    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert a == b and len(a) == 2  # bit-identical metrics (JSON floats at full precision)
    for run_id in a:
        pa = ResultsStore(tmp_path / "a").load_arrays(run_id)
        pb = ResultsStore(tmp_path / "b").load_arrays(run_id)
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_preflight_stops_before_any_cell(tmp_path):
    from ntkbayes.data import DataMissingError
    from ntkbayes.errors import UserError

    s = suite(datasets={"_tiny": {"n": 60}, "_missing": {}})
    with pytest.raises(DataMissingError, match="_missing"):
        run_suite(s, tmp_path, progress=False)
    assert ResultsStore(tmp_path).records() == []
    bad = suite(datasets={"_tiny": {"n": 2}})  # too few points to split: a ValueError from the loader
    with pytest.raises(UserError, match=r"t.toml: \[datasets._tiny\]"):
        run_suite(bad, tmp_path, progress=False)
    with pytest.raises(UserError, match="executor"):
        run_suite(suite(), tmp_path, executor="spark", progress=False)


def test_data_cache_loads_each_dataset_and_seed_once(tmp_path, monkeypatch):
    from ntkbayes import data

    calls = []
    real = data.load
    monkeypatch.setattr(data, "load", lambda name, **kw: calls.append((name, kw["seed"])) or real(name, **kw))
    s = suite({"a": {"method": "_test_logreg", "steps": 3}, "b": {"method": "_test_logreg", "steps": 4}})
    run_suite(s, tmp_path, progress=False)
    assert calls == [("_tiny", 0), ("_tiny", 1)]
    assert not cell_mod._DATA_CACHE


def test_two_runners_record_each_cell_once(tmp_path):
    """Two processes on one suite and store at once: claims make every cell run and be recorded exactly once."""
    toml = tmp_path / "two.toml"
    toml.write_text(textwrap.dedent("""
        seeds = [0, 1, 2]
        device = "cpu"
        threads = 1
        [datasets._tiny]
        n = 60
        [methods._test_logreg]
        steps = [3, 4, 5]
        sleep = 0.5
    """))
    fakes_py = Path(harness_fakes.__file__)
    cmd = [sys.executable, str(fakes_py), "run", str(toml), "--out", str(tmp_path / "out"), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = ResultsStore(tmp_path / "out").records()
    assert len(recs) == 9 and len({r["run_id"] for r in recs}) == 9
    assert all(r["status"] == "ok" for r in recs)
    ran = [int(o[0].split("ran ")[1].split()[0]) for o in outs]
    assert sum(ran) == 9


def test_shift_metrics_match_a_direct_computation_and_tf32_is_recorded(tmp_path):
    from ntkbayes import methods
    from ntkbayes.data import shifted
    from ntkbayes.metrics import evaluate

    s = parse_suite({"seeds": [1], "device": "cpu", "threads": 1, "tf32": True,
                     "datasets": {"_tiny": {"n": 60, "shift": ["gaussian_noise", "roll"]}},
                     "methods": {"_test_logreg": {"steps": 5, "members": 2}}}, "t.toml")
    cell = s.cells()[0]
    record, _ = run_cell(cell, "cpu")
    assert record["status"] == "ok", record.get("traceback")
    assert record["tf32"] is True and record["float32_matmul_precision"] == "high"
    assert torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "high"
    m = record["metrics"]
    assert len([k for k in m if k.startswith("shift/")]) == 2 * 5 * 3
    data = cell_mod.load_data(cell)  # the slow, obvious way: refit, corrupt, score
    model = methods.create("_test_logreg", steps=5, members=2).fit(data, seed=1, device=torch.device("cpu"))
    for kind in ("gaussian_noise", "roll"):
        for sev in (1, 5):
            ref = evaluate(model.predict(shifted(data, kind, sev, 1)), data.test.y)
            assert m[f"shift/{kind}/{sev}/acc"] == ref["cls/acc"]
            assert m[f"shift/{kind}/{sev}/nll"] == pytest.approx(ref["cal/nll"], rel=1e-12)
            assert m[f"shift/{kind}/{sev}/ece"] == pytest.approx(ref["cal/ece"], rel=1e-12)
    assert m["shift/gaussian_noise/5/nll"] > m["shift/gaussian_noise/1/nll"]  # more noise, worse NLL
    cell_mod.clear_data_cache()
    plain, _ = run_cell(suite(seeds=(0,)).cells()[0], "cpu")
    assert plain["tf32"] is False and plain["shift_seconds"] is None and not torch.backends.cuda.matmul.allow_tf32
    assert not [k for k in plain["metrics"] if k.startswith("shift/")]


def test_dry_run_caps_the_suite_and_fails_unknown_methods_only(tmp_path):
    raw = {"name": "big", "seeds": [3, 4], "device": "cuda", "tf32": True, "datasets": {"_tiny": {"n": 60}},
           "methods": {"wide": {"method": "_test_logreg", "members": [1, 4, 8], "steps": 5},
                       "later": {"method": "not_written_yet", "members": 8}}}
    s = parse_suite(raw, "big.toml", unknown_methods="fail")
    dry = runner.dry_run_suite(s)
    assert dry.name == "big-dry-run" and dry.seeds == (3,) and dry.device.value == "cpu" and dry.threads == 1
    wide = next(m for m in dry.methods if m.label == "wide")
    assert wide.sweep == {"members": (1, 2)} and wide.params["steps"] == 5  # 4 and 8 both become 2: one row
    summary = run_suite(s, tmp_path, progress=False, dry_run=True)
    assert (summary.cells, summary.ok, summary.failed) == (3, 2, 1)
    recs = {r["method_label"]: r for r in ResultsStore(tmp_path).records()}
    assert recs["later"]["failed_stage"] == "create" and "not_written_yet" in recs["later"]["error"]
    assert recs["wide[members=2]"]["params"]["members"] == 2 and recs["wide[members=2]"]["device"] == "cpu"
    assert recs["wide[members=2]"]["family"] == "fake" and recs["later"]["family"] == "not_written_yet"
    from ntkbayes.errors import UserError

    with pytest.raises(UserError, match="dry run"):
        run_suite(s, tmp_path, progress=False, dry_run=True, device="cuda")


def test_dry_run_merges_rows_its_caps_make_equal(tmp_path):
    """Two tables that differ only in a capped value are one cell in the dry run (an error in a real run)."""
    from ntkbayes.errors import UserError

    raw = {"seeds": [0], "datasets": {"_tiny": {"n": 60}},
           "methods": {"narrow": {"method": "_test_logreg", "members": 3}, "wide": {"method": "_test_logreg",
                                                                                  "members": 8}}}
    s = parse_suite(raw, "two.toml")
    assert len(s.cells()) == 2
    dry = runner.dry_run_suite(s)
    assert [c.method_label for c in dry.cells()] == ["narrow"]
    with pytest.raises(UserError, match="are the same cell"):
        dataclasses.replace(dry, merge_duplicates=False).cells()


def test_failed_record_has_the_cell_and_provenance(tmp_path):
    cell = suite(seeds=(0,)).cells()[0]
    r = cell_mod.failed_record(cell, "cpu", "WorkerCrashedError: gone", "ray")
    assert r["status"] == "failed" and r["run_id"] == cell.run_id and r["failed_stage"] == "ray"
    assert r["error"] == "WorkerCrashedError: gone" and r["metrics"] == {} and r["versions"]["torch"]
    store = ResultsStore(tmp_path)  # the driver appends it like any other record; the cell is then retried
    store.append(r)
    assert store.records() == [r] and cell.run_id not in store.done_run_ids()
