"""Infinite-width NNGP and NTK kernels of NTK-parameterized MLPs (math.md (a)).

Jacot, Gabriel & Hongler (2018), Lee et al. (2019) and neural-tangents ``stax`` (ntk parameterization). For a
network Dense → (φ → Dense) × L with σw = ``w_std``, σb = ``b_std`` (math.md (a))::

    K^1(x,x') = σw² · x·x'/d + σb²,   Θ^1 = K^1                       (input kernel normalized by d)
    K^{l+1}   = σw² · E[φ(u)φ(v)] + σb²,   (u, v) ~ N(0, [[K^l(x,x), K^l(x,x')], [K^l(x,x'), K^l(x',x')]])
    Θ^{l+1}   = K^{l+1} + σw² · E[φ'(u)φ'(v)] · Θ^l
    NNGP = K^{L+1},  NTK = Θ^{L+1}   (per output; the C-output kernel is Θ ⊗ I_C)

The two Gaussian expectations are closed forms for relu (arc-cosine kernels of order 1 and 0), erf and identity,
and 2-D Gauss–Hermite quadrature for any other elementwise activation (``ExpectationMethod``). Everything is
computed in float64, row block by row block, so memory is O(block_rows × M) besides the (N, M) outputs; the
diagonals K^l(x,x) that cross blocks need come from a separate O(N) recursion (the joint kernel on the union of
inputs, as math.md (a) asks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple

import scipy.special
import torch

from ntkbayes.models import Activation
from ntkbayes.utils import check_memory

#: Gauss–Hermite nodes per dimension for the quadrature path (n² evaluations per kernel entry). Measured against
#: an 800-node reference for pre-activation variances k ≤ 2 (typical with σw = 1.5 and standardized inputs):
#: gelu, softplus ≤ 1e-13; tanh ≤ 1.2e-8 (its poles at ±iπ/2 limit Gauss–Hermite convergence); at k = 8: gelu
#: 4e-10, softplus 2e-10, tanh 6e-5. Kinks (relu through quadrature) converge only algebraically. Raise ``nodes``
#: for large variances; scipy's ``roots_hermitenorm`` stays stable for large n.
DEFAULT_QUADRATURE_NODES = 100
#: Rows of the (N, M) output computed at once: bounds the working memory to a few block_rows × M float64 arrays.
DEFAULT_BLOCK_ROWS = 1024
#: Kernel entries evaluated at once on the quadrature path: entries × nodes² float64 values (~64 MB at 2^23).
_QUAD_VALUES_PER_CHUNK = 2**23


class ExpectationMethod(str, Enum):
    """How E[φ(u)φ(v)] and E[φ'(u)φ'(v)] are evaluated."""

    AUTO = "auto"
    """Closed form where one exists (relu, erf, identity), Gauss–Hermite quadrature otherwise."""
    CLOSED_FORM = "closed_form"
    """Closed form only; an error for activations without one."""
    QUADRATURE = "quadrature"
    """2-D Gauss–Hermite quadrature through the Cholesky factor of the 2×2 covariance, for any activation."""


class MLPKernels(NamedTuple):
    """Per-output infinite-width kernels, each (N, M) float64 (or (N,) from :func:`mlp_kernels_diag`)."""

    nngp: torch.Tensor
    ntk: torch.Tensor


_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _softplus_grad(x: torch.Tensor) -> torch.Tensor:
    # torch.nn.functional.softplus returns x itself above threshold 20, so its derivative there is exactly 1.
    return torch.where(x > 20, torch.ones_like(x), torch.sigmoid(x))


_DERIVATIVES: dict[Activation, Callable[[torch.Tensor], torch.Tensor]] = {
    Activation.RELU: lambda x: (x > 0).to(x.dtype),  # torch's relu backward uses 0 at x = 0
    Activation.ERF: lambda x: (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x),
    Activation.GELU: lambda x: 0.5 * (1.0 + torch.erf(x / _SQRT_2)) + x * _INV_SQRT_2PI * torch.exp(-0.5 * x * x),
    Activation.TANH: lambda x: 1.0 - torch.tanh(x) ** 2,
    Activation.SOFTPLUS: _softplus_grad,
    Activation.IDENTITY: torch.ones_like,
}


def _autograd_derivative(phi: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def dphi(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(phi(xr).sum(), xr)
        return g

    return dphi


def activation_pair(activation: str | Activation | Callable) -> tuple[Callable, Callable, Activation | None]:
    """(φ, φ', enum member or None) for an :class:`~ntkbayes.models.Activation` name or an elementwise callable.

    Named activations use analytic derivatives that equal torch's autograd (relu'(0) = 0, softplus' = 1 above
    torch's threshold 20); a callable is differentiated with autograd (it must be elementwise).
    """
    from ntkbayes.models import activation_fn

    if callable(activation) and not isinstance(activation, str):
        return activation, _autograd_derivative(activation), None
    phi = activation_fn(activation)  # ValueError naming the activation if unknown
    act = Activation(activation)
    return phi, _DERIVATIVES[act], act


# ---------------------------------------------------------------------------------------------------------------
# Gaussian expectations. k11 (B,1) or (B,), k22 (1,M) or (B,), k12 (B,M): variances and covariance of (u, v).
# ---------------------------------------------------------------------------------------------------------------

def _correlation(k11, k22, k12):
    s = torch.sqrt(k11 * k22)
    rho = torch.where(s > 0, k12 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(k12))
    return s, rho.clamp(-1.0, 1.0)


def _relu_closed(k11, k22, k12):
    # math.md (a), ReLU: arc-cosine kernels of order 1 and 0 (Cho & Saul 2009)
    s, rho = _correlation(k11, k22, k12)
    theta = torch.arccos(rho)
    sin = torch.sqrt((1.0 - rho * rho).clamp_min(0.0))
    e = s / (2 * math.pi) * (sin + (math.pi - theta) * rho)
    ed = (math.pi - theta) / (2 * math.pi)
    return e, torch.where(s > 0, ed, torch.zeros_like(ed))  # u ≡ 0 ⇒ step(u) = 0


def _erf_closed(k11, k22, k12):
    # math.md (a), erf (Williams 1997): a = (1+2k11)(1+2k22)
    a = (1.0 + 2.0 * k11) * (1.0 + 2.0 * k22)
    e = (2.0 / math.pi) * torch.arcsin((2.0 * k12 / torch.sqrt(a)).clamp(-1.0, 1.0))
    ed = (4.0 / math.pi) / torch.sqrt((a - 4.0 * k12 * k12).clamp_min(1e-300))
    return e, ed


def _identity_closed(k11, k22, k12):
    return k12.clone(), torch.ones_like(k12)


_CLOSED = {Activation.RELU: _relu_closed, Activation.ERF: _erf_closed, Activation.IDENTITY: _identity_closed}


def _diag_closed(act: Activation, k: torch.Tensor):
    """E[φ(u)²], E[φ'(u)²] for u ~ N(0, k), k (N,)."""
    if act is Activation.RELU:
        return 0.5 * k, torch.where(k > 0, torch.full_like(k, 0.5), torch.zeros_like(k))
    if act is Activation.ERF:
        return (2.0 / math.pi) * torch.arcsin(2.0 * k / (1.0 + 2.0 * k)), (4.0 / math.pi) / torch.sqrt(1.0 + 4.0 * k)
    return k.clone(), torch.ones_like(k)


def _gauss_hermite(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilists' Gauss–Hermite nodes z and weights w with Σ w g(z) ≈ E[g(Z)], Z ~ N(0, 1)."""
    z, w = scipy.special.roots_hermitenorm(n)
    return (torch.as_tensor(z, dtype=torch.float64, device=device),
            torch.as_tensor(w / math.sqrt(2 * math.pi), dtype=torch.float64, device=device))


def _quad_cross(phi, dphi, k11, k22, k12, nodes: int):
    """2-D Gauss–Hermite: u = √k11 z1, v = √k22 (ρ z1 + √(1−ρ²) z2) (Cholesky of the 2×2 covariance)."""
    shape = torch.broadcast_shapes(k11.shape, k22.shape, k12.shape)
    a, b, c = (t.expand(shape).reshape(-1) for t in (k11, k22, k12))
    z, w = _gauss_hermite(nodes, k12.device)
    e = torch.empty_like(c)
    ed = torch.empty_like(c)
    chunk = max(1, _QUAD_VALUES_PER_CHUNK // (nodes * nodes))
    for i in range(0, c.numel(), chunk):
        sa, sb, sc = a[i:i + chunk], b[i:i + chunk], c[i:i + chunk]
        s, rho = _correlation(sa, sb, sc)
        su, sv = torch.sqrt(sa)[:, None], torch.sqrt(sb)[:, None, None]
        u = su * z  # (E, n): node i of z1
        v = sv * (rho[:, None, None] * z[None, :, None] + torch.sqrt((1 - rho * rho).clamp_min(0))[:, None, None]
                  * z[None, None, :])  # (E, n_i, n_j)
        e[i:i + chunk] = torch.einsum("ei,i,eij,j->e", phi(u), w, phi(v), w)
        ed[i:i + chunk] = torch.einsum("ei,i,eij,j->e", dphi(u), w, dphi(v), w)
    return e.reshape(shape), ed.reshape(shape)


def _quad_diag(phi, dphi, k, nodes: int):
    z, w = _gauss_hermite(nodes, k.device)
    u = torch.sqrt(k)[:, None] * z
    return (phi(u) ** 2) @ w, (dphi(u) ** 2) @ w


def gaussian_expectations(activation, k11: torch.Tensor, k22: torch.Tensor, k12: torch.Tensor, *,
                          method: str | ExpectationMethod = "auto", nodes: int = DEFAULT_QUADRATURE_NODES):
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]), elementwise (math.md (a)).

    Args:
        activation: an :class:`~ntkbayes.models.Activation` name or an elementwise callable.
        k11, k22, k12: broadcastable float64 tensors (e.g. (N, 1), (1, M), (N, M)).
        method: :class:`ExpectationMethod`. nodes: Gauss–Hermite nodes per dimension (quadrature path).
    Returns:
        (E[φφ], E[φ'φ']) with the broadcast shape.
    """
    phi, dphi, act = activation_pair(activation)
    method = ExpectationMethod(method)
    if method is not ExpectationMethod.QUADRATURE and act in _CLOSED:
        return _CLOSED[act](k11, k22, k12)
    if method is ExpectationMethod.CLOSED_FORM:
        raise ValueError(f"activation {activation!r} has no closed form; use method='quadrature' or 'auto'")
    return _quad_cross(phi, dphi, k11, k22, k12, nodes)


def _diag_expectations(activation, k, method: ExpectationMethod, nodes: int):
    phi, dphi, act = activation_pair(activation)
    if method is not ExpectationMethod.QUADRATURE and act in _CLOSED:
        return _diag_closed(act, k)
    if method is ExpectationMethod.CLOSED_FORM:
        raise ValueError(f"activation {activation!r} has no closed form; use method='quadrature' or 'auto'")
    return _quad_diag(phi, dphi, k, nodes)


# ---------------------------------------------------------------------------------------------------------------
# Recursions
# ---------------------------------------------------------------------------------------------------------------

def _as_inputs(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"{name}: expected a tensor (N, D) or (N, *shape), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    x = x.detach().flatten(1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains non-finite values")
    return x


def _check_args(depth: int, w_std: float, b_std: float, nodes: int) -> None:
    if int(depth) != depth or depth < 0:
        raise ValueError(f"depth: expected an integer ≥ 0 (number of hidden nonlinearities), got {depth!r}")
    if w_std < 0 or b_std < 0:
        raise ValueError(f"w_std, b_std: expected ≥ 0, got {w_std}, {b_std}")
    if nodes < 2:
        raise ValueError(f"nodes: expected ≥ 2 Gauss–Hermite nodes, got {nodes}")


def _diag_recursion(x, depth, activation, w_std, b_std, method, nodes):
    """Per-layer variances K^l(x,x), l = 1..L+1, and Θ^{L+1}(x,x). x (N, D) → list of (N,), (N,)."""
    w2, b2 = w_std**2, b_std**2
    k = w2 * (x * x).sum(1) / x.shape[1] + b2  # math.md (a): K^1 = σw² x·x/d + σb²
    ks, theta = [k], k.clone()
    for _ in range(depth):
        e, ed = _diag_expectations(activation, k, method, nodes)
        k_new = w2 * e + b2
        theta = k_new + w2 * ed * theta
        k = k_new
        ks.append(k)
    return ks, theta


def mlp_kernels(x1: torch.Tensor, x2: torch.Tensor | None = None, *, depth: int,
                activation: str | Activation | Callable = "relu", w_std: float = 1.5, b_std: float = 0.05,
                method: str | ExpectationMethod = "auto", nodes: int = DEFAULT_QUADRATURE_NODES,
                block_rows: int = DEFAULT_BLOCK_ROWS) -> MLPKernels:
    """Infinite-width NNGP and NTK of an NTK-parameterized MLP, per output (math.md (a)).

    Args:
        x1: (N, D) inputs (or (N, *shape), flattened; d = D normalizes the input kernel).
        x2: (M, D) inputs, or None for the square kernel on x1 (M = N).
        depth: number of hidden nonlinearities L (as ``models.MLP(depth=L)``; the hidden width does not enter).
        activation: an :class:`~ntkbayes.models.Activation` name or an elementwise callable.
        w_std, b_std: σw, σb of every layer, readout included.
        method: :class:`ExpectationMethod`; nodes: Gauss–Hermite nodes per dimension for the quadrature path.
        block_rows: rows of the output computed at once (memory O(block_rows × M)).
    Returns:
        :class:`MLPKernels` (nngp, ntk), each (N, M) float64 on x1's device. The kernel of C outputs is
        ``ntk ⊗ I_C`` (math.md (0)).
    """
    _check_args(depth, w_std, b_std, nodes)
    method = ExpectationMethod(method)
    a = _as_inputs(x1, "x1")
    square = x2 is None
    b = a if square else _as_inputs(x2, "x2").to(a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x2: expected {a.shape[1]} features like x1, got {b.shape[1]}")
    n, m = a.shape[0], b.shape[0]
    rows = max(1, min(int(block_rows), n))
    check_memory(8 * (2 * n * m + 6 * rows * m), a.device, f"analytic kernels ({n} × {m} float64)",
                 "a smaller block_rows or fewer points")
    # math.md (a): "always compute the joint kernel on the union of inputs" — the diagonals come from the
    # O(N + M) recursion below, the cross entries block by block.
    q1, _ = _diag_recursion(a, depth, activation, w_std, b_std, method, nodes)
    q2 = q1 if square else _diag_recursion(b, depth, activation, w_std, b_std, method, nodes)[0]
    nngp = torch.empty(n, m, dtype=torch.float64, device=a.device)
    ntk = torch.empty_like(nngp)
    w2, b2 = w_std**2, b_std**2
    for i in range(0, n, rows):
        sl = slice(i, min(i + rows, n))
        cols = slice(i, m) if square else slice(0, m)  # square: upper block-triangle only, mirrored below
        k = w2 * (a[sl] @ b[cols].T) / a.shape[1] + b2  # K^1
        same = None
        if square:  # entries with x = x' use the exact diagonal expectations (ρ = 1 exactly)
            r = torch.arange(sl.start, sl.stop, device=a.device)
            same = r[:, None] == torch.arange(cols.start, cols.stop, device=a.device)[None, :]
            k = torch.where(same, q1[0][sl][:, None].expand_as(k), k)
        theta = k.clone()
        for layer in range(depth):
            k11, k22 = q1[layer][sl][:, None], q2[layer][cols][None, :]
            e, ed = gaussian_expectations(activation, k11, k22, k, method=method, nodes=nodes)
            if same is not None:
                de, ded = _diag_expectations(activation, q1[layer][sl], method, nodes)
                e = torch.where(same, de[:, None].expand_as(e), e)
                ed = torch.where(same, ded[:, None].expand_as(ed), ed)
            k_new = w2 * e + b2  # K^{l+1}
            theta = k_new + w2 * ed * theta  # Θ^{l+1}
            k = k_new
        nngp[sl, cols], ntk[sl, cols] = k, theta
        if square:
            nngp[cols, sl], ntk[cols, sl] = k.T, theta.T
            for out in (nngp, ntk):  # the diagonal block: exact symmetry (quadrature is not symmetric in u, v)
                out[sl, sl] = 0.5 * (out[sl, sl] + out[sl, sl].T)
    return MLPKernels(nngp, ntk)


def mlp_kernels_diag(x: torch.Tensor, *, depth: int, activation: str | Activation | Callable = "relu",
                     w_std: float = 1.5, b_std: float = 0.05, method: str | ExpectationMethod = "auto",
                     nodes: int = DEFAULT_QUADRATURE_NODES) -> MLPKernels:
    """Diagonals K(x,x), Θ(x,x) of :func:`mlp_kernels` in O(N): x (N, D) → (nngp (N,), ntk (N,)) float64."""
    _check_args(depth, w_std, b_std, nodes)
    ks, theta = _diag_recursion(_as_inputs(x, "x"), depth, activation, w_std, b_std,
                                ExpectationMethod(method), nodes)
    return MLPKernels(ks[-1], theta)


def readout_split(x1: torch.Tensor, x2: torch.Tensor | None = None, **kernel_args) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """Split the infinite-width NTK into the readout layer's part and the rest (math.md (a) "Readout split").

    The readout's parameters contribute exactly the NNGP K = K^{L+1}; all earlier layers contribute Θ − K. The
    NTKGP prior (math.md (e)) uses Θ − K as the covariance of the untrainable function δ.

    Args:
        x1 (N, D), x2 (M, D) or None; ``kernel_args`` as for :func:`mlp_kernels` (depth, activation, ...).
    Returns:
        (readout (N, M), rest (N, M)) float64 with readout + rest = NTK.
    """
    nngp, ntk = mlp_kernels(x1, x2, **kernel_args)
    return nngp, ntk - nngp
