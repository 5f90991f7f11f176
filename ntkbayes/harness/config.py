"""Benchmark suites: strict TOML files → frozen dataclasses, and grid expansion into cells (design.md "Suites").

A suite file (parsed with ``tomllib``; flat and strict in the spirit of nanoGPT's ``configurator.py``, without
its ``exec``)::

    name = "smoke"            # optional; default: the file name without ".toml"
    description = "..."       # optional free text
    seeds = [0, 1, 2]         # required: distinct integers ≥ 0 (seed = initialization and data split)
    device = "auto"           # optional: auto | cpu | cuda (default auto)
    data_root = "datasets"    # optional: where ntkbayes.data.load finds files (default "datasets")
    threads = 1               # optional: torch CPU threads per cell (default: torch's own choice)
    tf32 = true               # optional: TF32 matmuls on CUDA (default false; recorded per cell)

    [datasets.moons]          # table key = label; the dataset is the label unless `dataset` names it
    n = 400                   # options of ntkbayes.data.describe(name); never swept (lists are values)
    [datasets.digits04]
    dataset = "digits"
    id_classes = [0, 1, 2, 3, 4]
    shift = ["gaussian_noise", "rotation"]   # optional: shifted-test evaluation (ntkbayes.data.shift kinds)
    reference = "map"         # optional, not hashed: the method row the others are scored against (ref/*)

    [methods.map]             # table key = label; the method is the label unless `method` names it,
    width = 64                # so one method can appear twice with different parameters
    [methods.ens_wide]
    method = "deep_ensemble"
    members = [4, 8]          # a list expands to a sweep: two rows, ens_wide[members=4] and ens_wide[members=8]
    datasets = ["moons"]      # optional: run this table on these dataset labels only (default: all of them)

Method parameters are the constructor arguments (``ntkbayes.methods.get(name).param_defaults()``). A list value
is a sweep, except for a parameter that takes a list — its default is a list or tuple, or its annotation names
``list``/``tuple``/``Sequence`` (``hidden: tuple[int, ...] | None``): there a list is the value and a list of
lists is the sweep (``hidden = [[64, 64], [128]]``). To pass a literal list to any other parameter, write a
one-element sweep ``[[64, 64]]``. Types are checked against the annotation where it is readable (``str | float``
takes both; ``float | None`` takes a number) and else against the default: bool for bool, int for int, int or
float for float (ints become floats, so ``1`` and ``1.0`` are the same cell), str for str, one of the member values
for a ``(str, Enum)``, list for list/tuple, table for dict; a default of ``None`` or no default with no readable
annotation accepts any TOML value except dates. Anything else — an unknown top-level key,
method, parameter, dataset or dataset option, a wrong type, a file that is not UTF-8 or not TOML — is a
:class:`~ntkbayes.errors.UserError` naming the file, the table and the key.

``shift`` in a dataset table is not a load option: it asks the runner to evaluate every cell of that dataset on
the test inputs corrupted by each kind at severities 1-5 (Ovadia et al. 2019; ``ntkbayes.data.shift``) and store
``shift/<kind>/<severity>/{acc,nll,ece}`` in the record's metrics.

``method`` and ``datasets`` are reserved keys of a method table, not parameters.
Grid: datasets × seeds × methods × sweep values, in that order (a dataset and seed are loaded once and reused by
every method). A cell's ``run_id`` is the first 16 hex digits of the SHA-256 of the canonical JSON (sorted keys,
no spaces) of ``{dataset, dataset_options, method, params, seed}``, where options and params are *resolved*
(defaults filled in, JSON-normalized): a default changed in the code gives new run_ids, and spelling out a default
gives the same cell. Labels, the suite name, the data root, threads and the device are not part of it, so the
same cell in two suites is one result. A non-empty ``shift`` list and ``tf32 = true`` change what a record holds
(more metrics; TF32 rounding on GPUs), so they enter the hash as ``evaluation`` — only when set, so the run_ids of
suites without them do not change. Two tables that expand to the same cell are an error.

A method that is not registered is an error, unless the suite is parsed with ``unknown_methods="fail"`` (the
dry run of a suite whose methods are still being written): then its table is kept unchecked and its cells fail
when run, as "failed" records, and the suite goes on.
"""

from __future__ import annotations

import enum
import inspect
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ntkbayes.errors import UserError
from ntkbayes.harness.reference import check_references
from ntkbayes.harness.values import (
    annotation_kinds,
    canonical_json,
    check_any,
    check_param,
    check_value,
    evaluation_of,
    format_value,
    normalize,
    run_id_of,
    type_name,
)

try:  # Python ≥ 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Keys a suite file may have at top level.
SUITE_KEYS = ("name", "description", "seeds", "device", "data_root", "threads", "tf32", "datasets", "methods")

#: Arguments of ``ntkbayes.data.load`` that the harness sets (per cell or from the command line); a dataset table
#: may not set them.
LOAD_ARGUMENTS = ("name", "root", "seed", "download")

#: Default data root, relative to the working directory (design.md layout: ``datasets/``).
DEFAULT_DATA_ROOT = "datasets"


_LABEL_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class Device(str, enum.Enum):
    """Where the cells run."""

    AUTO = "auto"
    """CUDA when a GPU is present, else CPU."""
    CPU = "cpu"
    """The CPU, even when a GPU is present."""
    CUDA = "cuda"
    """The current CUDA device; an error (no silent fallback) when there is none."""


@dataclass(frozen=True)
class DatasetSpec:
    """One ``[datasets.<label>]`` table: the dataset name and its explicit load options."""

    label: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    shift: tuple[str, ...] = ()
    reference: str | None = None
    """Method row label the other rows are scored against (:mod:`ntkbayes.harness.reference`); None: none."""


@dataclass(frozen=True)
class MethodSpec:
    """One ``[methods.<label>]`` table: fixed parameters and swept ones (name → tuple of values, file order)."""

    label: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    sweep: Mapping[str, tuple] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None
    """Dataset labels the table runs on (None: every dataset of the suite)."""

    def variants(self) -> list[tuple[str, dict[str, Any]]]:
        """(row label, explicit params) for each point of the sweep grid; the label names the swept values."""
        if not self.sweep:
            return [(self.label, dict(self.params))]
        keys = list(self.sweep)
        out = []
        for values in itertools.product(*(self.sweep[k] for k in keys)):
            chosen = dict(zip(keys, values))
            tag = ",".join(f"{k}={format_value(v)}" for k, v in chosen.items())
            out.append((f"{self.label}[{tag}]", {**self.params, **chosen}))
        return out


@dataclass(frozen=True)
class Cell:
    """One unit of work: a dataset (with options) × a method (with params) × a seed.

    ``dataset_options`` and ``params`` are what the suite set (passed to ``data.load`` and ``methods.create``);
    ``resolved_options`` and ``resolved_params`` add the defaults, JSON-normalized, and are what ``run_id`` hashes
    and records keep. ``data_root`` and ``download`` say where data come from and are not hashed.
    """

    suite: str
    dataset_label: str
    dataset: str
    dataset_options: Mapping[str, Any]
    method_label: str
    method: str
    params: Mapping[str, Any]
    seed: int
    run_id: str
    resolved_options: Mapping[str, Any] = field(default_factory=dict)
    resolved_params: Mapping[str, Any] = field(default_factory=dict)
    data_root: str = DEFAULT_DATA_ROOT
    download: bool = False
    threads: int | None = None
    shift: tuple[str, ...] = ()
    tf32: bool = False
    stand_in: bool = False
    """Load random stand-in data of the dataset's shapes instead of files (the dry run); not hashed."""
    validation_only: bool = False
    """A tuning trial: fit, then score on the validation split only (no test, OOD, shift or predictions)."""
    selection: Mapping[str, Any] | None = None
    """Where tuned parameters came from (``ntkbayes.harness.tune``): recorded as the record's ``selection``."""

    @property
    def label(self) -> str:
        """Human-readable cell name for progress bars and messages."""
        return f"{self.dataset_label} | {self.method_label} | seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (for executors that ship cells elsewhere)."""
        return {
            "suite": self.suite,
            "dataset_label": self.dataset_label,
            "dataset": self.dataset,
            "dataset_options": dict(self.dataset_options),
            "method_label": self.method_label,
            "method": self.method,
            "params": dict(self.params),
            "seed": self.seed,
            "run_id": self.run_id,
            "resolved_options": dict(self.resolved_options),
            "resolved_params": dict(self.resolved_params),
            "data_root": self.data_root,
            "download": self.download,
            "threads": self.threads,
            "shift": list(self.shift),
            "tf32": self.tf32,
            "stand_in": self.stand_in,
            "validation_only": self.validation_only,
            "selection": None if self.selection is None else dict(self.selection),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cell:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["shift"] = tuple(d.get("shift", ()))
        return cls(**d)


@dataclass(frozen=True)
class Suite:
    """A parsed suite file. ``path`` is where it came from (for messages)."""

    name: str
    path: str
    seeds: tuple[int, ...]
    datasets: tuple[DatasetSpec, ...]
    methods: tuple[MethodSpec, ...]
    device: Device = Device.AUTO
    data_root: str = DEFAULT_DATA_ROOT
    description: str = ""
    threads: int | None = None
    tf32: bool = False
    merge_duplicates: bool = False
    """Cells that coincide keep the first instead of being an error (a dry run, whose caps can make rows equal)."""

    def cells(self, seeds=None, *, data_root: str | None = None, download: bool = False,
              threads: int | None = None) -> list[Cell]:
        """Expand the grid (see :func:`expand`)."""
        return expand(self, seeds=seeds, data_root=data_root, download=download, threads=threads)


# -- parsing -------------------------------------------------------------------------------------------------
def _read_toml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"suite file not found: {path}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read suite file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); suite files are UTF-8 TOML") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML: {e}") from None
    except RecursionError:
        raise UserError(f"{path}: invalid TOML: nested too deeply") from None


def _dataset_options(name: str) -> dict[str, Any] | None:
    """Option name → default for a dataset from ``ntkbayes.data.describe`` (None when it cannot be told)."""
    from ntkbayes import data

    describe = getattr(data, "describe", None)
    if describe is None:
        return None
    info = describe(name)
    opts = info.get("options", info) if isinstance(info, Mapping) else None
    if not isinstance(opts, Mapping):
        return None
    out = {}
    for k, v in opts.items():
        if isinstance(v, Mapping) and "default" in v:  # {"option": {"default": ..., "doc": ...}}
            v = v["default"]
        out[k] = v
    return {k: v for k, v in out.items() if k not in LOAD_ARGUMENTS}


def _open_table(path: Path, section: str, key: str, label: str, table: Any, what: str) -> tuple[str, dict, str]:
    """Table ``[SECTION.LABEL]`` of a suite (datasets or methods): (where, a copy of the table without ``key``,
    the name it gives under ``key``, by default the label); ``what`` says what the table holds."""
    where = f"{path}: [{section}.{label}]"
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table of {what}, got {type_name(table)}")
    table = dict(table)
    name = table.pop(key, label)
    if not isinstance(name, str):
        raise UserError(f"{where} {key}: expected a string, got {type_name(name)}")
    return where, table, name


def _parse_dataset(path: Path, label: str, table: Any) -> DatasetSpec:
    from ntkbayes import data

    where, table, name = _open_table(path, "datasets", "dataset", label, table, "dataset options")
    known = list(data.available()) if hasattr(data, "available") else []
    if name not in known:
        raise UserError(f"{where}: unknown dataset {name!r}; available: {', '.join(known) or 'none'}")
    shift = _parse_shift(f"{where} shift", table.pop("shift", []))
    if not isinstance(reference := table.pop("reference", None), (str, type(None))) or reference == "":
        raise UserError(f"{where} reference: expected the label of a method row, got {reference!r}")
    defaults = _dataset_options(name)
    options = {}
    for key, value in table.items():
        if key in LOAD_ARGUMENTS:
            raise UserError(f"{where} {key}: set by the harness (seeds, data_root, --download), not per dataset")
        if defaults is not None and key not in defaults:
            raise UserError(
                f"{where} {key}: unknown option of dataset {name!r}; expected some of {', '.join(defaults) or '-'}"
            )
        default = defaults.get(key, None) if defaults is not None else None
        options[key] = check_value(value, default, f"{where} {key}")
    return DatasetSpec(label=label, name=name, options=options, shift=shift, reference=reference)


def _parse_shift(where: str, value: Any) -> tuple[str, ...]:
    """A list of distinct ``ntkbayes.data.ShiftKind`` values (``[]``: no shift evaluation)."""
    from ntkbayes.data import ShiftKind

    kinds = [k.value for k in ShiftKind]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: expected an array of shift kinds ({', '.join(kinds)}), got {value!r}")
    for v in value:
        if v not in kinds:
            raise UserError(f"{where}: unknown shift kind {v!r}; expected some of {', '.join(kinds)}")
    if len(set(value)) != len(value):
        raise UserError(f"{where}: {value!r} repeats a kind")
    return tuple(value)


def _parse_method(path: Path, label: str, table: Any, unknown_methods: str = "error",
                  dataset_labels: tuple[str, ...] = ()) -> MethodSpec:
    from ntkbayes import methods

    where, table, name = _open_table(path, "methods", "method", label, table, "method parameters")
    only = table.pop("datasets", None)
    if only is not None:
        if not isinstance(only, list) or not only or not all(isinstance(v, str) for v in only):
            raise UserError(f"{where} datasets: expected a non-empty array of dataset labels, got {only!r}")
        bad = [v for v in only if v not in dataset_labels]
        if bad or len(set(only)) != len(only):
            raise UserError(f"{where} datasets: {bad[0] if bad else only!r} "
                            f"{'is not a [datasets.<label>] of this suite' if bad else 'repeats a label'}; "
                            f"expected some of {', '.join(dataset_labels)}")
        only = tuple(only)
    if name not in methods.available():
        if unknown_methods == "fail":  # kept unchecked (a non-empty list is a sweep); its cells fail when run
            table = {k: check_any(v, f"{where} {k}") for k, v in table.items()}
            return MethodSpec(label=label, name=name,
                              params={k: v for k, v in table.items() if not (isinstance(v, list) and v)},
                              sweep={k: tuple(v) for k, v in table.items() if isinstance(v, list) and v},
                              datasets=only)
        raise UserError(f"{where}: unknown method {name!r}; available: {', '.join(methods.available())}")
    cls = methods.get(name)
    defaults = cls.param_defaults()
    annotations = {k: p.annotation for k, p in inspect.signature(cls.__init__).parameters.items()}
    params, sweep = {}, {}
    for key, value in table.items():
        if key not in defaults:
            raise UserError(
                f"{where} {key}: unknown parameter of method {name!r}; expected some of {', '.join(defaults)}"
            )
        default = defaults[key]
        kinds = annotation_kinds(annotations.get(key, inspect.Parameter.empty))
        list_valued = isinstance(default, (list, tuple)) or "array" in kinds
        is_sweep = isinstance(value, list) and (not list_valued or (value and all(isinstance(v, list)
                                                                                   for v in value)))
        if is_sweep:
            if not value:
                raise UserError(f"{where} {key}: an empty array sweeps over nothing")
            values = tuple(check_param(cls, key, check_value(v, default, f"{where} {key}", kinds), where)
                           for v in value)
            if len({canonical_json(v) for v in values}) != len(values):
                raise UserError(f"{where} {key}: the sweep {value!r} repeats a value")
            sweep[key] = values
        else:
            params[key] = check_param(cls, key, check_value(value, default, f"{where} {key}", kinds), where)
    missing = [k for k, d in defaults.items() if d is inspect.Parameter.empty and k not in table]
    if missing:
        raise UserError(f"{where}: method {name!r} needs parameter(s) {', '.join(missing)}")
    return MethodSpec(label=label, name=name, params=params, sweep=sweep, datasets=only)


def _labels(path: Path, raw: dict, key: str) -> dict:
    tables = raw.get(key)
    if tables is None:
        raise UserError(f"{path}: missing [{key}.<label>] tables")
    if not isinstance(tables, dict) or not tables:
        raise UserError(f"{path}: [{key}] must hold at least one [{key}.<label>] table")
    for label in tables:
        if not _LABEL_RE.match(label):
            raise UserError(f"{path}: [{key}.{label}]: a label may use only letters, digits, '_', '.', '-'")
    return tables


def parse_suite(raw: Mapping[str, Any], path: str | Path = "<suite>", *, unknown_methods: str = "error") -> Suite:
    """Validate a parsed TOML document (see module docstring) into a :class:`Suite`.

    ``unknown_methods``: ``"error"`` (default) or ``"fail"`` (keep tables of unregistered methods; their cells
    fail when run)."""
    path = Path(path)
    if unknown_methods not in ("error", "fail"):
        raise ValueError(f"unknown_methods: expected 'error' or 'fail', got {unknown_methods!r}")
    unknown = [k for k in raw if k not in SUITE_KEYS]
    if unknown:
        raise UserError(f"{path}: unknown top-level key {unknown[0]!r}; expected some of {', '.join(SUITE_KEYS)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _LABEL_RE.match(name):
        raise UserError(f"{path}: name: expected a string of letters, digits, '_', '.', '-', got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{path}: description: expected a string, got {type_name(description)}")
    if "seeds" not in raw:
        raise UserError(f"{path}: missing key 'seeds' (e.g. seeds = [0, 1, 2])")
    seeds = _check_seeds(raw["seeds"], f"{path}: seeds")
    device = raw.get("device", "auto")
    if device not in [d.value for d in Device]:
        raise UserError(f"{path}: device: expected one of auto, cpu, cuda, got {device!r}")
    data_root = raw.get("data_root", DEFAULT_DATA_ROOT)
    if not isinstance(data_root, str) or not data_root:
        raise UserError(f"{path}: data_root: expected a non-empty string, got {data_root!r}")
    threads = raw.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserError(f"{path}: threads: expected an integer ≥ 1, got {threads!r}")
    tf32 = raw.get("tf32", False)
    if not isinstance(tf32, bool):
        raise UserError(f"{path}: tf32: expected true or false, got {tf32!r}")
    datasets = tuple(_parse_dataset(path, k, v) for k, v in _labels(path, raw, "datasets").items())
    labels = tuple(d.label for d in datasets)
    methods = tuple(_parse_method(path, k, v, unknown_methods, labels)
                    for k, v in _labels(path, raw, "methods").items())
    check_references(path, datasets, methods)
    suite = Suite(name=name, path=str(path), seeds=seeds, datasets=datasets, methods=methods,
                  device=Device(device), data_root=data_root, description=description, threads=threads,
                  tf32=tf32)
    expand(suite)  # duplicate cells are an error at load time
    return suite


def _check_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise UserError(f"{where}: expected a non-empty array of integers, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise UserError(f"{where}: expected integers ≥ 0, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{where}: seeds repeat: {list(seeds)}")
    return tuple(int(s) for s in seeds)


def load_suite(path: str | Path, *, unknown_methods: str = "error") -> Suite:
    """Read and validate a suite file; every problem is a UserError naming the file, table and key
    (``unknown_methods`` as in :func:`parse_suite`)."""
    path = Path(path)
    return parse_suite(_read_toml(path), path, unknown_methods=unknown_methods)


def expand(suite: Suite, seeds=None, *, data_root: str | None = None, download: bool = False,
           threads: int | None = None) -> list[Cell]:
    """Cells of the grid datasets × seeds × methods × sweep values (``seeds``, ``data_root`` and ``threads``
    override the suite's)."""
    from ntkbayes import methods

    seeds = _check_seeds(list(seeds), "seeds") if seeds is not None else suite.seeds
    root = data_root if data_root is not None else suite.data_root
    threads = threads if threads is not None else suite.threads
    cells: list[Cell] = []
    seen: dict[str, str] = {}
    for ds in suite.datasets:
        ds_defaults = _dataset_options(ds.name) or {}
        resolved_options = normalize({**ds_defaults, **ds.options})
        evaluation = evaluation_of(ds.shift, suite.tf32)
        for seed in seeds:
            for ms in suite.methods:
                if ms.datasets is not None and ds.label not in ms.datasets:
                    continue
                known = ms.name in methods.available()
                defaults = methods.get(ms.name).param_defaults() if known else {}
                for row_label, explicit in ms.variants():
                    resolved = {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty}
                    resolved_params = normalize({**resolved, **explicit})
                    rid = run_id_of(ds.name, resolved_options, ms.name, resolved_params, seed, evaluation)
                    where = f"[methods.{ms.label}]{row_label[len(ms.label):]} on [datasets.{ds.label}]"
                    if rid in seen and suite.merge_duplicates:
                        continue
                    if rid in seen:
                        raise UserError(
                            f"{suite.path}: {where} and {seen[rid]} are the same cell (same dataset, options, "
                            f"method and parameters); remove one"
                        )
                    seen[rid] = where
                    cells.append(Cell(suite=suite.name, dataset_label=ds.label, dataset=ds.name,
                                      dataset_options=dict(ds.options), method_label=row_label,
                                      method=ms.name, params=explicit, seed=int(seed), run_id=rid,
                                      resolved_options=resolved_options, resolved_params=resolved_params,
                                      data_root=root, download=bool(download), threads=threads,
                                      shift=tuple(ds.shift), tf32=suite.tf32))
    return cells
