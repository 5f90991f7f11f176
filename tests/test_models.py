"""models: NTK vs standard parameterization (math.md (a)), functional use, stacking."""

import math

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from ntkbayes.models import CNN, MLP, Dense, ResNet, as_torch_layers, build_model


def test_ntk_layer_formula():
    torch.manual_seed(0)
    layer = Dense(5, 3, w_std=1.5, b_std=0.05, parameterization="ntk").double()
    x = torch.randn(4, 5, dtype=torch.float64)
    expected = (1.5 / math.sqrt(5)) * x @ layer.weight.T + 0.05 * layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-14)  # float64, 5-term dot products of O(1): a few ulps
    # NTK parameterization: raw parameters are standard normal
    big = Dense(400, 300, w_std=1.5, parameterization="ntk")
    assert abs(big.weight.std().item() - 1.0) < 0.02


def test_standard_matches_ntk_function_at_init_in_distribution():
    g = torch.Generator().manual_seed(0)
    std = Dense(512, 256, w_std=1.5, b_std=0.05, parameterization="standard")
    std.reset_parameters(g)
    assert abs(std.weight.std().item() - 1.5 / math.sqrt(512)) < 0.01 * 1.5 / math.sqrt(512) * 5
    x = torch.randn(8, 5)
    s = Dense(5, 3, parameterization="standard")
    assert torch.allclose(s(x), x @ s.weight.T + s.bias)


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "tanh", "softplus", "identity"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_mlp_shapes_and_functional_call(activation, parameterization):
    model = MLP(6, 3, width=16, depth=2, activation=activation, parameterization=parameterization).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    assert torch.allclose(functional_call(model, params, (x,)), model(x))
    assert model(x).shape == (5, 3)
    assert len(model.layers) == 3


def test_stacked_members_vmap_matches_loop():
    members = [MLP(4, 2, width=8, depth=1).double() for _ in range(3)]
    params, buffers = stack_module_state(members)
    base = members[0]
    x = torch.randn(6, 4, dtype=torch.float64)
    out = vmap(lambda p: functional_call(base, p, (x,)))(params)
    for k, m in enumerate(members):
        # bound: vmap vs plain forward, float64 width 8: a few ulps
        assert torch.allclose(out[k], m(x), atol=1e-14)


def test_cnn_and_builder():
    cnn = build_model((1, 8, 8), 4, arch="cnn", width=6, depth=2)
    assert isinstance(cnn, CNN) and cnn(torch.randn(3, 1, 8, 8)).shape == (3, 4)
    mlp = build_model((1, 8, 8), 4, arch="mlp", width=6, depth=1)
    assert mlp(torch.randn(3, 1, 8, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"expected one of \[.*'mlp'.*\] or 'package.module:factory'"):
        build_model((4,), 2, arch="transformer")
    with pytest.raises(ValueError, match="image inputs"):
        build_model((4,), 2, arch="resnet")
    with pytest.raises(ValueError, match="activation"):
        MLP(2, 2, activation="swish2")


def test_resnet_builds_and_runs_on_cifar_sized_input():
    net = build_model((3, 32, 32), 10, arch="resnet", width=16, depth=20)
    assert isinstance(net, ResNet)
    assert not list(net.buffers())  # GroupNorm: no running statistics, so members can be stacked
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 10) and net.features(x).shape == (2, 64)
    g = torch.Generator().manual_seed(0)
    net.reset_parameters(g)
    first = net.linear.weight.clone()
    net.reset_parameters(torch.Generator().manual_seed(0))
    assert torch.equal(first, net.linear.weight)  # seeded re-initialization is reproducible
    conv = net.net.conv1.weight
    assert abs(conv.std().item() - 1.5 / math.sqrt(conv[0].numel())) < 0.3 * 1.5 / math.sqrt(conv[0].numel())
    with pytest.raises(ValueError, match="depth"):
        build_model((3, 32, 32), 10, arch="resnet", width=16, depth=3)
    with pytest.raises(ValueError, match="width"):
        build_model((3, 32, 32), 10, arch="resnet", width=12, depth=20)


@pytest.mark.parametrize("arch, shape", [("mlp", (5,)), ("cnn", (2, 6, 6)), ("resnet", (3, 8, 8))])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_as_torch_layers_is_the_same_function(arch, shape, parameterization):
    if arch == "resnet" and parameterization == "ntk":
        pytest.skip("the ResNet is standard-parameterization only")
    kw = {"depth": 20} if arch == "resnet" else {"depth": 2}
    net = build_model(shape, 3, arch=arch, width=8, parameterization=parameterization, **kw).double()
    plain = as_torch_layers(net)
    assert isinstance(plain[-1] if isinstance(plain, torch.nn.Sequential) else plain.linear, torch.nn.Linear)
    x = torch.randn(4, *shape, dtype=torch.float64)
    # bound: the multipliers folded into weights: one extra rounding per layer, float64
    torch.testing.assert_close(plain(x), net(x), atol=1e-12, rtol=0)
