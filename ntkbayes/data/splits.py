"""DatasetSplits / Split containers, validation of inputs, and split/standardization helpers.

Conventions (benchmarks.md §2): splits are a deterministic function of the seed, validation comes out of the
training data, preprocessing is fitted on the training split only. Every OOD set is "near" (same domain, new
classes or a mild corruption) or "far" (another domain, noise, points far from the data); see :class:`OODGroup`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch


class OODGroup(str, Enum):
    """How far an OOD set is from the in-distribution data (the near/far split of OpenOOD, Yang et al. 2022)."""

    NEAR = "near"
    """Same domain and input statistics, new semantics: held-out classes, a sibling dataset of the same kind
    (CIFAR-100 for CIFAR-10, FashionMNIST for MNIST), a mild corruption that keeps the content. The default."""
    FAR = "far"
    """Another domain or no content at all: uniform noise, points far from the data, shuffled sequences, images
    of another kind (SVHN digits for CIFAR-10)."""


@dataclass(frozen=True)
class StandIn:
    """What stand-in data (``ntkbayes.data.load(..., stand_in=True)``) needs to know of a dataset; each loader
    registers its own (``register(..., stand_in=...)``), so this knowledge lives with the loader.

    Attributes:
        feature_shape: one input's shape before any flattening, e.g. (2,), (40,), (1, 28, 28).
        num_classes: C with every class in-distribution.
        ood_groups: name → "near" / "far" of the OOD sets the loader adds (``heldout`` comes from ``id_classes``).
        modality: "tabular", "sequence" or "image" (stand-in images are drawn in [0, 1], other inputs N(0, 1)).
    """

    feature_shape: tuple[int, ...]
    num_classes: int
    ood_groups: dict[str, str] = field(default_factory=dict)
    modality: str = "tabular"


def check_ood_groups(name: str, ood: dict, groups: dict | None) -> dict[str, str]:
    """``groups`` completed and checked: one entry per OOD set (missing ones "near"), values "near" or "far".

    Raises ValueError naming the dataset for a group of an OOD set that does not exist or an unknown value.
    """
    groups = dict(groups or {})
    extra = sorted(set(groups) - set(ood))
    if extra:
        raise ValueError(f"dataset {name!r}: ood_groups names {extra}, which are not OOD sets ({sorted(ood)})")
    out = {}
    for key in ood:
        value = groups.get(key, OODGroup.NEAR)
        try:
            out[key] = OODGroup(value).value
        except ValueError:
            raise ValueError(f"dataset {name!r}: ood_groups[{key!r}] must be 'near' or 'far', got {value!r}") from None
    return out


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (N, ...) float and integer labels ``y`` (N,) in [0, C)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset ready for methods: train/val/test splits, OOD inputs, and what they mean.

    Attributes:
        name: dataset name as given to :func:`ntkbayes.data.load`.
        num_classes: C, the number of in-distribution classes (labels are remapped to 0..C-1).
        train, val, test: :class:`Split`.
        ood: OOD set name → inputs (M, ...) with the same feature shape as ``train.x``.
        classes: original class ids of the C in-distribution classes, in label order.
        info: provenance (seed, options, preprocessing) for records.
        ood_groups: OOD set name → ``"near"`` or ``"far"`` (:class:`OODGroup`), one entry per key of ``ood``;
            sets a loader does not classify are "near" (filled in on construction).
    """

    name: str
    num_classes: int
    train: Split
    val: Split
    test: Split
    ood: dict[str, torch.Tensor] = field(default_factory=dict)
    classes: tuple[int, ...] = ()
    info: dict = field(default_factory=dict)
    ood_groups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_splits(self)
        object.__setattr__(self, "ood_groups", check_ood_groups(self.name, self.ood, self.ood_groups))

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def _check_x(name: str, split: str, x, feature_shape=None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"dataset {name!r}, split {split!r}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"dataset {name!r}, split {split!r}: x must have shape (N, ...), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"dataset {name!r}, split {split!r}: empty split")
    if not x.is_floating_point():
        raise ValueError(f"dataset {name!r}, split {split!r}: x must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"dataset {name!r}, split {split!r}: x contains NaN or inf")
    if feature_shape is not None and tuple(x.shape[1:]) != tuple(feature_shape):
        raise ValueError(
            f"dataset {name!r}, split {split!r}: feature shape {tuple(x.shape[1:])} differs from train's "
            f"{tuple(feature_shape)}"
        )


def validate_splits(ds: DatasetSplits) -> None:
    """Raise ValueError naming the dataset, the split and the problem for any malformed array."""
    name = ds.name
    if not isinstance(ds.num_classes, int) or ds.num_classes < 2:
        raise ValueError(f"dataset {name!r}: num_classes must be an int ≥ 2, got {ds.num_classes!r}")
    shape = None
    for split_name in ("train", "val", "test"):
        split = getattr(ds, split_name)
        _check_x(name, split_name, split.x, shape)
        shape = split.x.shape[1:] if shape is None else shape
        y = split.y
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            got = getattr(y, "dtype", type(y).__name__)
            raise ValueError(f"dataset {name!r}, split {split_name!r}: y must be an integer tensor, got {got}")
        if y.shape != (split.x.shape[0],):
            raise ValueError(
                f"dataset {name!r}, split {split_name!r}: y has shape {tuple(y.shape)}, expected "
                f"({split.x.shape[0]},)"
            )
        if int(y.min()) < 0 or int(y.max()) >= ds.num_classes:
            raise ValueError(
                f"dataset {name!r}, split {split_name!r}: label out of range [0, {ds.num_classes}) "
                f"(min {int(y.min())}, max {int(y.max())})"
            )
    for ood_name, x in ds.ood.items():
        _check_x(name, f"ood/{ood_name}", x, shape)


def stratified_subset(y, size: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of ``size`` of the labels ``y`` (N,), every class in proportion to its count.

    Quotas are ``size``·n_c/N rounded by largest remainders (ties to the smaller class id), with at least one
    index per class when ``size`` ≥ the number of classes (taken from the largest quotas); within a class the
    indices are drawn without replacement from ``seed``. Deterministic in (y, size, seed); ``y`` may be a numpy
    array or a tensor of integer labels. ``size`` ≥ N returns every index.
    """
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
        raise ValueError(f"size: expected an integer ≥ 0, got {size!r}")
    if size >= len(y):
        return np.arange(len(y), dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * (size / len(y))
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: size - int(take.sum())]] += 1
    if size >= len(classes):
        for c in np.flatnonzero(take == 0):  # every class present: move one from the largest quota
            take[int(np.argmax(take))] -= 1
            take[c] = 1
    rng = np.random.default_rng([int(seed) % 2**63, 0x5B5])
    idx = [rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(idx)).astype(np.int64)


def _as_arrays(name: str, x, y, y_test) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y as numpy arrays checked for shape and type; returns (x, y, all class ids)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"dataset {name!r}: y must have shape (N,), got {y.shape}")
    if x.ndim < 2 or 0 in x.shape[1:]:
        raise ValueError(f"dataset {name!r}: x must have shape (N, D, ...) with at least one feature, got {x.shape}")
    if x.dtype.kind == "O":
        try:
            x = x.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"dataset {name!r}: x must hold real numbers, got objects") from None
    if x.dtype.kind not in "biuf":
        raise ValueError(f"dataset {name!r}: x must hold real numbers, got dtype {x.dtype}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ValueError(f"dataset {name!r}: y must hold integer class ids, got non-integer or non-finite values")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"dataset {name!r}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    all_classes = np.unique(np.concatenate([y, y_test]) if y_test is not None else y)
    return x, y, all_classes


def _id_classes(name: str, id_classes, all_classes: np.ndarray) -> list[int]:
    if id_classes is None:
        id_classes = all_classes.tolist()
    id_classes = [int(c) for c in id_classes]
    bad = sorted(set(id_classes) - set(all_classes.tolist()))
    if bad:
        raise ValueError(f"dataset {name!r}: id_classes {bad} not among the classes {all_classes.tolist()}")
    if len(set(id_classes)) < 2:
        raise ValueError(f"dataset {name!r}: id_classes needs at least 2 distinct classes, got {id_classes}")
    return id_classes


def _feature_standardizer(name: str, x_tr: np.ndarray):
    """Per-feature (x − μ)/σ with μ, σ of the training split, computed in float64 without overflow."""
    flat = x_tr.reshape(len(x_tr), -1).astype(np.float64)
    scale = np.abs(flat).max(0)
    scale = np.where(scale > 0, scale, 1.0)  # std of flat / scale cannot overflow (features up to 1e308)
    mu, sd = flat.mean(0), (flat / scale).std(0) * scale
    if not (np.isfinite(mu).all() and np.isfinite(sd).all()):
        raise ValueError(f"dataset {name!r}: x too large to standardize in float64 (max |x| {scale.max():.3g})")
    sd = np.where(sd <= 1e-12 * np.abs(mu), 1.0, sd)  # constant up to rounding (relative, not absolute)

    def tf(a):
        a = np.asarray(a, dtype=np.float64)
        return ((a.reshape(len(a), -1) - mu) / sd).reshape(a.shape)

    return tf


def make_splits(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    id_classes=None,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    standardize: bool = True,
    extra_ood: dict[str, np.ndarray] | None = None,
    ood_transform: bool = True,
    info: dict | None = None,
    ood_groups: dict[str, str] | None = None,
) -> DatasetSplits:
    """Split arrays into train/val/test deterministically from ``seed`` and package them.

    Args:
        x: (N, ...) inputs; y: (N,) integer labels with original class ids.
        test_fraction: fraction of ``x`` used for test when ``x_test`` is not given (stratified).
        val_fraction: fraction of the training part held out for validation (stratified).
        id_classes: in-distribution class ids (default: all); the others form the OOD set ``heldout`` ("near").
        x_test, y_test: a fixed test set (e.g. a published split); then only train/val is split by the seed.
        standardize: fit per-feature mean/std on the train split and apply it to every split and OOD set.
        extra_ood: further OOD sets (raw, before standardization).
        ood_groups: "near" / "far" of the ``extra_ood`` sets (default "near"; :class:`OODGroup`).
    """
    from sklearn.model_selection import train_test_split

    x, y, all_classes = _as_arrays(name, x, y, y_test)
    id_classes = _id_classes(name, id_classes, all_classes)
    rng_seed = int(seed) % 2**31
    if x_test is None:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=rng_seed, stratify=y)
    else:
        x_tr, y_tr, x_te, y_te = x, y, np.asarray(x_test), np.asarray(y_test)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x_tr, y_tr, test_size=val_fraction, random_state=rng_seed + 1, stratify=y_tr
    )

    id_set = np.array(id_classes)
    ood = {}
    if len(id_classes) < len(all_classes) and (~np.isin(y_te, id_set)).any():
        ood["heldout"] = x_te[~np.isin(y_te, id_set)]
    ood.update({k: np.asarray(v) for k, v in (extra_ood or {}).items()})
    remap = {c: i for i, c in enumerate(id_classes)}

    def keep(xs, ys):
        m = np.isin(ys, id_set)
        return xs[m], np.array([remap[int(c)] for c in ys[m]], dtype=np.int64)

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = keep(x_tr, y_tr), keep(x_va, y_va), keep(x_te, y_te)
    if standardize:
        tf = _feature_standardizer(name, x_tr)
        x_tr, x_va, x_te = tf(x_tr), tf(x_va), tf(x_te)
        ood = {k: tf(v) if ood_transform else v for k, v in ood.items()}

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

    return DatasetSplits(
        name=name,
        num_classes=len(id_classes),
        train=Split(t(x_tr), torch.as_tensor(y_tr)),
        val=Split(t(x_va), torch.as_tensor(y_va)),
        test=Split(t(x_te), torch.as_tensor(y_te)),
        ood={k: t(v) for k, v in ood.items()},
        classes=tuple(id_classes),
        info={"seed": int(seed), "id_classes": id_classes, "preprocessing": {"standardize": bool(standardize)},
              **(info or {})},
        ood_groups=dict(ood_groups or {}),
    )
