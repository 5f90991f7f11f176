"""Analytic-NTK kernel ensemble at the largest scale this machine runs, and the full-MNIST extrapolation.

The kernel-mode NTK ensemble with the infinite-width kernel (math.md (a), (c)): S members, each the MAP of the GP
classifier with prior mean f0_s ~ GP(0, K_nngp ⊗ I_C) and kernel Θ/(λN), solved together by the block Newton of
``ntk.solve`` (the same computation as ``methods.ntk_ensemble`` with ``mode="kernel", kernel="analytic"``, written
out here so that each stage is timed and the solver can be chosen). Data: MNIST-1D (``ntkbayes.data.load``,
generated offline; 3,200 training sequences of length 40, 10 classes, 1,000 test), a prefix of N training points.

Stages, each timed: (0) the memory estimate up front — kernels and both solvers' working memory, from
``ntk.solve_cg``'s formulas; the run stops with a clear message before allocating if it cannot fit (``SOLVER``);
(1) the NNGP and NTK on the training points, assembled in row blocks of ``BLOCK_ROWS`` by
``mlp_kernels`` (memory O(block × N) besides the outputs); (2) the prior draws (Cholesky of K_nngp, as
``ensemble_kernel.GPPrior``); (3) the Newton solve; (4) test kernels (blocked) and the ensemble's test predictions.
N = ``CHECK_N`` is also solved with the other solver and the two MAPs compared.

The full-MNIST (N = 60,000, C = 10) figures at the end are an EXTRAPOLATION, not a measurement: exact memory
formulas, and times from flop/byte counts (the CG iteration counts measured here) at *assumed* H100 rates
(``ASSUMED_GPU``). No GPU was available when this was written; run this file on one to replace them.

    python benchmarks/perf/kernel_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ntkbayes.ntk import solve
from ntkbayes.ntk.analytic import mlp_kernels, mlp_kernels_diag
from ntkbayes.ntk.ensemble_kernel import GPPrior
from ntkbayes.ntk.solve_cg import DEFAULT_PRECOND_RANK, cg_memory_bytes, cholesky_memory_bytes
from ntkbayes.utils import available_memory, check_memory

#: Ensemble and kernel settings (methods.ntk_ensemble defaults: depth 2, relu, σw 1.5, σb 0.05, λ = 1e-3).
MEMBERS, DEPTH, LAM, SMOOTH = 8, 2, 1e-3, 0.0
KERNEL_ARGS = {"depth": DEPTH, "activation": "relu", "w_std": 1.5, "b_std": 0.05}
#: Training-set sizes (quick / full) and rows per kernel block.
SIZES, QUICK_SIZES = (800, 1600, 3200), (400, 800)
#: Size of the Cholesky cross-check (S·C Cholesky factorizations of N × N per Newton step: slow on a CPU).
CHECK_N = 200
BLOCK_ROWS = 1024
#: Solver of the timed runs. CG: on this CPU it is also the faster one at N ≥ ~500 with 8 members (O(S C N²) per CG
#: iteration vs O(S C N³) per Newton step), and it is the path that scales to 60,000 points; ``"auto"`` chooses by
#: memory only. The smallest N is re-solved with Cholesky as a cross-check.
SOLVER = "cg"
#: Assumed sustained rates for the extrapolation (H100 SXM: 67 TFLOP/s FP64 tensor-core peak, 3.35 TB/s HBM3;
#: ~75 % / 60 % of peak sustained in large GEMMs / streaming kernels). Not measured.
ASSUMED_GPU = {"name": "H100 80GB (assumed, not measured)", "fp64_flops": 50e12, "fp32_flops": 50e12,
               "bandwidth": 2.0e12, "memory": 80 * 2**30}
MNIST_N, MNIST_TEST, MNIST_C = 60000, 10000, 10


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def memory_plan(n: int, m: int, c: int, members: int, item: int = 8) -> dict:
    """Bytes of each stage (exact formulas): kernels NNGP + NTK (N²) and the test block, the prior's Cholesky
    factor, and each solver's working memory."""
    return {"kernels_train": 2 * n * n * item, "kernels_block": 6 * BLOCK_ROWS * n * item,
            "prior_cholesky": n * n * item, "test_kernels": 2 * m * n * item,
            "cholesky_solver": cholesky_memory_bytes(n, c, members, 1, item),
            "cg_solver": cg_memory_bytes(n, c, members, DEFAULT_PRECOND_RANK, item)}


def one_size(data, n: int, solver: str, device: torch.device) -> dict:
    x = data.train.x[:n].flatten(1).to(device, torch.float64)
    y = data.train.y[:n].to(device)
    xt, yt = data.test.x.flatten(1).to(device, torch.float64), data.test.y.to(device)
    C = data.num_classes
    plan = memory_plan(n, xt.shape[0], C, MEMBERS)
    chosen = solver
    if solver == "auto":
        chosen = "cholesky" if plan["cholesky_solver"] <= 0.8 * available_memory(device) else "cg"
    peak = max(plan["kernels_train"] + plan["prior_cholesky"],                   # during the prior draw
               plan["kernels_train"] // 2 + plan["prior_cholesky"] + plan[f"{chosen}_solver"])  # during the solve
    check_memory(peak, device, f"kernel ensemble N={n}", "a smaller N")          # stop before allocating
    row = {"N": n, "members": MEMBERS, "solver": chosen, "planned_peak_GiB": peak / 2**30,
           "plan_GiB": {k: v / 2**30 for k, v in plan.items()}}
    t = time.perf_counter()
    nngp, ntk = mlp_kernels(x, block_rows=BLOCK_ROWS, **KERNEL_ARGS)           # (1) blocked assembly
    _sync()
    row["kernel_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    prior = GPPrior.draw(nngp, MEMBERS, C, seed=0)                              # (2) f0 ~ N(0, K_nngp ⊗ I_C)
    del nngp
    _sync()
    row["prior_seconds"] = time.perf_counter() - t
    Y = (1 - SMOOTH) * torch.nn.functional.one_hot(y, C).double() + SMOOTH / C
    t = time.perf_counter()
    res = solve.solve_ntk_classifier(ntk, prior.values, Y, LAM, keep_factors=False, solver=chosen)  # (3)
    _sync()
    row["solve_seconds"] = time.perf_counter() - t
    rep = res.report()
    row.update(newton_iterations=rep["max_iterations"], converged=rep["all_converged"],
               cg_iterations=rep.get("max_cg_iterations"))
    t = time.perf_counter()
    kn, kt = mlp_kernels(xt, x, block_rows=BLOCK_ROWS, **KERNEL_ARGS)           # (4) test kernels, blocked
    dn, _ = mlp_kernels_diag(xt, **KERNEL_ARGS)
    f0t = prior.conditional(kn, dn, xt.cpu()).to(device)
    logits = f0t + torch.einsum("mn,bnc->bmc", kt, res.beta)
    probs = logits.softmax(-1).mean(0)
    _sync()
    row["predict_seconds"] = time.perf_counter() - t
    row["test_acc"] = float((probs.argmax(-1) == yt).double().mean())
    row["test_nll"] = float(-probs[torch.arange(len(yt)), yt].clamp_min(1e-12).log().mean())
    row["_f"] = res.f
    row["_inputs"] = (ntk, prior.values, Y)
    return row


def extrapolate(measured: dict) -> dict:
    """Full-MNIST (N = 60,000, 10,000 test, C = 10, S = 8) memory (exact formulas) and time (flop/byte counts with
    the CG iteration count measured at the largest N here, at the ASSUMED_GPU rates). An EXTRAPOLATION."""
    n, m, c, s = MNIST_N, MNIST_TEST, MNIST_C, MEMBERS
    out = {"label": "EXTRAPOLATION (not measured): full MNIST on one GPU", "gpu": ASSUMED_GPU["name"]}
    for dtype, item in (("float64", 8), ("float32", 4)):
        plan = memory_plan(n, m, c, s, item)
        out[f"memory_GiB_{dtype}"] = {k: v / 2**30 for k, v in plan.items()}
        # NNGP + NTK + the prior's factor coexist during the draw; the NNGP is freed before the solve
        draw = plan["kernels_train"] + plan["prior_cholesky"]
        half = plan["kernels_train"] // 2 + plan["prior_cholesky"]
        out[f"peak_GiB_{dtype}_cg"] = max(draw, half + plan["cg_solver"]) / 2**30
        out[f"peak_GiB_{dtype}_cholesky"] = max(draw, half + plan["cholesky_solver"]) / 2**30
    newton, cg = measured["newton_iterations"], measured["cg_iterations"] or 0
    matvecs = cg + 4 * newton * 3                                   # CG products + Ψ/line-search products
    flops = {"kernel": 2 * n * n * 40 * (DEPTH + 1), "prior_cholesky": n**3 / 3,
             "cg_solve": matvecs * 2 * n * n * c * s, "predict": 2 * m * n * c * s,
             "cholesky_solve": newton * c * 4 / 3 * n**3 * s}
    bytes_stream = {"kernel": 8 * n * n * 6 * (DEPTH + 1)}
    out["assumptions"] = (f"{ASSUMED_GPU['fp64_flops'] / 1e12:.0f} TFLOP/s FP64 sustained, "
                          f"{ASSUMED_GPU['bandwidth'] / 1e12:.1f} TB/s; {newton} Newton and {cg} CG iterations "
                          f"as measured at N={measured['N']} (CG count assumed not to grow with N)")
    out["seconds"] = {
        "kernel": max(flops["kernel"] / ASSUMED_GPU["fp64_flops"], bytes_stream["kernel"] / ASSUMED_GPU["bandwidth"]),
        "prior_cholesky": flops["prior_cholesky"] / ASSUMED_GPU["fp64_flops"],
        "cg_solve": flops["cg_solve"] / ASSUMED_GPU["fp64_flops"],
        "predict": flops["predict"] / ASSUMED_GPU["fp64_flops"],
        "cholesky_solve_if_memory_allowed": flops["cholesky_solve"] / ASSUMED_GPU["fp64_flops"],
    }
    out["total_seconds_cg"] = sum(v for k, v in out["seconds"].items() if not k.startswith("cholesky"))
    return out


def run(quick: bool = False, device: str | None = None) -> dict:
    from ntkbayes.data import load

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    previous = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    try:
        data = load("mnist1d", root="datasets", seed=0)
        sizes = [n for n in (QUICK_SIZES if quick else SIZES) if n <= len(data.train)]
        rows, summary = [], []
        for n in sizes:
            r = one_size(data, n, SOLVER, dev)
            r.pop("_f"), r.pop("_inputs")
            rows.append(r)
            print(json.dumps(r), flush=True)
        other = "cholesky" if SOLVER == "cg" else "cg"                # cross-check at N = CHECK_N
        check = one_size(data, CHECK_N, SOLVER, dev)
        f, (ntk, f0, Y) = check.pop("_f"), check.pop("_inputs")
        t = time.perf_counter()
        res = solve.solve_ntk_classifier(ntk, f0, Y, LAM, keep_factors=False, solver=other)
        t_other = time.perf_counter() - t
        rep = res.report()
        agree = float((res.f - f).abs().max())
        cg_row = rows[-1]
        for r in rows:
            summary.append({"figure": f"analytic-NTK kernel ensemble N={r['N']} S={MEMBERS} C=10 total (measured)",
                            "value": r["kernel_seconds"] + r["prior_seconds"] + r["solve_seconds"]
                            + r["predict_seconds"], "unit": "s",
                            "note": f"{dev.type}; solver {r['solver']} {r['solve_seconds']:.1f}s, kernel "
                                    f"{r['kernel_seconds']:.1f}s, prior {r['prior_seconds']:.1f}s; planned peak "
                                    f"{r['planned_peak_GiB']:.2f} GiB; test acc {r['test_acc']:.3f}"})
        summary.append({"figure": f"N={CHECK_N} solve with {other} instead (measured)", "value": t_other,
                        "unit": "s", "note": f"max |Δ MAP logit| vs {check['solver']} "
                                             f"({check['solve_seconds']:.1f}s): {agree:.1e}"})
        ext = extrapolate(cg_row)
        summary.append({"figure": "full MNIST 60000x10, S=8: peak memory float64 / CG (EXTRAPOLATION)",
                        "value": ext["peak_GiB_float64_cg"], "unit": "GiB",
                        "note": f"Cholesky solver would need {ext['peak_GiB_float64_cholesky']:.0f} GiB; float32 CG "
                                f"{ext['peak_GiB_float32_cg']:.0f} GiB"})
        summary.append({"figure": "full MNIST 60000x10, S=8: time on one H100 with CG (EXTRAPOLATION)",
                        "value": ext["total_seconds_cg"], "unit": "s", "note": ext["assumptions"]})
        return {"device": str(dev), "rows": rows, "other_solver": {"solver": other, "seconds": t_other,
                                                                    "max_abs_diff": agree, "report": rep},
                "extrapolation": ext, "summary": summary}
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    result = run(quick=args.quick, device=args.device)
    print(json.dumps(result["extrapolation"], indent=2))
    for row in result["summary"]:
        print(f"{row['figure']:<80} {row['value']:>10.4g} {row['unit']:<5} {row['note']}")
