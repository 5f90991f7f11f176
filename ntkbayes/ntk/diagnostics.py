"""Lazy-regime diagnostics: kernel drift, linearization gap, parameter movement, logit growth.

The lazy (kernel) regime of Jacot et al. (2018) / Lee et al. (2019) / Chizat, Oyallon & Bach ("On lazy training in
differentiable programming", 2019) predicts that a wide network trained from θ0 stays close to its linearization
(math.md (b), (c)): its empirical NTK barely moves and its outputs track f_lin. These measures test that along a
training run (the lazy-regime study, ``ntkbayes.lazy``):

* kernel drift        ‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F on a probe set (empirical NTK, math.md (b));
* linearization gap   max / mean |f(x;θ_t) − f_lin(x;θ')| and the total variation ½Σ_c|p_c − q_c| of the softmax
                      probabilities (:func:`ntkbayes.metrics.compare.total_variation`), with θ' = θ_t (Taylor gap)
                      or the parameters of a separately trained linearized twin;
* parameter movement  ‖θ_t − θ_0‖ / ‖θ_0‖ (all parameters concatenated);
* max |logit|         over the probe set (diverges for λ = 0 with one-hot targets, math.md (c)).

All accept one member's parameters or S members stacked on a leading axis (per-member values (S,)).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.func import functional_call, vmap

from ntkbayes.metrics.compare import total_variation
from ntkbayes.ntk.empirical import DEFAULT_BLOCK_SIZE, empirical_ntk
from ntkbayes.ntk.linearize import Linearized

#: Metric names recorded by :class:`LazyTracker` (one value per member and their mean).
METRICS = ("kernel_drift", "param_movement", "max_abs_logit", "lin_gap_max_logit", "lin_gap_mean_logit",
           "lin_gap_tv_mean", "lin_gap_tv_max")


def relative_kernel_drift(theta_t: torch.Tensor, theta_0: torch.Tensor) -> torch.Tensor:
    """‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F over all but a leading member axis when ``theta_0.ndim`` is 5 or 3
    ((S, N, M, C, C) / (S, N, M) → (S,)); a 0-d tensor for one kernel."""
    if theta_t.shape != theta_0.shape:
        raise ValueError(f"theta_t: expected shape {tuple(theta_0.shape)} like theta_0, got {tuple(theta_t.shape)}")
    dims = tuple(range(1, theta_0.ndim)) if theta_0.ndim in (3, 5) else tuple(range(theta_0.ndim))
    return torch.linalg.vector_norm(theta_t - theta_0, dim=dims) / torch.linalg.vector_norm(theta_0, dim=dims)


def parameter_movement(params0: dict[str, torch.Tensor], params: dict[str, torch.Tensor], *,
                       stacked: bool = False) -> torch.Tensor:
    """‖θ − θ0‖ / ‖θ0‖ over all tensors of ``params0``: a 0-d tensor, or (S,) when ``stacked`` (leading axis S)."""
    missing = set(params0) - set(params)
    if missing:
        raise ValueError(f"params: missing parameter names {sorted(missing)}")
    start = 1 if stacked else 0
    num = sum((params[k].detach() - v.detach()).pow(2).flatten(start).sum(-1) for k, v in params0.items())
    den = sum(v.detach().pow(2).flatten(start).sum(-1) for v in params0.values())
    return (num / den).sqrt()


def logit_gap(logits: torch.Tensor, other: torch.Tensor) -> dict[str, torch.Tensor]:
    """Differences between two sets of logits (..., N, C), reduced over N and C (leading axes kept).

    Returns:
        ``max_logit`` max|Δ|, ``mean_logit`` mean|Δ|, ``tv_mean`` / ``tv_max`` mean / max over points of the
        total variation ½ Σ_c |softmax(a)_c − softmax(b)_c| (each of shape ``logits.shape[:-2]``).
    """
    if logits.shape != other.shape or logits.ndim < 2:
        raise ValueError(f"logits: expected two equal shapes (..., N, C), got {tuple(logits.shape)} and "
                         f"{tuple(other.shape)}")
    a, b = logits.detach(), other.detach()
    diff = (a - b).abs()
    c = a.shape[-1]
    tv = total_variation(a.softmax(-1).reshape(-1, c), b.softmax(-1).reshape(-1, c))
    tv = tv.reshape(a.shape[:-1]).to(a.dtype)
    return {"max_logit": diff.amax((-2, -1)), "mean_logit": diff.mean((-2, -1)), "tv_mean": tv.mean(-1),
            "tv_max": tv.amax(-1)}


def _forward(model: nn.Module, params: dict, x: torch.Tensor, stacked: bool) -> torch.Tensor:
    buffers = dict(model.named_buffers())
    p = {k: v.detach() for k, v in params.items()}
    if stacked:
        return vmap(lambda q: functional_call(model, {**buffers, **q}, (x,)))(p)
    return functional_call(model, {**buffers, **p}, (x,))


def linearization_gap(model: nn.Module, params0: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
                      x: torch.Tensor, *, lin_params: dict[str, torch.Tensor] | None = None,
                      stacked: bool | None = None) -> dict[str, torch.Tensor]:
    """:func:`logit_gap` between the network f(x; θ) and its linearization f_lin(x; θ') around θ0.

    Args:
        params0: θ0. params: the network's θ. x: (N, *feature).
        lin_params: θ' of a separately trained linearized twin; None → θ' = θ (the Taylor remainder at θ).
        stacked: whether the dicts carry a leading member axis S (default: detected as in :class:`Linearized`).
    Returns:
        dict of 0-d tensors, or (S,) tensors for stacked parameters.
    """
    lin = Linearized(model, params0, stacked=stacked)
    with torch.no_grad():
        net = _forward(model, params, x, lin.stacked)
        twin = lin({k: v.detach() for k, v in (params if lin_params is None else lin_params).items()}, x)
    return logit_gap(net, twin)


def kernel_drift(model: nn.Module, params0: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
                 x: torch.Tensor, *, ntk0: torch.Tensor | None = None, **ntk_kwargs) -> torch.Tensor:
    """‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F of the empirical NTK on a probe set x (N, *feature) (one member).

    Args:
        ntk0: Θ_0 if already computed (same ``ntk_kwargs``). ntk_kwargs: passed to
            :func:`~ntkbayes.ntk.empirical.empirical_ntk` (implementation, trace, block_size, ...).
    Returns:
        0-d tensor.
    """
    theta_0 = empirical_ntk(model, x, params=params0, **ntk_kwargs) if ntk0 is None else ntk0
    theta_t = empirical_ntk(model, x, params={k: v.detach() for k, v in params.items()}, **ntk_kwargs)
    return relative_kernel_drift(theta_t, theta_0)


class LazyTracker:
    """Records the lazy-regime diagnostics along a training run.

    Args:
        model: the network (architecture). params0: θ0, name → (*shape) or (S, *shape) for stacked members.
        probe_x: (N, *feature) probe inputs (e.g. a subset of the training inputs, where λ = 0 logits diverge).
        steps: the steps at which :meth:`record` measures (None: every call).
        kernel: whether to measure kernel drift (one empirical NTK per member and call: the costly part).
        ntk_implementation, ntk_trace, block_size: passed to :func:`~ntkbayes.ntk.empirical.empirical_ntk`;
            the default full (N, N, C, C) kernel makes the drift include the off-class blocks.
        stacked: leading member axis (default: detected).

    ``record(step, params, lin_params=None, **extra)`` appends to ``history`` one dict per call with ``step``,
    ``members`` S, ``lin_gap_kind`` ("taylor" or "twin"), the member means of :data:`METRICS` and ``extra``
    (e.g. the loss), and to ``member_history`` one dict per member (``member`` index and the metrics).
    ``frame()`` / ``frame(per_member=True)`` give pandas DataFrames.
    """

    def __init__(self, model: nn.Module, params0: dict[str, torch.Tensor], probe_x: torch.Tensor, *,
                 steps: Iterable[int] | None = None, kernel: bool = True, ntk_implementation: str = "auto",
                 ntk_trace: bool | str = False, block_size: int = DEFAULT_BLOCK_SIZE, stacked: bool | None = None):
        if not isinstance(probe_x, torch.Tensor) or probe_x.ndim < 2 or probe_x.shape[0] == 0:
            raise ValueError("probe_x: expected a non-empty tensor (N, *feature)")
        self.model = model
        self.linearized = Linearized(model, params0, stacked=stacked)
        self.stacked = self.linearized.stacked
        self.params0 = self.linearized.params0
        self.probe_x = probe_x.detach()
        self.steps = None if steps is None else {int(s) for s in steps}
        self.kernel = bool(kernel)
        self.ntk_kwargs = {"implementation": ntk_implementation, "trace": ntk_trace, "block_size": block_size}
        self.history: list[dict] = []
        self.member_history: list[dict] = []
        self._ntk0 = [empirical_ntk(model, self.probe_x, params=p, **self.ntk_kwargs)
                      for p in self._members(self.params0)] if self.kernel else None

    def _members(self, params: dict) -> list[dict]:
        if not self.stacked:
            return [params]
        return [{k: v[i] for k, v in params.items()} for i in range(self.linearized.members)]

    def should_record(self, step: int) -> bool:
        """Whether ``step`` is one of the configured steps."""
        return self.steps is None or int(step) in self.steps

    def record(self, step: int, params: dict[str, torch.Tensor], *,
               lin_params: dict[str, torch.Tensor] | None = None, **extra) -> dict | None:
        """Measure at ``step`` (skipped, returning None, if it is not a configured step).

        Args:
            params: the network's current θ ((*shape) or (S, *shape), like params0).
            lin_params: current θ of a linearized twin trained alongside (None: Taylor gap at θ).
            extra: JSON-friendly scalars stored with the row (e.g. ``loss=...``).
        Returns:
            the appended history row.
        """
        if not self.should_record(step):
            return None
        params = {k: v.detach() for k, v in params.items()}
        with torch.no_grad():
            logits = _forward(self.model, params, self.probe_x, self.stacked)
            twin = self.linearized(params if lin_params is None else {k: v.detach() for k, v in lin_params.items()},
                                   self.probe_x)
        gap = logit_gap(logits, twin)
        values = {
            "param_movement": parameter_movement(self.params0, params, stacked=self.stacked),
            "max_abs_logit": logits.abs().amax((-2, -1)),
            "lin_gap_max_logit": gap["max_logit"], "lin_gap_mean_logit": gap["mean_logit"],
            "lin_gap_tv_mean": gap["tv_mean"], "lin_gap_tv_max": gap["tv_max"],
        }
        if self.kernel:
            values["kernel_drift"] = torch.stack([
                relative_kernel_drift(empirical_ntk(self.model, self.probe_x, params=p, **self.ntk_kwargs), k0)
                for p, k0 in zip(self._members(params), self._ntk0)])
        per = {k: v.reshape(-1).double().cpu() for k, v in values.items()}
        members = self.linearized.members
        for i in range(members):
            self.member_history.append({"step": int(step), "member": i, **{k: float(v[i]) for k, v in per.items()}})
        row = {"step": int(step), "members": members, "lin_gap_kind": "taylor" if lin_params is None else "twin",
               **{k: float(v.mean()) for k, v in per.items()}, **extra}
        self.history.append(row)
        return row

    def frame(self, per_member: bool = False):
        """pandas DataFrame of ``history`` (one row per step) or ``member_history`` (one row per step × member)."""
        import pandas as pd

        return pd.DataFrame(self.member_history if per_member else self.history)
