"""Selection files: the tuned parameters of a suite, written by ``ntkbayes tune`` and read by ``ntkbayes run``.

A suite ``benchmarks/suites/NAME.toml`` has its selection beside it, ``benchmarks/suites/NAME.selected.toml``
(:func:`selection_path`), committed and reviewed like the suite. Layout (keys sorted, one table per dataset label ×
method row label × seed; the bytes are a function of the content, so a rerun that selects the same values writes
the same file)::

    # Written by `ntkbayes tune` ...
    max_trials = 8
    objective = "val/nll"
    suite = "default"

    [select.moons."ntk_ensemble[mode=kernel]".0]
    grid_edge = ["weight_decay"]           # searched numeric keys whose value is the grid's smallest or largest
    params = { b_std = 1.0, weight_decay = 1e-05 }
    trials = 8                             # trials run (ok ones) for this choice
    value = 0.0451                         # the objective of the chosen trial

``ntkbayes run`` applies the file beside the suite when it exists (:func:`apply_selection`): each cell of that
dataset, row and seed takes the selected parameters on top of the suite's, so its run_id and record show the
parameters it ran with, and the record's ``selection`` says where they came from ({file, objective, value,
grid_edge, params, trials}). A cell the file does not name runs with the suite's parameters. A selected key that
the suite sets explicitly is an error (the tuner never searches a key the suite fixes, so the file is stale).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ntkbayes.errors import UserError
from ntkbayes.harness.config import Cell, _read_toml
from ntkbayes.harness.values import check_param, evaluation_of, normalize, run_id_of

#: Suffix of a suite's selection file, replacing ``.toml``.
SELECTION_SUFFIX = ".selected.toml"

#: Fields of one choice in a selection file.
CHOICE_KEYS = ("grid_edge", "params", "trials", "value")

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

HEADER = ("# Written by `ntkbayes tune` (docs/tuning.md): per dataset label, method row and seed, the parameters\n"
          "# chosen on that seed's validation split. Review it like the suite; `ntkbayes run` applies it.\n")


def selection_path(suite_path: str | os.PathLike) -> Path:
    """``<dir>/<stem>.selected.toml`` of a suite file ``<dir>/<stem>.toml``."""
    p = Path(suite_path)
    stem = p.name[: -len(".toml")] if p.name.endswith(".toml") else p.name
    return p.with_name(stem + SELECTION_SUFFIX)


def find_selection(suite_path: str | os.PathLike) -> Path | None:
    """The suite's selection file when it exists, else None."""
    p = selection_path(suite_path)
    return p if p.is_file() else None


# -- writing -----------------------------------------------------------------------------------------------------
def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def toml_value(v: Any) -> str:
    """One TOML value, deterministic: floats as ``repr`` (round-trips exactly), strings as JSON basic strings."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {toml_value(v[k])}" for k in sorted(v)) + " }" if v else "{}"
    raise ValueError(f"selection value {v!r}: TOML has no {type(v).__name__} (null included)")


def dumps_selection(sel: Mapping[str, Any]) -> str:
    """The file text of a selection dict {suite, objective, max_trials, select: {ds: {row: {seed: choice}}}}."""
    lines = [HEADER.rstrip("\n")]
    lines += [f"{k} = {toml_value(sel[k])}" for k in sorted(sel) if k != "select"]
    for ds in sorted(sel.get("select", {})):
        rows = sel["select"][ds]
        for row in sorted(rows):
            for seed in sorted(rows[row], key=int):
                choice = rows[row][seed]
                lines += ["", f"[select.{_key(ds)}.{_key(row)}.{int(seed)}]"]
                lines += [f"{k} = {toml_value(choice[k])}" for k in sorted(choice)]
    return "\n".join(lines) + "\n"


def write_selection(path: str | os.PathLike, sel: Mapping[str, Any]) -> Path:
    """Write ``sel`` to ``path`` (atomically: a temporary file renamed over it)."""
    path = Path(path)
    text = dumps_selection(sel)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# -- reading -----------------------------------------------------------------------------------------------------
def load_selection(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a selection file; a malformed one is a UserError naming the file and table."""
    path = Path(path)
    raw = _read_toml(path)
    for key in ("objective", "suite"):
        if not isinstance(raw.get(key), str):
            raise UserError(f"{path}: {key}: expected a string, got {raw.get(key)!r}")
    select = raw.get("select", {})
    if not isinstance(select, dict):
        raise UserError(f"{path}: [select] must be a table of dataset labels")
    for ds, rows in select.items():
        if not isinstance(rows, dict):
            raise UserError(f"{path}: [select.{ds}] must be a table of method rows")
        for row, seeds in rows.items():
            if not isinstance(seeds, dict):
                raise UserError(f"{path}: [select.{ds}.{_key(row)}] must be a table of seeds")
            for seed, choice in seeds.items():
                where = f"{path}: [select.{ds}.{_key(row)}.{seed}]"
                if not seed.isdigit():
                    raise UserError(f"{where}: a seed must be an integer ≥ 0")
                if not isinstance(choice, dict) or not isinstance(choice.get("params"), dict):
                    raise UserError(f"{where}: expected a table with params = {{...}}")
                extra = sorted(set(choice) - set(CHOICE_KEYS))
                if extra:
                    raise UserError(f"{where}: unknown key {extra[0]!r}; expected some of {', '.join(CHOICE_KEYS)}")
    return raw


def choice_for(sel: Mapping[str, Any], cell: Cell) -> dict[str, Any] | None:
    """The selection's choice for a cell's dataset label, row label and seed, or None."""
    return sel.get("select", {}).get(cell.dataset_label, {}).get(cell.method_label, {}).get(str(cell.seed))


def apply_selection(cells: list[Cell], sel: Mapping[str, Any], path: str | os.PathLike
                    ) -> tuple[list[Cell], list[Cell]]:
    """Cells with the selected parameters applied (new params, resolved params, run_id and ``selection``), and the
    cells the file has no choice for (left as they are)."""
    from ntkbayes import methods

    out, missing = [], []
    for cell in cells:
        choice = choice_for(sel, cell)
        if choice is None or cell.method not in methods.available():
            missing.append(cell)
            out.append(cell)
            continue
        where = f"{path}: [select.{cell.dataset_label}.{_key(cell.method_label)}.{cell.seed}]"
        cls = methods.get(cell.method)
        defaults = cls.param_defaults()
        params = {}
        for key, value in choice["params"].items():
            if key not in defaults:
                raise UserError(f"{where} params: {key!r} is not a parameter of method {cell.method!r}")
            if key in cell.params:
                raise UserError(f"{where} params: {key} is set by the suite's [methods] table; the file is stale, "
                                "rerun `ntkbayes tune`")
            params[key] = check_param(cls, key, value, where)
        explicit = {**cell.params, **params}
        resolved = normalize({**cell.resolved_params, **params})
        rid = run_id_of(cell.dataset, cell.resolved_options, cell.method, resolved, cell.seed,
                        evaluation_of(cell.shift, cell.tf32, cell.validation_only))
        provenance = {"file": Path(path).name, "objective": sel["objective"], "params": params,
                      **{k: choice[k] for k in ("value", "grid_edge", "trials") if k in choice}}
        out.append(dataclasses.replace(cell, params=explicit, resolved_params=resolved, run_id=rid,
                                       selection=provenance))
    return out, missing


__all__ = ["SELECTION_SUFFIX", "apply_selection", "choice_for", "dumps_selection", "find_selection",
           "load_selection", "selection_path", "toml_value", "write_selection"]
