"""Predictive: member probabilities (S, N, C) and the uncertainty scores derived from them.

Every method returns one; nothing downstream knows which method made it (design.md, BoTorch ``EnsemblePosterior``).
Score definitions follow benchmarks.md §1 (natural log; larger = more uncertain, i.e. more OOD).

Which scores a predictive can produce (``available_scores``): ``msp`` and ``entropy`` always; ``expected_entropy``,
``mutual_info`` and ``variance`` only with S > 1 members (for S = 1 they are identically H(p), 0 and 0 — a constant
is no score); ``energy`` and ``max_logit`` only when ``member_logits`` are given. The logit scores follow
torch-uncertainty's ``EnergyCriterion`` / ``MaxLogitCriterion``: the member logits are averaged first (z̄ = mean_s
z_s) and the score is negated so that larger = more OOD: energy = −logsumexp_c z̄_c (the free energy of Liu et al.
2020 at T = 1; OpenOOD reports +logsumexp with larger = more ID), max_logit = −max_c z̄_c (Hendrycks et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Rows of ``member_probs`` must sum to one within this tolerance (float32 softmax outputs stay well inside it).
ROW_SUM_TOL = 1e-4


def _xlogx(p: torch.Tensor) -> torch.Tensor:
    """p·log p with the convention 0·log 0 = 0."""
    return torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), torch.zeros_like(p))


@dataclass(frozen=True)
class Predictive:
    """Predictive distribution of S members (ensemble members or posterior samples) on N points with C classes.

    Attributes:
        member_probs: (S, N, C) class probabilities per member; S = 1 for point predictors.
        member_logits: optional (S, N, C) logits the probabilities came from (kept for log-space scoring).

    All derived quantities are computed in float64.
    """

    member_probs: torch.Tensor
    member_logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        p = self.member_probs
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"Predictive.member_probs: expected a torch.Tensor, got {type(p).__name__}")
        if p.ndim == 2:  # a point predictor given as (N, C)
            p = p.unsqueeze(0)
        if p.ndim != 3:
            raise ValueError(f"Predictive.member_probs: expected shape (S, N, C), got {tuple(p.shape)}")
        if not p.is_floating_point():
            raise ValueError(f"Predictive.member_probs: expected a floating dtype, got {p.dtype}")
        if p.shape[0] == 0 or p.shape[2] == 0:
            raise ValueError(f"Predictive.member_probs: empty member or class axis, shape {tuple(p.shape)}")
        p = p.detach().to("cpu", torch.float64)
        if not torch.isfinite(p).all():
            raise ValueError("Predictive.member_probs: contains NaN or inf")
        if (p < -1e-12).any():
            raise ValueError("Predictive.member_probs: contains negative probabilities")
        if p.shape[1] and (p.sum(-1) - 1).abs().max() > ROW_SUM_TOL:
            raise ValueError(
                f"Predictive.member_probs: rows must sum to 1 (max deviation {(p.sum(-1) - 1).abs().max():.2e})"
            )
        object.__setattr__(self, "member_probs", p.clamp_min(0.0))
        logits = self.member_logits
        if logits is not None:
            if logits.ndim == 2:
                logits = logits.unsqueeze(0)
            if tuple(logits.shape) != tuple(p.shape):
                raise ValueError(
                    f"Predictive.member_logits: shape {tuple(logits.shape)} does not match member_probs "
                    f"{tuple(p.shape)}"
                )
            logits = logits.detach().to("cpu", torch.float64)
            if not torch.isfinite(logits).all():
                raise ValueError("Predictive.member_logits: contains NaN or inf")
            object.__setattr__(self, "member_logits", logits)

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> Predictive:
        """Build from (S, N, C) or (N, C) logits; softmax is taken in float64."""
        logits = logits.detach().to("cpu", torch.float64)
        return cls(torch.softmax(logits, -1), logits)

    @property
    def num_members(self) -> int:
        """S."""
        return self.member_probs.shape[0]

    @property
    def num_points(self) -> int:
        """N."""
        return self.member_probs.shape[1]

    @property
    def num_classes(self) -> int:
        """C."""
        return self.member_probs.shape[2]

    @property
    def probs(self) -> torch.Tensor:
        """(N, C) predictive mean: the average of member probabilities (never of logits)."""
        return self.member_probs.mean(0)

    @property
    def log_probs(self) -> torch.Tensor:
        """(N, C) log of the predictive mean, logsumexp over members when logits are known (no saturation)."""
        if self.member_logits is not None:
            lp = torch.log_softmax(self.member_logits, -1)
            return torch.logsumexp(lp, 0) - torch.log(torch.tensor(float(self.num_members), dtype=lp.dtype))
        return torch.log(self.probs)

    @property
    def msp(self) -> torch.Tensor:
        """(N,) 1 − max_c p_c (larger = more uncertain)."""
        return 1.0 - self.probs.max(-1).values

    @property
    def entropy(self) -> torch.Tensor:
        """(N,) predictive (total) entropy H(p) of the averaged p, natural log."""
        return -_xlogx(self.probs).sum(-1)

    @property
    def expected_entropy(self) -> torch.Tensor:
        """(N,) mean_s H(p_s): the aleatoric part."""
        return -_xlogx(self.member_probs).sum(-1).mean(0)

    @property
    def mutual_info(self) -> torch.Tensor:
        """(N,) H(p) − mean_s H(p_s) ≥ 0 (BALD, epistemic part); exactly 0 when S = 1."""
        if self.num_members == 1:
            return torch.zeros(self.num_points, dtype=torch.float64)
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    @property
    def variance(self) -> torch.Tensor:
        """(N,) mean_c Var_s p_s[c], population variance over members (divide by S); 0 when S = 1."""
        return self.member_probs.var(0, unbiased=False).mean(-1)

    def _mean_logits(self, score: str) -> torch.Tensor:
        if self.member_logits is None:
            raise ValueError(f"Predictive.{score}: needs member_logits, this predictive has probabilities only")
        return self.member_logits.mean(0)

    @property
    def energy(self) -> torch.Tensor:
        """(N,) −logsumexp_c z̄_c with z̄ = mean_s member logits (free energy at T = 1; larger = more OOD).

        Raises ValueError without ``member_logits``."""
        return -torch.logsumexp(self._mean_logits("energy"), -1)

    @property
    def max_logit(self) -> torch.Tensor:
        """(N,) −max_c z̄_c with z̄ = mean_s member logits (larger = more OOD). Raises ValueError without logits."""
        return -self._mean_logits("max_logit").max(-1).values

    @property
    def available_scores(self) -> tuple[str, ...]:
        """The scores of ``SCORES`` this predictive can produce (see the module docstring), in ``SCORES`` order."""
        out = ("msp", "entropy")
        if self.num_members > 1:
            out += MEMBER_SCORES
        if self.member_logits is not None:
            out += LOGIT_SCORES
        return out

    def score(self, name: str) -> torch.Tensor:
        """(N,) the named uncertainty score (one of ``SCORES``)."""
        if name not in SCORES:
            raise ValueError(f"unknown uncertainty score {name!r}; expected one of {', '.join(SCORES)}")
        return getattr(self, name)


#: Scores that need S > 1 members (constant for a point predictor).
MEMBER_SCORES = ("expected_entropy", "mutual_info", "variance")

#: Scores from member probabilities, the ones saved predictions (probabilities only) can always recompute.
PROB_SCORES = ("msp", "entropy", *MEMBER_SCORES)

#: Scores that need ``member_logits``.
LOGIT_SCORES = ("energy", "max_logit")

#: Uncertainty scores, larger = more OOD (benchmarks.md §1).
SCORES = (*PROB_SCORES, *LOGIT_SCORES)
