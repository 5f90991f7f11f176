"""Bring your own model: the model registry, ``package.module:factory`` names and the MAP family using them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toydata import tiny_splits

import ntkbayes as nb
from ntkbayes import models


def tiny_factory(feature_shape, num_classes):
    """A user's model: plain torch layers, no ntkbayes options, no reset_parameters(generator)."""
    return nn.Sequential(nn.Flatten(1), nn.Linear(feature_shape[0], 12), nn.Tanh(), nn.Linear(12, num_classes))


def dropout_factory(feature_shape, num_classes, width=8, dropout=0.0):
    return nn.Sequential(nn.Linear(feature_shape[0], width), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(width, num_classes))


@pytest.fixture(scope="module")
def data():
    return tiny_splits(n=90, classes=3, dim=3, seed=4)


def test_register_by_name_and_build():
    models.register_model("_test_tiny", tiny_factory)
    assert "_test_tiny" in models.available_models()
    net = models.build_model((3,), 4, arch="_test_tiny", width=99, depth=7)   # options it does not name: ignored
    assert net(torch.zeros(2, 3)).shape == (2, 4)
    with pytest.raises(ValueError, match="registered twice"):
        models.register_model("_test_tiny", dropout_factory)
    with pytest.raises(ValueError, match="not NTK-parameterizable"):
        models.build_model((3,), 4, arch="_test_tiny", parameterization="ntk")
    with pytest.raises(ValueError, match="takes no dropout"):
        models.build_model((3,), 4, arch="_test_tiny", dropout=0.2)


@pytest.mark.parametrize("method", ["map", "deep_ensemble", "temperature", "laplace"])
def test_map_family_trains_a_factory_named_by_import_path(method, data):
    arch = f"{__name__}:tiny_factory"
    cls = nb.methods.get(method)
    assert cls.check_param("arch", arch) == arch
    kw = dict(arch=arch, lr=0.03, epochs=60, **({"link": "probit"} if method == "laplace" else {}))
    m = nb.methods.create(method, **kw)
    pred = m.fit(data, seed=0).predict(data.test.x)
    assert pred.num_points == len(data.test) and pred.num_classes == 3
    assert (pred.probs.argmax(1) == data.test.y).double().mean() > 0.6     # separable blobs
    again = nb.methods.create(method, **kw)
    torch.testing.assert_close(again.fit(data, seed=0).predict(data.test.x).member_probs, pred.member_probs,
                               rtol=0, atol=0)  # the fallback initialization is seeded too: bit for bit


def test_mc_dropout_with_a_factory_that_takes_dropout(data):
    arch = f"{__name__}:dropout_factory"
    m = nb.methods.create("mc_dropout", arch=arch, width=16, dropout=0.2, num_samples=5, epochs=20).fit(data)
    assert m.predict(data.test.x).member_probs.shape == (5, len(data.test), 3)
    with pytest.raises(ValueError, match="takes no dropout"):
        nb.methods.create("mc_dropout", arch=f"{__name__}:tiny_factory", epochs=2).fit(data)


def test_bad_arch_values_are_one_line_errors():
    cls = nb.methods.get("map")
    with pytest.raises(ValueError, match="cannot import model factory"):
        cls.check_param("arch", "no_such_package.mod:f")
    with pytest.raises(ValueError, match=r"expected one of \[.*'mlp'.*\] or 'package.module:factory'"):
        cls.check_param("arch", "transformer")
    with pytest.raises(ValueError, match="not callable"):
        cls.check_param("arch", f"{__name__}:__doc__")
