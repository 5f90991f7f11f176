"""Ray executor (ntkbayes.harness.executors): on a local Ray cluster started here, the same suite gives the same
records and predictions as the local executor (timings and host fields aside), failed cells come back as failed
records, the driver resumes, and device "cuda" on a cluster without GPUs is an error. Real methods and datasets
(moons, MAP), because Ray workers are fresh processes that see only the registered ones."""

from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from ntkbayes.cli import main  # noqa: E402
from ntkbayes.errors import UserError  # noqa: E402
from ntkbayes.harness import executors as ray_executor  # noqa: E402
from ntkbayes.harness.config import parse_suite  # noqa: E402
from ntkbayes.harness.runner import run_suite  # noqa: E402
from ntkbayes.harness.store import ResultsStore  # noqa: E402

#: Record fields that legitimately differ between executors or runs.
VOLATILE = ("timestamp", "fit_seconds", "fit_cpu_seconds", "predict_seconds", "shift_seconds", "peak_memory_bytes",
            "peak_rss_bytes", "peak_memory_kind", "hostname")

SUITE = {
    "name": "raytest", "seeds": [0], "device": "cpu", "threads": 1,
    "datasets": {"moons": {"n": 120, "n_far": 20, "shift": ["gaussian_noise"]}},
    "methods": {
        "map": {"width": 8, "depth": 1, "epochs": 3, "batch_size": 32, "patience": 2, "dtype": "float64"},
        "ens": {"method": "deep_ensemble", "members": 2, "width": 8, "depth": 1, "epochs": 3, "batch_size": 32,
                "dtype": "float64"},
        "broken": {"method": "not_written_yet", "epochs": 1},  # fails in the worker, when it is created
    },
}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    t0 = time.perf_counter()
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s")
    yield
    ray.shutdown()


def _load(d):
    return {r["run_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in ResultsStore(d).records()}


def test_ray_gives_the_same_records_as_local(tmp_path, cluster, capsys):
    suite = parse_suite(SUITE, "raytest.toml", unknown_methods="fail")
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    local = run_suite(suite, tmp_path / "local", progress=False)
    t_local = time.perf_counter() - t0
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    remote = run_suite(suite, tmp_path / "ray", progress=False, executor="ray")
    t_ray = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nwall: local {t_local:.1f} s, ray {t_ray:.1f} s")
    assert (local.ran, local.ok, local.failed) == (3, 2, 1)
    assert (remote.ran, remote.ok, remote.failed) == (3, 2, 1)
    a, b = _load(tmp_path / "local"), _load(tmp_path / "ray")
    assert set(a) == set(b) and len(a) == 3
    for run_id in a:
        assert a[run_id] == b[run_id], run_id  # metrics bit-identical (JSON floats at full precision)
        if a[run_id]["status"] == "ok":
            assert "shift/gaussian_noise/5/nll" in a[run_id]["metrics"]
            pa = ResultsStore(tmp_path / "local").load_arrays(run_id)
            pb = ResultsStore(tmp_path / "ray").load_arrays(run_id)
            assert set(pa) == set(pb) and all(np.array_equal(pa[k], pb[k]) for k in pa)
    broken = next(r for r in b.values() if r["method_label"] == "broken")
    assert broken["failed_stage"] == "create" and "not_written_yet" in broken["error"]
    hosts = {r["hostname"] for r in ResultsStore(tmp_path / "ray").records()}
    assert hosts and None not in hosts  # filled in by the worker
    # resume through the CLI: the driver skips the done cells (the failed one is retried, and fails again)
    suite_path = tmp_path / "raytest.toml"
    suite_path.write_text(textwrap.dedent("""
        name = "raytest"
        seeds = [0]
        device = "cpu"
        threads = 1
        [datasets.moons]
        n = 120
        n_far = 20
        shift = ["gaussian_noise"]
        [methods.map]
        width = 8
        depth = 1
        epochs = 3
        batch_size = 32
        patience = 2
        dtype = "float64"
    """))
    capsys.readouterr()
    rc = main(["run", str(suite_path), "--out", str(tmp_path / "ray"), "--executor", "ray", "--no-progress",
               "--no-retry-failed"])
    assert rc == 0
    assert "1 cells, 1 already done, ran 0" in capsys.readouterr().out


def test_cuda_on_a_cluster_without_gpus_is_an_error(cluster):
    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this cluster has GPUs")
    with pytest.raises(UserError, match="no GPU"):
        ray_executor.cluster_slots("cuda")
    assert ray_executor.cluster_slots("auto") == (1, 0.0)


def test_worker_death_becomes_a_failed_record(cluster, monkeypatch):
    """A task whose worker process dies yields a failed record for its cell; the other cells still finish."""
    cells = parse_suite({**SUITE, "methods": {"map": SUITE["methods"]["map"]}}, "raytest.toml").cells()
    real = ray_executor._run_remote

    def dies(cell_dict, device):
        import os

        os._exit(3)

    monkeypatch.setattr(ray_executor, "_run_remote", dies)
    out = list(ray_executor.ray_executor(cells, "cpu"))
    assert len(out) == 1 and out[0][1]["status"] == "failed" and out[0][2] == {}
    assert out[0][1]["failed_stage"] == "ray" and out[0][1]["run_id"] == cells[0].run_id
    monkeypatch.setattr(ray_executor, "_run_remote", real)


def test_unreachable_address_is_a_quick_one_line_error():
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="cannot reach a Ray cluster at '127.0.0.1:9'"):
        ray_executor.check_reachable("127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(UserError, match="cannot reach"):
        ray_executor.check_reachable("ray://nohost-port")
    assert time.perf_counter() - t0 < 2 * ray_executor.CONNECT_TIMEOUT_S + 1
    ray_executor.check_reachable("auto")  # resolved by Ray itself
