"""MAP baseline: one network in standard parameterization trained with cross-entropy and weight decay.

Objective (math.md §0): (1/N) Σ CE + (λ/2)‖θ‖² with λ = ``weight_decay``; the equivalent Bayesian model has prior
precision κ = λN, recorded in ``info_``. Early stopping on validation NLL (Adam) or full-batch L-BFGS to the
optimum. The network family and the training code here are shared by the methods built on a trained network
(``deep_ensemble``, ``mc_dropout``, ``temperature``, ``laplace``): they subclass :class:`MAP`.
"""

from __future__ import annotations

import copy
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from ntkbayes import training
from ntkbayes.methods.base import Method
from ntkbayes.models import Activation, build_model
from ntkbayes.predictive import Predictive

#: Hidden units per layer (channels for ``arch="cnn"``). 256 reaches the MNIST-1D paper's MLP accuracy (68 %) on
#: mnist1d with all 10 classes; wider changes little and costs time on CPU.
DEFAULT_WIDTH = 256
#: Hidden nonlinearities L (math.md (a)); the MNIST-1D paper's MLP has two hidden layers.
DEFAULT_DEPTH = 2
#: σw: 1.5 matches the NTK ensemble's default (same function family at initialization; He init is √2 ≈ 1.41).
DEFAULT_W_STD = 1.5
#: σb, the NTK ensemble's default.
DEFAULT_B_STD = 0.05
#: λ of math.md §0 (= Adam's coupled weight_decay on the mean loss). Measured on mnist1d: 1e-4 … 1e-3 give the same
#: accuracy; 1e-4 is the usual light regularization that early stopping complements.
DEFAULT_WEIGHT_DECAY = 1e-4
#: Adam step size (the standard default; stable for these MLPs at batch 128).
DEFAULT_LR = 1e-3
#: Maximum epochs; early stopping ends training well before on every offline dataset.
DEFAULT_EPOCHS = 300
#: Rows per Adam step.
DEFAULT_BATCH_SIZE = 128
#: Epochs without validation-NLL improvement before a member stops (its best parameters are kept).
DEFAULT_PATIENCE = 20
#: L-BFGS iteration cap for ``optimizer="lbfgs"``.
DEFAULT_MAX_ITER = 1000


class Arch(str, Enum):
    """Network family."""

    MLP = "mlp"
    """:class:`ntkbayes.models.MLP` (inputs flattened)."""
    CNN = "cnn"
    """:class:`ntkbayes.models.CNN` for (channels, H, W) images; ``width`` = channels."""
    RESNET = "resnet"
    """:class:`ntkbayes.models.ResNet` (torch-uncertainty, GroupNorm) for CIFAR-sized images; ``width`` = stem
    channels (64 for the standard ResNet-18), ``depth`` = ResNet depth (18, 20, 34, ...)."""


class DType(str, Enum):
    """Floating-point precision of parameters and computation."""

    FLOAT32 = "float32"
    """Default: what GPUs run fast."""
    FLOAT64 = "float64"
    """For tests and tight comparisons with kernel solutions."""


def enum_param(enum: type[Enum], value: Any, param: str) -> Any:
    """``enum(value)`` with a one-line ValueError naming the parameter and the choices."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum)
        raise ValueError(f"{param}: expected one of {choices}, got {value!r}") from None


def member_seeds(seed: int, members: int) -> list[int]:
    """Initialization seed of each member: seed·1000 + k (member k of seed s never collides with another cell's)."""
    return [int(seed) * 1000 + k for k in range(members)]


class MAP(Method):
    """One standard-parameterization network trained to the MAP of CE + weight decay.

    Args (defaults are the module constants above, each documented with why):
        width, depth, activation, w_std, b_std: network (``arch="mlp"``: width units × depth hidden layers;
            ``arch="cnn"``: width channels × depth conv layers).
        weight_decay: λ of (λ/2)‖θ‖² on the mean CE (prior precision κ = λN).
        lr, epochs, batch_size, patience: Adam settings and early stopping on validation NLL.
        optimizer: ``"adam"`` (minibatch, early stopping) or ``"lbfgs"`` (full batch, to convergence;
            ``epochs`` is then ignored and ``max_iter`` applies).
        max_iter: L-BFGS iteration cap. arch: ``"mlp"``, ``"cnn"`` or ``"resnet"``.
        dtype: ``"float32"`` or ``"float64"``.

    Predictive: S = 1 (softmax of the network's logits).
    """

    name = "map"

    def __init__(self, *, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH, activation: str = "relu",
                 w_std: float = DEFAULT_W_STD, b_std: float = DEFAULT_B_STD,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                 batch_size: int = DEFAULT_BATCH_SIZE, patience: int = DEFAULT_PATIENCE, optimizer: str = "adam",
                 max_iter: int = DEFAULT_MAX_ITER, arch: str = "mlp", dtype: str = "float32"):
        self.width = width
        self.depth = depth
        self.activation = activation
        self.w_std = w_std
        self.b_std = b_std
        self.weight_decay = weight_decay
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.optimizer = optimizer
        self.max_iter = max_iter
        self.arch = arch
        self.dtype = dtype

    # -- shared by the subclasses ---------------------------------------------------------------------------------
    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of ``dtype``."""
        return torch.float64 if enum_param(DType, self.dtype, "dtype") is DType.FLOAT64 else torch.float32

    def _build(self, data, dropout: float = 0.0) -> nn.Module:
        """The network (C outputs) for ``data``'s feature shape, standard parameterization, on CPU."""
        enum_param(Activation, self.activation, "activation")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected ≥ 0, got {self.weight_decay}")
        return build_model(data.feature_shape, int(data.num_classes),
                           arch=enum_param(Arch, self.arch, "arch").value, width=int(self.width),
                           depth=int(self.depth), activation=self.activation, w_std=self.w_std, b_std=self.b_std,
                           parameterization="standard", dropout=dropout)

    def _train(self, data, seed: int, device: torch.device, members: int = 1, dropout: float = 0.0) -> None:
        """Train ``members`` networks together (vectorized); sets ``module_``, ``fn_``, ``params_`` (S, ...),
        ``train_report_`` and the common ``info_`` entries."""
        dtype = self.torch_dtype
        module = self._build(data, dropout)
        params = training.init_stacked(module, member_seeds(seed, members), device, dtype)
        module = module.to(device=device, dtype=dtype)
        module.eval()
        self.module_ = module
        self.fn_ = training.stacked_forward(module)
        train_fn = self.fn_
        if dropout > 0:  # same parameters, dropout active: independent masks per member and row
            train_fn = training.stacked_forward(copy.deepcopy(module).train(), randomness="different")
        train = (data.train.x, data.train.y)
        val = (data.val.x, data.val.y)
        opt = enum_param(training.Optimizer, self.optimizer, "optimizer")
        with training.seeded_rng(seed, device):  # dropout masks come from the global RNG
            if opt is training.Optimizer.ADAM:
                result = training.fit_adam(train_fn, params, train, val, weight_decay=self.weight_decay,
                                           lr=self.lr, epochs=int(self.epochs), batch_size=int(self.batch_size),
                                           patience=int(self.patience), seeds=member_seeds(seed, members),
                                           eval_fn=self.fn_)
            else:
                result = training.fit_lbfgs(train_fn, params, train, val, weight_decay=self.weight_decay,
                                            max_iter=int(self.max_iter))
        self.params_ = result.params
        self.train_report_ = result.report
        n = len(data.train)
        self.info_ = {
            "members": members,
            "num_params": int(sum(v[0].numel() for v in self.params_.values())),
            "weight_decay": float(self.weight_decay),
            "prior_precision": float(self.weight_decay) * n,  # κ = λN, math.md §0
            "num_train": n,
            "training": result.report,
        }

    def _logits(self, x: Tensor) -> Tensor:
        """(S, N, C) logits of the trained members on x (N, ...)."""
        x = x.to(device=self.device_, dtype=self.torch_dtype)
        return training.predict_stacked(self.fn_, self.params_, x)

    # -- Method API ---------------------------------------------------------------------------------------------
    def _fit(self, data, seed: int, device: torch.device) -> None:
        self._train(data, seed, device, members=1)

    def _predict(self, x: Tensor) -> Predictive:
        return Predictive.from_logits(self._logits(x))
