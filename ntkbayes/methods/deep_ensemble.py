"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017), without adversarial training.

``members`` independently initialized standard-parameterization networks (the ``map`` family), each trained on CE +
weight decay with its own minibatch order and its own early stopping on validation NLL; the members are trained
together, vectorized over stacked parameters (``ntkbayes.training``). Predictive: the S = ``members`` softmax
outputs; the ensemble predictive averages probabilities (benchmarks.md §4, pitfall 2).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ntkbayes.methods.map import MAP

#: Ensemble size: 5 is the paper's choice; gains flatten beyond it (Ovadia et al. 2019, Fig. 6).
DEFAULT_MEMBERS = 5


class DeepEnsemble(MAP):
    """``members`` MAP networks from independent initializations (``seeding.member_seeds``), trained together.

    Args: ``members`` (S); every other keyword as :class:`~ntkbayes.methods.map.MAP`.
    Predictive: member probabilities (S, N, C), with member logits.
    """

    name = "deep_ensemble"
    family = "ensemble"
    test_params: ClassVar[dict[str, Any]] = {**MAP.test_params, "members": 2}
    dry_run_params: ClassVar[dict[str, Any]] = {**MAP.dry_run_params, "members": 2}
    param_bounds = {**MAP.param_bounds, "members": (1, None)}

    def __init__(self, *, members: int = DEFAULT_MEMBERS, **kwargs: Any):
        super().__init__(**kwargs)
        self._store_params(locals())

    def _fit(self, data, seed, device) -> None:
        self._train(data, seed, device, members=int(self.members))
