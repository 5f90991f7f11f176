"""Block-Newton solver choice (math.md (c)): Cholesky (R&W Algorithm 3.3) vs preconditioned CG, float64 vs float32.

One problem size (N = 500 quick, 1500 full; D = 20 random inputs, C = 10, the infinite-width NTK of a depth-3 ReLU
MLP from ``ntk.analytic.mlp_kernels``, λ = 1e-3 so K = Θ/(λN), one prior mean f0 ~ N(0, K_nngp ⊗ I_C), labels from
a random linear teacher). For each solver (``cholesky``; ``cg`` with pivoted-Cholesky preconditioner rank 0 and
100) and dtype it times ``solve_ntk_classifier`` (the kernel is computed beforehand, not timed) and reports Newton
and CG iterations and the max |Δ logit| of each solution against float64 Cholesky; it also states both solvers'
working memory at full MNIST (N = 60,000) from ``ntk.solve_cg``'s estimates — the reason kernel mode switches to
CG at scale. The time-vs-N scaling (N = 500 … 4000) is in ``benchmarks/perf/ntk.py``, which reuses
:func:`problem`, :func:`time_solve` and :func:`slope` from here.

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
from ntkbayes.ntk.solve_cg import cg_memory_bytes, cholesky_memory_bytes

#: Problem size of the full run and of ``--quick``.
SIZE, QUICK_SIZE = 1500, 500
#: (solver, CG options) compared.
SOLVERS = (("cholesky", {}), ("cg", {"precond_rank": 0}), ("cg", {"precond_rank": 100}))
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


def time_solve(n: int, dtype: torch.dtype, device: str = "cpu", solver: str = "cholesky", **cg_options) -> dict:
    """Time ``solve_ntk_classifier`` on :func:`problem` (n) with the given block-Newton ``solver``."""
    theta, f0, Y = problem(n)
    theta, f0, Y = theta.to(device, dtype), f0.to(device, dtype), Y.to(device, dtype)
    solve_ntk_classifier(theta[:64, :64], f0[:, :64], Y[:64], LAM, solver=solver, **cg_options)  # warm-up
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = solve_ntk_classifier(theta, f0, Y, LAM, solver=solver, **cg_options)
    if device != "cpu":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    rep = res.report()
    return {"N": n, "dtype": str(dtype).removeprefix("torch."), "device": device, "solver": solver,
            "cg_iterations": None if res.cg_iterations is None else int(res.cg_iterations.max()), "seconds": sec,
            "iterations": rep["max_iterations"], "converged": rep["all_converged"],
            "seconds_per_iteration": sec / max(1, rep["max_iterations"]), "grad_norm": rep["max_grad_norm"],
            "train_acc": float((res.f[0].argmax(-1) == Y.argmax(-1)).double().mean()), "_f": res.f.double().cpu()}


def slope(rows: list[dict], key: str = "seconds") -> float:
    """Least-squares slope of log(row[key]) on log(N)."""
    n = np.log([r["N"] for r in rows])
    t = np.log([r[key] for r in rows])
    return float(np.polyfit(n, t, 1)[0])


def run(quick: bool = False, device: str | None = None, threads: int | None = 1,
        dtypes: tuple[str, ...] = ("float64", "float32")) -> dict:
    """Compare the solvers at one N; returns rows and a summary (``threads``: torch CPU threads, default 1 —
    far faster than oversubscribed cores on a shared machine)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    n = QUICK_SIZE if quick else SIZE
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        out: dict = {"N": n, "C": C, "D": D, "depth": DEPTH, "lambda": LAM, "device": device,
                     "cpu_threads": torch.get_num_threads(), "rows": [], "summary": []}
        ref = None
        for dtype in dtypes:
            for solver, opts in SOLVERS:
                r = time_solve(n, getattr(torch, dtype), device, solver, **opts)
                f = r.pop("_f")
                ref = f if ref is None else ref
                r["max_abs_logit_diff_vs_float64_cholesky"] = float((f - ref).abs().max())
                r["precond_rank"] = opts.get("precond_rank")
                out["rows"].append(r)
                print(json.dumps(r), flush=True)
                name = solver if solver == "cholesky" else f"cg (precond rank {opts['precond_rank']})"
                cg = f", {r['cg_iterations']} CG iterations" if r["cg_iterations"] is not None else ""
                out["summary"].append({
                    "figure": f"block Newton N={n} C={C} {dtype} {name}", "value": r["seconds"], "unit": "s",
                    "note": f"{r['iterations']} Newton iterations{cg}, max|Δf| vs float64 Cholesky "
                            f"{r['max_abs_logit_diff_vs_float64_cholesky']:.1e}, {device}, "
                            f"{out['cpu_threads']} threads"})
        for dtype, item in (("float64", 8), ("float32", 4)):
            for name, nbytes in (("cholesky", cholesky_memory_bytes(60000, 10, 1, 1, item)),
                                 ("cg", cg_memory_bytes(60000, 10, 1, 100, item) + 60000**2 * item)):
                out["summary"].append({"figure": f"working memory at N=60000 C=10, 1 member, {dtype}, {name}",
                                       "value": nbytes / 2**30, "unit": "GiB",
                                       "note": "analytic estimate (ntk.solve_cg); cg includes the N×N kernel"})
        return out
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    args = ap.parse_args()
    result = run(quick=args.quick, device=args.device, threads=args.threads, dtypes=tuple(args.dtypes))
    print(json.dumps(result["summary"], indent=2))
