"""MAP baseline: one network in standard parameterization trained with cross-entropy and weight decay.

Objective (math.md §0): (1/N) Σ CE + (λ/2)‖θ‖² with λ = ``weight_decay``; the equivalent Bayesian model has prior
precision κ = λN, recorded in ``info_``. Early stopping on validation NLL (Adam) or full-batch L-BFGS to the
optimum. The network family, its parameters and the training code here are shared by the methods built on a
trained network (``deep_ensemble``, ``mc_dropout``, ``temperature``, ``laplace``): they subclass :class:`MAP`,
declare only the keywords they add (``**kwargs`` forwards the rest; ``Method.param_defaults`` merges them) and
get every option of the shared training loop (``label_smoothing`` included) without restating it.

The network is any model of ``ntkbayes.models``: a registered name (``"mlp"``, ``"cnn"``, ``"resnet"``, or one a
package registers through the ``ntkbayes.models`` entry point) or ``"package.module:factory"``, in standard
parameterization. Members are trained stacked (``torch.func``), so the model must be parameter-only (no
BatchNorm buffers); ``mc_dropout`` needs a factory with a ``dropout`` argument.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ntkbayes import training
from ntkbayes.methods.base import Method
from ntkbayes.models import Activation, build_model, check_arch
from ntkbayes.predictive import Predictive
from ntkbayes.seeding import derive_seed, member_seeds
from ntkbayes.training import DType, Optimizer

#: Hidden units per layer (channels for ``arch="cnn"``). 256 as in the MNIST-1D paper's MLP; wider changes
#: little and costs time on CPU.
DEFAULT_WIDTH = 256
#: Hidden nonlinearities L (math.md (a)); the MNIST-1D paper's MLP has two hidden layers.
DEFAULT_DEPTH = 2
#: σw: 1.5 matches the NTK ensemble's default (same function family at initialization; He init is √2 ≈ 1.41).
DEFAULT_W_STD = 1.5
#: σb, the NTK ensemble's default.
DEFAULT_B_STD = 0.05
# Adam settings, measured together on mnist1d with all 10 classes (3200 train / 800 validation / 1000 test, width
# 256, depth 2, batch 128, 300 epochs at most, seeds 0-2, test accuracy): the validation NLL has a first minimum
# after 10-20 epochs, rises while the network grows overconfident, and falls again once weight decay pulls the
# weights back; the best validation NLL (and accuracy) comes after 80-270 epochs. With λ = 1e-4 the second descent
# never beats the first minimum, so early stopping keeps the epoch-15 network (lr 1e-3, patience 20: 0.547;
# lr 1e-2, batch 100, λ 1e-4, no early stopping: 0.641 on seed 0).
#: λ of math.md §0 (= Adam's coupled weight_decay on the mean loss). 1e-3: lr 3e-3, patience 100 → 0.685, 0.681,
#: 0.673 (seeds 0-2); λ = 3e-3 gives 0.652 (seed 0, lr 1e-2, batch 100), 1e-4 see above.
DEFAULT_WEIGHT_DECAY = 1e-3
#: Adam step size: 3e-3 (above); 1e-2 does as well (0.671, 0.692, seeds 0-1), 1e-3 needs all 300 epochs (0.639).
DEFAULT_LR = 3e-3
#: Rows per Adam step (the MNIST-1D paper uses 100; 100 vs 128 is within seed noise here).
DEFAULT_BATCH_SIZE = 128
#: Epochs without validation-NLL improvement before a member stops (its best parameters are kept): long enough to
#: wait out the rise between the two NLL minima (patience 20: 0.606, 0.612; 50: 0.682, 0.681, 0.627 — seed 2 stops
#: at the first minimum; 100: 0.685, 0.681, 0.673).
DEFAULT_PATIENCE = 100
#: Maximum epochs: the best validation epoch on mnist1d comes at 80-270 (above); on the smaller offline datasets
#: early stopping ends training well before.
DEFAULT_EPOCHS = 300
#: L-BFGS iteration cap for ``optimizer="lbfgs"``.
DEFAULT_MAX_ITER = 1000

#: Training settings small enough for the contract test's tiny problem (seconds).
FAST_TRAINING = {"width": 16, "depth": 1, "epochs": 60, "patience": 5, "max_iter": 60}
#: Caps for ``ntkbayes run --dry-run``: every stage of fit and predict in about a second per cell on a CPU (8 is
#: also the narrowest ResNet: a multiple of its 8 GroupNorm groups).
DRY_RUN = {"width": 8, "epochs": 2, "patience": 1, "max_iter": 10, "batch_size": 64}
#: Bounds every MAP-family method checks (``Method.check_param``).
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "width": (1, None), "depth": (0, None), "w_std": (0.0, None), "b_std": (0.0, None), "weight_decay": (0.0, None),
    "label_smoothing": (0.0, 0.99), "lr": (0.0, None), "epochs": (1, None), "batch_size": (1, None),
    "patience": (1, None), "max_iter": (1, None)}


class MAP(Method):
    """One standard-parameterization network trained to the MAP of CE + weight decay.

    Args (defaults are the module constants above, each documented with why):
        width, depth, activation, w_std, b_std: network (``arch="mlp"``: width units × depth hidden layers;
            ``arch="cnn"``: width channels × depth conv layers; a model of the user's takes what it names).
        weight_decay: λ of (λ/2)‖θ‖² on the mean CE (prior precision κ = λN).
        label_smoothing: ε of the soft targets Y = (1−ε)·onehot + ε/C (math.md §0), in [0, 1).
        lr, epochs, batch_size, patience: Adam settings and early stopping on validation NLL.
        optimizer: :class:`~ntkbayes.training.Optimizer`: ``"adam"`` (minibatch, early stopping; also what
            ``"auto"`` means here) or ``"lbfgs"`` (full batch, to convergence; ``epochs`` is then ignored and
            ``max_iter`` applies).
        max_iter: L-BFGS iteration cap. arch: a model name of ``ntkbayes.models`` or ``"package.module:factory"``.
        dtype: :class:`~ntkbayes.training.DType` (``"auto"`` = float32).

    Predictive: S = 1 (softmax of the network's logits), with member logits.
    """

    name = "map"
    family = "map"
    test_params: ClassVar[dict[str, Any]] = FAST_TRAINING
    dry_run_params: ClassVar[dict[str, Any]] = DRY_RUN
    #: Weight decay only (8 trials; the family's subclasses inherit it): Adam's lr is a training-speed setting that
    #: early stopping on the validation NLL already adapts to, and tuning it beside λ halves the λ resolution.
    search_space: ClassVar[dict[str, list]] = {"weight_decay": [1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]}
    param_bounds = BOUNDS
    param_checks = {"arch": check_arch}

    def __init__(self, *, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH,
                 activation: Activation = Activation.RELU, w_std: float = DEFAULT_W_STD, b_std: float = DEFAULT_B_STD,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, label_smoothing: float = 0.0, lr: float = DEFAULT_LR,
                 epochs: int = DEFAULT_EPOCHS, batch_size: int = DEFAULT_BATCH_SIZE, patience: int = DEFAULT_PATIENCE,
                 optimizer: Optimizer = Optimizer.ADAM, max_iter: int = DEFAULT_MAX_ITER, arch: str = "mlp",
                 dtype: DType = DType.FLOAT32):
        self._store_params(locals())

    # -- shared by the subclasses ---------------------------------------------------------------------------------
    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of ``dtype``."""
        return training.torch_dtype(self.dtype)

    def _build(self, data, dropout: float = 0.0) -> nn.Module:
        """The network (C outputs) for ``data``'s feature shape, standard parameterization, on CPU."""
        return build_model(data.feature_shape, int(data.num_classes), arch=self.arch, width=int(self.width),
                           depth=int(self.depth), activation=Activation(self.activation).value, w_std=self.w_std,
                           b_std=self.b_std, parameterization="standard", dropout=dropout)

    def _train(self, data, seed: int, device: torch.device, members: int = 1, dropout: float = 0.0) -> None:
        """Train ``members`` networks together (vectorized); sets ``module_``, ``fn_``, ``params_`` (S, ...),
        ``train_report_`` and the common ``info_`` entries. Member k starts from ``member_seeds(seed)[k]`` (drawn
        in float64, then cast) and shuffles with ``derive_seed(seed, "batches", k)``."""
        dtype = self.torch_dtype
        module = self._build(data, dropout)
        seeds = member_seeds(seed, members)
        params = training.init_stacked(module, seeds, device, dtype)
        module = module.to(device=device, dtype=dtype)
        module.eval()
        self.module_ = module
        self.fn_ = training.stacked_forward(module)
        train_fn = self.fn_
        if dropout > 0:  # same parameters, dropout active: independent masks per member and row
            train_fn = training.stacked_forward(copy.deepcopy(module).train(), randomness="different")
        train = (data.train.x, data.train.y)
        val = (data.val.x, data.val.y)
        common = dict(weight_decay=float(self.weight_decay), label_smoothing=float(self.label_smoothing))
        # dropout masks under vmap come from the global RNG (no generator argument): seeded inside a fork
        with training.seeded_rng(derive_seed(seed, "dropout"), device):
            if Optimizer(self.optimizer) is Optimizer.LBFGS:
                result = training.fit_lbfgs(train_fn, params, train, val, **common, max_iter=int(self.max_iter))
            else:
                result = training.fit_adam(train_fn, params, train, val, **common, lr=float(self.lr),
                                           epochs=int(self.epochs), batch_size=int(self.batch_size),
                                           patience=int(self.patience), eval_fn=self.fn_,
                                           seeds=[derive_seed(seed, "batches", k) for k in range(members)])
        self.params_ = result.params
        self.train_report_ = result.report
        n = len(data.train)
        self.info_ = {
            "members": members,
            "member_seeds": seeds,
            "init_dtype": str(training.INIT_DTYPE).replace("torch.", ""),
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
