"""Datasets: ``load(name, root="datasets", seed=0, download=False, **options) -> DatasetSplits``.

Conventions (benchmarks.md §2): splits are a deterministic function of the seed, validation comes out of the
training data, preprocessing (standardization) is fitted on the training split only, and the classes left out of
``id_classes`` form the OOD set ``heldout``. Nothing is downloaded unless the caller passes ``download=True``.

Every dataset is one loader function registered here with :func:`register`; the loader's keyword-only
parameters are the dataset's options and their defaults (:func:`describe` reads them from the signature, so the
option list lives in one place). The loaders live in ``synthetic.py``, ``tabular.py``, ``mnist1d.py`` and
``vision.py``; distribution shifts for Ovadia et al. (2019) style evaluation are in ``shift.py``.

Each loader declares which of its OOD sets are "near" and which "far" (``DatasetSplits.ood_groups``, documented in
its module), and registers a *stand-in*: ``load(name, stand_in=True)`` returns random data with the dataset's real
input shape, number of classes and OOD set names at a small size, reading and downloading nothing (dry runs).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ntkbayes.data.splits import DatasetSplits, OODGroup, Split, StandIn, make_splits, stratified_subset
from ntkbayes.errors import UserError

# Data root used when none is given: design.md's layout keeps datasets in ./datasets (git-ignored, README inside).
DEFAULT_ROOT = "datasets"


class DataMissingError(FileNotFoundError, UserError):
    """A dataset's files are not under the data root. The message names the path and how to obtain the files.

    Derives from FileNotFoundError (it is one) and from :class:`ntkbayes.errors.UserError`, so the CLI reports it
    as one line with exit status 2.
    """

    def __init__(self, dataset: str, path: Path | str, detail: str = "") -> None:
        self.dataset = dataset
        self.path = str(path)
        how = (
            f"obtain it with `ntkbayes run SUITE --download` or "
            f"`ntkbayes.data.load({dataset!r}, root=..., download=True)` (see datasets/README.md)"
        )
        super().__init__(f"dataset {dataset!r}: missing file {self.path}{detail}; {how}")


class Standardization(str, Enum):
    """How inputs are standardized; statistics always come from the training split only (benchmarks.md §2)."""

    FEATURE = "feature"
    """Per-feature mean and std (each input dimension / pixel on its own); the usual choice for tabular data."""
    CHANNEL = "channel"
    """One mean and std per channel over all positions (images: per colour channel; sequences: one channel).
    Rotations, shifts and rolls commute with it, and the statistics are stored in ``info["preprocessing"]``."""
    NONE = "none"
    """Leave inputs as loaded (images scaled to [0, 1])."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    loader: Callable[..., DatasetSplits]
    defaults: dict[str, Any]
    family: str
    stand_in: StandIn | Callable[[dict], StandIn] | None = None


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, *, family: str, stand_in: StandIn | Callable[[dict], StandIn] | None = None) -> Callable:
    """Decorator registering ``loader(root: Path, seed: int, download: bool, *, option=default, ...)``.

    The loader's keyword-only parameters are the dataset's options. A duplicate name is an error.
    ``stand_in`` is the dataset's :class:`StandIn` (input shape, classes, OOD sets and their groups), or a function
    of the options (all of them, defaults filled in) returning one; :func:`load` uses it for ``stand_in=True``.
    """

    def deco(fn: Callable[..., DatasetSplits]) -> Callable[..., DatasetSplits]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice ({_REGISTRY[name].loader.__qualname__})")
        params = list(inspect.signature(fn).parameters.values())
        positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        if positional != ["root", "seed", "download"]:
            raise ValueError(f"dataset loader {fn.__qualname__} must take (root, seed, download, *, options...)")
        defaults = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        _REGISTRY[name] = _Entry(name, fn, defaults, family, stand_in)
        return fn

    return deco


def available() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def describe(name: str) -> dict[str, Any]:
    """The options of dataset ``name`` with their defaults (tuples shown as lists), e.g. ``{"n": 600, ...}``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _entry(name).defaults.items()}


def family(name: str) -> str:
    """The family of dataset ``name``: ``synthetic``, ``tabular``, ``sequence`` or ``vision``."""
    return _entry(name).family


def load(name: str, root: str | Path = DEFAULT_ROOT, seed: int = 0, download: bool = False, *,
         stand_in: bool = False, **options) -> DatasetSplits:
    """Load dataset ``name`` as :class:`DatasetSplits` (train/val/test, OOD sets), deterministic in ``seed``.

    Args:
        name: one of :func:`available`.
        root: data root; files of the image datasets live under it (datasets/README.md), mnist1d caches there.
        seed: drives the split (and the sample, for generated datasets).
        download: fetch missing image-dataset files through torchvision; never happens otherwise.
        stand_in: return random data with the dataset's input shape, number of classes and OOD set names (and
            groups) at a small size instead, reading and downloading nothing (``root`` and ``download`` are
            ignored); for dry runs. ``info["stand_in"]`` is True.
        options: dataset options (:func:`describe`); an unknown option is a ValueError naming it.

    Returns:
        DatasetSplits with ``train.x`` of shape (N, D) or (N, C, H, W) float32, labels (N,) int64 in [0, C).
    """
    entry = _entry(name)
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        raise UserError(
            f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; options are {', '.join(entry.defaults)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"dataset {name!r}: seed must be a non-negative int, got {seed!r}")
    if stand_in:
        if entry.stand_in is None:
            raise UserError(f"dataset {name!r} registers no stand-in; it cannot be used with stand_in=True")
        opts = {**entry.defaults, **options}
        spec = entry.stand_in(opts) if callable(entry.stand_in) else entry.stand_in
        return random_splits(name, int(seed), spec, opts)
    return entry.loader(Path(root), int(seed), bool(download), **options)


# --------------------------------------------------------------------------------------------------------------
# Helpers shared by the loaders (option checks and the common splitting/standardization path).


def check_int(dataset: str, option: str, value, minimum: int) -> int:
    """Return ``value`` as int, or raise ValueError naming the dataset and option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"dataset {dataset!r}: option {option!r} must be an int ≥ {minimum}, got {value!r}")
    return int(value)


def check_float(dataset: str, option: str, value, low: float, high: float, *, open_low: bool = False) -> float:
    """Return ``value`` as float in [low, high] ((low, high] with ``open_low``), or raise ValueError naming it."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise UserError(f"dataset {dataset!r}: option {option!r} must be a number in {interval}, got {value!r}")
    return value


def check_bool(dataset: str, option: str, value) -> bool:
    """Return ``value`` if it is a bool, or raise ValueError naming the dataset and option."""
    if not isinstance(value, (bool, np.bool_)):
        raise UserError(f"dataset {dataset!r}: option {option!r} must be true or false, got {value!r}")
    return bool(value)


def check_id_classes(dataset: str, id_classes) -> list[int] | None:
    """``None`` (all classes) or a list of ints; make_splits checks that the classes exist."""
    if id_classes is None:
        return None
    if isinstance(id_classes, (str, bytes)) or not hasattr(id_classes, "__iter__"):
        raise UserError(f"dataset {dataset!r}: option 'id_classes' must be a list of class ids, got {id_classes!r}")
    out = []
    for c in id_classes:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise UserError(f"dataset {dataset!r}: option 'id_classes' must hold ints, got {c!r}")
        out.append(int(c))
    return out


def check_standardization(dataset: str, value) -> Standardization:
    try:
        return Standardization(value)
    except ValueError:
        choices = ", ".join(s.value for s in Standardization)
        raise UserError(f"dataset {dataset!r}: option 'standardize' must be one of {choices}, got {value!r}") from None


def split_options(dataset: str, opts: dict) -> dict:
    """The checked split keywords every offline loader shares, for :func:`build_splits`: ``standardize``,
    ``id_classes``, ``test_fraction`` and ``val_fraction`` taken from the loader's ``opts``."""
    return dict(
        standardize=check_standardization(dataset, opts["standardize"]),
        id_classes=check_id_classes(dataset, opts["id_classes"]),
        test_fraction=check_float(dataset, "test_fraction", opts["test_fraction"], 0.0, 0.9, open_low=True),
        val_fraction=check_float(dataset, "val_fraction", opts["val_fraction"], 0.0, 0.9, open_low=True),
    )


def build_splits(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    standardize: Standardization,
    modality: str,
    options: dict,
    flatten: bool = False,
    **split_kwargs,
) -> DatasetSplits:
    """Split with :func:`make_splits`, then standardize per channel if asked, then flatten images if asked.

    ``x`` is (N, D) for tabular/sequence data (one channel) or (N, C, H, W) for images; ``split_kwargs`` go to
    :func:`make_splits` (``id_classes``, ``x_test``, ``extra_ood``, fractions). ``info`` records the options,
    the modality, the image shape (C, H, W) for images and the preprocessing. The arrays passed in are owned by
    this call afterwards (channel standardization works in place on tensors that may share their memory).
    """
    info = {"options": _jsonable(options), "modality": modality}
    if modality == "image":
        info["image_shape"] = [int(s) for s in x.shape[1:]]
    ds = make_splits(
        name, x, y, seed=seed, standardize=standardize is Standardization.FEATURE, info=info, **split_kwargs
    )
    prep: dict[str, Any] = {"standardize": standardize.value}
    if standardize is Standardization.CHANNEL:
        ds, stats = _standardize_channels(ds)
        prep.update(stats)
    if flatten and ds.train.x.ndim > 2:
        ds = dataclasses.replace(
            ds,
            train=Split(ds.train.x.flatten(1), ds.train.y),
            val=Split(ds.val.x.flatten(1), ds.val.y),
            test=Split(ds.test.x.flatten(1), ds.test.y),
            ood={k: v.flatten(1) for k, v in ds.ood.items()},
        )
    prev = ds.info.get("preprocessing", {})
    return dataclasses.replace(ds, info={**ds.info, "preprocessing": {**prev, **prep}})


#: Stand-in sizes: training + validation + test points per class (at least STAND_IN_MIN in all), and points per
#: OOD set. Enough for every split to hold every class; small enough that a dry run costs seconds.
STAND_IN_PER_CLASS = 8
STAND_IN_MIN = 64
STAND_IN_OOD = 16


def random_splits(name: str, seed: int, spec: StandIn, options: dict) -> DatasetSplits:
    """Stand-in data for dry runs: ``STAND_IN_PER_CLASS`` random points per class (``STAND_IN_MIN`` at least) of
    ``spec.feature_shape`` (uniform in [0, 1] for images, standard normal otherwise) and ``STAND_IN_OOD`` per OOD
    set of ``spec``, through the same splitting, standardization and flattening as the real loader
    (:func:`build_splits`; the options ``id_classes``, ``standardize`` and ``flatten`` apply). Reads nothing."""
    rng = np.random.default_rng([int(seed), 0x57A])
    shape = tuple(spec.feature_shape)
    draw = (lambda n: rng.uniform(size=(n, *shape))) if spec.modality == "image" else (
        lambda n: rng.normal(size=(n, *shape)))
    y = np.arange(max(STAND_IN_PER_CLASS * spec.num_classes, STAND_IN_MIN)) % spec.num_classes
    ds = build_splits(
        name, draw(len(y)), y, seed=seed, modality=spec.modality, options=options,
        standardize=check_standardization(name, options.get("standardize", "feature")),
        flatten=check_bool(name, "flatten", options.get("flatten", False)),
        id_classes=check_id_classes(name, options.get("id_classes")),
        extra_ood={o: draw(STAND_IN_OOD) for o in spec.ood_groups}, ood_groups=spec.ood_groups,
    )
    return dataclasses.replace(ds, info={**ds.info, "stand_in": True})


def _standardize_channels(ds: DatasetSplits) -> tuple[DatasetSplits, dict]:
    """Per-channel mean/std from the train split (N, C, ...) — (N, D) counts as one channel — applied in place to
    every split and OOD set (the tensors are fresh copies made by make_splits)."""
    xtr = ds.train.x
    channels = xtr.shape[1] if xtr.ndim > 2 else 1

    def channel(x: torch.Tensor, c: int) -> torch.Tensor:
        return x[:, c] if x.ndim > 2 else x

    means, stds = [], []
    for c in range(channels):  # float64 accumulation, one channel at a time to bound the extra memory
        v = channel(xtr, c)
        m = v.sum(dtype=torch.float64) / v.numel()
        s = float(((v.double() - m) ** 2).mean().sqrt())
        means.append(float(m))
        stds.append(s if s > 1e-8 else 1.0)
    shape = (1, channels) + (1,) * (xtr.ndim - 2) if xtr.ndim > 2 else (1, 1)
    mean, std = torch.tensor(means), torch.tensor(stds)
    mu32, sd32 = mean.float().reshape(shape), std.float().reshape(shape)
    for t in [ds.train.x, ds.val.x, ds.test.x, *ds.ood.values()]:
        t.sub_(mu32).div_(sd32)
    ds = dataclasses.replace(ds)  # re-validate after the in-place change
    return ds, {"mean": means, "std": stds}


def _jsonable(v):
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# The loader modules register themselves on import; they use the helpers above.
from ntkbayes.data import mnist1d, synthetic, tabular, vision  # noqa: E402, F401
from ntkbayes.data.shift import SEVERITY_PARAMS, ShiftKind, shifted  # noqa: E402

__all__ = [
    "DEFAULT_ROOT",
    "DataMissingError",
    "DatasetSplits",
    "OODGroup",
    "SEVERITY_PARAMS",
    "ShiftKind",
    "Split",
    "StandIn",
    "Standardization",
    "available",
    "describe",
    "family",
    "load",
    "make_splits",
    "random_splits",
    "register",
    "shifted",
    "stratified_subset",
]
