"""Empirical-NTK implementations (math.md (b)) and the analytic-kernel Newton solve (math.md (c)): time and memory.

Part 1 — an NTK-parameterized ReLU MLP, width 1024, depth 3 (three hidden layers, P = 2.18 M parameters), D = 64
inputs, C = 10 outputs, float32, one CPU thread: the full (N, N, C, C) kernel by each implementation of
``ntk.empirical.empirical_ntk``. ``structured`` (layer-wise Grams, never forms a Jacobian) runs at N = 512. The
Jacobian paths cost N²·C²·P multiply-adds (~10¹⁴ at N = 512: hours on this CPU) and their Jacobian blocks take
~B·C·P·4 bytes, so they are timed at small N (quick: 16; full: 16 and 32), with ``structured`` timed at the same
N for the ratio; their N = 512 time is an *extrapolation* with the exponent 2 of the contraction (labelled). The
baseline of every ratio is the Jacobian contraction (``jacobian``: ``jacrev`` blocks contracted per parameter
tensor). ``naive`` (one autograd call per example and output, the reference loop of the tests) runs at the
smallest N only.

Memory: the planned working bytes of ``ntk_memory_estimate`` (an analytic estimate, labelled as such) for block
sizes 64 / 128 / 256 at N = 512, and (full mode) the measured peak RSS increase of a child process that computes
the structured kernel at two block sizes (Linux VmHWM reset through /proc/self/clear_refs; output included).

Part 2 — the block Newton solve of ``solve_ntk_classifier`` with the analytic NTK (problem of
``benchmarks/perf/solve.py``: C = 10, depth-3 ReLU kernel, λ = 1e-3, float64, one thread) for N = 500 … 4000 with
the preconditioned-CG solver and N = 500, 1000 with Cholesky (its N = 4000 time extrapolated from the fitted
exponent, labelled), each with the fitted log-log exponent.

    python benchmarks/perf/ntk.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ntkbayes.models import MLP
from ntkbayes.ntk.empirical import empirical_ntk, ntk_memory_estimate

HERE = Path(__file__).resolve().parent
#: The benchmark architecture: a depth-3, width-1024 MLP on 64 inputs with 10 outputs, N = 512 points.
D, C, WIDTH, DEPTH, N = 64, 10, 1024, 3, 512
#: Small sizes at which the Jacobian-based implementations are timed (quick / full).
SMALL, QUICK_SMALL = (16, 32), (16,)
#: Block size of each implementation here (Jacobian blocks of 16 points are ~1.4 GB in float32).
BLOCK = {"structured": 256, "jacobian": 16, "per_example": 16, "ntk_vp": 16, "naive": 16}
#: Newton sizes (CG / Cholesky), full and quick.
CG_SIZES, CHOL_SIZES = (500, 1000, 2000, 4000), (500, 1000)
QUICK_CG_SIZES, QUICK_CHOL_SIZES = (250, 500), (250, 500)


def _solve_module():
    spec = importlib.util.spec_from_file_location("ntkbayes_perf_solve_helpers", HERE / "solve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _model_and_data(n: int):
    torch.manual_seed(0)
    model = MLP(D, C, width=WIDTH, depth=DEPTH, activation="relu").eval()
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
    return model, x


def _time(model, x, impl: str, block: int | None = None, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        empirical_ntk(model, x, implementation=impl, block_size=block or BLOCK[impl])
        best = min(best, time.perf_counter() - t0)
    return best


def _rss_child(block: int) -> float:
    """Peak RSS increase (bytes) of a child process computing the structured kernel at N = 512: the high-water
    mark VmHWM is reset through /proc/self/clear_refs (Linux) after setup, then read after the computation."""
    code = (
        f"import sys, torch; torch.set_num_threads(1); sys.path.insert(0, {str(HERE)!r})\n"
        "from ntk import _model_and_data; from ntkbayes.ntk.empirical import empirical_ntk\n"
        "def kb(key): return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])\n"
        f"m, x = _model_and_data({N}); open('/proc/self/clear_refs', 'w').write('5'); base = kb('VmRSS')\n"
        f"empirical_ntk(m, x, implementation='structured', block_size={block})\n"
        "print((kb('VmHWM') - base) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def empirical_part(quick: bool) -> tuple[dict, list[dict]]:
    model, x = _model_and_data(N)
    rows: list[dict] = []
    summary: list[dict] = []
    t_struct = _time(model, x, "structured")
    summary.append({"figure": f"empirical NTK structured N={N} (measured)", "value": t_struct, "unit": "s",
                    "note": f"width {WIDTH}, depth {DEPTH}, C={C}, P={sum(p.numel() for p in model.parameters())},"
                            " float32, full (N,N,C,C)"})
    small = QUICK_SMALL if quick else SMALL
    impls = ("jacobian", "per_example", "ntk_vp", "naive", "structured")
    times = {impl: [] for impl in impls}
    for n in small:
        xs = x[:n]
        for impl in impls:
            if impl == "naive" and n != small[0]:                 # the reference loop: smallest N only
                continue
            t = _time(model, xs, impl, repeats=3 if impl == "structured" else 1)
            times[impl].append(t)
            rows.append({"N": n, "implementation": impl, "seconds": t})
            print(json.dumps(rows[-1]), flush=True)
    for impl in impls:
        k = len(times[impl]) - 1
        n_ref, t = small[k], times[impl][k]
        base = times["jacobian"][k]
        summary.append({"figure": f"empirical NTK {impl} N={n_ref} (measured)", "value": t, "unit": "s",
                        "note": f"ratio to jacobian contraction at N={n_ref}: {base / t:.1f}x faster "
                                f"(block {BLOCK[impl]})"})
    for impl in impls[:-1]:
        n_ref = small[len(times[impl]) - 1]
        t512 = times[impl][-1] * (N / n_ref) ** 2
        summary.append({"figure": f"empirical NTK {impl} N={N} (EXTRAPOLATED ∝ N² from N={n_ref})", "value": t512,
                        "unit": "s", "note": f"structured measured at N={N} is {t512 / t_struct:.0f}x faster"})
    if len(small) > 1:
        for impl in impls[:-2] + impls[-1:]:
            e = float(np.polyfit(np.log(small), np.log(times[impl]), 1)[0])
            summary.append({"figure": f"empirical NTK {impl} time exponent N={small[0]}…{small[-1]}", "value": e,
                            "unit": "log-log slope", "note": "→ 2 once the N² contraction dominates"})
    # memory bounded by the block size: analytic estimate (and measured child-process RSS in full mode)
    for block in (64, 128, 256):
        est = ntk_memory_estimate(model, x, implementation="structured", block_size=block)
        summary.append({"figure": f"structured working memory N={N} block={block} (analytic estimate)",
                        "value": est["working"] / 2**20, "unit": "MiB",
                        "note": f"output {est['output'] / 2**20:.0f} MiB, column cache {est['cache'] / 2**20:.0f} MiB"})
    est_j = ntk_memory_estimate(model, x, implementation="jacobian", block_size=BLOCK["jacobian"])
    summary.append({"figure": f"jacobian working memory N={N} block={BLOCK['jacobian']} (analytic estimate)",
                    "value": est_j["working"] / 2**20, "unit": "MiB", "note": "Jacobian blocks ~B·C·P floats"})
    if not quick:
        for block in (64, 256):
            summary.append({"figure": f"structured peak RSS increase N={N} block={block} (measured, child process)",
                            "value": _rss_child(block) / 2**20, "unit": "MiB",
                            "note": "VmHWM delta (reset via /proc/self/clear_refs); includes the 100 MiB output"})
    return {"rows": rows, "times": times, "small_sizes": list(small), "structured_N512_seconds": t_struct}, summary


def newton_part(quick: bool) -> tuple[dict, list[dict]]:
    sm = _solve_module()
    out: dict = {"rows": []}
    summary: list[dict] = []
    for solver, sizes, opts in (("cg", QUICK_CG_SIZES if quick else CG_SIZES, {"precond_rank": 100}),
                                ("cholesky", QUICK_CHOL_SIZES if quick else CHOL_SIZES, {})):
        rows = []
        for n in sizes:
            r = sm.time_solve(n, torch.float64, "cpu", solver, **opts)
            r.pop("_f")
            rows.append(r)
            print(json.dumps(r), flush=True)
            cg = f", {r['cg_iterations']} CG iterations in total" if r["cg_iterations"] is not None else ""
            summary.append({"figure": f"Newton solve analytic NTK N={n} C={sm.C} {solver} (measured)",
                            "value": r["seconds"], "unit": "s", "note": f"{r['iterations']} Newton iterations{cg}"
                            ", float64, 1 thread"})
        e = sm.slope(rows)
        out["rows"] += rows
        out[f"exponent_{solver}"] = e
        summary.append({"figure": f"Newton solve time exponent ({solver}), N={sizes[0]}…{sizes[-1]}", "value": e,
                        "unit": "log-log slope", "note": "cholesky: O(C N³)/step; cg: O(C N² · CG iterations)/step"})
        if solver == "cholesky" and not quick:
            t = rows[-1]["seconds"] * (4000 / sizes[-1]) ** e
            summary.append({"figure": "Newton solve N=4000 cholesky (EXTRAPOLATED with the fitted exponent)",
                            "value": t, "unit": "s", "note": f"from N={sizes[-1]}"})
    return out, summary


def run(quick: bool = False) -> dict:
    """Both parts; ``summary`` rows {figure, value, unit, note}. One CPU thread (the machine is shared)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        emp, s1 = empirical_part(quick)
        newton, s2 = newton_part(quick)
    finally:
        torch.set_num_threads(previous)
    return {"device": "cpu", "threads": 1, "empirical": emp, "newton": newton, "summary": s1 + s2}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    result = run(quick=args.quick)
    for row in result["summary"]:
        print(f"{row['figure']:<90} {row['value']:>12.4g} {row['unit']:<14} {row['note']}")
