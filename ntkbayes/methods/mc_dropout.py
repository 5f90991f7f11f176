"""MC dropout (Gal & Ghahramani, ICML 2016): dropout kept on at test time, S stochastic passes as posterior samples.

One ``map``-family network with dropout probability ``dropout`` after every hidden nonlinearity, trained with CE +
weight decay and early stopping on the validation NLL of the dropout-free network (the usual weight-scaling
approximation). Prediction repeats the batch S = ``num_samples`` times and runs one forward pass with dropout on,
so the S masks are drawn in one vectorized call; the masks come from the global RNG seeded from the fit seed, so
the same seed and inputs give the same samples.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ntkbayes import training
from ntkbayes.methods.map import (
    DEFAULT_B_STD,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEPTH,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_MAX_ITER,
    DEFAULT_PATIENCE,
    DEFAULT_W_STD,
    DEFAULT_WEIGHT_DECAY,
    DEFAULT_WIDTH,
    MAP,
)
from ntkbayes.predictive import Predictive

#: Dropout probability: 0.1 keeps the MAP accuracy on the offline datasets while giving spread (Gal's UCI setups
#: use 0.05–0.1; 0.5 costs accuracy on small MLPs).
DEFAULT_DROPOUT = 0.1
#: Stochastic passes at prediction: 32 keeps the Monte-Carlo error of the averaged probabilities near 1/√32 of the
#: pass-to-pass spread at a modest (S·N·C) memory.
DEFAULT_NUM_SAMPLES = 32
#: Rows (points × samples) per forward pass at prediction.
PREDICT_ROWS = 8192


class MCDropout(MAP):
    """MAP network trained with dropout; S = ``num_samples`` dropout passes at prediction.

    Args: ``dropout`` p in (0, 1); ``num_samples`` S; the rest as :class:`~ntkbayes.methods.map.MAP`.
    Predictive: member probabilities (S, N, C), one member per dropout mask.
    """

    name = "mc_dropout"

    def __init__(self, *, dropout: float = DEFAULT_DROPOUT, num_samples: int = DEFAULT_NUM_SAMPLES,
                 width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH, activation: str = "relu",
                 w_std: float = DEFAULT_W_STD, b_std: float = DEFAULT_B_STD,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                 batch_size: int = DEFAULT_BATCH_SIZE, patience: int = DEFAULT_PATIENCE, optimizer: str = "adam",
                 max_iter: int = DEFAULT_MAX_ITER, arch: str = "mlp", dtype: str = "float32"):
        super().__init__(width=width, depth=depth, activation=activation, w_std=w_std, b_std=b_std,
                         weight_decay=weight_decay, lr=lr, epochs=epochs, batch_size=batch_size, patience=patience,
                         optimizer=optimizer, max_iter=max_iter, arch=arch, dtype=dtype)
        self.dropout = dropout
        self.num_samples = num_samples

    def _fit(self, data, seed, device) -> None:
        if not 0.0 < float(self.dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in (0, 1), got {self.dropout}")
        if int(self.num_samples) < 1:
            raise ValueError(f"num_samples: expected ≥ 1, got {self.num_samples}")
        self._train(data, seed, device, members=1, dropout=float(self.dropout))
        self.dropout_module_ = copy.deepcopy(self.module_).train()
        self.seed_ = int(seed)
        self.info_.update(dropout=float(self.dropout), num_samples=int(self.num_samples))

    def _predict(self, x: Tensor) -> Predictive:
        s = int(self.num_samples)
        x = x.to(device=self.device_, dtype=self.torch_dtype)
        params = training.member(self.params_, 0)
        step = max(1, PREDICT_ROWS // s)
        out = []
        with training.seeded_rng(self.seed_ * 1000 + 999, self.device_):
            for a in range(0, x.shape[0], step):
                xb = x[a:a + step]
                rep = xb.unsqueeze(0).expand(s, *xb.shape).reshape(s * xb.shape[0], *xb.shape[1:])
                logits = torch.func.functional_call(self.dropout_module_, params, (rep,))
                out.append(logits.reshape(s, xb.shape[0], -1))
        return Predictive.from_logits(torch.cat(out, 1))
