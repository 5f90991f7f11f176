"""A small fake results store written through ``ResultsStore`` exactly as the runner writes one: two datasets (a 2-D
one with ``grid_x``/``grid_probs``), three methods (one with S = 1), two seeds, random but valid predictions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore
from ntkbayes.metrics import CONVENTIONS, evaluate
from ntkbayes.predictive import Predictive

#: (method label, method name, members S)
METHODS = (("ntk_ensemble[mode=linearized]", "ntk_ensemble", 4), ("laplace", "laplace", 3), ("map", "map", 1))
#: method name → comparison family (``record["family"]``, as the harness records it)
FAMILIES = {"ntk_ensemble": "ntk", "laplace": "laplace", "map": "map"}
SEEDS = (0, 1)
#: dataset → (classes, test points, OOD sets with sizes, 2-D?)
DATASETS = {"moons": (2, 30, {"far": 12}, True), "digits": (4, 25, {"digits59": 10, "noise": 8}, False)}
GRID_SIDE = 12


def _members(rng: np.random.Generator, s: int, logits: np.ndarray, spread: float) -> np.ndarray:
    """(S, N, C) float32 member probabilities around shared logits (N, C)."""
    z = logits[None] + spread * rng.normal(size=(s, *logits.shape))
    return torch.softmax(torch.from_numpy(z), -1).numpy().astype(np.float32)


def write_fake_store(root: Path) -> Path:
    store = ResultsStore(root)
    for dataset, (c, n, ood_sizes, planar) in DATASETS.items():
        for seed in SEEDS:
            rng = np.random.default_rng([seed, c])
            labels = rng.integers(0, c, size=n)
            base = 2.0 * np.eye(c)[labels] + rng.normal(size=(n, c))  # mostly right, some errors
            ood_base = {k: 0.3 * rng.normal(size=(m, c)) for k, m in ood_sizes.items()}
            if planar:
                g = np.linspace(-3, 3, GRID_SIDE, dtype=np.float32)
                gy, gx = np.meshgrid(g, g, indexing="ij")
                grid_x = np.stack([gx.ravel(), gy.ravel()], -1)  # row-major, x fastest
                grid_base = np.stack([2 * grid_x[:, 0], -2 * grid_x[:, 0]], -1)
            for j, (label, method, s) in enumerate(METHODS):
                mrng = np.random.default_rng([seed, c, j])
                spread = 0.0 if s == 1 else 0.5 + 0.3 * j
                test = _members(mrng, s, base + 0.3 * j * mrng.normal(size=base.shape), spread)
                ood = {k: _members(mrng, s, v, spread + 0.5) for k, v in ood_base.items()}
                run_id = hashlib.sha1(f"{dataset}-{label}-{seed}".encode()).hexdigest()[:16]
                extra = {}
                if planar:
                    extra = {"grid_x": grid_x, "grid_probs": _members(mrng, s, grid_base / (1 + j), spread)}
                test_pred = Predictive(torch.from_numpy(test))
                ood_preds = {k: Predictive(torch.from_numpy(v)) for k, v in ood.items()}
                store.save_predictions(run_id, test_pred, torch.from_numpy(labels), ood_preds, extra=extra)
                metrics = evaluate(test_pred, torch.from_numpy(labels), ood=ood_preds)
                store.append({
                    "schema_version": SCHEMA_VERSION, "run_id": run_id, "suite": "fake", "dataset": dataset,
                    "dataset_label": dataset, "dataset_options": {"n": 100}, "method": method,
                    "family": FAMILIES[method], "method_label": label, "params": {"members": s}, "seed": seed,
                    "metrics": metrics,
                    "fit_info": {}, "fit_seconds": 0.1 * (j + 1), "predict_seconds": 0.01,
                    "peak_memory_bytes": 1000, "device": "cpu", "device_name": "fake CPU",
                    "versions": {"python": "3.11", "torch": torch.__version__}, "git_commit": "abc123",
                    "timestamp": f"2026-01-01T00:00:{seed:02d}Z", "status": "ok", "error": None,
                    "conventions": CONVENTIONS, "predictions": f"predictions/{run_id}.npz",
                })
    # one failed cell: must be ignored by comparisons
    store.append({"schema_version": SCHEMA_VERSION, "run_id": "failedcell", "suite": "fake", "dataset": "moons",
                  "dataset_label": "moons", "dataset_options": {"n": 100}, "method": "gp", "method_label": "gp",
                  "params": {}, "seed": 0, "status": "failed", "error": "RuntimeError: boom"})
    return root
