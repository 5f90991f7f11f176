"""Full-batch L-BFGS batched over S independent members (Nocedal & Wright Alg. 7.4/7.5, Armijo backtracking)."""

from __future__ import annotations

from collections.abc import Callable

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
    _expand,
    make_loss,
    member_nll,
    num_members,
    predict_stacked,
)

#: L-BFGS history length: 10 pairs is the usual choice (Nocedal & Wright §7.2; torch.optim.LBFGS uses 100, which
#: costs 2·100·S·P floats for little gain on these smooth objectives).
DEFAULT_HISTORY_SIZE = 10
#: Armijo sufficient-decrease constant (Nocedal & Wright eq. 3.4, c1 = 1e-4).
ARMIJO_C1 = 1e-4
#: Maximum halvings of the step in one line search before the member is declared stuck.
MAX_BACKTRACKS = 30
#: L-BFGS "loss_change" stop (a stall, not convergence): for this many consecutive iterations the relative loss
#: change stays below ``tol_change`` AND the smallest ‖g‖_∞ so far does not halve (``STALL_GRAD_RATIO``). Near a
#: smooth optimum the loss stops resolving changes (|ΔL| ~ g²/curvature falls below ε|L|) while L-BFGS still cuts
#: the gradient fast: that is progress towards the gradient test, not a stall. A piecewise-smooth objective (ReLU
#: network) whose ‖g‖_∞ hovers does stall, after 10 iterations instead of running to ``max_iter``.
STALL_ITERATIONS = 10
STALL_GRAD_RATIO = 0.5
#: Approximate Wolfe conditions (Hager & Zhang 2005, SIAM J. Optim. 16(1), eq. 4.1 with δ = 0.1, σ = 0.9): a step
#: whose loss is within ``WOLFE_SLACK_ULPS`` ulps (of the parameter dtype) of the current loss and whose directional
#: derivative satisfies σ·gᵀd ≤ g_newᵀd ≤ (2δ − 1)·gᵀd is accepted even when Armijo cannot resolve the decrease. Armijo
#: alone, which compares loss values, stalls at ‖g‖ ~ √(ε·|L|·‖H‖) (≈ 1e-9 in float64 on the tests' problems).
WOLFE_DELTA, WOLFE_SIGMA, WOLFE_SLACK_ULPS = 0.1, 0.9, 16.0
#: A curvature pair is kept when yᵀs > CURVATURE_COS·‖y‖‖s‖ (positive curvature, scale-free). An absolute floor
#: (torch.optim.LBFGS: yᵀs > 1e-10) drops every pair once ‖g‖ ≲ 1e-5 and leaves steepest descent, which then
#: stalls near the optimum (a float64 test problem: ‖g‖_∞ stuck at 2e-9).
CURVATURE_COS = 1e-8


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


def _lbfgs_objective(fn: StackedFn, loss: LossFn | None, like: Params, x: Tensor, y: Tensor, chunk_size: int | None,
                     weight_decay: float, anchor: Params | None, label_smoothing: float,
                     ) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``value_grad(flat (S, P)) -> (loss (S,) float64, gradient (S, P))`` of the full-batch objective. Without a
    custom ``loss``, the penalty (λ/2)‖θ − θ_a‖² and its gradient λ(θ − θ_a) are added in closed form on the flat
    vector (math.md §0; no autograd through the penalty)."""
    lam, flat_anchor = 0.0, None
    if loss is None:
        loss = make_loss(fn, 0.0, None, label_smoothing)
        lam = float(weight_decay)
        if lam < 0:
            raise ValueError(f"weight_decay: expected ≥ 0, got {weight_decay}")
        flat_anchor = _flat({k: anchor[k] for k in like}).to(_flat(like)) if anchor is not None else None

    def value_grad(flat: Tensor) -> tuple[Tensor, Tensor]:
        f, g = _flat_value_and_grad(loss, flat, like, x, y, chunk_size)
        if lam > 0:  # math.md §0: (λ/2)‖θ − θ_a‖²
            diff = flat if flat_anchor is None else flat - flat_anchor
            f = f + 0.5 * lam * torch.linalg.vecdot(diff, diff).double()
            g.add_(diff, alpha=lam)
        return f, g

    return value_grad


class _LBFGSHistory:
    """The last ``size`` curvature pairs of S members in shared (S, P) slots, newest last (Nocedal & Wright
    Alg. 7.4). A pair with yᵀs ≤ ``CURVATURE_COS``·‖y‖‖s‖ gets ρ = 0 (skipped), so every member's recursion reads
    the same slots."""

    def __init__(self, s: int, size: int, dtype: torch.dtype, device: torch.device):
        self.size = int(size)
        self.steps: list[Tensor] = []                           # s_k (S, P)
        self.diffs: list[Tensor] = []                           # y_k (S, P)
        self.rhos: list[Tensor] = []                            # ρ_k (S,)
        self.first = torch.ones(s, dtype=torch.bool, device=device)     # no pair accepted yet
        self.gamma = torch.ones(s, dtype=dtype, device=device)          # initial Hessian scale sᵀy / yᵀy

    def direction(self, g: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        """Quasi-Newton direction d = −H g (two-loop recursion) for active members (0 elsewhere), with steepest
        descent where d is not a descent direction (numerical trouble); returns (d, gᵀd)."""
        q = g.clone()
        alphas = []
        for sk, yk, rho in zip(reversed(self.steps), reversed(self.diffs), reversed(self.rhos)):
            a = rho * torch.linalg.vecdot(sk, q)
            q.addcmul_(yk, a[:, None], value=-1.0)
            alphas.append(a)
        r = q.mul_(self.gamma[:, None])
        for sk, yk, rho, a in zip(self.steps, self.diffs, self.rhos, reversed(alphas)):
            beta = rho * torch.linalg.vecdot(yk, r)
            r.addcmul_(sk, (a - beta)[:, None])
        d = r.neg_().mul_(active[:, None])
        gtd = torch.linalg.vecdot(g, d)
        uphill = active & (gtd >= 0)
        if uphill.any():
            d[uphill] = -g[uphill]
            gtd = torch.linalg.vecdot(g, d)
        return d, gtd

    def first_step(self, g: Tensor) -> Tensor:
        """(S,) initial trial step: min(1, 1/‖g‖₁) before any pair is accepted, else 1."""
        return torch.where(self.first, (1.0 / g.abs().sum(1).clamp_min(1e-300)).clamp(max=1.0),
                           torch.ones_like(self.gamma))

    def push(self, step: Tensor, diff: Tensor, active: Tensor) -> None:
        """Add the pair (s, y) of this iteration; kept (ρ > 0) for active members with yᵀs > CURVATURE_COS·‖y‖‖s‖."""
        ys = torch.linalg.vecdot(diff, step)
        norms = torch.linalg.vector_norm(diff, dim=1) * torch.linalg.vector_norm(step, dim=1)
        upd = active & (ys > CURVATURE_COS * norms)
        self.steps.append(step)
        self.diffs.append(diff)
        self.rhos.append(torch.where(upd, 1.0 / torch.where(upd, ys, torch.ones_like(ys)), torch.zeros_like(ys)))
        if len(self.steps) > self.size:
            del self.steps[0], self.diffs[0], self.rhos[0]
        self.gamma = torch.where(upd, ys / torch.linalg.vecdot(diff, diff).clamp_min(1e-300), self.gamma)
        self.first &= ~upd


def _armijo(value_grad: Callable[[Tensor], tuple[Tensor, Tensor]], xk: Tensor, f: Tensor, d: Tensor, gtd: Tensor,
            t: Tensor, active: Tensor, evals: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Backtracking from step t (S,) until f(x + t d) ≤ f + c1·t·gᵀd (Nocedal & Wright eq. 3.4) or the approximate
    Wolfe conditions (``WOLFE_*``) hold for every active member, halving the others, at most ``MAX_BACKTRACKS``
    times. Counts trials per member into ``evals``.
    Returns (t, f_new, g_new, ok, calls)."""
    t = t * active
    trying = active.clone()
    calls = 0
    slack = WOLFE_SLACK_ULPS * torch.finfo(xk.dtype).eps * f.abs().clamp(min=1.0)
    for _ in range(MAX_BACKTRACKS):
        f_new, g_new = value_grad(xk + t[:, None] * d)
        evals += trying.long()
        calls += 1
        gtd_new = torch.linalg.vecdot(g_new, d)
        approx_wolfe = (f_new <= f + slack) & (gtd_new <= (2 * WOLFE_DELTA - 1) * gtd) & (gtd_new >= WOLFE_SIGMA * gtd)
        ok = (f_new <= f + ARMIJO_C1 * t.double() * gtd.double()) | approx_wolfe | ~active
        if ok.all():
            break
        trying = ~ok
        t = torch.where(ok, t, 0.5 * t)
    return t, f_new, g_new, ok, calls


def _report(s: int, iters: Tensor, evals: Tensor, calls: int, best_val: list, f: Tensor, g: Tensor,
            tol_grad: float, tol_change: float, reason: list[str]) -> dict:
    """The JSON-serializable per-member record of an L-BFGS run (see :func:`fit_lbfgs`)."""
    return {
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
        "converged": [r == "grad" for r in reason],      # the gradient criterion only (docstring of fit_lbfgs)
        "stop_reason": reason,
    }


def fit_lbfgs(fn: StackedFn, params: Params, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None = None,
              *, loss: LossFn | None = None, weight_decay: float = 0.0, anchor: Params | None = None,
              label_smoothing: float = 0.0, max_iter: int = 500, history_size: int = DEFAULT_HISTORY_SIZE,
              tol_grad: float = 1e-6, tol_change: float = 1e-10, chunk_size: int | None = None,
              eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> TrainResult:
    """Full-batch L-BFGS, batched over S independent members, run until each member converges.

    Per member s (Nocedal & Wright Alg. 7.4/7.5): direction from its own two-loop recursion over the pairs of its
    last ``history_size`` iterations (:class:`_LBFGSHistory`), Armijo backtracking from step 1 (first step
    min(1, 1/‖g‖₁)). Member s stops when ‖g‖_∞ ≤ ``tol_grad`` ("grad": the only stop recorded as converged),
    when the loss changes by at most ``tol_change``·max(1, |L|) in ``STALL_ITERATIONS`` consecutive iterations
    without the gradient halving ("loss_change": a stall, recorded as not converged with its ‖g‖_∞), when no
    step of the line search decreases the loss ("line_search", not converged) or after ``max_iter`` iterations
    ("max_iter", not converged).
    Stopped members are frozen. Every decision of member s depends on its own quantities only, so its trajectory
    is the one it follows when trained alone (tested). Losses are accumulated in float64 whatever the parameter
    dtype, so float32 training resolves loss changes down to the float32 rounding of the logits rather than of
    the sum.

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
    value_grad = _lbfgs_objective(fn, loss, like, x, y, chunk_size, weight_decay, anchor, label_smoothing)
    xk = _flat(like).clone()
    f, g = value_grad(xk)
    _check_finite(f, "initialization", "check the inputs and the initial parameters")
    dev = xk.device
    history = _LBFGSHistory(s, history_size, xk.dtype, dev)
    active = torch.ones(s, dtype=torch.bool, device=dev)
    iters = torch.zeros(s, dtype=torch.long, device=dev)
    evals = torch.ones(s, dtype=torch.long, device=dev)
    calls = 1                                                   # value_grad calls (each evaluates all S members)
    stall = torch.zeros(s, dtype=torch.long, device=dev)
    g_best = g.abs().amax(1)                                    # ‖g‖_∞ at the last halving (stall test)
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
        d, gtd = history.direction(g, active)
        t, f_new, g_new, ok, used = _armijo(value_grad, xk, f, d, gtd, history.first_step(g), active, evals)
        calls += used
        stop(~ok, "line_search")
        step = t[:, None] * d * active[:, None]
        f_new = torch.where(active, f_new, f)
        g_new = torch.where(active[:, None], g_new, g)
        _check_finite(f_new, f"L-BFGS iteration {int(iters.max()) + 1}", "raise weight_decay or rescale inputs")
        history.push(step, g_new - g, active)
        iters += active.long()
        g_max = g_new.abs().amax(1)
        halved = g_max < STALL_GRAD_RATIO * g_best
        g_best = torch.where(halved, g_max, g_best)
        small = ((f - f_new).abs() <= tol_change * torch.clamp(f.abs(), min=1.0)) & ~halved
        stall = torch.where(small, stall + 1, torch.zeros_like(stall))
        xk = xk + step
        f, g = f_new, g_new
        hist["train_loss"].append(f.cpu().tolist())
        stop(g.abs().amax(1) <= tol_grad, "grad")
        stop(stall >= STALL_ITERATIONS, "loss_change")
    final = {k: v.clone() for k, v in _unflat(xk, like).items()}
    best_val = [None] * s
    if val is not None:
        xv, yv = _as_device(val, params)
        best_val = member_nll(predict_stacked(fn, final, xv, eval_batch_size), yv).double().cpu().tolist()
        hist["val_nll"].append(best_val)
    report = _report(s, iters, evals, calls, best_val, f, g, tol_grad, tol_change, reason)
    return TrainResult(final, report, hist)

