"""Infinite-width and empirical NTKs, the linearized model, the function-space solver, lazy-regime diagnostics.

Public API (formulas: ``docs/math.md``; each submodule's docstring cites its section):

* :mod:`~ntkbayes.ntk.analytic` (a): :func:`mlp_kernels` (N, M) NNGP and NTK, :func:`mlp_kernels_diag`,
  :func:`readout_split`, :func:`gaussian_expectations`.
* :mod:`~ntkbayes.ntk.empirical` (b): :func:`empirical_ntk` (N, M, C, C) or (N, M), :func:`empirical_ntk_stacked`,
  :func:`flatten_ntk`, :func:`ntk_memory_estimate`.
* :mod:`~ntkbayes.ntk.linearize` (b): :func:`linearize` → :class:`Linearized`, :func:`linearized_apply`,
  :func:`model_jvp`.
* :mod:`~ntkbayes.ntk.solve` (c): :func:`newton_full`, :func:`newton_block` (Cholesky or preconditioned CG,
  :mod:`~ntkbayes.ntk.solve_cg`), :func:`solve_ntk_classifier`, :func:`interpolant_smoothed`, :func:`prior_mean`;
  both solvers share :mod:`~ntkbayes.ntk.newton` (:class:`NewtonResult`, the Newton driver, input layouts).
* :mod:`~ntkbayes.ntk.posterior` (d): :func:`predict_mean_cov`, :func:`softmax_predictive_mc`,
  :func:`softmax_predictive_probit`.
* :mod:`~ntkbayes.ntk.diagnostics`: :func:`kernel_drift`, :func:`linearization_gap`, :func:`parameter_movement`,
  :func:`logit_gap`, :class:`LazyTracker`.

Imports are lazy (PEP 562 ``__getattr__``): ``import ntkbayes.ntk`` loads nothing but :mod:`.linearize`
(torch only), so submodules that import each other (and ``methods/ntk_ensemble.py``, ``ntk/ensemble_kernel.py``)
cannot form an import cycle through this file. ``linearize`` is loaded eagerly because the package attribute
``ntkbayes.ntk.linearize`` is the *function* :func:`linearize`; the submodule itself is reached with
``from ntkbayes.ntk.linearize import ...`` or ``importlib.import_module("ntkbayes.ntk.linearize")``.
"""

from __future__ import annotations

import importlib

from ntkbayes.ntk.linearize import Linearized as Linearized
from ntkbayes.ntk.linearize import linearize as linearize
from ntkbayes.ntk.linearize import linearized_apply as linearized_apply
from ntkbayes.ntk.linearize import model_jvp as model_jvp

#: Exported name → submodule that defines it (loaded on first access).
_LAZY = {
    **dict.fromkeys(("mlp_kernels", "mlp_kernels_diag", "readout_split", "gaussian_expectations", "MLPKernels",
                     "ExpectationMethod", "activation_pair"), "analytic"),
    **dict.fromkeys(("empirical_ntk", "empirical_ntk_stacked", "flatten_ntk", "ntk_memory_estimate",
                     "NTKImplementation", "Trace"), "empirical"),
    **dict.fromkeys(("newton_full", "newton_block", "solve_ntk_classifier", "interpolant_smoothed", "prior_mean",
                     "NewtonResult", "InterpolantResult", "Anchor", "Solver"), "solve"),
    **dict.fromkeys(("predict", "predict_mean_cov", "softmax_mc", "softmax_probit", "softmax_predictive_mc",
                     "softmax_predictive_probit", "sample_logits", "probit_logits"), "posterior"),
    **dict.fromkeys(("newton_block_cg", "pivoted_cholesky", "cg_memory_bytes", "cholesky_memory_bytes"),
                    "solve_cg"),
    **dict.fromkeys(("kernel_drift", "relative_kernel_drift", "linearization_gap", "parameter_movement",
                     "logit_gap", "LazyTracker"), "diagnostics"),
}

__all__ = sorted([*_LAZY, "Linearized", "linearize", "linearized_apply", "model_jvp"])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ntkbayes.ntk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ntkbayes.ntk.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
