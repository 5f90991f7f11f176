"""Convergence record of one ntk_ensemble fit (docs/ntk_ensemble.md, "Convergence").

Usage: python benchmarks/ntk_ensemble/convergence.py DATASET 'JSON_KWARGS' [TOL_CHANGE]
e.g.   python benchmarks/ntk_ensemble/convergence.py moons '{"width": 256, "members": 1, "max_iter": 3000}' 0
TOL_CHANGE overrides the L-BFGS stall tolerance (0: stop only on the gradient test, a loss that no longer changes
at all, or max_iter).
"""

from __future__ import annotations

import json
import sys
import time

import torch

import ntkbayes.methods.ntk_ensemble as ne
from ntkbayes import data, methods


def main(dataset: str, kwargs: str, tol_change: str | None = None) -> None:
    torch.set_num_threads(1)
    kw = {"mode": "network", **json.loads(kwargs)}
    if tol_change is not None:
        ne.DEFAULT_TOL_CHANGE_FLOAT32 = ne.DEFAULT_TOL_CHANGE_FLOAT64 = float(tol_change)
    d = data.load(dataset, seed=0)
    t0 = time.time()
    model = methods.create("ntk_ensemble", **kw).fit(d, seed=0)
    info = model.fit_info()
    acc = float((model.predict(d.test.x).probs.argmax(-1) == d.test.y).float().mean())
    print(dataset, kw, "converged", info["converged"], "iterations", info["member_iterations"], "grad_max",
          [f"{g:.2g}" for g in info["member_grad_max"] or []], "stop", info["member_stop_reason"],
          f"acc={acc:.3f} {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main(*sys.argv[1:4])
