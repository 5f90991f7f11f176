"""Newton block solve (math.md (c), R&W Algorithm 3.3 with a prior mean) with the analytic NTK: time vs N.

For N = 500 … 4000 random inputs (D = 20), C = 10 classes, the infinite-width NTK of a depth-3 ReLU MLP
(``ntk.analytic.mlp_kernels``), λ = 1e-3 (K = Θ/(λN)), one prior mean f0 drawn from N(0, K_nngp ⊗ I_C) and labels
from a random linear teacher, it times ``solve_ntk_classifier`` (the kernel is computed beforehand and not timed),
reports Newton iterations, and fits the log-log slope of time against N (O(C N³) per iteration → about 3 once
N is large enough to be bound by the Cholesky factorizations).

    python benchmarks/perf/solve.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ntkbayes.ntk.analytic import mlp_kernels
from ntkbayes.ntk.solve import solve_ntk_classifier

#: Sizes of the full run and of ``--quick`` (a smoke run for CI-like checks).
SIZES, QUICK_SIZES = (500, 1000, 2000, 4000), (250, 500, 1000)
#: Kernel and problem settings (an MLP as in the default suite; λ as in ntk_ensemble's default ``reg``).
C, D, DEPTH, LAM = 10, 20, 3, 1e-3


def problem(n: int, seed: int = 0):
    """Analytic NTK Θ (N, N), prior mean f0 (1, N, C) ~ N(0, K_nngp ⊗ I_C) and teacher labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    nngp, ntk = mlp_kernels(x, depth=DEPTH, activation="relu", w_std=1.5, b_std=0.05)
    chol = torch.linalg.cholesky(nngp + 1e-8 * torch.eye(n, dtype=torch.float64))
    f0 = (chol @ torch.randn(n, C, generator=g, dtype=torch.float64)).unsqueeze(0)
    y = (x @ torch.randn(D, C, generator=g, dtype=torch.float64)).argmax(-1)
    return ntk, f0, torch.nn.functional.one_hot(y, C).double()


def time_solve(n: int, dtype: torch.dtype, device: str = "cpu") -> dict:
    theta, f0, Y = problem(n)
    theta, f0, Y = theta.to(device, dtype), f0.to(device, dtype), Y.to(device, dtype)
    solve_ntk_classifier(theta[:64, :64], f0[:, :64], Y[:64], LAM)           # warm-up (kernels, allocator)
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = solve_ntk_classifier(theta, f0, Y, LAM)
    if device != "cpu":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    rep = res.report()
    return {"N": n, "dtype": str(dtype).removeprefix("torch."), "device": device, "seconds": sec,
            "iterations": rep["max_iterations"], "converged": rep["all_converged"],
            "seconds_per_iteration": sec / max(1, rep["max_iterations"]), "grad_norm": rep["max_grad_norm"],
            "train_acc": float((res.f[0].argmax(-1) == Y.argmax(-1)).double().mean())}


def slope(rows: list[dict], key: str = "seconds") -> float:
    """Least-squares slope of log(row[key]) on log(N)."""
    n = np.log([r["N"] for r in rows])
    t = np.log([r[key] for r in rows])
    return float(np.polyfit(n, t, 1)[0])


def run(quick: bool = False, device: str | None = None, threads: int | None = None,
        dtypes: tuple[str, ...] = ("float64", "float32")) -> dict:
    """Time the block Newton solve for each N and dtype; returns rows, slopes and a summary.

    ``threads`` sets torch's CPU threads for the run (1 is far faster than oversubscribed cores on a shared box).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = QUICK_SIZES if quick else SIZES
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(sizes, device, [getattr(torch, d) for d in dtypes])
    finally:
        torch.set_num_threads(previous)


def _run(sizes, device: str, dtypes: list[torch.dtype]) -> dict:
    out: dict = {"C": C, "D": D, "depth": DEPTH, "lambda": LAM, "device": device,
                 "cpu_threads": torch.get_num_threads(), "rows": [], "summary": []}
    for dtype in dtypes:
        rows = []
        for n in sizes:
            r = time_solve(n, dtype, device)
            rows.append(r)
            print(json.dumps(r), flush=True)
        name = rows[0]["dtype"]
        out["rows"] += rows
        out[f"slope_{name}"] = slope(rows)
        out[f"slope_per_iteration_{name}"] = slope(rows, "seconds_per_iteration")
        for r in rows:
            out["summary"].append({"figure": f"block Newton solve N={r['N']} C={C} {name}", "value": r["seconds"],
                                   "unit": "s",
                                   "note": f"{r['iterations']} iterations, {device}, {out['cpu_threads']} threads"})
        out["summary"].append({"figure": f"block Newton scaling exponent {name}", "value": out[f"slope_{name}"],
                               "unit": "log-log slope", "note": f"N = {sizes[0]}…{sizes[-1]}"})
        out["summary"].append({"figure": f"block Newton time per iteration, exponent {name}",
                               "value": out[f"slope_per_iteration_{name}"], "unit": "log-log slope",
                               "note": "O(C N³) expected for large N"})
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    args = ap.parse_args()
    result = run(quick=args.quick, device=args.device, threads=args.threads, dtypes=tuple(args.dtypes))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
