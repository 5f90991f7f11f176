"""Empirical neural tangent kernel of any torch model, blockwise and memory-bounded (math.md (b)).

    Θ[n,m,c,d] = Σ_p ∂f_c(x_n)/∂θ_p · ∂f_d(x'_m)/∂θ_p        (N, M, C, C); flat = Θ.permute(0,2,1,3).reshape(NC, MC)

Implementations (:class:`NTKImplementation`) follow math.md (b)'s three torch.func recipes (batch Jacobian, per-example
Jacobian, NTK-vector products, as in neural-tangents' ``empirical_ntk_fn`` and Novak et al., "Fast finite width
neural tangent kernel", ICML 2022) plus a structured layer-wise path for :class:`~ntkbayes.models.MLP` that never
forms a Jacobian:

    Θ[n,m,c,d] = Σ_l (s_w,l² h^l(x_n)·h^l(x'_m) + s_b,l²) · δ^l_c(x_n)·δ^l_d(x'_m)

with h^l the input of Dense layer l, δ^l_c = ∂f_c/∂(output of layer l) (δ = e_c for the readout) and s_w, s_b the
layer's multipliers (``Dense.w_scale``, ``Dense.b_scale``; the NTK parameterization of math.md (a)). Every path
works on row blocks of x1 × x2 so that the working memory is bounded by ``block_size``; the memory is estimated
first and :func:`ntkbayes.utils.check_memory` stops an allocation that cannot fit.

Class trace: ``trace="mean"`` (or ``True``) returns Σ_c Θ[n,m,c,c] / C, the convention of neural-tangents'
``trace_axes=(-1,)`` (math.md (b)); ``trace="sum"`` returns Σ_c Θ[n,m,c,c].
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntkbayes import utils
from ntkbayes.models import MLP
from ntkbayes.ntk.analytic import activation_pair


class NTKImplementation(str, Enum):
    """How the empirical NTK is computed (math.md (b))."""

    AUTO = "auto"
    """``structured`` for :class:`~ntkbayes.models.MLP`, ``jacobian`` for any other model."""
    JACOBIAN = "jacobian"
    """Recipe 1: ``jacrev`` of the batched model per block → J (B, C, P), contracted per parameter tensor.
    Memory ~2·B·C·P; the baseline ("naive Jacobian contraction") of the performance benchmark."""
    PER_EXAMPLE = "per_example"
    """Recipe 2: ``vmap(jacrev)`` over single examples → J (B, C, P); cheaper Jacobians than recipe 1 (no
    B×B cross terms), same contraction. Needs a model without cross-example coupling (no train-mode batch norm)."""
    NTK_VP = "ntk_vp"
    """Recipe 3: NTK-vector products ``jvp(f(X1), vjp_f(X2)(v))`` vmapped over the B·C basis vectors in chunks;
    never stores a Jacobian: memory ~chunk_size·P. For models too large for Jacobian blocks."""
    STRUCTURED = "structured"
    """Layer-wise for :class:`~ntkbayes.models.MLP` only: Grams of forward inputs ⊙ Grams of backward
    sensitivities, Σ over layers; never forms J or a per-example gradient. By far the fastest."""
    NAIVE = "naive"
    """Reference: one ``torch.autograd.grad`` call per (example, output), stacked into J. Slow; for tests."""


class Trace(str, Enum):
    """What is returned over the class axes."""

    NONE = "none"
    """The full (N, M, C, C) kernel."""
    MEAN = "mean"
    """Σ_c Θ[n,m,c,c] / C, (N, M): neural-tangents' ``trace_axes=(-1,)`` convention (math.md (b))."""
    SUM = "sum"
    """Σ_c Θ[n,m,c,c], (N, M)."""


#: Points per block along each of x1 and x2. 256 makes the structured path's per-block Grams large enough for
#: efficient matmuls (B·C × B·C) while keeping them at ~B²C² floats; the Jacobian paths usually need far smaller
#: blocks (memory ~2·B·C·P) — the memory guard says which one fits.
DEFAULT_BLOCK_SIZE = 256
#: Default implementation: the structured path for MLPs, the batch-Jacobian recipe otherwise.
DEFAULT_IMPLEMENTATION = NTKImplementation.AUTO
#: Fraction of the available memory one call may plan to use (passed to ``utils.check_memory``).
MEMORY_FRACTION = 0.8


def _trace_mode(trace) -> Trace:
    if trace is True:
        return Trace.MEAN
    if trace is False or trace is None:
        return Trace.NONE
    try:
        return Trace(trace)
    except ValueError:
        raise ValueError(f"trace: expected False, True, 'none', 'mean' or 'sum', got {trace!r}") from None


def _implementation(name, model: nn.Module) -> NTKImplementation:
    try:
        impl = NTKImplementation(name)
    except ValueError:
        opts = ", ".join(i.value for i in NTKImplementation)
        raise ValueError(f"implementation: expected one of {opts}, got {name!r}") from None
    if impl is NTKImplementation.AUTO:
        return NTKImplementation.STRUCTURED if isinstance(model, MLP) else NTKImplementation.JACOBIAN
    if impl is NTKImplementation.STRUCTURED and not isinstance(model, MLP):
        raise ValueError(f"implementation='structured' needs an ntkbayes.models.MLP, got {type(model).__name__}")
    return impl


def _model_fn(model: nn.Module, buffers: dict) -> Callable:
    def f(p: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**buffers, **p}, (x,))
    return f


# ---------------------------------------------------------------------------------------------------------------
# Engines: features(x_block) computes what a block of points needs; pair(fa, fb, trace) → (Ba, Bb, C, C) or
# (Ba, Bb) (trace "sum"; the caller divides by C for "mean").
# ---------------------------------------------------------------------------------------------------------------

def _contract(ja: list[torch.Tensor], jb: list[torch.Tensor], trace: Trace) -> torch.Tensor:
    """Σ over parameter tensors of J_a J_bᵀ; ja, jb lists of (B, C, p_k)."""
    out = None
    for a, b in zip(ja, jb):
        blk = torch.einsum("ncp,mcp->nm", a, b) if trace is not Trace.NONE else torch.einsum("ncp,mdp->nmcd", a, b)
        out = blk if out is None else out.add_(blk)
    return out


class _JacobianEngine:
    """Recipes 1 and 2 of math.md (b) (and the naive loop): features = per-tensor Jacobians (B, C, p_k)."""

    def __init__(self, f, params, impl: NTKImplementation):
        self.f, self.params, self.impl = f, params, impl

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = x.shape[0]
        if self.impl is NTKImplementation.JACOBIAN:  # math.md (b) recipe 1
            jac = jacrev(self.f)(self.params, x)
        elif self.impl is NTKImplementation.PER_EXAMPLE:  # recipe 2
            jac = vmap(jacrev(lambda p, xi: self.f(p, xi[None])[0]), in_dims=(None, 0))(self.params, x)
        else:
            return self._naive(x)
        return [j.reshape(b, j.shape[1], -1) for j in jac.values()]

    def _naive(self, x: torch.Tensor) -> list[torch.Tensor]:
        names = list(self.params)
        with torch.enable_grad():
            p = {k: v.detach().requires_grad_(True) for k, v in self.params.items()}
            rows = []
            for i in range(x.shape[0]):
                out = self.f(p, x[i:i + 1])[0]
                for c in range(out.shape[0]):
                    grads = torch.autograd.grad(out[c], [p[k] for k in names], retain_graph=True,
                                                allow_unused=True)
                    rows.append([torch.zeros_like(p[k]) if g is None else g for k, g in zip(names, grads)])
        n, nc = x.shape[0], len(rows) // x.shape[0]
        return [torch.stack([r[t] for r in rows]).reshape(n, nc, -1) for t in range(len(names))]

    def pair(self, fa, fb, trace: Trace) -> torch.Tensor:
        return _contract(fa, fb, trace)


class _NTKVPEngine:
    """Recipe 3 of math.md (b): Θ v = J1 (J2ᵀ v) by one vjp and one jvp per basis vector v, vmapped in chunks."""

    def __init__(self, f, params, chunk_size: int):
        self.f, self.params, self.chunk = f, params, chunk_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pair(self, xa: torch.Tensor, xb: torch.Tensor, trace: Trace) -> torch.Tensor:
        _, vjp_fn = vjp(lambda p: self.f(p, xb), self.params)

        def column(v: torch.Tensor) -> torch.Tensor:  # v (Bb, C) → Θ v (Ba, C)
            (ct,) = vjp_fn(v)
            return jvp(lambda p: self.f(p, xa), (self.params,), (ct,))[1]

        ba, bb = xa.shape[0], xb.shape[0]
        c = self.f(self.params, xb[:1]).shape[1]
        basis = torch.eye(bb * c, dtype=xa.dtype, device=xa.device).reshape(bb * c, bb, c)
        cols = vmap(column, chunk_size=self.chunk)(basis)  # (Bb·C, Ba, C), rows indexed (m, d)
        theta = cols.reshape(bb, c, ba, c).permute(2, 0, 3, 1)  # → (Ba, Bb, C, C) [n, m, c, d]
        return theta.diagonal(dim1=2, dim2=3).sum(-1) if trace is not Trace.NONE else theta


class _StructuredEngine:
    """Layer-wise NTK of an :class:`~ntkbayes.models.MLP` (module docstring): no Jacobian, only Grams."""

    def __init__(self, model: MLP, params: dict):
        if model.dropout > 0 and model.training:
            raise ValueError("implementation='structured': the MLP has dropout in training mode; call model.eval()")
        self.layers = []
        for i, layer in enumerate(model.layers):
            key = f"layers.{i}.weight"
            if key not in params or (layer.bias is not None and f"layers.{i}.bias" not in params):
                raise ValueError(f"params: implementation='structured' needs every MLP parameter, missing {key!r} "
                                 "or its bias (use implementation='jacobian' for an NTK of a parameter subset)")
            self.layers.append((params[key], params.get(f"layers.{i}.bias") if layer.bias is not None else None,
                                layer.w_scale, layer.b_scale))
        self.phi, self.dphi, _ = activation_pair(model.activation)

    def features(self, x: torch.Tensor):
        """Layer inputs h^l (B, n_l) and sensitivities δ^l (B, C, n_{l+1}) of the hidden layers' outputs."""
        h = x.flatten(1)
        hs, dphis = [], []
        last = len(self.layers) - 1
        for i, (w, b, ws, bs) in enumerate(self.layers):
            hs.append(h)
            if i == last:
                break
            z = torch.nn.functional.linear(h, w) * ws
            if b is not None:
                z = z + bs * b
            dphis.append(self.dphi(z))
            h = self.phi(z)
        deltas = [None] * last
        if last > 0:  # backward: δ^{L-1} = φ'(z) ⊙ s_w W_readout[c]; δ^{l} = φ'(z^l) ⊙ (δ^{l+1} s_w W^{l+1})
            w, _, ws, _ = self.layers[last]
            d = dphis[last - 1][:, None, :] * (ws * w)[None]
            deltas[last - 1] = d
            for i in range(last - 2, -1, -1):
                w, _, ws, _ = self.layers[i + 1]
                d = dphis[i][:, None, :] * torch.matmul(d, ws * w)
                deltas[i] = d
        return hs, deltas

    def pair(self, fa, fb, trace: Trace) -> torch.Tensor:
        (ha, da), (hb, db) = fa, fb
        ba, bb = ha[0].shape[0], hb[0].shape[0]
        c = self.layers[-1][0].shape[0]
        acc = None
        for i, (_, b, ws, bs) in enumerate(self.layers):
            g = torch.mm(ha[i], hb[i].T).mul_(ws * ws)  # forward Gram, (Ba, Bb)
            if b is not None:
                g.add_(bs * bs)
            if i == len(self.layers) - 1:  # readout: δ = e_c, so the term is g ⊗ I_C
                if trace is not Trace.NONE:
                    acc = g.mul_(c) if acc is None else acc.add_(g, alpha=c)
                else:
                    if acc is None:
                        acc = torch.zeros(ba, c, bb, c, dtype=g.dtype, device=g.device)
                    acc.diagonal(dim1=1, dim2=3).add_(g[..., None])
                continue
            n = da[i].shape[-1]
            if trace is not Trace.NONE:  # Σ_c δ_c(x)·δ_c(x') = one (Ba, C·n) × (C·n, Bb) product
                dg = torch.mm(da[i].reshape(ba, c * n), db[i].reshape(bb, c * n).T)
                acc = dg.mul_(g) if acc is None else acc.addcmul_(dg, g)
            else:
                dg = torch.mm(da[i].reshape(ba * c, n), db[i].reshape(bb * c, n).T).view(ba, c, bb, c)
                gb = g[:, None, :, None]
                acc = dg.mul_(gb) if acc is None else acc.addcmul_(dg, gb)
        return acc if trace is not Trace.NONE else acc.permute(0, 2, 1, 3)


# ---------------------------------------------------------------------------------------------------------------
# Memory estimate
# ---------------------------------------------------------------------------------------------------------------

def _activation_bytes(f, params: dict, x1: torch.Tensor) -> int:
    """Bytes autograd saves for one example's forward pass, parameters excluded (a per-example activation size)."""
    ptrs = {p.untyped_storage().data_ptr() for p in params.values()}
    total = 0

    def pack(t):
        nonlocal total
        if t.untyped_storage().data_ptr() not in ptrs:
            total += t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f({k: v.detach().requires_grad_(True) for k, v in params.items()}, x1[:1])
    return total


def _plan(impl, n, m, c, p, act, item, block, trace, chunk, struct_feat):
    """(bytes of the output, working bytes per block pair, bytes per point of the structured features)."""
    out = n * m * (1 if trace is not Trace.NONE else c * c) * item
    b1, b2 = min(block, n), min(block, m)
    blk_out = b1 * b2 * (1 if trace is not Trace.NONE else c * c) * item
    if impl is NTKImplementation.STRUCTURED:
        work = (b1 + b2) * struct_feat + 3 * b1 * b2 * c * c * item
    elif impl is NTKImplementation.JACOBIAN:  # two J blocks, a transient copy, vmapped backward over B·C outputs
        work = (b1 + 2 * b2) * c * p * item + 2 * b2 * b2 * c * act + 2 * blk_out
    elif impl is NTKImplementation.PER_EXAMPLE:
        work = (b1 + 2 * b2) * c * p * item + 2 * b2 * c * act + 2 * blk_out
    elif impl is NTKImplementation.NTK_VP:
        k = min(chunk, b2 * c)
        work = 3 * k * p * item + k * (b1 + b2) * act + 3 * b1 * b2 * c * c * item
    else:  # naive: whole Jacobians
        work = (n + m) * c * p * item + 2 * blk_out
    return out, work


def ntk_memory_estimate(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                        params: dict | None = None, implementation: str = DEFAULT_IMPLEMENTATION,
                        trace=False, block_size: int = DEFAULT_BLOCK_SIZE, chunk_size: int | None = None) -> dict:
    """Planned peak memory of :func:`empirical_ntk` in bytes (an estimate, accurate to about a factor 2).

    Returns:
        dict with ``output`` (the returned tensor), ``working`` (per block pair: Jacobian blocks / Grams /
        vmapped tangents), ``cache`` (column-block features kept between row blocks), ``total``, and the
        resolved ``implementation``, ``num_params`` P, ``num_outputs`` C.
    """
    impl = _implementation(implementation, model)
    trace = _trace_mode(trace)
    params = {k: v.detach() for k, v in (params or dict(model.named_parameters())).items()}
    buffers = dict(model.named_buffers())
    f = _model_fn(model, buffers)
    x1 = x1.to(next(iter(params.values())).dtype)
    with torch.no_grad():
        c = f(params, x1[:1]).shape[1]
    n, m = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    p = sum(v.numel() for v in params.values())
    item = next(iter(params.values())).element_size()
    act = _activation_bytes(f, params, x1)
    feat = 0
    if impl is NTKImplementation.STRUCTURED:
        dims = [layer.in_features for layer in model.layers]
        feat = (sum(dims) + c * sum(dims[1:])) * item
    out, work = _plan(impl, n, m, c, p, act, item, block_size, trace, chunk_size or block_size, feat)
    cache = m * feat if (impl is NTKImplementation.STRUCTURED and m * feat <= out) else 0
    return {"output": out, "working": work, "cache": cache, "total": out + work + cache,
            "implementation": impl.value, "num_params": p, "num_outputs": c, "block_size": block_size}


# ---------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------

def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _prepare(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, params, device, block_size):
    """Validated inputs of :func:`empirical_ntk`: (params, buffers, a, b, device, block_size) on one device/dtype."""
    if int(block_size) != block_size or block_size < 1:
        raise ValueError(f"block_size: expected a positive integer, got {block_size!r}")
    params = dict(model.named_parameters()) if params is None else dict(params)
    if not params:
        raise ValueError("params: expected at least one parameter tensor")
    dev = utils.resolve_device(device) if device is not None else next(iter(params.values())).device
    params = {k: v.detach().to(dev) for k, v in params.items()}
    dtype = next(iter(params.values())).dtype
    buffers = {k: v.to(dev) for k, v in model.named_buffers()}
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and (not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] == 0):
            raise ValueError(f"{name}: expected a non-empty tensor (N, *feature)")
    a = x1.detach().to(dev, dtype)
    b = a if x2 is None else x2.detach().to(dev, dtype)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"x2: expected feature shape {tuple(a.shape[1:])} like x1, got {tuple(b.shape[1:])}")
    return params, buffers, a, b, dev, int(block_size)


def _check_plan(model: nn.Module, plan: dict, impl: NTKImplementation, trace: Trace, n: int, m: int,
                block_size: int, chunk_size: int | None, dev) -> None:
    """Stop before allocating if the planned memory does not fit; the message names the options that help."""
    option = ("a smaller block_size" + (f" or chunk_size (now {chunk_size or block_size})"
                                       if impl is NTKImplementation.NTK_VP else "")
              + (", trace=True" if trace is Trace.NONE else "")
              + (", or implementation='structured'" if isinstance(model, MLP) and impl.value != "structured"
                 else ", or implementation='ntk_vp'" if impl.value in ("jacobian", "per_example", "naive") else ""))
    utils.check_memory(plan["total"], dev, f"empirical NTK (implementation={impl.value!r}, N={n}, M={m}, "
                       f"C={plan['num_outputs']}, P={plan['num_params']}, block_size={block_size})",
                       option, MEMORY_FRACTION)


def _engine(model: nn.Module, impl: NTKImplementation, params: dict, buffers: dict, chunk_size: int):
    if impl is NTKImplementation.STRUCTURED:
        return _StructuredEngine(model, params)
    f = _model_fn(model, buffers)
    if impl is NTKImplementation.NTK_VP:
        return _NTKVPEngine(f, params, chunk_size)
    return _JacobianEngine(f, params, impl)


def _fill(engine, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, trace: Trace, block_size: int,
          symmetric: bool, cache: dict | None) -> None:
    """Θ block by block into ``out``; for x2 = None only the upper block triangle is computed and mirrored."""
    rows, cols = _blocks(a.shape[0], block_size), _blocks(b.shape[0], block_size)
    for i, (r0, r1) in enumerate(rows):
        fa = engine.features(a[r0:r1])
        for j, (c0, c1) in enumerate(cols):
            if symmetric and j < i:
                continue
            if symmetric and j == i:
                fb = fa
            elif cache is not None and j in cache:
                fb = cache[j]
            else:
                fb = engine.features(b[c0:c1])
                if cache is not None:
                    cache[j] = fb
            blk = engine.pair(fa, fb, trace)
            out[r0:r1, c0:c1] = blk
            if symmetric and j > i:  # Θ[m,n,d,c] = Θ[n,m,c,d]
                out[c0:c1, r0:r1] = blk.transpose(0, 1) if trace is not Trace.NONE else blk.permute(1, 0, 3, 2)
            del blk, fb
        del fa


def empirical_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                  params: dict[str, torch.Tensor] | None = None,
                  implementation: str | NTKImplementation = DEFAULT_IMPLEMENTATION, trace: bool | str = False,
                  block_size: int = DEFAULT_BLOCK_SIZE, chunk_size: int | None = None,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """Empirical NTK of ``model`` between x1 and x2 (math.md (b)).

    Args:
        model: any module mapping (B, *feature) → (B, C) logits; evaluated as it is (call ``eval()`` to disable
            dropout). x1: (N, *feature). x2: (M, *feature), or None for Θ(x1, x1) (computed once per block pair
            and mirrored).
        params: parameters to differentiate, name → tensor (default: the model's own); pass the functional
            parameters of one ensemble member, or a subset for a partial NTK (not with ``structured``).
        implementation: an :class:`NTKImplementation`. trace: False/"none", True/"mean" (Σ_c Θ_cc / C,
            neural-tangents' convention) or "sum".
        block_size: points per block along x1 and x2 (bounds the working memory).
        chunk_size: basis vectors per vmap chunk for ``ntk_vp`` (default ``block_size``).
        device: where to compute (default: the parameters' device); x1, x2 and the parameters are moved there.
    Returns:
        Θ (N, M, C, C) — or (N, M) with a trace — in the parameters' dtype, on ``device``.
    Raises:
        MemoryEstimateError: if the planned memory does not fit (the message names ``block_size`` /
            ``implementation``); ValueError for bad inputs.
    """
    impl = _implementation(implementation, model)
    trace = _trace_mode(trace)
    params, buffers, a, b, dev, block_size = _prepare(model, x1, x2, params, device, block_size)
    plan = ntk_memory_estimate(model, a, None if x2 is None else b, params=params, implementation=impl,
                               trace=trace, block_size=block_size, chunk_size=chunk_size)
    _check_plan(model, plan, impl, trace, a.shape[0], b.shape[0], block_size, chunk_size, dev)
    engine = _engine(model, impl, params, buffers, int(chunk_size or block_size))
    if impl is NTKImplementation.NAIVE:
        block_size = max(a.shape[0], b.shape[0])  # the reference computes whole Jacobians at once
    c, n, m = plan["num_outputs"], a.shape[0], b.shape[0]
    out = torch.empty((n, m) if trace is not Trace.NONE else (n, m, c, c), dtype=a.dtype, device=dev)
    with torch.no_grad() if impl is NTKImplementation.STRUCTURED else torch.enable_grad():
        _fill(engine, a, b, out, trace, block_size, x2 is None, {} if plan["cache"] > 0 else None)
    if trace is Trace.MEAN:
        out.div_(c)
    return out.detach()


def empirical_ntk_stacked(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                          params: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    """Empirical NTKs of S ensemble members whose parameters are stacked on a leading axis.

    Args:
        params: name → (S, *shape), e.g. from ``torch.func.stack_module_state``. ``kwargs`` as for
            :func:`empirical_ntk`. Members are computed one after another (each call is already batched).
    Returns:
        (S, N, M, C, C), or (S, N, M) with a trace.
    """
    sizes = {v.shape[0] for v in params.values()}
    if len(sizes) != 1:
        raise ValueError(f"params: expected one leading member axis S on every tensor, got sizes {sorted(sizes)}")
    s = sizes.pop()
    return torch.stack([empirical_ntk(model, x1, x2, params={k: v[i] for k, v in params.items()}, **kwargs)
                        for i in range(s)])


def flatten_ntk(theta: torch.Tensor) -> torch.Tensor:
    """(N, M, C, C) → sample-major (N·C, M·C), row index n·C + c (math.md (0))."""
    if theta.ndim != 4:
        raise ValueError(f"theta: expected (N, M, C, C), got shape {tuple(theta.shape)}")
    n, m, c, d = theta.shape
    return theta.permute(0, 2, 1, 3).reshape(n * c, m * d)

