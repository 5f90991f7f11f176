"""Rounding-error bounds the ntk tests set their tight tolerances from (float64).

Every bound here holds for any summation order, blocking or FMA use, so a tolerance computed from it holds on
any CPU (AVX2 or AVX-512 kernels in ATen, MKL or OpenBLAS), not only on the machine a test was written on.
Higham, "Accuracy and Stability of Numerical Algorithms" (2002): with u = ε/2 the unit roundoff and
γ_n = n·u / (1 − n·u), a dot product of length n is off by at most γ_n·|x|ᵀ|y| (Thm 3.5/Lemma 3.4), hence
|fl(AB) − AB| ≤ γ_n |A||B| elementwise for a product with inner dimension n.
"""

import torch

#: Machine epsilon of float64, 2.2e-16 (the spacing of doubles at 1; the unit roundoff u is ε/2).
EPS = torch.finfo(torch.float64).eps


def gamma(n: int) -> float:
    """γ_n = n·u / (1 − n·u) with u = ε/2: the relative error bound of a sum or dot product of n terms."""
    u = EPS / 2
    return n * u / (1 - n * u)


def ulps(x, k: float = 4.0) -> float:
    """k units in the last place of the largest |x|: for results that two computations round differently once
    or a few times (an elementwise op, a softmax, a reordered sum of a handful of terms)."""
    return k * EPS * float(torch.as_tensor(x).abs().max())


def matmul_bound(a: torch.Tensor, b: torch.Tensor, k: float = 1.0) -> float:
    """Largest elementwise bound γ_n·(|A||B|) on the rounding error of A @ B (inner dimension n), times ``k``.

    Two computations of the same product (different order, fused or blocked) differ by at most twice this.
    """
    n = a.shape[-1]
    return k * gamma(n) * float((a.abs() @ b.abs()).max())
