"""Value checks of suite and study files (:mod:`.config`, :mod:`ntkbayes.lazy.config`), canonical JSON, run ids.

A value is checked against the parameter's annotation where it is readable and else against its default's type;
see :func:`check_value` and the "Types" paragraph of :mod:`ntkbayes.harness.config`.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ntkbayes.errors import UserError

_TOML_TYPES = (bool, int, float, str, list, dict)


def type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(v), type(v).__name__
    )


def check_any(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [check_any(v, where) for v in value]
    if isinstance(value, dict):
        return {k: check_any(v, where) for k, v in value.items()}
    if not isinstance(value, _TOML_TYPES):
        raise UserError(f"{where}: unsupported TOML value of type {type(value).__name__} (dates are not options)")
    return value


#: Annotation names (the part before any ``[...]``) → the TOML kind they accept; others count as unknown.
_ANNOTATION_KINDS = {"int": "integer", "float": "float", "str": "string", "bool": "boolean", "None": "none",
                     "NoneType": "none", "list": "array", "tuple": "array", "List": "array", "Tuple": "array",
                     "Sequence": "array", "Iterable": "array", "dict": "table", "Mapping": "table",
                     "Dict": "table", "Any": "any"}


def annotation_kinds(annotation: Any) -> frozenset[str]:
    """TOML kinds a parameter's annotation admits ("integer", "float", "array", ...; "?" for a part it cannot
    read, such as an Enum class). Works on string annotations (``from __future__ import annotations``)."""
    if annotation is inspect.Parameter.empty:
        return frozenset()
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = re.sub(r"^(?:typing\.)?Optional\[(.*)\]$", r"\1 | None", text.strip())
    parts, depth, cur = [], 0, ""
    for ch in text:  # split on top-level "|"
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return frozenset(_ANNOTATION_KINDS.get(p.strip().split("[", 1)[0].split(".")[-1], "?") for p in parts)


def check_value(value: Any, default: Any, where: str, kinds: frozenset[str] = frozenset()) -> Any:
    """Check a TOML value against a parameter's annotation ``kinds`` and its default's type; return it
    normalized (an integer for a float parameter becomes a float).

    An Enum default admits its member values. A value of a kind the annotation names is accepted (``str |
    float`` takes both); an annotation fully understood rejects other kinds; otherwise the default's type decides.
    ``where`` is "file: [table] key" for the message.
    """
    if isinstance(default, enum.Enum) and (isinstance(value, str) or not kinds):
        allowed = [m.value for m in type(default)]
        if not isinstance(value, str) or value not in allowed:
            raise UserError(f"{where}: expected one of {allowed}, got {value!r}")
        return value
    known = kinds - {"?"}
    if "any" in known:
        return check_any(value, where)
    if known:
        kind = type_name(value)
        if kind in known or (kind == "integer" and "float" in known):
            if kind == "integer" and "integer" not in known:
                value = float(value)
            if kind == "array" and isinstance(default, (list, tuple)) and default:
                return [check_value(v, default[0], where) for v in value]
            return check_any(value, where)
        if "?" not in kinds:
            raise UserError(f"{where}: expected {' or '.join(sorted(known))}, got {kind} {value!r}")
    if default is inspect.Parameter.empty or default is None:
        return check_any(value, where)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            raise UserError(f"{where}: expected an array, got {type_name(value)} {value!r}")
        if default:
            return [check_value(v, default[0], where) for v in value]
        return check_any(value, where)
    elif isinstance(default, Mapping):
        ok = isinstance(value, dict)
    else:
        return check_any(value, where)
    if not ok:
        expected = "float" if isinstance(default, float) else type_name(default)
        raise UserError(f"{where}: expected {expected} (like the default {default!r}), got {type_name(value)} "
                        f"{value!r}")
    return value


def check_param(cls: type, key: str, value: Any, where: str) -> Any:
    """``value`` validated by the method class's ``check_param(key, value)`` (enum membership, bounds such as
    ``members ≥ 1``) and normalized; its ValueError becomes a UserError "FILE: [methods.LABEL] KEY: message"."""
    try:
        return normalize(cls.check_param(key, value))
    except (ValueError, TypeError) as e:
        raise UserError(f"{where} {key}: {' '.join(str(e).split())}") from None


# -- JSON normalization and run ids (config.py module docstring) -------------------------------------------------------
#: Length of a run_id in hex digits: 64 bits make a collision among even millions of cells negligible.
RUN_ID_LENGTH = 16


def normalize(value: Any) -> Any:
    """JSON-safe canonical form: Enum → its value, tuple → list, int-valued floats stay floats; dict keys → str.

    Non-finite floats become the strings "nan", "inf", "-inf"; other objects their ``repr`` (a default that is a
    callable, say), so hashing never fails.
    """
    if isinstance(value, enum.Enum):
        return normalize(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    return repr(value)


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: the same content always gives the same string."""
    return json.dumps(normalize(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def run_id_of(dataset: str, dataset_options: Mapping, method: str, params: Mapping, seed: int,
              evaluation: Mapping | None = None) -> str:
    """sha256(canonical JSON of dataset, options, method, params, seed[, evaluation])[:16]; ``evaluation`` (shift
    kinds, tf32) is hashed only when non-empty."""
    payload = {
        "dataset": dataset,
        "dataset_options": dict(dataset_options),
        "method": method,
        "params": dict(params),
        "seed": int(seed),
    }
    if evaluation:
        payload["evaluation"] = dict(evaluation)
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:RUN_ID_LENGTH]


def evaluation_of(shift=(), tf32: bool = False, validation_only: bool = False) -> dict[str, Any]:
    """The ``evaluation`` part of a run_id (what changes a record's content beyond the fit): shift kinds, TF32, and
    the tuner's validation-only mode; empty for a plain cell, so plain run_ids do not change."""
    if validation_only:  # no shifted-test evaluation in a validation-only trial
        return {"validation_only": True, **({"tf32": True} if tf32 else {})}
    return {**({"shift": list(shift)} if shift else {}), **({"tf32": True} if tf32 else {})}


def format_value(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(normalize(v), separators=(",", ":"))
