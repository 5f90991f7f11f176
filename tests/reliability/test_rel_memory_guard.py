"""Reliability: a step that would need more memory than the device has stops before allocating, with a message that
names the option to change; inside a suite the cell is recorded as failed and the suite goes on.

Sizes are chosen so each estimate exceeds this machine's memory by orders of magnitude (GiB to PiB), and the
process's peak resident memory is checked to grow by far less than the request: the refusal came first.
"""

from __future__ import annotations

import pytest
import torch

from ntkbayes.harness.cell import _proc_status_kb, _reset_hwm, run_cell
from ntkbayes.harness.config import parse_suite
from ntkbayes.models import MLP
from ntkbayes.utils import MemoryEstimateError, available_memory

#: The refusal may cost some memory (data, a small network), never anything near the estimate.
SLACK_MIB = 1024


class _PeakGrowth:
    """Growth of the process's peak RSS (MiB) over a block, via /proc (Linux)."""

    def __enter__(self):
        self.ok = _reset_hwm()
        self.start = _proc_status_kb("VmRSS") or 0
        return self

    def __exit__(self, *exc):
        self.mib = ((_proc_status_kb("VmHWM") or 0) - self.start) / 1024 if self.ok else 0.0
        return False


def test_empirical_ntk_refuses_a_huge_gram_matrix():
    from ntkbayes.ntk.empirical import empirical_ntk

    model = MLP(2, 3, width=64, depth=2).double()
    x = torch.randn(300_000, 2, dtype=torch.float64)  # Θ: 300k × 300k × 3 × 3 float64 ≈ 5.9 PiB
    with _PeakGrowth() as peak, pytest.raises(MemoryEstimateError, match="block_size") as err:
        empirical_ntk(model, x)
    assert "empirical NTK" in str(err.value) and "GiB" in str(err.value)
    assert peak.mib < SLACK_MIB


def test_analytic_kernels_refuse_a_huge_kernel():
    from ntkbayes.ntk.analytic import mlp_kernels

    x = torch.randn(400_000, 2, dtype=torch.float64)  # two 400k × 400k float64 matrices ≈ 2.3 TiB
    with _PeakGrowth() as peak, pytest.raises(MemoryEstimateError, match="block_rows or fewer points"):
        mlp_kernels(x, depth=2)
    assert peak.mib < SLACK_MIB


CELLS = {
    # label: (method table, text the error must contain: the option to change)
    "ntk_empirical": ({"method": "ntk_ensemble", "mode": "kernel", "kernel": "empirical", "members": 2,
                       "width": 16}, "kernel='analytic'"),
    "ntk_analytic": ({"method": "ntk_ensemble", "mode": "kernel", "kernel": "analytic", "members": 2},
                     "fewer training points"),
    "laplace_full": ({"method": "laplace", "subset": "all", "hessian": "full", "width": 512, "epochs": 1},
                     "hessian='kron' or 'diag'"),
}


@pytest.mark.parametrize("label", sorted(CELLS))
def test_a_cell_that_cannot_fit_is_recorded_as_failed(label):
    table, option = CELLS[label]
    n = 100 if label == "laplace_full" else 60_000  # laplace: P ≈ 265k weights, 3 P² float32 ≈ 786 GiB
    suite = parse_suite({"seeds": [0], "device": "cpu", "threads": 1, "datasets": {"moons": {"n": n}},
                         "methods": {label: table}}, "mem.toml")
    threads = torch.get_num_threads()
    try:
        with _PeakGrowth() as peak:
            record, arrays = run_cell(suite.cells()[0], "cpu")
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "failed" and record["failed_stage"] == "fit" and arrays == {}
    assert record["error"].startswith("MemoryEstimateError: ") and option in record["error"], record["error"]
    assert "GiB available" in record["error"]
    assert peak.mib < SLACK_MIB and peak.mib * 2**20 < 0.05 * available_memory(torch.device("cpu"))
