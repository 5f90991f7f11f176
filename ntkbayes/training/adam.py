"""Minibatch Adam over S stacked members with per-member early stopping on validation NLL."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ntkbayes.training.core import (
    DEFAULT_EVAL_BATCH_SIZE,
    LossFn,
    Optimizer,
    Params,
    StackedFn,
    TrainResult,
    _as_device,
    _check_finite,
    _chunks,
    full_value_and_grad,
    make_loss,
    member_nll,
    num_members,
    predict_stacked,
)


class _EarlyStopping:
    """Per-member best validation NLL, its epoch and parameters, and the patience counters."""

    def __init__(self, leaves: Params, patience: int):
        s = num_members(leaves)
        self.best = {k: v.detach().clone() for k, v in leaves.items()}
        self.best_nll = torch.full((s,), math.inf, dtype=torch.float64)
        self.best_epoch = [0] * s
        self.since = torch.zeros(s, dtype=torch.long)
        self.stopped = torch.zeros(s, dtype=torch.bool)
        self.patience = int(patience)

    def update(self, epoch: int, nll: Tensor, leaves: Params) -> None:
        """Record epoch ``epoch``'s validation NLL (S,) (CPU float64); members that improved keep ``leaves``."""
        improved = (nll < self.best_nll) & ~self.stopped
        if improved.any():
            with torch.no_grad():
                m = improved.to(next(iter(leaves.values())).device)
                for k in self.best:
                    self.best[k][m] = leaves[k].detach()[m]
            self.best_nll = torch.where(improved, nll, self.best_nll)
            for k in improved.nonzero().flatten().tolist():
                self.best_epoch[k] = epoch
        self.since = torch.where(improved, torch.zeros_like(self.since), self.since + 1)
        self.stopped |= self.since >= self.patience


def _adam_epoch(loss: LossFn, leaves: Params, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, perm: Tensor,
                batch_size: int) -> Tensor:
    """One pass over the data in minibatches of rows ``perm`` (S, N) (member s its own order); (S,) mean loss."""
    s, n = perm.shape
    ep_loss = torch.zeros(s, dtype=torch.float64, device=x.device)
    for sl in _chunks(n, batch_size):
        idx = perm[:, sl]
        val_b = loss(leaves, x[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        val_b.sum().backward()
        opt.step()
        ep_loss += val_b.detach().double() * (sl.stop - sl.start) / n
    return ep_loss


def fit_adam(fn: StackedFn, params: Params, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None = None,
             *, loss: LossFn | None = None, weight_decay: float = 0.0, anchor: Params | None = None,
             label_smoothing: float = 0.0, lr: float = 1e-3, epochs: int = 100, batch_size: int = 128,
             patience: int = 10, seeds: Sequence[int] | None = None, eval_fn: StackedFn | None = None,
             eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> TrainResult:
    """Train S members with minibatch Adam, each on its own minibatch order, with early stopping on val NLL.

    Args:
        fn: stacked model function used for training. params: initial name → (S, ...).
        train: (x (N, ...), y (N,)). val: (x (M, ...), y (M,)) or None (no early stopping: final params).
        loss: per-member objective (S,); default :func:`make_loss` (fn, weight_decay, anchor, label_smoothing).
        lr, epochs, batch_size: Adam step size, maximum passes over the data, rows per step.
        patience: epochs without a val-NLL improvement after which a member stops (its best params are kept).
        seeds: per-member shuffling seeds (default 0..S−1). eval_fn: model for val NLL (default fn; MC dropout
            passes the dropout-free network).
    Returns:
        :class:`TrainResult`; ``report["converged"][s]`` is True when member s early-stopped.
    """
    s = num_members(params)
    x, y = _as_device(train, params)
    n = x.shape[0]
    loss = loss or make_loss(fn, weight_decay, anchor, label_smoothing)
    eval_fn = eval_fn or fn
    gens = [torch.Generator().manual_seed(int(k)) for k in (seeds if seeds is not None else range(s))]
    if len(gens) != s:
        raise ValueError(f"fit_adam: got {len(gens)} seeds for {s} members")
    xv, yv = _as_device(val, params) if val is not None else (None, None)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(list(leaves.values()), lr=lr)
    stopper = _EarlyStopping(leaves, patience)
    epochs_run = [0] * s
    hist = {"train_loss": [], "val_nll": []}
    for epoch in range(1, int(epochs) + 1):
        perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(x.device)  # (S, N)
        ep_loss = _adam_epoch(loss, leaves, opt, x, y, perm, max(1, min(int(batch_size), n)))
        # one device sync per epoch: a NaN in any step propagates into the epoch mean
        _check_finite(ep_loss, f"epoch {epoch}", f"lower lr (now {lr}) or raise weight_decay")
        for k in range(s):
            epochs_run[k] += int(not stopper.stopped[k])
        hist["train_loss"].append(ep_loss.tolist())
        if val is None:
            continue
        with torch.no_grad():
            nll = member_nll(predict_stacked(eval_fn, leaves, xv, eval_batch_size), yv).double().cpu()
        _check_finite(nll, f"epoch {epoch} (validation NLL)", f"lower lr (now {lr})")
        hist["val_nll"].append(nll.tolist())
        stopper.update(epoch, nll, leaves)
        if stopper.stopped.all():
            break
    final = stopper.best if val is not None else {k: v.detach() for k, v in leaves.items()}
    final_loss, grads = full_value_and_grad(loss, final, x, y, chunk_size=eval_batch_size)
    stopped = stopper.stopped.tolist()
    report = {
        "optimizer": Optimizer.ADAM.value,
        "members": s,
        "epochs_run": epochs_run,
        "best_epoch": stopper.best_epoch if val is not None else epochs_run,
        "best_val_nll": stopper.best_nll.tolist() if val is not None else [None] * s,
        "final_train_loss": final_loss.double().cpu().tolist(),
        "grad_norm": _grad_norm(grads).tolist(),
        "converged": stopped,
        "stop_reason": ["early_stopping" if st else "max_epochs" for st in stopped],
    }
    return TrainResult({k: v.detach().clone() for k, v in final.items()}, report, hist)


def _grad_norm(grads: Params) -> Tensor:
    return torch.sqrt(sum(g.double().pow(2).flatten(1).sum(1) for g in grads.values())).cpu()

