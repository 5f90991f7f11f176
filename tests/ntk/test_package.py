"""ntkbayes.ntk's public API: every exported name resolves to the object its submodule defines (loaded lazily),
and the ``linearize`` function/submodule name clash resolves to the function."""

import importlib
import sys

import ntkbayes.ntk as ntk
from ntkbayes.ntk import posterior

SUBMODULES = ("analytic", "empirical", "linearize", "solve", "posterior", "solve_cg", "diagnostics")


def test_every_export_is_the_submodule_object():
    owners = {name: importlib.import_module(f"ntkbayes.ntk.{name}") for name in SUBMODULES}
    for name in ntk.__all__:
        obj = getattr(ntk, name)
        assert any(getattr(mod, name, None) is obj for mod in owners.values()), name
    assert set(dir(ntk)) >= set(ntk.__all__)
    for name in ("mlp_kernels", "empirical_ntk", "linearize", "newton_full", "newton_block", "predict_mean_cov",
                 "softmax_predictive_mc", "softmax_predictive_probit", "kernel_drift", "linearization_gap",
                 "parameter_movement", "newton_block_cg"):
        assert callable(getattr(ntk, name)), name
    assert ntk.predict_mean_cov is posterior.predict and ntk.softmax_predictive_mc is posterior.softmax_mc
    assert callable(ntk.linearize) and not isinstance(ntk.linearize, type(sys))     # the function, not the module
    try:
        ntk.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("unknown names must raise AttributeError")

