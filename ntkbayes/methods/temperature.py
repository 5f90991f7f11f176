"""Temperature scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017) on a MAP network.

p(y|x) = softmax(f(x)/T): one scalar T > 0 fitted by minimizing the NLL on the validation split (never on test;
benchmarks.md §4 pitfall 4) with torch-uncertainty's ``TemperatureScaler`` (L-BFGS on 1/T). T changes confidence,
not the argmax, so accuracy equals the MAP's. The fitted T is recorded in ``info_["temperature"]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ntkbayes import training
from ntkbayes.methods.map import MAP
from ntkbayes.predictive import Predictive


class _Logits(nn.Module):
    """A trained member as a plain module: x (N, ...) → logits (N, C), what the scaler calibrates."""

    def __init__(self, method: MAP):
        super().__init__()
        self._method = method

    def forward(self, x: Tensor) -> Tensor:
        return self._method._logits(x)[0]


class Temperature(MAP):
    """MAP network whose logits are divided by a temperature T fitted on the validation split.

    Args: as :class:`~ntkbayes.methods.map.MAP` (no keywords of its own). Predictive: S = 1, softmax(f(x)/T),
    with the scaled logits. Family "map": it is the MAP network, recalibrated.
    """

    name = "temperature"

    def _fit(self, data, seed, device) -> None:
        from torch_uncertainty.post_processing import TemperatureScaler

        self._train(data, seed, device, members=1)
        loader = DataLoader(TensorDataset(data.val.x, data.val.y), batch_size=training.DEFAULT_EVAL_BATCH_SIZE)
        scaler = TemperatureScaler(model=_Logits(self), device=device)
        scaler.fit(loader, progress=False)
        t = float(scaler.temperature[0].detach().reshape(()))
        if not (math.isfinite(t) and t > 0):
            raise FloatingPointError(f"temperature: the scaler converged to T = {t}; expected a finite T > 0")
        self.temperature_ = t
        with torch.no_grad():
            logits = self._logits(data.val.x)[0].double().cpu()
            y = data.val.y
            nll = [float(nn.functional.cross_entropy(logits / tt, y)) for tt in (1.0, t)]
        self.info_.update(temperature=t, val_nll_before=nll[0], val_nll_after=nll[1])

    def _predict(self, x: Tensor) -> Predictive:
        return Predictive.from_logits(self._logits(x) / self.temperature_)
