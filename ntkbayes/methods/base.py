"""Method base class and the registry.

Style (design.md): the constructor only stores hyperparameters (scikit-learn ``BaseEstimator``), ``fit`` does the
work and sets fitted state in attributes ending in ``_``, ``predict`` returns a validated :class:`Predictive`.
A subclass that sets the class attribute ``name`` registers itself when its module is imported
(laplace-torch's subclass keys); a duplicate name is an error.

A method owns everything about itself in its one file: its constructor keywords (a subclass declares only the
keywords it adds and forwards ``**kwargs``; :meth:`Method.param_defaults` merges them along the MRO), how each value
is checked (:meth:`Method.check_param`: ``(str, Enum)`` options, int/float types, ``param_bounds``,
``param_checks``), its comparison ``family``, the fast ``test_params`` of the contract test, the ``dry_run_params``
caps of ``ntkbayes run --dry-run`` and the ``search_space`` of the tuner.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from enum import Enum
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch

from ntkbayes.predictive import Predictive

_REGISTRY: dict[str, type[Method]] = {}
_ENTRY_POINTS_LOADED = False

#: Entry-point group through which third-party packages register methods.
ENTRY_POINT_GROUP = "ntkbayes.methods"


class GaussianLink(str, Enum):
    """How a Gaussian over logits f* ~ N(μ*, Σ*) becomes class probabilities (math.md (d)); shared by the methods
    with a Gaussian latent predictive (``laplace``, ``gp``)."""

    MC = "mc"
    """S = ``num_samples`` members softmax(f^(s)), f^(s) = μ* + chol(Σ*) z: epistemic scores are defined."""
    PROBIT = "probit"
    """One member softmax(κ∘μ*), κ_c = (1 + π/8·Σ*_cc)^{-1/2}; deterministic, S = 1."""


class NotFittedError(RuntimeError):
    """``predict`` (or fitted state) was used before ``fit``."""


class Method:
    """Base class of every uncertainty method.

    Subclasses set ``name`` and write ``__init__`` with keyword arguments only, each stored under its own name
    (:meth:`_store_params` does it; a subclass of another method declares only its new keywords and passes
    ``**kwargs`` on). They implement ``_fit(data, seed, device)`` and ``_predict(x) -> Predictive``; the public
    ``fit``/``predict`` add the checks every method shares.

    Class attributes (each method sets its own; the defaults suit a method that has nothing to say):
        family: comparison family recorded with every result ("ntk", "gp", "laplace", "ensemble", "dropout",
            "map", "linear", ...); default: the method's ``name``.
        test_params: small settings the registry-wide contract test fits with (seconds on a tiny dataset).
        dry_run_params: caps for ``ntkbayes run --dry-run``: an int parameter becomes min(value, cap), any other
            is replaced by the value here.
        search_space: parameter → candidate values for the tuner (small grids).
        param_bounds: parameter → (low, high), inclusive, None = open; checked by :meth:`check_param` (for a
            list-valued parameter, on every element).
        param_checks: parameter → function(value) → normalized value, raising ValueError (values no annotation
            describes, e.g. a model name).
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    test_params: ClassVar[dict[str, Any]] = {}
    dry_run_params: ClassVar[dict[str, Any]] = {}
    search_space: ClassVar[dict[str, list]] = {}
    param_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    param_checks: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name", "")
        if not name:
            return  # abstract intermediate class
        if not cls.family:
            cls.family = name
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            other = _REGISTRY[name]
            if f"{other.__module__}.{other.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
                raise ValueError(
                    f"method name {name!r} is registered twice: {other.__module__}.{other.__qualname__} "
                    f"and {cls.__module__}.{cls.__qualname__}"
                )
        _REGISTRY[name] = cls

    # -- parameters ---------------------------------------------------------------------------------------------
    @classmethod
    def _declared(cls) -> list[tuple[str, inspect.Parameter, Any]]:
        """(name, parameter, resolved annotation) of every constructor keyword, own first, then the parents' that
        a ``**kwargs`` forwards to (along the MRO, stopping at an ``__init__`` without ``**kwargs``)."""
        out: dict[str, tuple[str, inspect.Parameter, Any]] = {}
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            if klass is Method or klass is object:
                break
            try:
                hints = typing.get_type_hints(init)
            except Exception:  # an annotation that does not resolve: fall back to the default's type
                hints = {}
            forwards = False
            for k, p in inspect.signature(init).parameters.items():
                if p.kind is p.VAR_KEYWORD:
                    forwards = True
                elif k != "self" and p.kind is not p.VAR_POSITIONAL and k not in out:
                    out[k] = (k, p, hints.get(k, p.annotation))
            if not forwards:
                break
        return list(out.values())

    @classmethod
    def inner_search(cls, params: dict[str, Any]) -> dict[str, str]:
        """Searched keys this method selects itself, more cheaply than one tuning trial per value, for a suite
        table with ``params``: key → the constructor parameter that takes the list of candidates. The method
        keeps the candidate with the best validation NLL and records it as ``fit_info()[key]``; the tuner
        (docs/tuning.md) then runs one trial for all of a key's values. Default: none."""
        return {}

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """Constructor arguments and their defaults (``inspect.Parameter.empty`` where there is none), merged
        along the MRO."""
        return {k: p.default for k, p, _ in cls._declared()}

    @classmethod
    def param_annotations(cls) -> dict[str, Any]:
        """Constructor arguments and their resolved type annotations (``inspect.Parameter.empty`` where none)."""
        return {k: hint for k, _, hint in cls._declared()}

    @classmethod
    def check_param(cls, key: str, value: Any) -> Any:
        """Check one value for constructor parameter ``key``; return it normalized.

        ``(str, Enum)`` options (from the annotation or the default) → the member's string value; ints stay ints
        (a bool or float is refused), a float parameter takes ints and floats (→ float); ``param_bounds`` and
        ``param_checks`` apply. Raises ValueError with a one-line message that does not repeat ``key``, e.g.
        "expected one of ['network', 'linearized', 'kernel'], got 'bogus'" or "expected an integer ≥ 1, got 0".
        """
        defaults = cls.param_defaults()
        if key not in defaults:
            raise ValueError(f"not a parameter of method {cls.name!r}; expected one of {sorted(defaults)}")
        if key in cls.param_checks:
            return cls.param_checks[key](value)
        hint = cls.param_annotations().get(key, inspect.Parameter.empty)
        return check_value(value, hint, defaults[key], cls.param_bounds.get(key))

    def check_params(self) -> None:
        """Check every stored hyperparameter (:meth:`check_param`); ValueError "KEY: message" on the first bad one."""
        for key, value in self.get_params().items():
            try:
                self.check_param(key, value)
            except ValueError as exc:
                raise ValueError(f"{type(self).__name__} {key}: {exc}") from None

    def _store_params(self, values: dict[str, Any]) -> None:
        """Store each constructor keyword under its own name (scikit-learn style): an ``__init__`` calls
        ``self._store_params(locals())`` before anything else. Only the named parameters of the ``__init__``
        methods along the MRO are stored (not ``self``, ``**kwargs`` or other locals)."""
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names = {k for klass in type(self).__mro__ if "__init__" in vars(klass)
                 for k, p in inspect.signature(vars(klass)["__init__"]).parameters.items()
                 if k != "self" and p.kind in named}
        for k, v in values.items():
            if k in names:
                setattr(self, k, v)

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters the constructor stored (scikit-learn style)."""
        return {k: getattr(self, k) for k in self.param_defaults()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_plain(v)!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / predict ------------------------------------------------------------------------------------------
    def fit(self, data, seed: int = 0, device: str | torch.device = "cpu") -> Method:
        """Fit on ``data.train`` (and ``data.val`` for model selection); returns ``self``."""
        from ntkbayes.utils import resolve_device

        self.check_params()
        self.device_ = resolve_device(device)
        self.num_classes_ = int(data.num_classes)
        self.in_features_ = int(data.train.x[0].numel())
        self._fit(data, int(seed), self.device_)
        self.fitted_ = True
        return self

    def predict(self, x: torch.Tensor) -> Predictive:
        """Predictive on inputs ``x`` (N, ...) → member probabilities (S, N, C)."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__}.predict called before fit")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"predict: x must be a torch.Tensor, got {type(x).__name__}")
        with torch.no_grad():
            pred = self._predict(x)
        if not isinstance(pred, Predictive):
            raise TypeError(f"{type(self).__name__}._predict must return a Predictive")
        if pred.num_points != x.shape[0]:
            raise ValueError(f"{type(self).__name__}: predicted {pred.num_points} points for {x.shape[0]} inputs")
        return pred

    def _fit(self, data, seed: int, device: torch.device) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, x: torch.Tensor) -> Predictive:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit_info(self) -> dict[str, Any]:
        """JSON-serializable facts about the fit worth recording (chosen hyperparameters, convergence, ...)."""
        return dict(getattr(self, "info_", {}))


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()  # importing the module registers its Method subclasses


def available() -> list[str]:
    """Names of every registered method, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> type[Method]:
    """The Method subclass registered under ``name``."""
    _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, **params: Any) -> Method:
    """Instantiate a registered method with values checked by :meth:`Method.check_param` (normalized: enum
    options as their strings, ints as floats for float parameters); an unknown or bad parameter is a ValueError
    naming it."""
    cls = get(name)
    known = cls.param_defaults()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"method {name!r}: unknown parameter(s) {', '.join(unknown)}; expected some of {', '.join(known)}"
        )
    checked = {}
    for key, value in params.items():
        try:
            checked[key] = cls.check_param(key, value)
        except ValueError as exc:
            raise ValueError(f"method {name!r} {key}: {exc}") from None
    return cls(**checked)


# -- value checks ------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """An Enum member as its value (reprs and records show 'network', not <Mode.NETWORK: 'network'>)."""
    return value.value if isinstance(value, Enum) else value


def _union(hint: Any) -> tuple:
    """The alternatives of a type hint (``X | Y``, ``Optional[X]``) or (hint,)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _describe(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string", list: "list", tuple: "list",
             dict: "table", type(None): "None"}
    kind = next((v for k, v in kinds.items() if type(value) is k), type(value).__name__)
    return "None" if value is None else f"{kind} {value!r}"


def _bounded(value: float, bounds: tuple | None, noun: str) -> Any:
    if bounds is None:
        return value
    lo, hi = bounds
    if (lo is None or value >= lo) and (hi is None or value <= hi) and not (isinstance(value, float)
                                                                            and math.isnan(value)):
        return value
    if lo is not None and hi is not None:
        want = f"{noun} in [{lo:g}, {hi:g}]"
    else:
        want = f"{noun} ≥ {lo:g}" if lo is not None else f"{noun} ≤ {hi:g}"
    raise ValueError(f"expected {want}, got {value!r}")


def check_value(value: Any, hint: Any, default: Any = inspect.Parameter.empty, bounds: tuple | None = None) -> Any:
    """Check ``value`` against a resolved type hint (or, without one, the default's type); return it normalized.

    Understood: ``(str, Enum)`` classes (plain strings or members; → the string value), ``bool``, ``int``,
    ``float`` (ints accepted, → float), ``str``, ``None``, ``tuple[X, ...]`` / ``list[X]`` (a list; elements
    checked, → list) and unions of these. ``bounds`` (low, high) apply to numbers and to list elements.
    """
    options = _union(hint) if hint is not inspect.Parameter.empty else ()
    if not options and default is not inspect.Parameter.empty and default is not None:
        options = (type(default),)
    if isinstance(default, Enum) and type(default) not in options:
        options = (type(default), *options)
    readable = all((isinstance(o, type) and o not in (Any, object)) or typing.get_origin(o) in (list, tuple)
                   for o in options)
    if not options or not readable:
        return value  # nothing readable (no annotation, Any, an unresolved string): accept as given
    enums = [o for o in options if isinstance(o, type) and issubclass(o, Enum)]
    if value is None:
        if type(None) in options or default is None:
            return None
    elif enums and (isinstance(value, Enum) or (isinstance(value, str) and str not in options)):
        for enum in enums:
            allowed = [m.value for m in enum]
            if _plain(value) in allowed:
                return _plain(value)
        raise ValueError(f"expected one of {[m.value for e in enums for m in e]}, got {_plain(value)!r}")
    elif isinstance(value, bool):
        if bool in options:
            return value
    elif isinstance(value, int) and int in options:
        return _bounded(value, bounds, "an integer")
    elif isinstance(value, (int, float)) and float in options:
        return _bounded(float(value), bounds, "a number")
    elif isinstance(value, str) and str in options:
        return value
    elif isinstance(value, (list, tuple)):
        for opt in options:
            if typing.get_origin(opt) in (list, tuple) or opt in (list, tuple):
                args = [a for a in typing.get_args(opt) if a is not Ellipsis]
                elem = args[0] if args else inspect.Parameter.empty
                return [check_value(v, elem, bounds=bounds) for v in value]
    raise ValueError(f"expected {_expected(options, bounds)}, got {_describe(value)}")


def _expected(options: tuple, bounds: tuple | None) -> str:
    names = []
    for o in options:
        if isinstance(o, type) and issubclass(o, Enum):
            names.append(f"one of {[m.value for m in o]}")
        elif o is bool:
            names.append("a boolean")
        elif o is int:
            names.append("an integer")
        elif o is float:
            names.append("a number")
        elif o is str:
            names.append("a string")
        elif o is type(None):
            names.append("None")
        elif typing.get_origin(o) in (list, tuple) or o in (list, tuple):
            names.append("a list")
        else:
            names.append(getattr(o, "__name__", str(o)))
    return " or ".join(names)
