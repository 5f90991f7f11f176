"""Image datasets read from torchvision's on-disk formats under the data root (benchmarks.md §2).

``mnist``, ``fashion_mnist``, ``kmnist`` (IDX files), ``cifar10``, ``cifar100`` (pickled batch dicts) and ``svhn``
(MATLAB ``.mat``). torchvision downloads them when asked (``download=True``; never otherwise), into the same
places its own dataset classes use; the files are then read here, not through those classes, because

* torchvision's CIFAR and SVHN classes check the md5 sum of every file, so small files written by a test cannot
  be loaded through them;
* CIFAR batches are pickles, and ``pickle.load`` on a file from elsewhere can run arbitrary code. They are read
  with :class:`RestrictedUnpickler`, whose ``find_class`` returns only the numpy functions that rebuild arrays
  (``_reconstruct``, ``_frombuffer``, ``scalar``, ``ndarray``, ``dtype``) and a latin-1 ``_codecs.encode``, and
  refuses every other global: a batch file cannot import or call anything else;
* a truncated or malformed file then gives a ValueError that names the file.

Images become float32 (N, C, H, W) scaled to [0, 1], then standardized with one mean and std per channel from the
training split (``standardize="channel"``, recorded in ``info["preprocessing"]``); ``flatten`` gives (N, C·H·W).
The OOD sets are the test images of other datasets with the same image shape; the standard pairs are MNIST →
FashionMNIST, KMNIST; FashionMNIST → MNIST, KMNIST; CIFAR-10 → SVHN (far), CIFAR-100 (near).

OOD groups (``DatasetSplits.ood_groups``, following OpenOOD v1.5 where it has the pair): ``heldout`` is always
"near"; another dataset is "near" when it is of the same kind — MNIST ↔ KMNIST (handwritten strokes), MNIST →
FashionMNIST (OpenOOD's near-OOD for MNIST), CIFAR-10 ↔ CIFAR-100 (natural images, disjoint classes) — and "far"
otherwise: FashionMNIST → MNIST, KMNIST (strokes, not clothes), KMNIST → FashionMNIST, CIFAR → SVHN (house
numbers), SVHN → CIFAR-10 (``VisionSpec.near_ood``).

``stand_in=True`` (``ntkbayes.data.load``) gives random images of the real shape, class count and OOD set names
and reads no file (dry runs).
"""

from __future__ import annotations

import codecs
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ntkbayes.data import (
    DataMissingError,
    build_splits,
    check_bool,
    check_float,
    check_id_classes,
    check_int,
    check_standardization,
    register,
)
from ntkbayes.data.splits import DatasetSplits, StandIn, stratified_subset
from ntkbayes.errors import UserError

# Validation share of the training images: 6000 of MNIST's 60000, 5000 of CIFAR's 50000 — the usual hold-out
# size for early stopping and for tuning temperatures / prior precisions (benchmarks.md §4.4).
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class VisionSpec:
    """One image dataset: its torchvision class, file format, image shape (C, H, W), classes, standard OOD sets."""

    name: str
    torchvision_class: str
    fmt: str  # "idx" | "cifar" | "svhn"
    image_shape: tuple[int, int, int]
    num_classes: int
    default_ood: tuple[str, ...]
    license: str
    near_ood: tuple[str, ...] = ()  # OOD datasets that count as "near" (module docstring); the others are "far"


SPECS: dict[str, VisionSpec] = {
    s.name: s
    for s in [
        VisionSpec("mnist", "MNIST", "idx", (1, 28, 28), 10, ("fashion_mnist", "kmnist"), "CC BY-SA 3.0",
                   near_ood=("fashion_mnist", "kmnist")),
        VisionSpec("fashion_mnist", "FashionMNIST", "idx", (1, 28, 28), 10, ("mnist", "kmnist"), "MIT"),
        VisionSpec("kmnist", "KMNIST", "idx", (1, 28, 28), 10, ("mnist", "fashion_mnist"), "CC BY-SA 4.0",
                   near_ood=("mnist",)),
        VisionSpec("cifar10", "CIFAR10", "cifar", (3, 32, 32), 10, ("svhn", "cifar100"), "no license stated",
                   near_ood=("cifar100",)),
        VisionSpec("cifar100", "CIFAR100", "cifar", (3, 32, 32), 100, ("svhn", "cifar10"), "no license stated",
                   near_ood=("cifar10",)),
        VisionSpec("svhn", "SVHN", "svhn", (3, 32, 32), 10, ("cifar10",), "non-commercial use only"),
    ]
}


# ---------------------------------------------------------------------------------------------- file locations


def split_files(spec: VisionSpec, root: Path, train: bool) -> list[Path]:
    """The files one split of ``spec`` needs under ``root`` (where torchvision puts them)."""
    root = Path(root)
    if spec.fmt == "idx":
        raw = root / spec.torchvision_class / "raw"
        prefix = "train" if train else "t10k"
        return [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    if spec.name == "cifar10":
        d = root / "cifar-10-batches-py"
        return [d / f"data_batch_{i}" for i in range(1, 6)] if train else [d / "test_batch"]
    if spec.name == "cifar100":
        return [root / "cifar-100-python" / ("train" if train else "test")]
    return [root / f"{'train' if train else 'test'}_32x32.mat"]


def _download(spec: VisionSpec, root: Path) -> None:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    root.mkdir(parents=True, exist_ok=True)
    try:
        if spec.fmt == "svhn":
            for split in ("train", "test"):
                cls(str(root), split=split, download=True)
        else:
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as e:  # network, checksum or disk errors: report which dataset and where
        raise DataMissingError(spec.name, root, f" (download through torchvision failed: {e})") from e


# ---------------------------------------------------------------------------------------------- readers


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (big-endian header: magic 0x0000 08 ndim,
    then ndim uint32 sizes); a wrong magic, a truncated file or trailing bytes raise ValueError naming it."""
    raw = Path(path).read_bytes()
    magic = 0x800 + ndim
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
        got = f"0x{struct.unpack('>I', raw[:4])[0]:08x}" if len(raw) >= 4 else f"{len(raw)} bytes"
        raise ValueError(f"{path}: not an IDX file of uint8 with {ndim} dimensions (magic 0x{magic:08x}, got {got})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX size mismatch: {len(raw)} bytes, header {dims} needs {expected} (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_split(spec: VisionSpec, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(files[0], 3), read_idx(files[1], 1)
    if images.shape[1:] != spec.image_shape[1:]:
        raise ValueError(f"{files[0]}: images of shape {images.shape[1:]}, expected {spec.image_shape[1:]}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{files[0]} holds {images.shape[0]} images but {files[1]} holds {labels.shape[0]} labels")
    _check_labels(files[1], labels, spec.num_classes)
    return images[:, None], labels.astype(np.int64)


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{path}: label out of range [0, {num_classes}) (min {labels.min()}, max {labels.max()})"
        )


def _latin1_encode(obj, encoding: str = "latin1"):
    """``_codecs.encode`` restricted to latin-1: how protocol-2 pickles written by Python 3 store bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(obj, "latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:  # numpy ≥ 2 pickles name numpy._core; files written with numpy 1 (and CIFAR's own) name numpy.core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_encode}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for data files: it rebuilds dicts, lists, strings, numbers and numpy arrays, nothing else.

    ``find_class`` is where pickle resolves every global a file names (the only way a pickle can call code); it
    returns the array-rebuilding numpy functions of :func:`_allowed_globals` and raises
    ``pickle.UnpicklingError`` for anything else, so a dataset file from elsewhere cannot run code.
    """

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file") from None


def restricted_load(path: Path) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (latin-1 for CIFAR's Python 2 strings); any failure is a
    ValueError naming the file."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error) as e:
        raise ValueError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from e


def _read_cifar_batch(path: Path, spec: VisionSpec) -> tuple[np.ndarray, np.ndarray]:
    entry = restricted_load(path)
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    label_key = "fine_labels" if spec.name == "cifar100" else "labels"
    if "data" not in entry or label_key not in entry:
        raise ValueError(f"{path}: CIFAR batch needs keys 'data' and {label_key!r}, has {sorted(map(str, entry))}")
    data, labels = entry["data"], entry[label_key]
    size = math.prod(spec.image_shape)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, {size}), got {got}")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {label_key!r} is not a list of ints ({e})") from e
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: {label_key!r} must be {data.shape[0]} integers, got {labels.dtype} of shape {labels.shape}"
        )
    _check_labels(path, labels, spec.num_classes)
    return data.reshape(-1, *spec.image_shape), labels.astype(np.int64)


def _read_svhn(path: Path, spec: VisionSpec) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, TypeError, NotImplementedError, OSError, scipy.io.matlab.MatReadError) as e:
        raise ValueError(f"{path}: not a readable SVHN .mat file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: SVHN file needs variables 'X' and 'y'")
    x, y = mat["X"], np.asarray(mat["y"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: 'X' must be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}")
    if y.reshape(-1).shape != (x.shape[3],) or y.dtype.kind not in "uif":
        raise ValueError(f"{path}: 'y' must hold {x.shape[3]} labels, got {y.dtype} of shape {y.shape}")
    y = y.reshape(-1)
    if y.size and (y.min() < 1 or y.max() > 10 or not np.all(y == np.round(y))):
        raise ValueError(f"{path}: SVHN labels must be integers 1..10 (10 meaning digit 0)")
    y = y.astype(np.int64) % 10  # SVHN stores digit 0 as label 10
    return np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))), y  # (H, W, C, N) -> (N, C, H, W)


def read_split(spec: VisionSpec, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, C, H, W) uint8 and labels (N,) int64 of one split; downloads first if asked and missing."""
    files = split_files(spec, root, train)
    if download and not all(f.exists() for f in files):
        _download(spec, Path(root))
    missing = [f for f in files if not f.exists()]
    if missing:
        raise DataMissingError(spec.name, missing[0])
    if spec.fmt == "idx":
        return _read_idx_split(spec, files)
    if spec.fmt == "svhn":
        return _read_svhn(files[0], spec)
    parts = [_read_cifar_batch(f, spec) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------------------------------------- loader


def _to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) → float32 in [0, 1] (one copy)."""
    out = x.astype(np.float32)
    out *= np.float32(1 / 255)
    return out


def _check_ood(spec: VisionSpec, ood) -> list[str]:
    if ood is None:
        return list(spec.default_ood)
    if isinstance(ood, str) or not hasattr(ood, "__iter__"):
        raise UserError(f"dataset {spec.name!r}: option 'ood' must be a list of dataset names, got {ood!r}")
    names = list(ood)
    for o in names:
        if o not in SPECS:
            raise UserError(f"dataset {spec.name!r}: unknown OOD dataset {o!r} in option 'ood'; one of {list(SPECS)}")
        if o == spec.name or names.count(o) > 1:
            raise UserError(f"dataset {spec.name!r}: option 'ood' names {o!r} twice or names the dataset itself")
        if SPECS[o].image_shape != spec.image_shape:
            raise UserError(
                f"dataset {spec.name!r}: OOD dataset {o!r} has images {SPECS[o].image_shape}, not {spec.image_shape}"
            )
    return names


def ood_groups(spec: VisionSpec, ood_names: list[str]) -> dict[str, str]:
    """"near" / "far" of each OOD dataset of ``spec`` (module docstring)."""
    return {o: "near" if o in spec.near_ood else "far" for o in ood_names}


def load_vision(spec: VisionSpec, root: Path, seed: int, download: bool, opts: dict) -> DatasetSplits:
    """Read ``spec``'s train/test files and the test files of the OOD datasets; split, standardize, package."""
    name = spec.name
    ood_names = _check_ood(spec, opts["ood"])
    val_fraction = check_float(name, "val_fraction", opts["val_fraction"], 0.0, 0.9, open_low=True)
    x, y = read_split(spec, root, True, download)
    xt, yt = read_split(spec, root, False, download)
    if opts["subset"] is not None:
        need = math.ceil(spec.num_classes / val_fraction) + spec.num_classes
        k = check_int(name, "subset", opts["subset"], need)
        if k < len(y):
            keep = stratified_subset(y, k, seed)
            x, y = x[keep], y[keep]
    test_k = None if opts["test_subset"] is None else check_int(name, "test_subset", opts["test_subset"], 1)
    if test_k is not None and test_k < len(yt):
        keep = stratified_subset(yt, test_k, seed + 1)
        xt, yt = xt[keep], yt[keep]
    ood = {}
    for i, o in enumerate(ood_names):
        xo, _ = read_split(SPECS[o], root, False, download)
        if test_k is not None and test_k < len(xo):
            rng = np.random.default_rng([seed, 0x00D, i])
            xo = xo[np.sort(rng.permutation(len(xo))[:test_k])]
        ood[o] = _to_unit(xo)
    return build_splits(
        name, _to_unit(x), y, seed=seed, standardize=check_standardization(name, opts["standardize"]),
        modality="image", options=opts, flatten=check_bool(name, "flatten", opts["flatten"]),
        id_classes=check_id_classes(name, opts["id_classes"]), x_test=_to_unit(xt), y_test=yt,
        val_fraction=val_fraction, extra_ood=ood, ood_groups=ood_groups(spec, ood_names),
    )


def _register(spec: VisionSpec) -> None:
    def loader(
        root: Path,
        seed: int,
        download: bool,
        *,
        id_classes=None,
        ood=spec.default_ood,
        subset=None,
        test_subset=None,
        flatten: bool = False,
        val_fraction: float = VAL_FRACTION,
        standardize: str = "channel",
    ) -> DatasetSplits:
        opts = dict(id_classes=id_classes, ood=ood, subset=subset, test_subset=test_subset, flatten=flatten,
                    val_fraction=val_fraction, standardize=standardize)
        return load_vision(spec, root, seed, download, opts)

    def stand_in(opts: dict) -> StandIn:  # the image shape and classes, the OOD datasets the options name
        return StandIn(spec.image_shape, spec.num_classes, ood_groups(spec, _check_ood(spec, opts["ood"])), "image")

    loader.__name__ = loader.__qualname__ = f"load_{spec.name}"
    loader.__doc__ = (
        f"{spec.torchvision_class}: x (N, {', '.join(map(str, spec.image_shape))}) float32 (or flattened), "
        f"{spec.num_classes} classes; OOD sets default to the test images of {', '.join(spec.default_ood)}.\n\n"
        "Options: ``id_classes`` (default all; the rest form ``heldout``), ``ood`` (OOD dataset names), "
        "``subset`` (stratified number of training images kept, for CPU and dry runs), ``test_subset`` (cap on "
        "test and each OOD set), ``flatten`` (N, C·H·W), ``val_fraction``, ``standardize``."
    )
    register(spec.name, family="vision", stand_in=stand_in)(loader)


for _spec in SPECS.values():
    _register(_spec)
