"""Vectorized training of S ensemble members at once over stacked parameters.

Every member's parameters carry a leading member axis S (``torch.func.stack_module_state`` layout); the forward
pass is ``torch.func.vmap`` over ``functional_call`` (design.md: "members trained together, vectorized"). The
objective per member is math.md §0's

    L_s(θ_s) = (1/B) Σ_i CE(softmax(f(x_i; θ_s)), Y_i) + (λ/2) ‖θ_s − θ_a,s‖²,      Y = (1−ε)·onehot + ε/C

(``weight_decay`` = λ; SGD/Adam ``weight_decay=λ`` on a mean loss is the same objective with anchor 0). Members do
not interact: the summed loss Σ_s L_s has per-member gradients, so

* **Adam** (elementwise) on stacked tensors equals S separate Adam runs; each member draws its own minibatch order
  from its own seed, and early stopping on validation NLL keeps each member's best parameters.
* **L-BFGS** (full batch) is written here batched: per-member histories, two-loop recursions, Armijo backtracking
  and convergence tests, so a member's trajectory is the one it would follow alone (``torch.optim.LBFGS`` on stacked
  tensors would couple members through its dot products and line search).

Model and loss are pluggable. A *stacked model function* ``fn(params, x) -> logits`` maps params (S, ...) per tensor
and inputs x (S, B, ...) to logits (S, B, C) (:func:`stacked_forward` builds one from a module; a linearized model
fits the same signature). A *loss* ``loss(params, x, y) -> (S,)`` must be a mean over the batch plus terms that do
not depend on the data (the penalty): full-batch values and gradients are then assembled exactly from chunks.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ntkbayes.training.adam import fit_adam
from ntkbayes.training.core import (
    DEFAULT_EVAL_BATCH_SIZE,
    INIT_DTYPE,
    DType,
    LossFn,
    NonFiniteLossError,
    Optimizer,
    Params,
    StackedFn,
    TrainResult,
    concat_results,
    full_value_and_grad,
    init_stacked,
    make_loss,
    member,
    member_nll,
    num_members,
    penalty,
    predict_stacked,
    seeded_rng,
    soft_targets,
    stacked_forward,
    torch_dtype,
)
from ntkbayes.training.lbfgs import (
    ARMIJO_C1,
    DEFAULT_HISTORY_SIZE,
    MAX_BACKTRACKS,
    STALL_ITERATIONS,
    fit_lbfgs,
)

__all__ = ["ARMIJO_C1", "DEFAULT_EVAL_BATCH_SIZE", "DEFAULT_HISTORY_SIZE", "INIT_DTYPE", "MAX_BACKTRACKS",
           "STALL_ITERATIONS", "DType", "LossFn", "NonFiniteLossError", "Optimizer", "Params", "StackedFn",
           "TrainResult", "concat_results", "fit", "fit_adam", "fit_lbfgs", "full_value_and_grad", "init_stacked",
           "make_loss", "member", "member_nll", "num_members", "penalty", "predict_stacked", "seeded_rng",
           "soft_targets", "stacked_forward", "torch_dtype"]


def fit(fn: StackedFn, params: Params, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None = None,
        *, optimizer: str | Optimizer = Optimizer.ADAM, **kwargs: Any) -> TrainResult:
    """Dispatch to :func:`fit_adam` or :func:`fit_lbfgs` by ``optimizer`` (keyword arguments pass through)."""
    try:
        opt = Optimizer(optimizer)
    except ValueError:
        opt = None
    if opt not in (Optimizer.ADAM, Optimizer.LBFGS):
        raise ValueError(f"optimizer: expected 'adam' or 'lbfgs', got {optimizer!r}")
    return (fit_adam if opt is Optimizer.ADAM else fit_lbfgs)(fn, params, train, val, **kwargs)
