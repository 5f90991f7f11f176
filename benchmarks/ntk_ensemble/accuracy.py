"""Test accuracy / NLL and validation NLL of ntk_ensemble over σb × λ and seeds (docs/ntk_ensemble.md).

Usage: python benchmarks/ntk_ensemble/accuracy.py DATASET MODE[:KERNEL] B_STDS LAMBDAS SEEDS
e.g.   python benchmarks/ntk_ensemble/accuracy.py moons kernel:analytic 0.05,1.0 1e-5,1e-3 0,1,2
Width 128 and 8 members, the default suite's settings; digits uses id_classes 0-4.
"""

from __future__ import annotations

import itertools
import sys
import time

import torch

from ntkbayes import data, methods
from ntkbayes.ntk.ensemble_kernel import ensemble_nll


def main(dataset: str, mode: str, b_stds: str, lams: str, seeds: str) -> None:
    torch.set_num_threads(1)
    options = {"id_classes": [0, 1, 2, 3, 4]} if dataset == "digits" else {}
    base = {"mode": mode.split(":")[0], "width": 128, "members": 8}
    if ":" in mode:
        base["kernel"] = mode.split(":")[1]
    for b, lam in itertools.product([float(v) for v in b_stds.split(",")], [float(v) for v in lams.split(",")]):
        acc, nll, val, conv, t0 = [], [], [], [], time.time()
        for seed in [int(s) for s in seeds.split(",")]:
            d = data.load(dataset, seed=seed, **options)
            model = methods.create("ntk_ensemble", **base, b_std=b, weight_decay=lam).fit(d, seed=seed)
            probs = model.predict(d.test.x).probs
            acc.append(float((probs.argmax(-1) == d.test.y).float().mean()))
            nll.append(float(-probs.clamp_min(1e-300).log().gather(-1, d.test.y[:, None]).mean()))
            val.append(float(ensemble_nll(model.member_logits(d.val.x), d.val.y)))
            conv.append(model.fit_info()["converged"])
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        print(f"{dataset} {mode} b_std={b} λ={lam:g} acc={mean(acc):.3f} {[round(a, 3) for a in acc]} "
              f"test_nll={mean(nll):.3f} val_nll={mean(val):.3f} converged={conv} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
