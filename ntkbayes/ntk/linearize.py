"""The linearized network f_lin(x; θ) = f(x; θ0) + J(x; θ0)(θ − θ0) (math.md (b) "Linearized model", (c)).

Lee et al., "Wide neural networks of any depth evolve as linear models under gradient descent" (NeurIPS 2019).
f_lin is evaluated with one ``torch.func.jvp`` (forward-mode product J·(θ − θ0)); no Jacobian is stored, and the
result is differentiable in θ (autograd and ``torch.func.grad`` both work), so the linearized model trains with the
same optimizers as the network. Everything is a pure function of (θ0, θ, x), so ``torch.func.vmap`` over stacked
member parameters (leading axis S) trains many linearized members together.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jvp, vmap


def _tangent(params0: dict, params: dict) -> dict:
    extra = set(params) - set(params0)
    if extra:
        raise ValueError(f"params: unknown parameter names {sorted(extra)} (not in params0)")
    return {k: (params[k] - v) if k in params else torch.zeros_like(v) for k, v in params0.items()}


def linearized_apply(model: nn.Module, params0: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
                     x: torch.Tensor, buffers: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """f0(x) + J(x; θ0)(θ − θ0) for one member (math.md (b)); a pure function, safe under ``vmap``/``grad``.

    Args:
        model: the network (its own parameter values are not used). params0: θ0, name → tensor.
        params: θ (names ⊆ params0; a missing name stays at θ0). x: (N, *feature). buffers: model buffers.
    Returns:
        (N, C) logits of the linearized model, differentiable in ``params``.
    """
    buffers = dict(model.named_buffers()) if buffers is None else buffers

    def f(p):
        return functional_call(model, {**buffers, **p}, (x,))

    f0, df = jvp(f, (params0,), (_tangent(params0, params),))
    return f0 + df


def model_jvp(model: nn.Module, params0: dict[str, torch.Tensor], tangents: dict[str, torch.Tensor],
              x: torch.Tensor, buffers: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """J(x; θ0) · t for a tangent t (name → tensor; missing names are 0). x (N, *feature) → (N, C).

    With t = θ*_{<readout} (readout entries left out) this is the NTKGP untrainable function δ(x) of math.md (e).
    """
    buffers = dict(model.named_buffers()) if buffers is None else buffers
    extra = set(tangents) - set(params0)
    if extra:
        raise ValueError(f"tangents: unknown parameter names {sorted(extra)} (not in params0)")
    full = {k: tangents[k] if k in tangents else torch.zeros_like(v) for k, v in params0.items()}
    return jvp(lambda p: functional_call(model, {**buffers, **p}, (x,)), (params0,), (full,))[1]


class Linearized:
    """Linearized twin of ``model`` around θ0 (one member, or S members stacked on a leading axis).

    Args:
        model: the network; its architecture is used, not its parameter values.
        params0: θ0, name → tensor (default: the model's current parameters, detached). With a leading member
            axis (e.g. from ``torch.func.stack_module_state``) the object is *stacked*: calls are vmapped and
            return (S, N, C).
        stacked: force/deny the stacked interpretation (default: detected by comparing shapes with the model's).

    ``lin(params, x)`` → f_lin(x; θ) (N, C) or (S, N, C), differentiable in ``params`` (no Jacobian stored).
    """

    def __init__(self, model: nn.Module, params0: dict[str, torch.Tensor] | None = None, *,
                 stacked: bool | None = None):
        self.model = model
        own = dict(model.named_parameters())
        params0 = own if params0 is None else params0
        unknown = set(params0) - set(own)
        if unknown:
            raise ValueError(f"params0: names {sorted(unknown)} are not parameters of {type(model).__name__}")
        self.params0 = {k: v.detach() for k, v in params0.items()}
        detected = all(v.ndim == own[k].ndim + 1 and v.shape[1:] == own[k].shape for k, v in self.params0.items())
        if stacked is None:
            stacked = detected
        elif stacked and not detected:
            raise ValueError("params0: stacked=True needs every tensor shaped (S, *parameter shape)")
        if not stacked and any(v.shape != own[k].shape for k, v in self.params0.items()):
            raise ValueError("params0: tensor shapes do not match the model's parameters")
        self.stacked = bool(stacked)
        if self.stacked and len({v.shape[0] for v in self.params0.values()}) != 1:
            raise ValueError("params0: every stacked tensor needs the same leading member axis S")
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}

    @property
    def members(self) -> int:
        """S (1 when not stacked)."""
        return next(iter(self.params0.values())).shape[0] if self.stacked else 1

    def _map(self, fn, params: dict | None, x: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            return fn(self.params0, params, x)
        if params is None:
            return vmap(lambda p0: fn(p0, None, x))(self.params0)
        return vmap(fn, in_dims=(0, 0, None))(self.params0, params, x)

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """f_lin(x; θ) = f0(x) + J(x)(θ − θ0): params name → (*shape) or (S, *shape); x (N, *feature) → (N, C)
        or (S, N, C)."""
        return self._map(lambda p0, p, xx: linearized_apply(self.model, p0, p, xx, self.buffers), params, x)

    def f0(self, x: torch.Tensor) -> torch.Tensor:
        """Network output at θ0 (= f_lin at θ0): (N, C) or (S, N, C)."""
        return self._map(lambda p0, _, xx: functional_call(self.model, {**self.buffers, **p0}, (xx,)), None, x)

    def jvp(self, tangents: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """J(x; θ0) · t (missing names are 0): (N, C) or (S, N, C); tangents (*shape) or (S, *shape)."""
        return self._map(lambda p0, t, xx: model_jvp(self.model, p0, t, xx, self.buffers), tangents, x)

    def prior_mean(self, x: torch.Tensor) -> torch.Tensor:
        """m(x) = f_lin(x; θ = 0) = f0(x) − J(x)θ0, the prior mean of the anchor-zero objective (math.md (c)).
        (N, C) or (S, N, C)."""
        return self._map(lambda p0, _, xx: linearized_apply(self.model, p0, {k: torch.zeros_like(v)
                                                                             for k, v in p0.items()}, xx,
                                                            self.buffers), None, x)

    def init_params(self, requires_grad: bool = True) -> dict[str, torch.Tensor]:
        """A fresh copy of θ0 to train from (leaf tensors)."""
        return {k: v.clone().requires_grad_(requires_grad) for k, v in self.params0.items()}


def linearize(model: nn.Module, params0: dict[str, torch.Tensor] | None = None, *,
              stacked: bool | None = None) -> Linearized:
    """The linearized twin of ``model`` around ``params0`` (default: its current parameters); see
    :class:`Linearized`. ``linearize(model)(params, x)`` → (N, C) (or (S, N, C) for stacked θ0)."""
    return Linearized(model, params0, stacked=stacked)
