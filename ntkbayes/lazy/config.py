"""The lazy-regime study file (benchmarks/suites/lazy.toml): strict TOML into a :class:`LazyConfig`.

Every value goes through the checks of suite files (:func:`ntkbayes.harness.values.check_value`): an unknown key,
a wrong type or a bad value is a :class:`~ntkbayes.errors.UserError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

from ntkbayes import data as datasets
from ntkbayes.errors import UserError
from ntkbayes.harness.values import annotation_kinds, check_value
from ntkbayes.models import Activation
from ntkbayes.ntk.solve import Anchor

#: Keys of a lazy suite file: key → (type name, default). The defaults are the committed study's settings
#: (benchmarks/suites/lazy.toml documents each); they keep the whole study near 15 min on one CPU thread.
TOP_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("str", "lazy"), "description": ("str", ""), "datasets": ("list[str]", ["digits", "mnist1d"]),
    "data_root": ("str", "datasets"), "seed": ("int", 0), "members": ("int", 2), "device": ("str", "cpu"),
    "threads": ("int", 1), "num_train": ("int", 128), "num_val": ("int", 64), "num_test": ("int", 256),
    "num_probe": ("int", 64),
}
TABLE_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "model": {"depth": ("int", 1), "activation": ("str", "gelu"), "w_std": ("float", 1.5), "b_std": ("float", 0.05)},
    "convergence": {"widths": ("list[int]", [64, 128, 256, 512, 1024, 2048, 4096]), "tol": ("float", 1e-5),
                    "max_iter": ("int", 1000)},
    "trajectory": {"width": ("int", 256), "lr": ("float", 4.0), "steps": ("int", 1000), "records": ("int", 14)},
    "agreement": {"widths": ("list[int]", [64, 256, 1024, 4096]),
                  "regimes": ("list[str]", ["reg_init", "reg_zero", "smoothed"])},
}
REGIME_KEYS: dict[str, tuple[str, Any]] = {"reg": ("float", None), "anchor": ("str", "init"),
                                           "label_smoothing": ("float", 0.0)}
#: The four regimes of docs/math.md (c) when a suite names none: λ > 0 anchored at θ0 / at 0, λ = 0 one-hot / smoothed.
DEFAULT_REGIMES = {"reg_init": {"reg": 1e-3, "anchor": "init", "label_smoothing": 0.0},
                   "reg_zero": {"reg": 1e-3, "anchor": "zero", "label_smoothing": 0.0},
                   "onehot": {"reg": 0.0, "anchor": "init", "label_smoothing": 0.0},
                   "smoothed": {"reg": 0.0, "anchor": "init", "label_smoothing": 0.1}}

@dataclasses.dataclass(frozen=True)
class Regime:
    """One training objective: λ = ``reg`` on the mean CE, anchor θ_a, label smoothing ε (docs/math.md §0)."""

    label: str
    reg: float
    anchor: str
    label_smoothing: float

    @property
    def kernel_solvable(self) -> bool:
        """Whether the linearized problem has a finite optimum (λ > 0 or ε > 0), i.e. kernel mode exists."""
        return self.reg > 0 or self.label_smoothing > 0

    def describe(self) -> str:
        """e.g. ``λ=0.001, anchor=init, ε=0``."""
        return f"λ={self.reg:g}, anchor={self.anchor}, ε={self.label_smoothing:g}"


@dataclasses.dataclass(frozen=True)
class LazyConfig:
    """A parsed lazy suite file (see :data:`TOP_KEYS`, :data:`TABLE_KEYS`, benchmarks/suites/lazy.toml)."""

    path: str
    name: str
    description: str
    datasets: tuple[str, ...]
    dataset_options: dict[str, dict]
    data_root: str
    seed: int
    members: int
    device: str
    threads: int
    num_train: int
    num_val: int
    num_test: int
    num_probe: int
    model: dict[str, Any]
    regimes: tuple[Regime, ...]
    convergence: dict[str, Any]
    trajectory: dict[str, Any]
    agreement: dict[str, Any]


# -- suite file ---------------------------------------------------------------------------------------------------
def _check_type(value: Any, kind: str, default: Any, where: str) -> Any:
    """``value`` checked as ``kind`` ("int", "float", "str", "list[int]", "list[str]") by the suite-file checks."""
    if kind.startswith("list["):
        if not isinstance(value, list) or not value:
            raise UserError(f"{where}: expected a non-empty list of {kind[5:-1]}, got {value!r}")
        return [check_value(v, None, where, annotation_kinds(kind[5:-1])) for v in value]
    return check_value(value, default, where, annotation_kinds(kind))


def _read_table(table: Mapping, spec: dict[str, tuple[str, Any]], path: str, prefix: str) -> dict[str, Any]:
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise UserError(f"{path}: unknown key '{prefix}{unknown[0]}' (expected one of {', '.join(sorted(spec))})")
    out = {}
    for key, (kind, default) in spec.items():
        if key in table:
            out[key] = _check_type(table[key], kind, default, f"{path}: key '{prefix}{key}'")
        elif default is None:
            raise UserError(f"{path}: missing key '{prefix}{key}'")
        else:
            out[key] = default
    return out


def _positive(value: Any, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    if any(v <= 0 for v in values):
        raise UserError(f"{where}: expected values > 0, got {value!r}")


def _regimes(tables: Mapping, p: str) -> list[Regime]:
    """The ``[regimes.<label>]`` tables, checked (λ ≥ 0 finite, a known anchor, 0 ≤ ε < 1, at least one)."""
    regimes = []
    for label, spec in tables.items():
        if not isinstance(spec, dict):
            raise UserError(f"{p}: key 'regimes.{label}': expected a table")
        r = _read_table(spec, REGIME_KEYS, p, f"regimes.{label}.")
        if not (r["reg"] >= 0 and math.isfinite(r["reg"])):
            raise UserError(f"{p}: key 'regimes.{label}.reg': expected a finite value ≥ 0, got {r['reg']}")
        if r["anchor"] not in [a.value for a in Anchor]:
            raise UserError(f"{p}: key 'regimes.{label}.anchor': expected init or zero, got {r['anchor']!r}")
        if not 0.0 <= r["label_smoothing"] < 1.0:
            raise UserError(f"{p}: key 'regimes.{label}.label_smoothing': expected a value in [0, 1), "
                            f"got {r['label_smoothing']}")
        regimes.append(Regime(label, r["reg"], r["anchor"], r["label_smoothing"]))
    if not regimes:
        raise UserError(f"{p}: key 'regimes': expected at least one regime")
    return regimes


def load_config(path: str | Path) -> LazyConfig:
    """Parse and validate a lazy suite file; any unknown key, wrong type or bad value is a UserError naming the
    file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: lazy suite file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid TOML file: {e}") from None
    p = str(path)
    tables = {k: raw.pop(k) for k in [*TABLE_KEYS, "regimes", "dataset_options"] if k in raw}
    for key, value in tables.items():
        if not isinstance(value, dict):
            raise UserError(f"{p}: key '{key}': expected a table")
    top = _read_table(raw, TOP_KEYS, p, "")
    for key, spec in TABLE_KEYS.items():
        top[key] = _read_table(tables.get(key, {}), spec, p, f"{key}.")
    for key in ("seed",):
        if top[key] < 0:
            raise UserError(f"{p}: key '{key}': expected an integer ≥ 0, got {top[key]}")
    for key in ("members", "threads", "num_train", "num_val", "num_test", "num_probe"):
        _positive(top[key], f"{p}: key '{key}'")
    if top["num_probe"] > top["num_train"]:
        raise UserError(f"{p}: key 'num_probe': expected ≤ num_train ({top['num_train']}), got {top['num_probe']}")
    if top["device"] not in ("auto", "cpu", "cuda"):
        raise UserError(f"{p}: key 'device': expected auto, cpu or cuda, got {top['device']!r}")
    known = datasets.available()
    for name in top["datasets"]:
        if name not in known:
            raise UserError(f"{p}: key 'datasets': unknown dataset {name!r} (available: {', '.join(known)})")
    options = tables.get("dataset_options", {})
    for name, opts in options.items():
        if name not in top["datasets"] or not isinstance(opts, dict):
            raise UserError(f"{p}: key 'dataset_options.{name}': expected a table for a dataset listed in 'datasets'")
        allowed = datasets.describe(name)
        bad = sorted(set(opts) - set(allowed))
        if bad:
            raise UserError(f"{p}: unknown key 'dataset_options.{name}.{bad[0]}' "
                            f"(options of {name}: {', '.join(allowed)})")
    model = top["model"]
    if model["activation"] not in [a.value for a in Activation]:
        raise UserError(f"{p}: key 'model.activation': expected one of {', '.join(a.value for a in Activation)}, "
                        f"got {model['activation']!r}")
    if model["depth"] < 1:
        raise UserError(f"{p}: key 'model.depth': expected an integer ≥ 1, got {model['depth']}")
    _positive(model["w_std"], f"{p}: key 'model.w_std'")
    regimes = _regimes(tables.get("regimes", DEFAULT_REGIMES), p)
    conv, traj, agree = top["convergence"], top["trajectory"], top["agreement"]
    for where, value in (("convergence.widths", conv["widths"]), ("convergence.tol", conv["tol"]),
                         ("convergence.max_iter", conv["max_iter"]), ("trajectory.width", traj["width"]),
                         ("trajectory.lr", traj["lr"]), ("trajectory.steps", traj["steps"]),
                         ("agreement.widths", agree["widths"])):
        _positive(value, f"{p}: key '{where}'")
    if traj["records"] < 2:
        raise UserError(f"{p}: key 'trajectory.records': expected an integer ≥ 2, got {traj['records']}")
    by_label = {r.label: r for r in regimes}
    for label in agree["regimes"]:
        if label not in by_label:
            raise UserError(f"{p}: key 'agreement.regimes': unknown regime {label!r} (defined: "
                            f"{', '.join(by_label)})")
        if not by_label[label].kernel_solvable:
            raise UserError(f"{p}: key 'agreement.regimes': regime {label!r} has λ = 0 and one-hot targets, which "
                            "has no kernel-mode solution (the logits diverge)")
    conv["widths"], agree["widths"] = sorted(set(conv["widths"])), sorted(set(agree["widths"]))
    return LazyConfig(path=p, name=top["name"], description=top["description"], datasets=tuple(top["datasets"]),
                      dataset_options={k: dict(v) for k, v in options.items()}, data_root=top["data_root"],
                      seed=top["seed"], members=top["members"], device=top["device"], threads=top["threads"],
                      num_train=top["num_train"], num_val=top["num_val"], num_test=top["num_test"],
                      num_probe=top["num_probe"], model=model, regimes=tuple(regimes), convergence=conv,
                      trajectory=traj, agreement=agree)


