"""MLP and small CNN in NTK or standard parameterization (math.md (a)); a GroupNorm ResNet for CIFAR-sized images.

NTK parameterization (neural-tangents ``stax.Dense(..., parameterization='ntk')``)::

    z^{l+1} = (σw/√n_l) · W^{l+1} h^l + σb · b^{l+1},   W_ij, b_i ~ N(0, 1)

Standard parameterization: z = W h + b with W_ij ~ N(0, σw²/n_l), b_i ~ N(0, σb²) — the same function at
initialization, a different gradient scale (and hence a different NTK and training dynamics).

"Depth L" = Dense → (φ → Dense) × L: L hidden nonlinearities, L hidden layers of ``width`` units, then a readout
with C outputs. Parameters are plain ``nn.Parameter`` s so ``torch.func.functional_call`` and
``torch.func.stack_module_state`` work (ensembles stack them on a leading member axis).

Models are pluggable like methods: :func:`register_model` adds a factory under a name (``"mlp"``, ``"cnn"`` and
``"resnet"`` are built in), third-party packages register theirs through the entry-point group ``ntkbayes.models``,
and ``arch = "package.module:factory"`` names any importable factory without registering it. A factory is
``factory(feature_shape, num_classes, **options) -> nn.Module`` and receives those of the options ``width``,
``depth``, ``activation``, ``w_std``, ``b_std``, ``parameterization`` and ``dropout`` its signature names (all of
them when it takes ``**kwargs``). Only a model registered with ``ntk=True`` accepts ``parameterization="ntk"``.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import entry_points

import torch
from torch import nn

#: Entry-point group through which third-party packages register model factories (each entry point's module
#: calls :func:`register_model` when imported).
ENTRY_POINT_GROUP = "ntkbayes.models"


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


#: ResNet depths torch-uncertainty builds (``torch_uncertainty.models.resnet``'s ``arch``).
RESNET_DEPTHS = (18, 20, 34, 44, 50, 56, 101, 110, 152, 1202)
#: GroupNorm groups in the ResNet: BatchNorm's running statistics are buffers, which vectorized ensemble training
#: (``training.stacked_forward``) cannot carry and which laplace-torch's curvature backends mishandle; GroupNorm
#: has none. 8 divides every stage width when ``width`` is a multiple of 8.
RESNET_GROUPS = 8


class ResNet(nn.Module):
    """torch-uncertainty's CIFAR-style ResNet (3×3 stem, no max-pool) with GroupNorm instead of BatchNorm.

    x (N, channels, H, W) → logits (N, C); ``.features(x)`` (N, F) pooled features, ``.linear`` the readout.
    Args: in_channels, out_features (C); width: stem channels (64 is the standard ResNet-18, 16 ResNet-20; must
    be a multiple of :data:`RESNET_GROUPS`); depth: one of :data:`RESNET_DEPTHS`; activation; w_std, b_std:
    weights ~ N(0, w_std²/fan_in) (standard parameterization, He-like for w_std≈√2), readout bias ~ N(0, b_std²);
    dropout: torch-uncertainty's dropout rate (in blocks and before the readout).
    """

    def __init__(self, in_channels: int, out_features: int, width: int = 64, depth: int = 18,
                 activation: str = "relu", w_std: float = 1.5, b_std: float = 0.05,
                 parameterization: str = "standard", dropout: float = 0.0):
        super().__init__()
        from functools import partial

        from torch_uncertainty.models import resnet

        if _parameterization(parameterization) is not Parameterization.STANDARD:
            raise ValueError("arch='resnet': parameterization must be 'standard' (torch-uncertainty layers)")
        if int(depth) not in RESNET_DEPTHS:
            raise ValueError(f"arch='resnet': depth must be one of {RESNET_DEPTHS} (ResNet depth), got {depth}")
        if int(width) < RESNET_GROUPS or int(width) % RESNET_GROUPS:
            raise ValueError(f"arch='resnet': width must be a positive multiple of {RESNET_GROUPS}, got {width}")
        base = 16 if int(depth) in (20, 44, 56, 110, 1202) else 64
        self.w_std, self.b_std = float(w_std), float(b_std)
        self.net = resnet(in_channels, out_features, int(depth), dropout_rate=float(dropout),
                          width_multiplier=int(width) / base, style="cifar", activation_fn=activation_fn(activation),
                          normalization_layer=partial(nn.GroupNorm, RESNET_GROUPS))
        self.reset_parameters()

    @property
    def linear(self) -> nn.Linear:
        return self.net.linear

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            for m in self.net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.normal_(generator=generator).mul_(self.w_std / math.sqrt(m.weight[0].numel()))
                    if m.bias is not None:
                        m.bias.normal_(generator=generator).mul_(self.b_std)
                elif isinstance(m, nn.GroupNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) pooled features (the readout's input)."""
        return self.net.feats_forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# -- model registry --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its factory and whether it accepts ``parameterization="ntk"``."""

    factory: Callable[..., nn.Module]
    ntk: bool = False


_MODELS: dict[str, ModelEntry] = {}
_ENTRY_POINTS_LOADED = False


def register_model(name: str, factory: Callable[..., nn.Module] | None = None, *, ntk: bool = False):
    """Register ``factory(feature_shape, num_classes, **options) -> nn.Module`` under ``name`` (also usable as a
    decorator: ``@register_model("mine")``). ``ntk=True`` declares that it accepts ``parameterization="ntk"``
    (math.md (a)). A name registered twice with different factories is an error."""
    if ":" in name or not name:
        raise ValueError(f"register_model: name must be non-empty without ':', got {name!r}")

    def add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        old = _MODELS.get(name)
        if old is not None and old.factory is not f and _qualname(old.factory) != _qualname(f):
            raise ValueError(f"model name {name!r} is registered twice: {_qualname(old.factory)} and {_qualname(f)}")
        _MODELS[name] = ModelEntry(f, bool(ntk))
        return f

    return add if factory is None else add(factory)


def _qualname(f: Callable) -> str:
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def available_models() -> list[str]:
    """Names of every registered model (entry points included), sorted."""
    global _ENTRY_POINTS_LOADED
    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()
    return sorted(_MODELS)


def model_entry(arch: str) -> ModelEntry:
    """The entry of a registered name, or of ``"package.module:factory"`` (imported; not NTK-parameterizable)."""
    if not isinstance(arch, str):
        raise ValueError(f"expected a model name {available_models()} or 'package.module:factory', got {arch!r}")
    if ":" in arch:
        module, _, attr = arch.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import model factory {arch!r}: {exc}") from None
        if not callable(factory):
            raise ValueError(f"model factory {arch!r} is not callable")
        return ModelEntry(factory, False)
    if arch not in available_models():
        raise ValueError(f"expected one of {available_models()} or 'package.module:factory', got {arch!r}")
    return _MODELS[arch]


def check_arch(value: str) -> str:
    """Check a model name or ``"package.module:factory"`` (importing it); return it unchanged."""
    model_entry(value)
    return value


def build_model(feature_shape: tuple[int, ...], num_classes: int, arch: str = "mlp", **options) -> nn.Module:
    """The model ``arch`` (registered name or ``"package.module:factory"``) for inputs of ``feature_shape`` and
    ``num_classes`` outputs; the factory gets the ``options`` its signature names. Refuses
    ``parameterization="ntk"`` for a model not registered with ``ntk=True`` and ``dropout > 0`` for a factory
    without a ``dropout`` argument."""
    entry = model_entry(arch)
    if options.get("parameterization", "standard") != "standard" and not entry.ntk:
        ntk_models = [k for k, e in _MODELS.items() if e.ntk]
        raise ValueError(f"arch {arch!r} is not NTK-parameterizable (registered with ntk=True: {ntk_models}); "
                         "the NTK modes need such a model")
    sig = inspect.signature(entry.factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        if options.get("dropout", 0.0) and "dropout" not in sig:
            raise ValueError(f"arch {arch!r}: the factory takes no dropout argument (mc_dropout needs one)")
        options = {k: v for k, v in options.items() if k in sig}
    model = entry.factory(tuple(feature_shape), int(num_classes), **options)
    if not isinstance(model, nn.Module):
        raise ValueError(f"arch {arch!r}: the factory returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def _image_channels(arch: str, feature_shape: tuple[int, ...]) -> int:
    if len(feature_shape) != 3:
        raise ValueError(f"arch={arch!r} needs image inputs (channels, H, W), got feature shape {feature_shape}")
    return feature_shape[0]


@register_model("mlp", ntk=True)
def _mlp(feature_shape: tuple[int, ...], num_classes: int, **options) -> MLP:
    """:class:`MLP` on flattened inputs."""
    return MLP(math.prod(feature_shape), num_classes, **options)


@register_model("cnn", ntk=True)
def _cnn(feature_shape: tuple[int, ...], num_classes: int, **options) -> CNN:
    """:class:`CNN` for (channels, H, W) images; ``width`` = channels."""
    return CNN(_image_channels("cnn", feature_shape), num_classes, **options)


@register_model("resnet")
def _resnet(feature_shape: tuple[int, ...], num_classes: int, **options) -> ResNet:
    """:class:`ResNet` (GroupNorm) for CIFAR-sized images; ``width`` = stem channels, ``depth`` = ResNet depth."""
    return ResNet(_image_channels("resnet", feature_shape), num_classes, **options)


class _Elementwise(nn.Module):
    """An :class:`Activation` as a module (for :func:`as_torch_layers`)."""

    def __init__(self, activation: Activation):
        super().__init__()
        self.activation = Activation(activation)
        self.fn = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _GlobalAvgPool(nn.Module):
    """(N, F, H, W) → (N, F) mean over the spatial axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def _linear_from(layer: Dense) -> nn.Linear:
    out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                    device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(layer.weight * layer.w_scale)
        if layer.bias is not None:
            out.bias.copy_(layer.bias * layer.b_scale)
    return out


def as_torch_layers(model: nn.Module) -> nn.Module:
    """The same function (eval mode: no dropout) built from ``torch.nn.Linear`` / ``Conv2d`` layers.

    Libraries that recognize layers by type (laplace-torch's last-layer search, curvlinops' KFAC) need them; the
    NTK-parameterization multipliers are folded into the weights. MLP/CNN → ``nn.Sequential`` whose last entry
    is the readout ``nn.Linear``; a :class:`ResNet` is returned as its torch-uncertainty network, any other model
    as itself (deep copies).
    """
    import copy

    if isinstance(model, ResNet):
        return copy.deepcopy(model.net).eval()
    layers: list[nn.Module] = []
    if isinstance(model, MLP):
        layers.append(nn.Flatten(1))
        for layer in model.layers[:-1]:
            layers += [_linear_from(layer), _Elementwise(model.activation)]
        layers.append(_linear_from(model.layers[-1]))
    elif isinstance(model, CNN):
        act = next(a for a, f in ACTIVATIONS.items() if f is model.phi)
        ntk = model.parameterization is Parameterization.NTK
        for conv in model.convs:
            c = copy.deepcopy(conv)
            with torch.no_grad():
                c.weight.mul_(model.w_std / math.sqrt(conv.weight[0].numel()) if ntk else 1.0)
                c.bias.mul_(model.b_std if ntk else 1.0)
            layers += [c, _Elementwise(act)]
        layers += [_GlobalAvgPool(), _linear_from(model.readout)]
    else:  # a model of the user's: already built from torch layers (laplace-torch finds its last nn.Linear)
        return copy.deepcopy(model).eval()
    return nn.Sequential(*layers).eval()
