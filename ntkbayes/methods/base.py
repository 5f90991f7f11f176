"""Method base class and the registry.

Style (design.md): the constructor only stores hyperparameters (scikit-learn ``BaseEstimator``), ``fit`` does the
work and sets fitted state in attributes ending in ``_``, ``predict`` returns a validated :class:`Predictive`.
A subclass that sets the class attribute ``name`` registers itself when its module is imported
(laplace-torch's subclass keys); a duplicate name is an error.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch

from ntkbayes.predictive import Predictive

_REGISTRY: dict[str, type[Method]] = {}
_ENTRY_POINTS_LOADED = False

#: Entry-point group through which third-party packages register methods.
ENTRY_POINT_GROUP = "ntkbayes.methods"


class NotFittedError(RuntimeError):
    """``predict`` (or fitted state) was used before ``fit``."""


class Method:
    """Base class of every uncertainty method.

    Subclasses set ``name`` and write ``__init__`` with keyword arguments only, each stored under its own name.
    They implement ``_fit(data, seed, device)`` and ``_predict(x) -> Predictive``; the public ``fit``/``predict``
    add the checks every method shares.
    """

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name", "")
        if not name:
            return  # abstract intermediate class
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
    def param_defaults(cls) -> dict[str, Any]:
        """Constructor arguments and their defaults (``inspect.Parameter.empty`` where there is none)."""
        sig = inspect.signature(cls.__init__)
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters the constructor stored (scikit-learn style)."""
        return {k: getattr(self, k) for k in self.param_defaults()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / predict ------------------------------------------------------------------------------------------
    def fit(self, data, seed: int = 0, device: str | torch.device = "cpu") -> Method:
        """Fit on ``data.train`` (and ``data.val`` for model selection); returns ``self``."""
        from ntkbayes.utils import resolve_device

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
    """Instantiate a registered method; unknown parameters are an error naming them."""
    cls = get(name)
    known = cls.param_defaults()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"method {name!r}: unknown parameter(s) {', '.join(unknown)}; expected some of {', '.join(known)}"
        )
    return cls(**params)
