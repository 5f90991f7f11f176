"""Reliability: the same suite and seeds give bit-identical records (metrics at full JSON precision, fit info) and
bit-identical saved predictions on CPU, across two separate processes, with real methods (MAP network, NTK
ensemble in kernel mode and in network mode with L-BFGS) on moons."""

from __future__ import annotations

import textwrap

import numpy as np
import rel_support
import torch

from ntkbayes.harness.runner import run_suite
from ntkbayes.harness.store import ResultsStore

SUITE = """
    seeds = [0, 1]
    device = "cpu"
    threads = 1
    [datasets.moons]
    n = 120
    [methods.map]
    width = 16
    epochs = 15
    [methods.ntk_kernel]
    method = "ntk_ensemble"
    mode = "kernel"
    members = 2
    width = 16
    [methods.ntk_network]
    method = "ntk_ensemble"
    mode = "network"
    members = 2
    width = 16
    max_iter = 30
"""


def test_two_processes_give_bit_identical_results(cli, tmp_path):
    suite = tmp_path / "det.toml"
    suite.write_text(textwrap.dedent(SUITE))
    threads = torch.get_num_threads()
    try:
        summary = run_suite(suite, tmp_path / "a", progress=False)  # this process
    finally:
        torch.set_num_threads(threads)
    assert (summary.ok, summary.failed) == (6, 0), summary.failures
    code, _, err = cli.run(["run", str(suite), "--out", str(tmp_path / "b"), "--no-progress"], "det")  # another
    assert code == 0, err
    a, b = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "b")
    ra = {r["run_id"]: rel_support.strip(r) for r in a.records()}
    rb = {r["run_id"]: rel_support.strip(r) for r in b.records()}
    assert len(ra) == 6 and ra.keys() == rb.keys()
    for run_id in ra:
        assert ra[run_id]["metrics"] == rb[run_id]["metrics"], ra[run_id]["method_label"]  # exact float equality
        assert ra[run_id] == rb[run_id]
        pa, pb = a.load_arrays(run_id), b.load_arrays(run_id)
        assert pa.keys() == pb.keys() and {"test_probs", "grid_probs", "ood_far_probs"} <= set(pa)
        for k in pa:
            assert pa[k].tobytes() == pb[k].tobytes(), (ra[run_id]["method_label"], k)
    # and the seeds matter: different seeds give different numbers (the comparison above is not vacuous)
    by_seed = {(r["method_label"], r["seed"]): r["metrics"]["cal/nll"] for r in ra.values()}
    assert all(by_seed[(m, 0)] != by_seed[(m, 1)] for m in ("map", "ntk_kernel", "ntk_network"))
    assert np.isfinite(list(by_seed.values())).all()
