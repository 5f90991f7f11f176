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

import contextlib
import math
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
#: L-BFGS history length: 10 pairs is the usual choice (Nocedal & Wright §7.2; torch.optim.LBFGS uses 100, which
#: costs 2·100·S·P floats for little gain on these smooth objectives).
DEFAULT_HISTORY_SIZE = 10
#: Armijo sufficient-decrease constant (Nocedal & Wright eq. 3.4, c1 = 1e-4).
ARMIJO_C1 = 1e-4
#: Maximum halvings of the step in one line search before the member is declared stuck.
MAX_BACKTRACKS = 30
#: L-BFGS "loss_change" stop: the relative loss change must stay below ``tol_change`` for this many consecutive
#: iterations (one short step alone, e.g. after a poor quasi-Newton direction, does not end training).
STALL_ITERATIONS = 3


class Optimizer(str, Enum):
    """Training algorithm."""

    ADAM = "adam"
    """Minibatch Adam with per-member early stopping on validation NLL (any data size)."""
    LBFGS = "lbfgs"
    """Full-batch L-BFGS run to convergence (small data; the regularized optimum itself)."""


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
    """Stacked initial parameters name → (S, ...), member s drawn by ``module.reset_parameters(generator)`` with a
    CPU generator seeded ``seeds[s]`` (identical on every device)."""
    members = []
    for s in seeds:
        module.reset_parameters(torch.Generator().manual_seed(int(s)))
        members.append({k: v.detach().clone() for k, v in module.named_parameters()})
    return {k: torch.stack([m[k] for m in members]).to(device=device, dtype=dtype) for k in members[0]}


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


# -- minibatch Adam with early stopping --------------------------------------------------------------------------
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
    if val is not None:
        xv, yv = _as_device(val, params)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(list(leaves.values()), lr=lr)
    bs = max(1, min(int(batch_size), n))
    best = {k: v.detach().clone() for k, v in leaves.items()}
    best_nll = torch.full((s,), math.inf, dtype=torch.float64)
    best_epoch = [0] * s
    since = torch.zeros(s, dtype=torch.long)
    stopped = torch.zeros(s, dtype=torch.bool)
    epochs_run = [0] * s
    hist = {"train_loss": [], "val_nll": []}
    dev = x.device
    for epoch in range(1, int(epochs) + 1):
        perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)  # (S, N)
        ep_loss = torch.zeros(s, dtype=torch.float64, device=dev)
        for sl in _chunks(n, bs):
            idx = perm[:, sl]
            val_b = loss(leaves, x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            val_b.sum().backward()
            opt.step()
            ep_loss += val_b.detach().double() * (sl.stop - sl.start) / n
        # one device sync per epoch: a NaN in any step propagates into the epoch mean
        _check_finite(ep_loss, f"epoch {epoch}", f"lower lr (now {lr}) or raise weight_decay")
        for k in range(s):
            epochs_run[k] += int(not stopped[k])
        hist["train_loss"].append(ep_loss.tolist())
        if val is None:
            continue
        with torch.no_grad():
            nll = member_nll(predict_stacked(eval_fn, leaves, xv, eval_batch_size), yv).double().cpu()
        _check_finite(nll, f"epoch {epoch} (validation NLL)", f"lower lr (now {lr})")
        hist["val_nll"].append(nll.tolist())
        improved = (nll < best_nll) & ~stopped
        if improved.any():
            with torch.no_grad():
                m = improved.to(dev)
                for k in best:
                    best[k][m] = leaves[k].detach()[m]
            best_nll = torch.where(improved, nll, best_nll)
            for k in improved.nonzero().flatten().tolist():
                best_epoch[k] = epoch
        since = torch.where(improved, torch.zeros_like(since), since + 1)
        stopped |= since >= patience
        if stopped.all():
            break
    final = best if val is not None else {k: v.detach() for k, v in leaves.items()}
    final_loss, grads = full_value_and_grad(loss, final, x, y, chunk_size=eval_batch_size)
    report = {
        "optimizer": Optimizer.ADAM.value,
        "members": s,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch if val is not None else epochs_run,
        "best_val_nll": best_nll.tolist() if val is not None else [None] * s,
        "final_train_loss": final_loss.double().cpu().tolist(),
        "grad_norm": _grad_norm(grads).tolist(),
        "converged": stopped.tolist(),
        "stop_reason": ["early_stopping" if st else "max_epochs" for st in stopped.tolist()],
    }
    return TrainResult({k: v.detach().clone() for k, v in final.items()}, report, hist)


def _grad_norm(grads: Params) -> Tensor:
    return torch.sqrt(sum(g.double().pow(2).flatten(1).sum(1) for g in grads.values())).cpu()


# -- full-batch L-BFGS ---------------------------------------------------------------------------------------------
def _flat(params: Params) -> Tensor:
    s = num_members(params)
    return torch.cat([v.reshape(s, -1) for v in params.values()], 1)


def _unflat(flat: Tensor, like: Params) -> Params:
    """Views of ``flat`` (S, P) shaped like ``like`` (no copies, so gradients flow straight into ``flat``)."""
    out, a = {}, 0
    for k, v in like.items():
        size = v[0].numel()
        out[k] = flat[:, a:a + size].reshape(v.shape)
        a += size
    return out


def _flat_value_and_grad(loss: LossFn, flat: Tensor, like: Params, x: Tensor, y: Tensor,
                         chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """Full-batch loss (S,) float64 and gradient (S, P) at flat parameters (S, P), from chunks of rows.

    The parameter tensors are views of ``flat`` made leaves (no copies); their gradients are concatenated once
    (differentiating through views of one leaf would make autograd write each gradient into a full-size zero
    tensor).
    """
    s, n = flat.shape[0], x.shape[0]
    chunk = n if not chunk_size else int(chunk_size)
    params = {k: v.detach().requires_grad_(True) for k, v in _unflat(flat.detach(), like).items()}
    leaves = list(params.values())
    total = torch.zeros(s, dtype=torch.float64, device=flat.device)
    grad = None
    for sl in _chunks(n, chunk):
        w = (sl.stop - sl.start) / n
        val = loss(params, _expand(x[sl], s), _expand(y[sl], s))
        g = torch.cat([gk.reshape(s, -1) for gk in torch.autograd.grad(val.sum() * w, leaves)], 1)
        total += w * val.detach().double()
        grad = g if grad is None else grad.add_(g)
    return total, grad


def fit_lbfgs(fn: StackedFn, params: Params, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None = None,
              *, loss: LossFn | None = None, weight_decay: float = 0.0, anchor: Params | None = None,
              label_smoothing: float = 0.0, max_iter: int = 500, history_size: int = DEFAULT_HISTORY_SIZE,
              tol_grad: float = 1e-6, tol_change: float = 1e-10, chunk_size: int | None = None,
              eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> TrainResult:
    """Full-batch L-BFGS, batched over S independent members, run until each member converges.

    Per member s (Nocedal & Wright Alg. 7.4/7.5): direction from its own two-loop recursion over the pairs of its
    last ``history_size`` iterations (a pair with yᵀs ≤ 1e-10 gets ρ = 0, i.e. is skipped, so every member's
    recursion reads the same slots of one shared (S, P) tensor per slot: no gathers), Armijo backtracking from
    step 1 (first step min(1, 1/‖g‖₁)). Member s stops when ‖g‖_∞ ≤ ``tol_grad`` ("grad"), when the loss
    changes by at most ``tol_change``·max(1, |L|) in ``STALL_ITERATIONS`` consecutive iterations ("loss_change"),
    when no step of the line search decreases the loss ("line_search") or after ``max_iter`` iterations
    ("max_iter", not converged). Stopped members are frozen. Every decision of member s depends on its own
    quantities only, so its trajectory is the one it follows when trained alone (tested). Losses are accumulated
    in float64 whatever the parameter dtype, so float32 training resolves loss changes down to the float32
    rounding of the logits rather than of the sum.

    Args:
        fn, params, train, val, loss, weight_decay, anchor, label_smoothing: as :func:`fit_adam`; ``val`` is only
            scored at the end (no early stopping: the regularized optimum is the target).
        chunk_size: rows per forward pass when assembling the full-batch loss (None = all at once).
    Returns:
        :class:`TrainResult`; ``report`` holds per member ``iterations``, ``evaluations`` (function/gradient
        evaluations, line-search trials included), ``grad_max`` (‖g‖_∞ reached), ``converged`` and
        ``stop_reason``, and ``function_calls`` (stacked evaluations of all S members: the compute spent).
    """
    s = num_members(params)
    x, y = _as_device(train, params)
    like = {k: v.detach() for k, v in params.items()}
    m = int(history_size)
    xk = _flat(like).clone()
    lam, flat_anchor = 0.0, None
    if loss is None:  # the penalty and its gradient λ(θ − θ_a) in closed form on the flat vector (no autograd)
        loss = make_loss(fn, 0.0, None, label_smoothing)
        lam = float(weight_decay)
        if lam < 0:
            raise ValueError(f"weight_decay: expected ≥ 0, got {weight_decay}")
        flat_anchor = _flat({k: anchor[k] for k in like}).to(xk) if anchor is not None else None

    def value_grad(flat: Tensor) -> tuple[Tensor, Tensor]:
        f, g = _flat_value_and_grad(loss, flat, like, x, y, chunk_size)
        if lam > 0:  # math.md §0: (λ/2)‖θ − θ_a‖²
            diff = flat if flat_anchor is None else flat - flat_anchor
            f = f + 0.5 * lam * torch.linalg.vecdot(diff, diff).double()
            g.add_(diff, alpha=lam)
        return f, g

    f, g = value_grad(xk)
    _check_finite(f, "initialization", "check the inputs and the initial parameters")
    dtype, dev = xk.dtype, xk.device
    hs: list[Tensor] = []                                       # newest last: s_k (S, P), y_k (S, P), ρ_k (S,)
    hy: list[Tensor] = []
    hrho: list[Tensor] = []
    first = torch.ones(s, dtype=torch.bool, device=dev)        # no pair accepted yet
    gamma = torch.ones(s, dtype=dtype, device=dev)
    active = torch.ones(s, dtype=torch.bool, device=dev)
    iters = torch.zeros(s, dtype=torch.long, device=dev)
    evals = torch.ones(s, dtype=torch.long, device=dev)
    calls = 1                                                   # value_grad calls (each evaluates all S members)
    stall = torch.zeros(s, dtype=torch.long, device=dev)
    reason = ["max_iter"] * s
    hist = {"train_loss": [f.cpu().tolist()], "val_nll": []}

    def stop(mask: Tensor, why: str) -> None:
        for k in (mask & active).nonzero().flatten().tolist():
            reason[k] = why
        active.mul_(~mask)

    stop(g.abs().amax(1) <= tol_grad, "grad")
    for _ in range(int(max_iter)):
        if not active.any():
            break
        q = g.clone()                                           # two-loop recursion, newest pair first
        alphas = []
        for sk, yk, rho in zip(reversed(hs), reversed(hy), reversed(hrho)):
            a = rho * torch.linalg.vecdot(sk, q)
            q.addcmul_(yk, a[:, None], value=-1.0)
            alphas.append(a)
        r = q.mul_(gamma[:, None])
        for sk, yk, rho, a in zip(hs, hy, hrho, reversed(alphas)):
            beta = rho * torch.linalg.vecdot(yk, r)
            r.addcmul_(sk, (a - beta)[:, None])
        d = r.neg_().mul_(active[:, None])
        gtd = torch.linalg.vecdot(g, d)
        uphill = active & (gtd >= 0)  # numerical trouble: fall back to steepest descent
        if uphill.any():
            d[uphill] = -g[uphill]
            gtd = torch.linalg.vecdot(g, d)
        t = torch.where(first, (1.0 / g.abs().sum(1).clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(gamma))
        t = t * active
        trying = active.clone()
        for _ls in range(MAX_BACKTRACKS):
            f_new, g_new = value_grad(xk + t[:, None] * d)
            evals += trying.long()
            calls += 1
            ok = (f_new <= f + ARMIJO_C1 * t.double() * gtd.double()) | ~active
            if ok.all():
                break
            trying = ~ok
            t = torch.where(ok, t, 0.5 * t)
        stop(~ok, "line_search")
        step = t[:, None] * d * active[:, None]
        f_new = torch.where(active, f_new, f)
        g_new = torch.where(active[:, None], g_new, g)
        _check_finite(f_new, f"L-BFGS iteration {int(iters.max()) + 1}", "raise weight_decay or rescale inputs")
        yv = g_new - g                                          # curvature pair, kept when yᵀs > 0
        ys = torch.linalg.vecdot(yv, step)
        upd = active & (ys > 1e-10)
        hs.append(step)
        hy.append(yv)
        hrho.append(torch.where(upd, 1.0 / torch.where(upd, ys, torch.ones_like(ys)), torch.zeros_like(ys)))
        if len(hs) > m:
            del hs[0], hy[0], hrho[0]
        gamma = torch.where(upd, ys / torch.linalg.vecdot(yv, yv).clamp_min(1e-300), gamma)
        first &= ~upd
        iters += active.long()
        small = (f - f_new).abs() <= tol_change * torch.clamp(f.abs(), min=1.0)
        stall = torch.where(small, stall + 1, torch.zeros_like(stall))
        xk = xk + step
        f, g = f_new, g_new
        hist["train_loss"].append(f.cpu().tolist())
        stop(g.abs().amax(1) <= tol_grad, "grad")
        stop(stall >= STALL_ITERATIONS, "loss_change")
    final = {k: v.clone() for k, v in _unflat(xk, like).items()}
    best_val = [None] * s
    if val is not None:
        xv, yv_ = _as_device(val, params)
        nll = member_nll(predict_stacked(fn, final, xv, eval_batch_size), yv_).double().cpu()
        best_val = nll.tolist()
        hist["val_nll"].append(best_val)
    report = {
        "optimizer": Optimizer.LBFGS.value,
        "members": s,
        "iterations": iters.cpu().tolist(),
        "evaluations": evals.cpu().tolist(),
        "function_calls": calls,
        "best_val_nll": best_val,
        "final_train_loss": f.cpu().tolist(),
        "grad_norm": g.double().norm(dim=1).cpu().tolist(),
        "grad_max": g.double().abs().amax(1).cpu().tolist(),
        "tol_grad": float(tol_grad),
        "tol_change": float(tol_change),
        "converged": [r in ("grad", "loss_change") for r in reason],
        "stop_reason": reason,
    }
    return TrainResult(final, report, hist)


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


def fit(fn: StackedFn, params: Params, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None = None,
        *, optimizer: str | Optimizer = Optimizer.ADAM, **kwargs: Any) -> TrainResult:
    """Dispatch to :func:`fit_adam` or :func:`fit_lbfgs` by ``optimizer`` (keyword arguments pass through)."""
    try:
        opt = Optimizer(optimizer)
    except ValueError:
        raise ValueError(f"optimizer: expected one of {', '.join(o.value for o in Optimizer)}, got {optimizer!r}") \
            from None
    return (fit_adam if opt is Optimizer.ADAM else fit_lbfgs)(fn, params, train, val, **kwargs)
