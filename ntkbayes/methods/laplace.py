"""Linearized Laplace on a trained MAP network through laplace-torch (Daxberger et al., "Laplace Redux", NeurIPS 2021).

θ | D ≈ N(θ̂, H⁻¹) with H = Jᵀ Ŵ J + κ I (the GGN of Σ CE + (κ/2)‖θ‖²), restricted to the readout layer or over all
weights, with a Kronecker-factored, diagonal or full H; the GLM (linearized) predictive f(x*) ~ N(μ*, Σ*) pushed
through the softmax by the probit approximation or by Monte Carlo (math.md (d)). The summed-CE convention makes
laplace-torch's ``prior_precision`` the κ = λN of math.md §0; κ is chosen by a grid over validation NLL computed
with exactly the predictive used at test time (benchmarks.md §4, pitfall 4), widened by decades while the best κ
sits on its edge, or by the Laplace marginal likelihood.

Why validation NLL by default: the MAP (early-stopped, small λ) interpolates its training set (digits: training
NLL 2e-4), so the softmax is saturated on every training point, the GGN Jᵀ(diag p − ppᵀ)J ≈ 0 and the Laplace
posterior is essentially the prior N(θ̂, κ⁻¹I). Its evidence is then maximized by the κ that explains ‖θ̂‖²
(κ ≈ 1.2 on digits, last layer, where the readout features have ‖φ(x)‖² ≈ 390): a logit spread of
√(‖φ‖²/κ) ≈ 18 around MAP logits whose margins are ≈ 9, symmetric although the true posterior is skewed
towards larger margins — under-confident (test ECE 0.32, NLL 0.43 against the MAP's 0.008). Retraining with a
larger λ, all weights, a full last-layer Hessian or the probit link do not change this (measured: ECE 0.07–0.66).
On such data the validation NLL decreases monotonically in κ and the fit ends at the widened grid's upper edge,
i.e. at the MAP's predictive; ``info_["prior_precision_at_edge"]`` says so.

The network is the ``map`` one (same training, same seed); it is rebuilt from ``torch.nn.Linear``/``Conv2d``
layers (:func:`ntkbayes.models.as_torch_layers`) because laplace-torch's last-layer search and curvlinops' KFAC
recognize layers by type. Known traps guarded here: BatchNorm (running statistics change under laplace-torch's
forward passes and KFAC has no factors for it — rejected; the ResNet here uses GroupNorm), and memory with many
classes (the full Hessian is P², and the GLM predictive's Jacobians are N·C·P: the full Hessian is refused, with
the option named, when it cannot fit, and Jacobians are computed in row blocks sized to a memory budget).
"""

from __future__ import annotations

import math
import warnings
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ntkbayes.methods.base import GaussianLink
from ntkbayes.methods.map import MAP
from ntkbayes.models import as_torch_layers
from ntkbayes.predictive import Predictive
from ntkbayes.seeding import derive_seed
from ntkbayes.training import member
from ntkbayes.utils import check_memory


class Subset(str, Enum):
    """Which weights get a Gaussian posterior (the rest stay at the MAP)."""

    LAST_LAYER = "last_layer"
    """The readout layer only (cheap; the usual default of Laplace Redux)."""
    ALL = "all"
    """Every weight."""


class Hessian(str, Enum):
    """Structure of the GGN approximation H."""

    KRON = "kron"
    """Kronecker-factored per layer (K-FAC)."""
    DIAG = "diag"
    """Diagonal."""
    FULL = "full"
    """Dense P × P (only where the memory estimate allows)."""


class PriorFit(str, Enum):
    """How the prior precision κ is chosen."""

    MARGLIK = "marglik"
    """Maximize the Laplace log marginal likelihood over a scalar κ (laplace-torch, Adam on log κ); under-confident
    where the MAP interpolates its training set (module docstring)."""
    VAL_NLL = "val_nll"
    """Minimize validation NLL over :data:`PRIOR_GRID`, widened at its edges (:data:`MAX_GRID_EXTENSIONS`), with
    the same link and samples as prediction."""
    MAP = "map"
    """κ = λN, the prior precision of the MAP objective itself (math.md §0): the Laplace approximation of the
    posterior whose mode the MAP is — the one ``hmc`` samples with the same ``weight_decay``. Nothing is fitted."""


#: Posterior over the readout only: Laplace Redux's recommended default (most of the gain, a fraction of the cost).
DEFAULT_SUBSET = Subset.LAST_LAYER
#: K-FAC: near-full quality at block-diagonal cost (Laplace Redux §4).
DEFAULT_HESSIAN = Hessian.KRON
#: Monte Carlo: probit is off by up to 0.1 in probability when Σ* is large (math.md (d), verified).
DEFAULT_LINK = GaussianLink.MC
#: Validation NLL: the marginal likelihood is under-confident where the MAP interpolates (module docstring;
#: digits ECE 0.32 vs 0.007).
DEFAULT_PRIOR_FIT = PriorFit.VAL_NLL
#: Logit samples for ``link="mc"``: the same Monte-Carlo budget as ``mc_dropout``, so their stored predictions and
#: mutual-information estimates compare.
DEFAULT_NUM_SAMPLES = 32
#: κ grid for ``prior_fit="val_nll"``: laplace-torch's default range 1e-4 … 1e4, 5 points per decade.
PRIOR_GRID = tuple(10.0 ** (k / 5) for k in range(-20, 21))
#: While the best κ is the grid's largest (smallest), one more decade (5 points) is tried above (below), at most
#: this many times each way: 1e-8 … 1e8 in all. From κ = 1e6 on, the last-layer predictive's NLL equals the MAP's
#: to 4 decimals on digits, so a fit still on the upper edge is the MAP's predictive.
MAX_GRID_EXTENSIONS = 4
#: Adam steps of the marginal-likelihood fit (laplace-torch's default, lr 0.1 on log κ, started at κ = 1).
MARGLIK_STEPS = 100
#: Bytes the per-block Jacobians (rows · C · P) of the GLM predictive and the curvature fit may take: large
#: enough for full GEMMs, small enough for a laptop or a shared GPU.
JACOBIAN_BYTES = 2**28
#: Upper bound on rows per block.
MAX_ROWS = 1024


def _readout(net: nn.Module) -> tuple[str, nn.Module]:
    """Name and module of the network's last ``nn.Linear`` (the readout laplace-torch's last-layer subset uses)."""
    if isinstance(getattr(net, "linear", None), nn.Linear):  # torch-uncertainty's ResNet
        return "linear", net.linear
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"laplace: the network {type(net).__name__} has no torch.nn.Linear readout")
    return linears[-1]


def check_no_batchnorm(net: nn.Module) -> None:
    """Refuse networks with BatchNorm (its running statistics and missing K-FAC factors are Laplace traps)."""
    bn = [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn:
        raise ValueError(f"laplace: the network has BatchNorm layers ({', '.join(bn[:3])}); use GroupNorm "
                         "(arch='resnet' does) or a network without normalization")


class Laplace(MAP):
    """MAP network + linearized Laplace posterior (laplace-torch) + GLM predictive.

    Args: subset (:class:`Subset`), hessian (:class:`Hessian`), link (:class:`~ntkbayes.methods.base.GaussianLink`),
    prior_fit (:class:`PriorFit`), num_samples (S for ``link="mc"``); every other keyword as
    :class:`~ntkbayes.methods.map.MAP`. A model of the user's must be built from torch layers with an
    ``nn.Linear`` readout (laplace-torch's last-layer search). Predictive: (S, N, C) with S = ``num_samples`` (mc,
    with member logits) or 1 (probit).
    """

    name = "laplace"
    family = "laplace"
    test_params: ClassVar[dict[str, Any]] = {**MAP.test_params, "num_samples": 4}
    dry_run_params: ClassVar[dict[str, Any]] = {**MAP.dry_run_params, "num_samples": 8}
    #: The MAP's weight decay; the prior precision is fitted inside the method (``prior_fit``), so it is not searched.
    search_space: ClassVar[dict[str, list]] = MAP.search_space
    param_bounds = {**MAP.param_bounds, "num_samples": (1, None)}

    def __init__(self, *, subset: Subset = DEFAULT_SUBSET, hessian: Hessian = DEFAULT_HESSIAN,
                 link: GaussianLink = DEFAULT_LINK, prior_fit: PriorFit = DEFAULT_PRIOR_FIT,
                 num_samples: int = DEFAULT_NUM_SAMPLES, **kwargs: Any):
        super().__init__(**kwargs)
        self._store_params(locals())

    # -- fit ------------------------------------------------------------------------------------------------------
    def _fit(self, data, seed: int, device: torch.device) -> None:
        with warnings.catch_warnings():  # laplace-torch imports asdl, which calls the deprecated torch.jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
            from laplace import Laplace as LaplaceTorch

        subset, hessian, prior_fit = Subset(self.subset), Hessian(self.hessian), PriorFit(self.prior_fit)
        self._train(data, seed, device, members=1)
        net = self._map_network()
        check_no_batchnorm(net)
        last_name, readout = _readout(net)
        n_la = sum(p.numel() for p in (readout if subset is Subset.LAST_LAYER else net).parameters())
        self._plan_memory(n_la, hessian, subset, device)
        self.seed_ = int(seed)
        kwargs = {"last_layer_name": last_name} if subset is Subset.LAST_LAYER else {}
        la = LaplaceTorch(net, "classification", subset_of_weights=subset.value, hessian_structure=hessian.value,
                          **kwargs)
        x, y = data.train.x.to(device=device, dtype=self.torch_dtype), data.train.y.to(device)
        la.fit(DataLoader(TensorDataset(x, y), batch_size=self.rows_))
        self.la_ = la
        grid_nll = None
        if prior_fit is PriorFit.MARGLIK:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*link_approx.*")  # the GLM link plays no part here
                la.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=MARGLIK_STEPS,
                                            prior_structure="scalar", init_prior_prec=1.0)
        elif prior_fit is PriorFit.MAP:
            la.prior_precision = float(self.info_["prior_precision"])
        else:
            grid_nll = self._grid_search(data)
            la.prior_precision = min(grid_nll, key=grid_nll.get)
        kappa = float(la.prior_precision.reshape(-1)[0])
        if not (math.isfinite(kappa) and kappa > 0):
            raise FloatingPointError(f"laplace: prior precision fit gave κ = {kappa}; expected a finite κ > 0")
        self.prior_precision_ = kappa
        self.info_.update(subset=subset.value, hessian=hessian.value, link=GaussianLink(self.link).value,
                          prior_fit=prior_fit.value, num_samples=int(self.num_samples), laplace_params=int(n_la),
                          map_prior_precision=self.info_["prior_precision"], prior_precision=kappa,
                          log_marginal_likelihood=float(la.log_marginal_likelihood().detach()),
                          jacobian_rows=self.rows_)
        if grid_nll is not None:
            tried = sorted(grid_nll)
            self.info_["val_nll_grid"] = {f"{k:.4g}": grid_nll[k] for k in tried}
            self.info_["prior_precision_at_edge"] = kappa in (tried[0], tried[-1])

    def _grid_search(self, data) -> dict[float, float]:
        """Validation NLL at each κ of :data:`PRIOR_GRID`, widened by decades while the best κ is on an edge."""
        grid = {k: self._val_nll(k, data) for k in PRIOR_GRID}
        for _ in range(MAX_GRID_EXTENSIONS):
            tried, best = sorted(grid), min(grid, key=grid.get)
            if best == tried[-1]:
                new = [best * 10.0 ** (i / 5) for i in range(1, 6)]
            elif best == tried[0]:
                new = [best * 10.0 ** (-i / 5) for i in range(1, 6)]
            else:
                break
            grid.update({k: self._val_nll(k, data) for k in new})
        return grid

    def _map_network(self) -> nn.Module:
        """The trained MAP member as a torch-layer network on ``device_`` (eval mode)."""
        module = self.module_
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(member(self.params_, 0)[name])
        net = as_torch_layers(module).to(device=self.device_, dtype=self.torch_dtype)
        return net.eval()

    def _plan_memory(self, n_la: int, hessian: Hessian, subset: Subset, device: torch.device) -> None:
        """Refuse a full Hessian that cannot fit; size the Jacobian row blocks (``rows_``) to :data:`JACOBIAN_BYTES`."""
        item = torch.empty((), dtype=self.torch_dtype).element_size()
        c = int(self.num_classes_)
        if hessian is Hessian.FULL:  # H, its inverse / Cholesky factor and a work copy: 3 P² numbers
            check_memory(3.0 * n_la**2 * item, device, f"full Laplace Hessian ({n_la} × {n_la}, subset={subset.value})",
                         "hessian='kron' or 'diag'" + (", or subset='last_layer'" if subset is Subset.ALL else ""))
        per_row = c * n_la * item
        check_memory(per_row, device, f"Jacobian of one input ({c} classes × {n_la} weights)",
                     "subset='last_layer'" if subset is Subset.ALL else "a smaller width")
        self.rows_ = int(max(1, min(MAX_ROWS, JACOBIAN_BYTES // per_row)))

    # -- predict --------------------------------------------------------------------------------------------------
    def _laplace_predict(self, x: Tensor) -> Predictive:
        """GLM predictive on x (N, ...) in row blocks; MC samples from a generator seeded by the fit seed."""
        x = x.to(device=self.device_, dtype=self.torch_dtype)
        mc = GaussianLink(self.link) is GaussianLink.MC
        gen = torch.Generator(device=self.device_).manual_seed(derive_seed(self.seed_, "laplace_samples"))
        out = []
        with torch.enable_grad():  # laplace-torch's Jacobians need autograd even inside Method.predict's no_grad
            for a in range(0, x.shape[0], self.rows_):
                xb = x[a:a + self.rows_]
                if mc:
                    out.append(self.la_.functional_samples(xb, pred_type="glm", n_samples=int(self.num_samples),
                                                           generator=gen).detach())
                else:
                    out.append(self.la_(xb, pred_type="glm", link_approx="probit").detach().unsqueeze(0))
        joined = torch.cat(out, 1)
        return Predictive.from_logits(joined) if mc else Predictive(joined / joined.sum(-1, keepdim=True))

    def _val_nll(self, kappa: float, data) -> float:
        """Validation NLL of the predictive at prior precision κ (the settings of :meth:`_predict`)."""
        self.la_.prior_precision = float(kappa)
        with torch.no_grad():
            pred = self._laplace_predict(data.val.x)
        p = pred.probs.gather(1, data.val.y.reshape(-1, 1)).squeeze(1)
        return float(-p.clamp_min(torch.finfo(p.dtype).tiny).log().mean())

    def _predict(self, x: Tensor) -> Predictive:
        return self._laplace_predict(x)
