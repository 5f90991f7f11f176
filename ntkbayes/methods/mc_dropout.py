"""MC dropout (Gal & Ghahramani, ICML 2016): dropout kept on at test time, S stochastic passes as posterior samples.

One ``map``-family network with dropout probability ``dropout`` after every hidden nonlinearity, trained with CE +
weight decay and early stopping on the validation NLL of the dropout-free network (the usual weight-scaling
approximation). Prediction repeats the batch S = ``num_samples`` times and runs one forward pass with dropout on,
so the S masks are drawn in one vectorized call; the masks come from the global RNG, seeded inside a fork with
``derive_seed(seed, "dropout_predict")``, so the same seed and inputs give the same samples.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import Tensor

from ntkbayes import training
from ntkbayes.methods.map import MAP
from ntkbayes.predictive import Predictive
from ntkbayes.seeding import derive_seed

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

    Args: ``dropout`` p in (0, 1); ``num_samples`` S; every other keyword as :class:`~ntkbayes.methods.map.MAP`
    (the model's factory must take ``dropout``). Predictive: member probabilities (S, N, C), one member per
    dropout mask, with member logits.
    """

    name = "mc_dropout"
    family = "dropout"
    test_params: ClassVar[dict[str, Any]] = {**MAP.test_params, "num_samples": 4}
    dry_run_params: ClassVar[dict[str, Any]] = {**MAP.dry_run_params, "num_samples": 8}
    #: Weight decay × dropout rate, the two regularizers of Gal & Ghahramani's model (12 points: the tuner's budget of
    #: 8 takes a deterministic subsample that tries every value of each).
    search_space: ClassVar[dict[str, list]] = {"weight_decay": [1e-5, 1e-4, 1e-3, 1e-2], "dropout": [0.05, 0.1, 0.2]}
    param_bounds = {**MAP.param_bounds, "dropout": (0.01, 0.99), "num_samples": (1, None)}

    def __init__(self, *, dropout: float = DEFAULT_DROPOUT, num_samples: int = DEFAULT_NUM_SAMPLES, **kwargs: Any):
        super().__init__(**kwargs)
        self._store_params(locals())

    def _fit(self, data, seed, device) -> None:
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
        with training.seeded_rng(derive_seed(self.seed_, "dropout_predict"), self.device_):
            for a in range(0, x.shape[0], step):
                xb = x[a:a + step]
                rep = xb.unsqueeze(0).expand(s, *xb.shape).reshape(s * xb.shape[0], *xb.shape[1:])
                logits = torch.func.functional_call(self.dropout_module_, params, (rep,))
                out.append(logits.reshape(s, xb.shape[0], -1))
        return Predictive.from_logits(torch.cat(out, 1))
