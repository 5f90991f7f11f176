"""DatasetSplits / Split containers, validation of inputs, and split/standardization helpers.

Conventions (benchmarks.md §2): splits are a deterministic function of the seed, validation comes out of the
training data, preprocessing is fitted on the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


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
    """

    name: str
    num_classes: int
    train: Split
    val: Split
    test: Split
    ood: dict[str, torch.Tensor] = field(default_factory=dict)
    classes: tuple[int, ...] = ()
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_splits(self)

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
) -> DatasetSplits:
    """Split arrays into train/val/test deterministically from ``seed`` and package them.

    Args:
        x: (N, ...) inputs; y: (N,) integer labels with original class ids.
        test_fraction: fraction of ``x`` used for test when ``x_test`` is not given (stratified).
        val_fraction: fraction of the training part held out for validation (stratified).
        id_classes: in-distribution class ids (default: all); the others form the OOD set ``heldout``.
        x_test, y_test: a fixed test set (e.g. a published split); then only train/val is split by the seed.
        standardize: fit per-feature mean/std on the train split and apply it to every split and OOD set.
        extra_ood: further OOD sets (raw, before standardization).
    """
    from sklearn.model_selection import train_test_split

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
    if id_classes is None:
        id_classes = all_classes.tolist()
    id_classes = [int(c) for c in id_classes]
    bad = sorted(set(id_classes) - set(all_classes.tolist()))
    if bad:
        raise ValueError(f"dataset {name!r}: id_classes {bad} not among the classes {all_classes.tolist()}")
    if len(set(id_classes)) < 2:
        raise ValueError(f"dataset {name!r}: id_classes needs at least 2 distinct classes, got {id_classes}")

    rng_seed = int(seed) % 2**31
    if x_test is None:
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=test_fraction, random_state=rng_seed, stratify=y
        )
    else:
        x_tr, y_tr, x_te, y_te = x, y, np.asarray(x_test), np.asarray(y_test)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x_tr, y_tr, test_size=val_fraction, random_state=rng_seed + 1, stratify=y_tr
    )

    id_set = np.array(id_classes)
    ood = {}
    heldout = [x_te[~np.isin(y_te, id_set)]] if len(id_classes) < len(all_classes) else []
    if heldout and heldout[0].shape[0]:
        ood["heldout"] = heldout[0]
    for k, v in (extra_ood or {}).items():
        ood[k] = np.asarray(v)
    remap = {c: i for i, c in enumerate(id_classes)}

    def keep(xs, ys):
        m = np.isin(ys, id_set)
        return xs[m], np.array([remap[int(c)] for c in ys[m]], dtype=np.int64)

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = keep(x_tr, y_tr), keep(x_va, y_va), keep(x_te, y_te)

    prep = {"standardize": bool(standardize)}
    if standardize:
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
        info={"seed": int(seed), "id_classes": id_classes, "preprocessing": prep, **(info or {})},
    )
