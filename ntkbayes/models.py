"""MLP and small CNN in NTK or standard parameterization (math.md (a)).

NTK parameterization (neural-tangents ``stax.Dense(..., parameterization='ntk')``)::

    z^{l+1} = (σw/√n_l) · W^{l+1} h^l + σb · b^{l+1},   W_ij, b_i ~ N(0, 1)

Standard parameterization: z = W h + b with W_ij ~ N(0, σw²/n_l), b_i ~ N(0, σb²) — the same function at
initialization, a different gradient scale (and hence a different NTK and training dynamics).

"Depth L" = Dense → (φ → Dense) × L: L hidden nonlinearities, L hidden layers of ``width`` units, then a readout
with C outputs. Parameters are plain ``nn.Parameter`` s so ``torch.func.functional_call`` and
``torch.func.stack_module_state`` work (ensembles stack them on a leading member axis).
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import nn


class Parameterization(str, Enum):
    """How weights are scaled."""

    NTK = "ntk"
    """W ~ N(0,1), the layer multiplies by σw/√fan_in and the bias by σb (math.md (a))."""
    STANDARD = "standard"
    """W ~ N(0, σw²/fan_in), b ~ N(0, σb²), no multipliers (PyTorch-style)."""


class Activation(str, Enum):
    """Elementwise nonlinearities with names the analytic kernels (``ntk.analytic``) understand."""

    RELU = "relu"
    """max(0, x); arc-cosine kernels in closed form."""
    ERF = "erf"
    """erf(x) (neural-tangents ``stax.Erf()``); closed form."""
    GELU = "gelu"
    """x·Φ(x); Gauss–Hermite quadrature."""
    TANH = "tanh"
    """tanh(x); Gauss–Hermite quadrature."""
    SOFTPLUS = "softplus"
    """log(1 + eˣ); Gauss–Hermite quadrature."""
    IDENTITY = "identity"
    """x (a linear network)."""


ACTIVATIONS = {
    Activation.RELU: torch.relu,
    Activation.ERF: torch.erf,
    Activation.GELU: nn.functional.gelu,
    Activation.TANH: torch.tanh,
    Activation.SOFTPLUS: nn.functional.softplus,
    Activation.IDENTITY: lambda x: x,
}


def activation_fn(name: str | Activation):
    """The elementwise function for an activation name."""
    try:
        return ACTIVATIONS[Activation(name)]
    except ValueError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {', '.join(a.value for a in Activation)}"
        ) from None


def _parameterization(name: str | Parameterization) -> Parameterization:
    try:
        return Parameterization(name)
    except ValueError:
        raise ValueError(f"unknown parameterization {name!r}; expected 'ntk' or 'standard'") from None


class Dense(nn.Module):
    """Fully connected layer in NTK or standard parameterization (math.md (a)). x (N, D_in) → (N, D_out)."""

    def __init__(self, in_features: int, out_features: int, *, w_std: float = 1.0, b_std: float = 0.0,
                 parameterization: str = "ntk", bias: bool = True):
        super().__init__()
        self.parameterization = _parameterization(parameterization)
        self.in_features, self.out_features = in_features, out_features
        self.w_std, self.b_std = float(w_std), float(b_std)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.normal_(generator=generator)
            if self.bias is not None:
                self.bias.normal_(generator=generator)
            if self.parameterization is Parameterization.STANDARD:
                self.weight.mul_(self.w_std / math.sqrt(self.in_features))
                if self.bias is not None:
                    self.bias.mul_(self.b_std)

    @property
    def w_scale(self) -> float:
        ntk = self.parameterization is Parameterization.NTK
        return self.w_std / math.sqrt(self.in_features) if ntk else 1.0

    @property
    def b_scale(self) -> float:
        return self.b_std if self.parameterization is Parameterization.NTK else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight) * self.w_scale
        if self.bias is not None:
            out = out + self.b_scale * self.bias
        return out


class MLP(nn.Module):
    """Multilayer perceptron: Dense → (φ → Dense) × depth. x (N, D) (or (N, *shape), flattened) → logits (N, C).

    Args:
        in_features: D. out_features: C.
        width: hidden units per layer. depth: number of hidden nonlinearities L (math.md (a)).
        activation: an :class:`Activation` name. w_std, b_std: σw, σb.
        parameterization: ``"ntk"`` or ``"standard"``. dropout: probability applied after each nonlinearity
            (used by MC dropout; 0 disables).
    """

    def __init__(self, in_features: int, out_features: int, width: int = 1024, depth: int = 2,
                 activation: str = "relu", w_std: float = 1.5, b_std: float = 0.05,
                 parameterization: str = "ntk", dropout: float = 0.0):
        super().__init__()
        if depth < 0 or width < 1:
            raise ValueError(f"MLP: depth must be ≥ 0 and width ≥ 1, got depth={depth}, width={width}")
        self.phi = activation_fn(activation)
        self.activation = Activation(activation)
        self.dropout = float(dropout)
        dims = [in_features] + [width] * depth + [out_features]
        self.layers = nn.ModuleList(
            Dense(a, b, w_std=w_std, b_std=b_std, parameterization=parameterization)
            for a, b in zip(dims[:-1], dims[1:])
        )

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for layer in self.layers:
            layer.reset_parameters(generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width) post-activations of the last hidden layer (the readout's input)."""
        h = x.flatten(1)
        for layer in self.layers[:-1]:
            h = self.phi(layer(h))
            if self.dropout > 0:
                h = nn.functional.dropout(h, self.dropout, self.training)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](self.features(x))


class CNN(nn.Module):
    """Small CNN for images: (conv 3×3 → φ) × depth with stride-2 downsampling after the first, global average
    pooling, dense readout. x (N, channels, H, W) → logits (N, C). NTK or standard parameterization as in
    :class:`Dense` (fan-in = channels·3·3).
    """

    def __init__(self, in_channels: int, out_features: int, width: int = 64, depth: int = 3,
                 activation: str = "relu", w_std: float = 1.5, b_std: float = 0.05,
                 parameterization: str = "ntk", dropout: float = 0.0):
        super().__init__()
        self.phi = activation_fn(activation)
        self.parameterization = _parameterization(parameterization)
        self.w_std, self.b_std, self.dropout = float(w_std), float(b_std), float(dropout)
        chans = [in_channels] + [width] * depth
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, stride=1 if i == 0 else 2)
                                   for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])))
        self.readout = Dense(width, out_features, w_std=w_std, b_std=b_std, parameterization=parameterization)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.normal_(generator=generator)
                conv.bias.normal_(generator=generator)
                if self.parameterization is Parameterization.STANDARD:
                    conv.weight.mul_(self.w_std / math.sqrt(conv.weight[0].numel()))
                    conv.bias.mul_(self.b_std)
        self.readout.reset_parameters(generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width) globally pooled features."""
        ntk = self.parameterization is Parameterization.NTK
        h = x
        for conv in self.convs:
            ws = self.w_std / math.sqrt(conv.weight[0].numel()) if ntk else 1.0
            bs = self.b_std if ntk else 1.0
            h = nn.functional.conv2d(h, conv.weight * ws, conv.bias * bs, conv.stride, conv.padding)
            h = self.phi(h)
            if self.dropout > 0:
                h = nn.functional.dropout(h, self.dropout, self.training)
        return h.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


def build_model(feature_shape: tuple[int, ...], num_classes: int, arch: str = "mlp", **kwargs) -> nn.Module:
    """An MLP for flat/any inputs or a CNN for (channels, H, W) images."""
    if arch == "mlp":
        return MLP(math.prod(feature_shape), num_classes, **kwargs)
    if arch == "cnn":
        if len(feature_shape) != 3:
            raise ValueError(f"arch='cnn' needs image inputs (channels, H, W), got feature shape {feature_shape}")
        return CNN(feature_shape[0], num_classes, **kwargs)
    raise ValueError(f"unknown arch {arch!r}; expected 'mlp' or 'cnn'")
