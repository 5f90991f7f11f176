"""Vectorized NTK-ensemble training near the hardware limit (the ``network`` and ``linearized`` modes).

Measures, in one process and one dtype (float32), the achieved FLOP/s of training an ensemble of S members with
``ntkbayes.training.fit_lbfgs`` (the full-batch optimizer ``ntk_ensemble`` uses) in the ``network`` and
``linearized`` modes, against (a) the same device's dense-matmul FLOP/s and (b) training the S members one after
another (the same code with S = 1, S times).

Problem: an NTK-parameterized MLP (``ntkbayes.models.MLP``, depth 2, ReLU) with D = 64 inputs and C = 10 outputs,
B full-batch rows of random data; full run S = 16, width 1024, B = 1024; ``--quick`` S = 8, width 512, B = 512.
Every run does a fixed number of L-BFGS iterations (tolerances disabled) and is timed end to end (line searches,
two-loop recursions and history updates included: everything training costs).

How FLOPs are counted: only matrix-multiply FLOPs, 2·m·n·k per (m×k)(k×n) product, summed over the function and
gradient evaluations L-BFGS actually made (``report["function_calls"]`` × S); elementwise work (activations, softmax,
the L-BFGS vector updates) is not counted, so it shows up as lost efficiency. With layer sizes
(n_0 = D, n_1 … n_L = width, n_{L+1} = C) and W = Σ_l n_l·n_{l+1} weights per member:

* network, per evaluation: forward 2·B·W, backward 2·B·W (weight gradients) + 2·B·(W − D·width) (input
  gradients of every layer but the first) → 2·B·(3W − D·width) per member;
* linearized (θ0 activations cached, ``RowTable(cache=True)`` as in ``ntk_ensemble``): tangent forward
  dz = h0·ΔWᵀ + dh·W0ᵀ is 2·B·W + 2·B·(W − D·width); the backward repeats both products once for the gradient of
  ΔW and once for the gradient through dh → 4·B·(2W − D·width) per member.

The dense-matmul reference is the best of several (2048 × 2048) · (2048 × 2048) float32 products on the same device
and threads (and, reported alongside, a batched (S, B, width) · (S, width, width) product of the ensemble's own
shape). Goal of the issue: ≥ 70 % of the matmul rate on this CPU at width ≥ 512. Times are this process's CPU
seconds on a single-threaded CPU run (the CI machine is shared: wall time would measure the neighbours; the
wall time of the vectorized run is recorded too), wall-clock seconds otherwise.

    python benchmarks/perf/ensemble.py [--quick] [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ntkbayes import training
from ntkbayes.models import MLP
from ntkbayes.ntk.ensemble_kernel import RowTable, StackedMLP

#: Full-run and ``--quick`` sizes: (members S, width, rows B, L-BFGS iterations timed).
FULL = dict(members=16, width=1024, rows=1024, iterations=6)
QUICK = dict(members=8, width=512, rows=512, iterations=4)
#: Inputs, outputs and hidden layers of the MLP (an image-like input, 10 classes, the ntk_ensemble depth).
D, C, DEPTH = 64, 10, 2
#: Side of the square reference matmul and how many repetitions the best time is taken over.
MATMUL_SIZE, MATMUL_REPEATS = 2048, 5
#: Threads on CPU (the default suite trains with one thread per cell; see benchmarks/suites/default.toml).
DEFAULT_THREADS = 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device):
    """Timer: this process's CPU seconds on a single-threaded CPU run (the 2-core CI box is shared, so wall time
    measures the neighbours; CPU time of one thread is the time on a dedicated core), wall time otherwise."""
    return time.process_time if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter


def matmul_rate(device: torch.device, shape: tuple[int, ...] | None = None) -> float:
    """Best FLOP/s of float32 dense matmuls: square MATMUL_SIZE, or a batched (S, B, K) · (S, K, N) ``shape``."""
    g = torch.Generator().manual_seed(0)
    if shape is None:
        n = MATMUL_SIZE
        a, b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
        flops = 2.0 * n ** 3
    else:
        s, m, k, n = shape
        a, b = torch.randn(s, m, k, generator=g).to(device), torch.randn(s, k, n, generator=g).to(device)
        flops = 2.0 * s * m * k * n
    a @ b
    clock, best = _clock(device), float("inf")
    for _ in range(MATMUL_REPEATS):
        _sync(device)
        t = clock()
        a @ b
        _sync(device)
        best = min(best, clock() - t)
    return flops / best


def flops_per_eval(mode: str, width: int, rows: int) -> float:
    """Matmul FLOPs of one loss+gradient evaluation of one member (module docstring)."""
    sizes = [D] + [width] * DEPTH + [C]
    w = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    first = D * width
    if mode == "network":
        return 2.0 * rows * (3 * w - first)
    return 4.0 * rows * (2 * w - first)


def _problem(members: int, width: int, rows: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, D, generator=g).to(device)
    y = torch.randint(0, C, (rows,), generator=g).to(device)
    module = MLP(D, C, width=width, depth=DEPTH, activation="relu", w_std=1.5, b_std=0.05,
                 parameterization="ntk").to(device)
    params0 = training.init_stacked(module, list(range(members)), device, torch.float32)
    return module, params0, x, y


def time_training(mode: str, params0: dict, module: MLP, x: torch.Tensor, y: torch.Tensor,
                  iterations: int) -> tuple[float, int, float]:
    """Seconds (:func:`_clock`), total member-evaluations and wall seconds of ``iterations`` L-BFGS iterations of
    the stacked members (θ0 caching of the linearized model included in the time)."""
    clock = _clock(x.device)
    _sync(x.device)
    t, wall = clock(), time.perf_counter()
    table = RowTable(StackedMLP(module), x, params0, linearized=mode == "linearized", cache=True)
    res = training.fit_lbfgs(table, params0, (table.rows(x.shape[0]), y), weight_decay=1e-3, anchor=params0,
                             max_iter=iterations, tol_grad=0.0, tol_change=-1.0)
    _sync(x.device)
    return clock() - t, res.report["function_calls"] * len(res.report["evaluations"]), time.perf_counter() - wall


def run(quick: bool = False, device: str = "cpu", threads: int | None = DEFAULT_THREADS) -> dict:
    """Run the benchmark; returns the figures and a ``summary`` list of rows (benchmarks/perf/run_all.py)."""
    dev = torch.device(device)
    if dev.type == "cpu" and threads:
        torch.set_num_threads(int(threads))
    cfg = QUICK if quick else FULL
    S, width, rows, iters = cfg["members"], cfg["width"], cfg["rows"], cfg["iterations"]
    peak = matmul_rate(dev)
    batched = matmul_rate(dev, (S, rows, width, width))
    module, params0, x, y = _problem(S, width, rows, dev)
    out = {"device": str(dev), "threads": torch.get_num_threads(), "config": cfg, "matmul_flops": peak,
           "timer": "process CPU time" if _clock(dev) is time.process_time else "wall clock",
           "batched_matmul_flops": batched, "modes": {}}
    summary = [
        {"figure": f"dense matmul {MATMUL_SIZE}² float32", "value": peak / 1e9, "unit": "GFLOP/s",
         "note": f"{dev.type}, {torch.get_num_threads()} thread(s), best of {MATMUL_REPEATS}"},
        {"figure": f"batched matmul ({S},{rows},{width})·({S},{width},{width})", "value": batched / 1e9,
         "unit": "GFLOP/s", "note": "the ensemble's own layer shape"},
    ]
    for mode in ("network", "linearized"):
        time_training(mode, {k: v[:1] for k, v in params0.items()}, module, x, y, 1)      # warm-up
        t_vec, evals_vec, wall_vec = time_training(mode, params0, module, x, y, iters)
        t_seq, evals_seq = 0.0, 0
        for s in range(S):
            t, e, _ = time_training(mode, {k: v[s:s + 1] for k, v in params0.items()}, module, x, y, iters)
            t_seq, evals_seq = t_seq + t, evals_seq + e
        f = flops_per_eval(mode, width, rows)
        rate_vec, rate_seq = f * evals_vec / t_vec, f * evals_seq / t_seq
        out["modes"][mode] = {"seconds_vectorized": t_vec, "wall_seconds_vectorized": wall_vec,
                              "evaluations_vectorized": evals_vec,
                              "seconds_sequential": t_seq, "evaluations_sequential": evals_seq,
                              "flops_per_member_eval": f, "flops_vectorized": rate_vec,
                              "flops_sequential": rate_seq, "fraction_of_matmul": rate_vec / peak,
                              "speedup_vs_sequential": (t_seq / evals_seq) / (t_vec / evals_vec)}
        note = f"{S} members, width {width}, depth {DEPTH}, B={rows}, {iters} L-BFGS iterations"
        summary += [
            {"figure": f"{mode}: vectorized training", "value": rate_vec / 1e9, "unit": "GFLOP/s", "note": note},
            {"figure": f"{mode}: fraction of dense matmul rate", "value": rate_vec / peak, "unit": "",
             "note": "goal ≥ 0.70 on CPU at width ≥ 512"},
            {"figure": f"{mode}: members one after another", "value": rate_seq / 1e9, "unit": "GFLOP/s",
             "note": "same code, S = 1, S times"},
            {"figure": f"{mode}: speedup of vectorized over sequential", "value": out["modes"][mode][
                "speedup_vs_sequential"], "unit": "×", "note": "time per member-evaluation"},
        ]
    out["summary"] = summary
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = ap.parse_args()
    res = run(args.quick, args.device, args.threads)
    for row in res["summary"]:
        v = row["value"]
        print(f"{row['figure']:<60} {v:10.4g} {row['unit']:<8} {row['note']}")
    print(json.dumps({k: v for k, v in res.items() if k != "summary"}, indent=1, default=str))


if __name__ == "__main__":
    main()
