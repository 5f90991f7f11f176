"""Multinomial logistic regression: the worked example of "Adding a method" in the README.

p(y | x) = softmax(W x + b) with W (C, D), b (C,), fitted by full-batch L-BFGS on math.md §0's objective for a
linear model: (1/N) Σ CE + (λ/2)‖W‖² (bias unpenalized). The objective is strictly convex for λ > 0, so the fit
starts from zero, ignores the seed and is deterministic. Inputs (N, ...) are flattened; computation is float64.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ntkbayes.methods.base import Method
from ntkbayes.predictive import Predictive

#: λ: a light L2 that keeps the optimum finite on separable data (where plain CE has none).
DEFAULT_WEIGHT_DECAY = 1e-3
#: L-BFGS iteration cap: the offline datasets converge (‖∇‖ < 1e-9) in well under 500 iterations.
DEFAULT_MAX_ITER = 500


class Logistic(Method):
    """Linear softmax classifier. Args: weight_decay λ ≥ 0, max_iter. Predictive: S = 1, (1, N, C)."""

    name = "logistic"
    family = "linear"
    dry_run_params: ClassVar[dict[str, Any]] = {"max_iter": 10}
    search_space: ClassVar[dict[str, list]] = {"weight_decay": [1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]}
    param_bounds = {"weight_decay": (0.0, None), "max_iter": (1, None)}

    def __init__(self, *, weight_decay: float = DEFAULT_WEIGHT_DECAY, max_iter: int = DEFAULT_MAX_ITER):
        self._store_params(locals())

    def _fit(self, data, seed: int, device: torch.device) -> None:
        x = data.train.x.flatten(1).to(device=device, dtype=torch.float64)
        y = data.train.y.to(device)
        w = torch.zeros(self.num_classes_, x.shape[1], dtype=x.dtype, device=device, requires_grad=True)
        b = torch.zeros(self.num_classes_, dtype=x.dtype, device=device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=int(self.max_iter), tolerance_grad=1e-9, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * self.weight_decay * w.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        loss = closure().detach()  # also refreshes the gradients at the final parameters
        self.weight_, self.bias_ = w.detach(), b.detach()
        self.info_ = {"weight_decay": float(self.weight_decay), "iterations": int(opt.state[w]["n_iter"]),
                      "final_loss": float(loss), "grad_norm": float(torch.cat([w.grad.flatten(), b.grad]).norm())}

    def _predict(self, x: Tensor) -> Predictive:
        logits = x.flatten(1).to(self.weight_) @ self.weight_.T + self.bias_
        return Predictive.from_logits(logits.unsqueeze(0))
