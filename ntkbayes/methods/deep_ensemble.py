"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017), without adversarial training.

``members`` independently initialized standard-parameterization networks (the ``map`` family), each trained on CE +
weight decay with its own minibatch order and its own early stopping on validation NLL; the members are trained
together, vectorized over stacked parameters (``ntkbayes.training``). Predictive: the S = ``members`` softmax
outputs; the ensemble predictive averages probabilities (benchmarks.md §4, pitfall 2).
"""

from __future__ import annotations

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

#: Ensemble size: 5 is the paper's choice; gains flatten beyond it (Ovadia et al. 2019, Fig. 6).
DEFAULT_MEMBERS = 5


class DeepEnsemble(MAP):
    """``members`` MAP networks from independent initializations (seeds seed·1000 + k), trained together.

    Args: ``members`` (S); the rest as :class:`~ntkbayes.methods.map.MAP`.
    Predictive: member probabilities (S, N, C).
    """

    name = "deep_ensemble"

    def __init__(self, *, members: int = DEFAULT_MEMBERS, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH,
                 activation: str = "relu", w_std: float = DEFAULT_W_STD, b_std: float = DEFAULT_B_STD,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                 batch_size: int = DEFAULT_BATCH_SIZE, patience: int = DEFAULT_PATIENCE, optimizer: str = "adam",
                 max_iter: int = DEFAULT_MAX_ITER, arch: str = "mlp", dtype: str = "float32"):
        super().__init__(width=width, depth=depth, activation=activation, w_std=w_std, b_std=b_std,
                         weight_decay=weight_decay, lr=lr, epochs=epochs, batch_size=batch_size, patience=patience,
                         optimizer=optimizer, max_iter=max_iter, arch=arch, dtype=dtype)
        self.members = members

    def _fit(self, data, seed, device) -> None:
        if int(self.members) < 1:
            raise ValueError(f"members: expected ≥ 1, got {self.members}")
        self._train(data, seed, device, members=int(self.members))
