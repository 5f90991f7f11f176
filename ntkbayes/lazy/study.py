"""The three parts of the lazy-regime study (package docstring): width sweep, trajectory, agreement."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ntkbayes import data as datasets
from ntkbayes import methods, training
from ntkbayes.data.splits import DatasetSplits, Split
from ntkbayes.lazy.config import LazyConfig, Regime
from ntkbayes.lazy.outputs import fit_slopes, write_outputs
from ntkbayes.metrics.compare import total_variation
from ntkbayes.models import MLP
from ntkbayes.ntk.diagnostics import LazyTracker, kernel_drift, linearization_gap, parameter_movement
from ntkbayes.ntk.solve import Anchor
from ntkbayes.seeding import member_seeds
from ntkbayes.utils import resolve_device

#: Pairs of modes compared in the agreement part.
PAIRS = (("network", "linearized"), ("network", "kernel"), ("linearized", "kernel"))

# -- data -------------------------------------------------------------------------------------------------------
def subsample(ds: DatasetSplits, cfg: LazyConfig) -> DatasetSplits:
    """Random subsets (seeded by ``cfg.seed``) of num_train / num_val / num_test points of each split (fewer if a
    split is smaller); the probe set is the first ``num_probe`` points of the training subset."""
    g = torch.Generator().manual_seed(cfg.seed)

    def take(split: Split, n: int) -> Split:
        idx = torch.randperm(len(split.y), generator=g)[:n]
        return Split(split.x[idx], split.y[idx])

    return dataclasses.replace(ds, train=take(ds.train, cfg.num_train), val=take(ds.val, cfg.num_val),
                               test=take(ds.test, cfg.num_test))


# -- the three parts ----------------------------------------------------------------------------------------------
def _fit(cfg: LazyConfig, sub: DatasetSplits, regime: Regime, width: int, mode: str, device: torch.device):
    """An ``ntk_ensemble`` of ``cfg.members`` members, float64, full-batch L-BFGS to ``convergence.tol``."""
    m = methods.create("ntk_ensemble", mode=mode, kernel="empirical", members=cfg.members, width=int(width),
                       anchor=regime.anchor, label_smoothing=regime.label_smoothing, optimizer="lbfgs",
                       dtype="float64", tol=cfg.convergence["tol"], max_iter=cfg.convergence["max_iter"],
                       weight_decay=regime.reg, **cfg.model)  # λ of docs/math.md §0
    return m.fit(sub, seed=cfg.seed, device=device)


def _sweep_rows(m, sub: DatasetSplits, probe: torch.Tensor, base: dict) -> list[dict]:
    """Per-member lazy measures of a fitted network-mode ensemble (width-sweep rows)."""
    module, p0, p = m.module_, m.params0_, m.params_
    gap = linearization_gap(module, p0, p, probe, stacked=True)
    gap_test = linearization_gap(module, p0, p, sub.test.x.to(probe), stacked=True)
    move = parameter_movement(p0, p, stacked=True)
    dist = torch.sqrt(sum((p[k] - v).pow(2).flatten(1).sum(1) for k, v in p0.items()))
    probe_logits = m.member_logits(probe)
    train_logits = m.member_logits(sub.train.x)
    yt = sub.train.y.to(train_logits.device)
    nll = training.member_nll(train_logits, yt)
    acc = (train_logits.argmax(-1) == yt).double().mean(-1)
    conv = m.fit_info().get("convergence", {})
    converged = conv.get("converged") or [None] * m.members
    rows = []
    for s in range(int(m.members)):
        drift = kernel_drift(module, {k: v[s] for k, v in p0.items()}, {k: v[s] for k, v in p.items()}, probe)
        rows.append({**base, "member": s, "kernel_drift": float(drift), "param_movement": float(move[s]),
                     "param_distance": float(dist[s]), "max_abs_logit": float(probe_logits[s].abs().max()),
                     "lin_gap_max_logit": float(gap["max_logit"][s]), "lin_gap_mean_logit": float(gap["mean_logit"][s]),
                     "lin_gap_tv_mean": float(gap["tv_mean"][s]), "lin_gap_test_tv_mean": float(gap_test["tv_mean"][s]),
                     "train_nll": float(nll[s]), "train_acc": float(acc[s]), "converged": converged[s],
                     "iterations_max": conv.get("iterations_max"), "grad_max_max": conv.get("grad_max_max")})
    return rows


def _agreement_rows(logits: dict[str, torch.Tensor], base: dict) -> list[dict]:
    """TV between member predictive probabilities (S, M, C) of each pair of modes; one row per pair and member."""
    rows = []
    for a, b in PAIRS:
        pa, pb = logits[a].softmax(-1), logits[b].softmax(-1)
        tv = torch.stack([total_variation(pa[s], pb[s]) for s in range(pa.shape[0])])  # (S, M)
        tv_ens = total_variation(pa.mean(0), pb.mean(0)).mean()                         # ensemble-mean predictive
        for s in range(tv.shape[0]):
            rows.append({**base, "pair": f"{a}–{b}", "member": s, "tv_mean": float(tv[s].mean()),
                         "tv_max": float(tv[s].max()), "tv_ensemble_mean": float(tv_ens),
                         "max_abs_logit_diff": float((logits[a][s] - logits[b][s]).abs().max())})
    return rows


def record_steps(steps: int, records: int) -> list[int]:
    """0 and ``records − 1`` log-spaced steps in [1, steps] (duplicates removed)."""
    return [0] + sorted({int(round(v)) for v in np.geomspace(1, steps, records - 1)})


def trajectory(cfg: LazyConfig, sub: DatasetSplits, regime: Regime, probe: torch.Tensor, device: torch.device,
               base: dict) -> list[dict]:
    """Full-batch GD θ ← θ − lr·∇L(θ) for ``trajectory.steps`` steps (L = mean CE + (λ/2)‖θ − θ_a‖², docs/math.md §0),
    all S members stacked; lazy measures on the probe set (N_probe, D) float64 at :func:`record_steps`.
    Returns one row per record and member (measures of ``ntk.diagnostics.METRICS``, time, loss, ‖θ − θ0‖)."""
    t = cfg.trajectory
    module = MLP(sub.train.x.flatten(1).shape[1], sub.num_classes, width=int(t["width"]), parameterization="ntk",
                 **cfg.model).to(device=device, dtype=torch.float64)
    p0 = training.init_stacked(module, member_seeds(cfg.seed, cfg.members), device, torch.float64)
    fn = training.stacked_forward(module)
    anchor = p0 if regime.anchor == Anchor.INIT.value else None
    loss = training.make_loss(fn, regime.reg, anchor, regime.label_smoothing)
    x = sub.train.x.flatten(1).to(device, torch.float64)
    y = sub.train.y.to(device)
    steps = record_steps(int(t["steps"]), int(t["records"]))
    tracker = LazyTracker(module, p0, probe, steps=steps)
    params = {k: v.clone() for k, v in p0.items()}
    extra: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    lr = float(t["lr"])
    for step in range(steps[-1] + 1):
        value, grads = training.full_value_and_grad(loss, params, x, y)
        if not torch.isfinite(value).all():
            raise FloatingPointError(f"trajectory {base}: GD diverged at step {step}; lower trajectory.lr ({lr})")
        if tracker.should_record(step):
            tracker.record(step, params)
            dist = torch.sqrt(sum((params[k] - v).pow(2).flatten(1).sum(1) for k, v in p0.items()))
            extra[step] = (value.detach(), dist)
        if step < steps[-1]:
            params = {k: v - lr * grads[k] for k, v in params.items()}
    rows = []
    for r in tracker.member_history:
        value, dist = extra[r["step"]]
        rows.append({**base, **r, "time": r["step"] * lr, "loss": float(value[r["member"]]),
                     "param_distance": float(dist[r["member"]])})
    return rows


# -- the study ----------------------------------------------------------------------------------------------------
def run_study(cfg: LazyConfig, out: str | Path, *, device: str | None = None,
              data: Mapping[str, DatasetSplits] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the three parts on every dataset and write the outputs (module docstring) into ``out``.

    Args:
        device: overrides ``cfg.device``. data: name → DatasetSplits to use instead of ``ntkbayes.data.load``
            (tests pass their own small data). progress: a tqdm bar on stderr.
    Returns:
        summary dict: ``seconds`` per part and in total, row counts, the output paths.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device or cfg.device)
    conv_w, agree_w = cfg.convergence["widths"], cfg.agreement["widths"]
    agree_r = set(cfg.agreement["regimes"])
    plan = {r.label: sorted(set(conv_w) | (set(agree_w) if r.label in agree_r else set())) for r in cfg.regimes}
    total = len(cfg.datasets) * sum(len(ws) + 1 + (2 * len(agree_w) if r in agree_r else 0) for r, ws in plan.items())
    bar = tqdm(total=total, desc=cfg.name, unit="fit", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    seconds = {"width_sweep": 0.0, "agreement": 0.0, "trajectory": 0.0}
    sweep, agree, traj = [], [], []
    start = time.perf_counter()
    for name in cfg.datasets:
        ds = data[name] if data is not None else datasets.load(name, root=cfg.data_root, seed=cfg.seed,
                                                                **cfg.dataset_options.get(name, {}))
        sub = subsample(ds, cfg)
        probe = sub.train.x[:cfg.num_probe].flatten(1).to(dev, torch.float64)
        test_x = sub.test.x.flatten(1)
        for regime in cfg.regimes:
            for width in plan[regime.label]:
                base = {"dataset": name, "regime": regime.label, "width": width}
                bar.set_postfix_str(f"{name} {regime.label} width {width}")
                t0 = time.perf_counter()
                net = _fit(cfg, sub, regime, width, "network", dev)
                if width in conv_w:
                    sweep += _sweep_rows(net, sub, probe, base)
                seconds["width_sweep"] += time.perf_counter() - t0
                bar.update()
                if regime.label in agree_r and width in agree_w:
                    t0 = time.perf_counter()
                    logits = {"network": net.member_logits(test_x)}
                    for mode in ("linearized", "kernel"):
                        logits[mode] = _fit(cfg, sub, regime, width, mode, dev).member_logits(test_x)
                        bar.update()
                    agree += _agreement_rows(logits, base)
                    seconds["agreement"] += time.perf_counter() - t0
            bar.set_postfix_str(f"{name} {regime.label} trajectory")
            t0 = time.perf_counter()
            traj += trajectory(cfg, sub, regime, probe, dev, {"dataset": name, "regime": regime.label,
                                                               "width": cfg.trajectory["width"]})
            seconds["trajectory"] += time.perf_counter() - t0
            bar.update()
    bar.close()
    seconds["total"] = time.perf_counter() - start
    seconds["load_average"] = os.getloadavg()[1]     # 5-min load of the machine at the end (shared CPUs run slower)
    frames = {"width_sweep": pd.DataFrame(sweep), "agreement": pd.DataFrame(agree), "trajectory": pd.DataFrame(traj)}
    frames["slopes"] = fit_slopes(frames["width_sweep"])
    paths = write_outputs(cfg, out, frames, seconds, str(dev))
    return {"seconds": seconds, "rows": {k: len(v) for k, v in frames.items()}, "paths": [str(p) for p in paths]}


