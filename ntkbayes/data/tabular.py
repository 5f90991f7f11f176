"""scikit-learn's bundled datasets: ``digits`` (8×8 images), ``breast_cancer`` and ``wine`` (benchmarks.md §2).

All three ship inside scikit-learn (``load_*``), so they load offline; the ``fetch_*`` functions, which download,
are never used. The splits are stratified: test then validation out of the rest, both from the seed.

``digits``: 1797 images of 8×8 pixels with values 0–16, 10 classes. Every class is in-distribution by default; the
standard OOD benchmark passes ``id_classes=[0, 1, 2, 3, 4]`` so that classes 5–9 become the near-OOD set
``heldout`` (same pixel statistics). The far-OOD set ``noise`` holds images of independent uniform integer pixels
in 0..16. OOD groups: ``heldout`` is "near" (same pixel statistics, new classes), ``noise`` is "far" (no digit at
all). Pixels are standardized with one mean/std over all training pixels (``standardize="channel"``), so a
rotated digit (shift.py) is the rotation of the standardized one; ``flatten`` gives (N, 64) for MLPs.

``breast_cancer`` (569 × 30, 2 classes) and ``wine`` (178 × 13, 3 classes) serve calibration; their raw feature
scales reach 4000, so they are standardized per feature; their only OOD set is ``heldout`` ("near").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ntkbayes.data import build_splits, check_bool, check_int, register, split_options
from ntkbayes.data.splits import DatasetSplits, StandIn

# Largest pixel value of scikit-learn's digits (4×4 blocks of 32×32 bitmaps counted: 0..16); the noise images use it.
DIGITS_MAX = 16
#: Near/far group of digits' own OOD set (module docstring).
DIGITS_OOD_GROUPS = {"noise": "far"}


def digits_noise(m: int, seed: int) -> np.ndarray:
    """(M, 1, 8, 8) images of independent uniform integer pixels in 0..DIGITS_MAX (raw digits scale)."""
    rng = np.random.default_rng([seed, 0xD16])
    return rng.integers(0, DIGITS_MAX + 1, size=(m, 1, 8, 8)).astype(np.float64)


@register("digits", family="tabular", stand_in=StandIn((1, 8, 8), 10, DIGITS_OOD_GROUPS, "image"))
def load_digits_splits(
    root: Path,
    seed: int,
    download: bool,
    *,
    id_classes=None,
    n_noise: int = 500,
    flatten: bool = True,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    standardize: str = "channel",
) -> DatasetSplits:
    """scikit-learn digits: x (N, 64) (or (N, 1, 8, 8) with ``flatten=False``), 10 classes.

    OOD sets: ``heldout`` (the classes not in ``id_classes``, from the test part), ``noise`` (``n_noise``
    uniform-noise images).
    """
    from sklearn.datasets import load_digits

    opts = dict(id_classes=id_classes, n_noise=n_noise, flatten=flatten, test_fraction=test_fraction,
                val_fraction=val_fraction, standardize=standardize)
    bunch = load_digits()
    x = bunch.images.astype(np.float64)[:, None]  # (N, 1, 8, 8)
    return build_splits(
        "digits", x, bunch.target.astype(np.int64), seed=seed, modality="image", options=opts,
        flatten=check_bool("digits", "flatten", flatten), **split_options("digits", opts),
        extra_ood={"noise": digits_noise(check_int("digits", "n_noise", n_noise, 1), seed)},
        ood_groups=DIGITS_OOD_GROUPS,
    )


def _register_sklearn_tabular(name: str, loader_name: str, stand_in: StandIn, doc: str):
    """Register a scikit-learn bundled table (``sklearn.datasets.<loader_name>``) with the shared split options."""

    @register(name, family="tabular", stand_in=stand_in)
    def load(root: Path, seed: int, download: bool, *, id_classes=None, test_fraction: float = 0.25,
             val_fraction: float = 0.2, standardize: str = "feature") -> DatasetSplits:
        import sklearn.datasets

        opts = dict(id_classes=id_classes, test_fraction=test_fraction, val_fraction=val_fraction,
                    standardize=standardize)
        bunch = getattr(sklearn.datasets, loader_name)()
        return build_splits(
            name, bunch.data.astype(np.float64), bunch.target.astype(np.int64), seed=seed, modality="tabular",
            options=opts, **split_options(name, opts),
        )

    load.__name__ = load.__qualname__ = f"load_{name}_splits"
    load.__doc__ = doc
    return load


load_breast_cancer_splits = _register_sklearn_tabular(
    "breast_cancer", "load_breast_cancer", StandIn((30,), 2),
    "Wisconsin breast cancer (scikit-learn bundled): x (N, 30), 2 classes; no OOD set unless ``id_classes``.")
load_wine_splits = _register_sklearn_tabular(
    "wine", "load_wine", StandIn((13,), 3),
    "Wine recognition (scikit-learn bundled): x (N, 13), 3 classes; no OOD set unless ``id_classes``.")
