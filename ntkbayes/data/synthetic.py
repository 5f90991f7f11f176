"""Two-dimensional toy datasets with a far-away OOD set: ``moons`` and three-arm ``spirals``.

benchmarks.md §2: ``moons`` is scikit-learn's ``make_moons``; ``spirals`` is generated here with numpy. Both take
their sample from the seed (a new seed is a new sample and a new split) and carry the OOD set ``far``: points
uniform in a square far from the data, standardized with the training statistics like every split. A plain ReLU
MLP is over-confident there (MSP-AUROC below chance); Laplace, GP and NTK-GP predictives should not be.

OOD groups (``DatasetSplits.ood_groups``): ``far`` is "far" (no data anywhere near it); ``heldout`` (the classes
left out of ``id_classes``, when given) is "near".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ntkbayes.data import build_splits, check_float, check_int, register, split_options
from ntkbayes.data.splits import DatasetSplits, StandIn

# Centre and half-width of the far-OOD square in raw coordinates: the moons lie in [-1.2, 2.2] x [-0.7, 1.2] and
# the spirals in the unit disc, so (6, 6) ± 1 is several data diameters away from both (benchmarks.md §2).
FAR_CENTER = (6.0, 6.0)
FAR_HALF_WIDTH = 1.0
# Spiral arms: number of arms (benchmarks.md: 3) and the radius at which an arm starts, away from the centre
# where all arms meet and the classes could not be told apart.
SPIRAL_ARMS = 3
SPIRAL_START = 0.1
#: Near/far OOD groups of both datasets (module docstring); ``heldout`` defaults to "near".
OOD_GROUPS = {"far": "far"}


def _far(seed: int, m: int) -> np.ndarray:
    """(M, 2) points uniform in the far square."""
    rng = np.random.default_rng([seed, 0xFA5])
    return np.asarray(FAR_CENTER) + rng.uniform(-FAR_HALF_WIDTH, FAR_HALF_WIDTH, size=(m, 2))


def spirals_raw(n: int, noise: float, turns: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three interleaved spiral arms: x (N, 2) float64, y (N,) int64 in {0, 1, 2} (classes balanced).

    Arm k at position t ∈ [SPIRAL_START, 1]: radius t, angle 2πk/3 + 2π·turns·t, plus isotropic Gaussian noise
    of std ``noise``.
    """
    rng = np.random.default_rng([seed, 0x5E1])
    y = np.arange(n) % SPIRAL_ARMS
    rng.shuffle(y)
    t = rng.uniform(SPIRAL_START, 1.0, size=n)
    angle = 2 * np.pi * y / SPIRAL_ARMS + 2 * np.pi * turns * t
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) + noise * rng.normal(size=(n, 2))
    return x, y.astype(np.int64)


def _splits(name: str, x: np.ndarray, y: np.ndarray, seed: int, opts: dict) -> DatasetSplits:
    """Both loaders' splits of the sample (x, y), with the OOD set ``far`` of ``opts["n_far"]`` points."""
    return build_splits(
        name, x, y, seed=seed, modality="tabular", options=opts, **split_options(name, opts),
        extra_ood={"far": _far(seed, check_int(name, "n_far", opts["n_far"], 1))}, ood_groups=OOD_GROUPS,
    )


@register("moons", family="synthetic", stand_in=StandIn((2,), 2, OOD_GROUPS))
def load_moons(
    root: Path,
    seed: int,
    download: bool,
    *,
    n: int = 600,
    noise: float = 0.15,
    n_far: int = 200,
    id_classes=None,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    standardize: str = "feature",
) -> DatasetSplits:
    """Two moons (scikit-learn ``make_moons``), 2 classes; x (N, 2); OOD set ``far`` (``n_far`` points).

    Options: ``n`` points in all, Gaussian ``noise`` std (benchmarks.md: 0.1–0.2), ``n_far`` OOD points,
    ``id_classes`` (default both), ``test_fraction`` / ``val_fraction`` of the stratified splits, ``standardize``.
    """
    from sklearn.datasets import make_moons

    opts = dict(n=n, noise=noise, n_far=n_far, id_classes=id_classes, test_fraction=test_fraction,
                val_fraction=val_fraction, standardize=standardize)
    n = check_int("moons", "n", n, 30)
    noise = check_float("moons", "noise", noise, 0.0, 10.0)
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed % 2**32)
    return _splits("moons", x, y, seed, opts)


@register("spirals", family="synthetic", stand_in=StandIn((2,), SPIRAL_ARMS, OOD_GROUPS))
def load_spirals(
    root: Path,
    seed: int,
    download: bool,
    *,
    n: int = 600,
    noise: float = 0.05,
    turns: float = 1.0,
    n_far: int = 200,
    id_classes=None,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    standardize: str = "feature",
) -> DatasetSplits:
    """Three spiral arms (:func:`spirals_raw`), 3 classes; x (N, 2); OOD set ``far`` (``n_far`` points).

    Options: ``n`` points, ``noise`` std, ``turns`` per arm, ``n_far``, ``id_classes`` (default all three),
    ``test_fraction`` / ``val_fraction``, ``standardize``.
    """
    opts = dict(n=n, noise=noise, turns=turns, n_far=n_far, id_classes=id_classes, test_fraction=test_fraction,
                val_fraction=val_fraction, standardize=standardize)
    x, y = spirals_raw(
        check_int("spirals", "n", n, 30),
        check_float("spirals", "noise", noise, 0.0, 10.0),
        check_float("spirals", "turns", turns, 0.0, 10.0, open_low=True),
        seed,
    )
    return _splits("spirals", x, y, seed, opts)
