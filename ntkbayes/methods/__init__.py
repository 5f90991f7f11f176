"""Uncertainty methods, one file each; every module in this folder is imported so its methods register."""

import importlib
import pkgutil

from ntkbayes.methods.base import GaussianLink, Method, NotFittedError, available, create, get

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["GaussianLink", "Method", "NotFittedError", "available", "create", "get"]
