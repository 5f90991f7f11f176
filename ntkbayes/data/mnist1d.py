"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"): 10 classes of length-40 sequences.

The ``mnist1d`` package's ``make_dataset(get_dataset_args())`` regenerates the published set offline in about 3 s
(it matches the published pickle to 2e-16); ``get_dataset`` would try to download, so it is never called
(benchmarks.md §4.7). Generated arrays are cached as ``<root>/mnist1d/mnist1d_<tag>.npz`` (``allow_pickle=False``)
together with the generator arguments as JSON; a cache whose arguments differ is regenerated.

Splits: the published 4000/1000 train/test split is the test set; validation comes out of the 4000 training
sequences from the seed. OOD sets (benchmarks.md §2): ``heldout`` (classes outside ``id_classes``), ``shuffled``
(``shuffle_seq=True``: the 40 positions permuted, same marginal statistics, no shape) and ``noisy`` (a larger
``iid_noise_scale``). The OOD sets are fresh samples drawn with their own generator seeds, so they are not
corrupted copies of training sequences.

OOD groups (``DatasetSplits.ood_groups``): ``heldout`` and ``noisy`` are "near" (new classes of the same
generator; digits whose shape is damaged but present), ``shuffled`` is "far" (the marginal statistics of the data
with no shape left, noise-like).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ntkbayes.data import build_splits, check_float, check_id_classes, check_int, check_standardization, register
from ntkbayes.data.splits import DatasetSplits, StandIn

CACHE_DIR = "mnist1d"
# iid noise std of the OOD set ``noisy``: 10× the generator's default 0.02, comparable to the amplitude of the
# templates (about 0.3 before the generator's final normalization), so the digit shape is damaged but present.
NOISY_SCALE = 0.2
# Generator seeds of the OOD sets; the published set uses 42.
OOD_SEEDS = {"shuffled": 4201, "noisy": 4202}
#: Near/far OOD groups (module docstring); ``heldout`` defaults to "near".
OOD_GROUPS = {"shuffled": "far", "noisy": "near"}
#: Sequence length and number of classes of the published set (the stand-in's shape).
LENGTH, NUM_CLASSES = 40, 10


def generate(**overrides) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` with the default arguments updated by ``overrides``.

    Returns ``x`` (N, 40), ``y`` (N,), ``x_test`` (M, 40), ``y_test`` (M,). The generator reseeds the global
    ``random`` and ``numpy.random`` states; they are restored afterwards so callers' random streams are untouched.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for k, v in overrides.items():
        if not hasattr(args, k):
            raise ValueError(f"mnist1d: unknown generator argument {k!r}")
        setattr(args, k, v)
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (legacy state it reseeds)
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


def _args_key(overrides: dict) -> str:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.update(overrides)
    args.pop("url", None)
    return json.dumps(args, sort_keys=True)


def cached(root: Path, tag: str, **overrides) -> dict[str, np.ndarray]:
    """:func:`generate` through the cache file ``<root>/mnist1d/mnist1d_<tag>.npz``."""
    path = Path(root) / CACHE_DIR / f"mnist1d_{tag}.npz"
    key = _args_key(overrides)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["args_json"]) == key:
                    return {k: z[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            warnings.warn(f"mnist1d: unreadable cache {path} ({e}); regenerating", stacklevel=3)
    data = generate(**overrides)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, args_json=np.array(key), **data)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared data root should stay readable
            os.replace(tmp, path)  # atomic: concurrent loaders see the old file or the whole new one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"mnist1d: could not write the cache {path} ({e}); continuing without it", stacklevel=3)
    return data


@register("mnist1d", family="sequence", stand_in=StandIn((LENGTH,), NUM_CLASSES, OOD_GROUPS, "sequence"))
def load_mnist1d(
    root: Path,
    seed: int,
    download: bool,
    *,
    id_classes=None,
    n_ood: int = 1000,
    noisy_scale: float = NOISY_SCALE,
    val_fraction: float = 0.2,
    standardize: str = "channel",
) -> DatasetSplits:
    """MNIST-1D: x (N, 40), 10 classes; published test set of 1000; OOD sets ``shuffled`` and ``noisy``
    (``n_ood`` sequences each, rounded down to a multiple of 10) and ``heldout`` when ``id_classes`` is given.

    ``standardize="channel"`` (default) uses one mean/std over all training positions: the generator already
    normalizes globally, and a per-position rescaling would not commute with the ``shift``/``roll`` corruptions.
    """
    opts = dict(id_classes=id_classes, n_ood=n_ood, noisy_scale=noisy_scale, val_fraction=val_fraction,
                standardize=standardize)
    n_ood = check_int("mnist1d", "n_ood", n_ood, 10) // 10 * 10
    noisy_scale = check_float("mnist1d", "noisy_scale", noisy_scale, 0.0, 100.0)
    base = cached(root, "default")
    ood_common = {"num_samples": n_ood, "train_split": 0.0}
    shuffled = cached(root, f"shuffled_n{n_ood}", shuffle_seq=True, seed=OOD_SEEDS["shuffled"], **ood_common)
    noisy = cached(root, f"noisy{noisy_scale:g}_n{n_ood}", iid_noise_scale=noisy_scale, seed=OOD_SEEDS["noisy"],
                   **ood_common)
    return build_splits(
        "mnist1d", base["x"], base["y"], seed=seed, standardize=check_standardization("mnist1d", standardize),
        modality="sequence", options=opts, id_classes=check_id_classes("mnist1d", id_classes),
        x_test=base["x_test"], y_test=base["y_test"],
        val_fraction=check_float("mnist1d", "val_fraction", val_fraction, 0.0, 0.9, open_low=True),
        extra_ood={"shuffled": shuffled["x_test"], "noisy": noisy["x_test"]}, ood_groups=OOD_GROUPS,
    )
