"""Building blocks of vectorized training (the package docstring of :mod:`ntkbayes.training` says what they are):
the option enums, stacked model functions, initialization, the loss of math.md §0 and full-batch evaluation."""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

Params = dict[str, Tensor]
StackedFn = Callable[[Params, Tensor], Tensor]
"""(params: name → (S, ...), x: (S, B, ...)) → logits (S, B, C)."""
LossFn = Callable[[Params, Tensor, Tensor], Tensor]
"""(params: name → (S, ...), x: (S, B, ...), y: (S, B)) → per-member loss (S,)."""

#: Rows per forward pass when evaluating on a whole split: bounds activation memory (S·B·width floats) while
#: keeping matmuls large enough to run near peak.
DEFAULT_EVAL_BATCH_SIZE = 2048


class Optimizer(str, Enum):
    """Training algorithm of a method that trains networks."""

    ADAM = "adam"
    """Minibatch Adam with per-member early stopping on validation NLL (any data size)."""
    LBFGS = "lbfgs"
    """Full-batch L-BFGS run to convergence (small data; the regularized optimum itself)."""
    AUTO = "auto"
    """The method's choice: the NTK ensemble uses L-BFGS when the full batch fits in memory, else Adam; the MAP
    family uses Adam."""


class DType(str, Enum):
    """Floating-point precision of parameters and computation. Initial parameters are drawn in float64 whatever
    the choice (:func:`init_stacked`), so a seed gives the same θ0 in every precision."""

    FLOAT32 = "float32"
    """What GPUs run fast; the default for trained networks."""
    FLOAT64 = "float64"
    """Tests and tight comparisons with kernel solutions."""
    AUTO = "auto"
    """The method's choice: the NTK ensemble uses float32 for trained modes and float64 for kernel solves (Newton
    with small λ needs it); the MAP family uses float32."""


#: Precision in which initial parameters are drawn (then cast to the working dtype): one seed, one θ0.
INIT_DTYPE = torch.float64


def torch_dtype(dtype: str | DType, auto: torch.dtype = torch.float32) -> torch.dtype:
    """The torch dtype of a :class:`DType` (``auto`` for ``DType.AUTO``)."""
    choice = DType(dtype)
    if choice is DType.AUTO:
        return auto
    return torch.float64 if choice is DType.FLOAT64 else torch.float32


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf (diverged); the message names the members and the step."""


@dataclass
class TrainResult:
    """Trained stacked parameters and what happened.

    Attributes:
        params: name → (S, ...) trained parameters (the best-validation ones under early stopping), detached.
        report: JSON-serializable facts, lists indexed by member: ``optimizer``, ``epochs_run`` or ``iterations``,
            ``best_val_nll``, ``final_train_loss``, ``grad_norm`` (full-batch ‖∇L_s‖₂ at the returned params),
            ``converged`` flags and ``stop_reason``.
        history: per epoch / iteration lists: ``train_loss`` (S values each) and ``val_nll`` (S values each).
    """

    params: Params
    report: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)


# -- building blocks -------------------------------------------------------------------------------------------
def stacked_forward(module: nn.Module, randomness: str = "error") -> StackedFn:
    """Stacked model function of ``module``: vmap of ``functional_call`` over the member axis.

    ``randomness="different"`` lets dropout draw independent masks per member (from the global RNG).
    Returns ``fn(params (S, ...), x (S, B, ...)) -> logits (S, B, C)``.
    """
    if len(list(module.buffers())):
        raise ValueError(f"stacked_forward: module {type(module).__name__} has buffers (e.g. BatchNorm); "
                         "only parameter-only modules can be stacked")

    def single(p: Params, x: Tensor) -> Tensor:
        return functional_call(module, p, (x,))

    return vmap(single, in_dims=(0, 0), randomness=randomness)


def init_stacked(module: nn.Module, seeds: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> Params:
    """Stacked initial parameters name → (S, ...): member s drawn on a float64 CPU copy of ``module`` from seed
    ``seeds[s]``, then cast to ``dtype`` and moved to ``device``. One seed gives one θ0 on every device and in
    every dtype (up to the cast's rounding); ``module`` itself is not changed.

    A module with ``reset_parameters(generator)`` (the models of ``ntkbayes.models``) draws from a generator; any
    other (a user's model) re-initializes each submodule with a ``reset_parameters()`` from the global RNG seeded
    inside ``torch.random.fork_rng``, so the caller's RNG state is untouched.
    """
    ref = copy.deepcopy(module).to(device="cpu", dtype=INIT_DTYPE)
    members = []
    for s in seeds:
        _reset(ref, int(s))
        members.append({k: v.detach().clone() for k, v in ref.named_parameters()})
    return {k: torch.stack([m[k] for m in members]).to(device=device, dtype=dtype) for k in members[0]}


def _reset(module: nn.Module, seed: int) -> None:
    reset = getattr(module, "reset_parameters", None)
    if reset is not None and "generator" in inspect.signature(reset).parameters:
        reset(torch.Generator().manual_seed(seed))
        return
    layers = [m for m in module.modules() if callable(getattr(m, "reset_parameters", None))]
    if not layers:
        raise ValueError(f"init_stacked: {type(module).__name__} has no reset_parameters; give it "
                         "reset_parameters(generator) or build it from torch layers")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in layers:
            m.reset_parameters()


def member(params: Params, s: int) -> Params:
    """Parameters of member ``s`` (no member axis)."""
    return {k: v[s] for k, v in params.items()}


def num_members(params: Mapping[str, Tensor]) -> int:
    """S, checked consistent over tensors."""
    sizes = {int(v.shape[0]) for v in params.values()}
    if len(sizes) != 1:
        raise ValueError(f"stacked params: leading (member) axis differs between tensors: {sorted(sizes)}")
    return sizes.pop()


def soft_targets(y: Tensor, num_classes: int, label_smoothing: float, dtype: torch.dtype) -> Tensor:
    """Y (..., C) = (1 − ε)·onehot(y) + ε/C (math.md §0)."""
    onehot = nn.functional.one_hot(y, num_classes).to(dtype)
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


def penalty(params: Params, anchor: Params | None) -> Tensor:
    """(S,) float64 ½‖θ_s − θ_a,s‖² summed over tensors (anchor None = zero)."""
    total = 0.0
    for k, v in params.items():
        d = v if anchor is None else v - anchor[k]
        total = total + d.pow(2).flatten(1).sum(1, dtype=torch.float64)
    return 0.5 * total


def make_loss(fn: StackedFn, weight_decay: float = 0.0, anchor: Params | None = None,
              label_smoothing: float = 0.0) -> LossFn:
    """The objective of math.md §0 per member: mean CE (soft targets) + (λ/2)‖θ − θ_a‖², returned as (S,).

    Args:
        fn: stacked model function. weight_decay: λ. anchor: name → (S, ...) θ_a (None = 0).
        label_smoothing: ε in [0, 1).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay: expected ≥ 0, got {weight_decay}")

    def loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
        logits = fn(params, x)  # (S, B, C)
        logp = torch.log_softmax(logits.double(), -1)  # float64 accumulation: the loss resolves small changes
        if label_smoothing == 0.0:
            ce = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1)
        else:
            targets = soft_targets(y, logits.shape[-1], label_smoothing, logp.dtype)
            ce = -(targets * logp).sum(-1).mean(-1)
        if weight_decay == 0.0:
            return ce
        return ce + weight_decay * penalty(params, anchor)  # math.md §0: λ/2 ‖θ − θ_a‖²

    return loss


def _expand(x: Tensor, s: int) -> Tensor:
    return x.unsqueeze(0).expand(s, *x.shape)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for a in range(0, n, size):
        yield slice(a, min(a + size, n))


@torch.no_grad()
def predict_stacked(fn: StackedFn, params: Params, x: Tensor,
                    batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> Tensor:
    """Logits (S, N, C) of every member on shared inputs x (N, ...), computed in batches of ``batch_size`` rows."""
    s = num_members(params)
    out = [fn(params, _expand(x[sl], s)) for sl in _chunks(x.shape[0], max(1, int(batch_size)))]
    return torch.cat(out, 1)


def member_nll(logits: Tensor, y: Tensor) -> Tensor:
    """(S,) mean negative log-likelihood of labels y (N,) under each member's logits (S, N, C)."""
    logp = torch.log_softmax(logits, -1)
    return -logp.gather(-1, _expand(y, logits.shape[0]).unsqueeze(-1)).squeeze(-1).mean(-1)


def full_value_and_grad(loss: LossFn, params: Params, x: Tensor, y: Tensor,
                        chunk_size: int | None = None) -> tuple[Tensor, Params]:
    """Full-batch per-member loss (S,) float64 and gradients name → (S, ...), assembled from chunks of rows.

    Exact when ``loss`` is a batch mean plus data-independent terms: Σ_c (B_c/N)·L(chunk c) = L(all).
    """
    s, n = num_members(params), x.shape[0]
    chunk = n if not chunk_size else int(chunk_size)
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    total = torch.zeros(s, dtype=torch.float64, device=x.device)
    grads = {k: torch.zeros_like(v) for k, v in params.items()}
    for sl in _chunks(n, chunk):
        w = (sl.stop - sl.start) / n
        val = loss(leaves, _expand(x[sl], s), _expand(y[sl], s))
        g = torch.autograd.grad(val.sum() * w, list(leaves.values()))
        total += w * val.detach().double()
        for k, gk in zip(leaves, g):
            grads[k] += gk
    return total, grads


def _check_finite(values: Tensor, where: str, hint: str) -> None:
    bad = ~torch.isfinite(values)
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        raise NonFiniteLossError(f"training diverged: non-finite loss for member(s) {idx} at {where}; {hint}")


def _as_device(train: tuple[Tensor, Tensor], params: Params) -> tuple[Tensor, Tensor]:
    ref = next(iter(params.values()))
    x, y = train
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"training data: x has {x.shape[0]} rows and y has {y.shape[0]}; expected equal, > 0")
    return x.to(device=ref.device, dtype=ref.dtype), y.to(device=ref.device, dtype=torch.long)


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed the global torch RNGs (CPU and ``device``) inside the block and restore them afterwards; used where
    torch draws from the global RNG (dropout under vmap, laplace-torch's samplers)."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield



def concat_results(results: list[TrainResult]) -> TrainResult:
    """One :class:`TrainResult` for members trained in groups (in order): parameters and per-member report lists
    concatenated, ``members`` and ``function_calls`` summed; the history is per group (``history["groups"]``)."""
    if len(results) == 1:
        return results[0]
    params = {k: torch.cat([r.params[k] for r in results]) for k in results[0].params}
    report = dict(results[0].report)
    for key, value in report.items():
        if isinstance(value, list):
            report[key] = [v for r in results for v in r.report[key]]
        elif key in ("members", "function_calls"):
            report[key] = sum(r.report[key] for r in results)
    return TrainResult(params, report, {"groups": [r.history for r in results]})
