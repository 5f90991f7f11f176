"""Uncertainty and calibration metrics (benchmarks.md §1): ``evaluate`` returns every key of the benchmark.

Keys are lower-case ``group/name``: ``cls/acc``, ``cal/{nll,brier,ece,mce,aece,cwece}``, ``sel/aurc`` and, per OOD
set and score, ``ood/<set>/<score>/{auroc,aupr_in,aupr_out,fpr95}``; with ``ood_groups``, also
``ood/near/<score>/<metric>`` and ``ood/far/<score>/<metric>``: the mean over the sets of that group. The
posterior-fidelity keys ``ref/{agreement,tv,kl}`` (:mod:`.reference`) compare two predictives; the harness adds them.
``METRIC_INFO`` gives each key pattern's direction, display name and range; ``CONVENTIONS`` (or
``conventions(n_bins)``) the choices behind the numbers, which result records store and leaderboards print,
because the field's tools disagree on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch

from ntkbayes.metrics.calibration import (
    DEFAULT_N_BINS,
    LOG_PROB_FLOOR,
    ReliabilityBins,
    accuracy,
    adaptive_bins,
    adaptive_ece,
    bin_edges,
    bin_index,
    brier,
    check_labels,
    classwise_ece,
    ece,
    mce,
    nll,
    reliability_bins,
    top_label,
)
from ntkbayes.metrics.ood import (
    OOD_METRICS,
    aupr_in,
    aupr_out,
    auroc,
    average_precision,
    evaluate_ood,
    fpr95,
    ood_metrics,
)
from ntkbayes.metrics.reference import METRICS as REFERENCE_METRICS
from ntkbayes.metrics.selective import aurc, aurc_from_confidence, risk_coverage
from ntkbayes.predictive import LOGIT_SCORES, MEMBER_SCORES, PROB_SCORES, SCORES, Predictive

__all__ = [
    "CONVENTIONS", "DEFAULT_N_BINS", "Direction", "LOG_PROB_FLOOR", "LOGIT_SCORES", "MEMBER_SCORES", "METRIC_INFO",
    "MetricInfo", "OOD_GROUPS", "OOD_METRICS", "PROB_SCORES", "REFERENCE_METRICS", "ReliabilityBins", "SCORES",
    "accuracy",
    "adaptive_bins", "adaptive_ece", "aupr_in",
    "aupr_out", "aurc", "aurc_from_confidence", "auroc", "average_precision", "bin_edges", "bin_index",
    "brier", "classwise_ece", "conventions", "ece", "evaluate", "evaluate_ood", "fpr95", "mce", "metric_info",
    "higher_is_better", "nll", "ood_group_means", "ood_metrics", "reliability_bins", "risk_coverage", "top_label",
]


class Direction(str, Enum):
    """Which way a metric improves."""

    HIGHER = "higher"
    """Larger values are better (accuracy, AUROC, AUPR)."""
    LOWER = "lower"
    """Smaller values are better (NLL, Brier, calibration errors, AURC, FPR95)."""


@dataclass(frozen=True)
class MetricInfo:
    """How to read and print one metric key pattern.

    Attributes:
        name: display name, with the convention that matters for comparing numbers ("ECE (15 bins)").
        direction: ``Direction.HIGHER`` or ``Direction.LOWER``.
        range: (low, high) of possible values (high may be ``inf``).
        description: one line: the definition (benchmarks.md §1).
    """

    name: str
    direction: Direction
    range: tuple[float, float]
    description: str


_B = DEFAULT_N_BINS
_INF = float("inf")

#: Key pattern → MetricInfo. In OOD patterns ``<set>`` is the OOD set name and ``<score>`` one of ``SCORES``.
METRIC_INFO: dict[str, MetricInfo] = {
    "cls/acc": MetricInfo("Accuracy", Direction.HIGHER, (0.0, 1.0), "mean 1[argmax p = y]"),
    "cal/nll": MetricInfo("NLL (nats)", Direction.LOWER, (0.0, _INF), "−mean log p[y], natural log, log-space"),
    "val/nll": MetricInfo("Validation NLL (nats)", Direction.LOWER, (0.0, _INF),
                          "cal/nll on the validation split (the tuner's default objective)"),
    "val/acc": MetricInfo("Validation accuracy", Direction.HIGHER, (0.0, 1.0), "cls/acc on the validation split"),
    "train/acc": MetricInfo("Training accuracy", Direction.HIGHER, (0.0, 1.0),
                            "cls/acc on (at most 2048 points of) the training split; the underfit flag compares it"),
    "cal/brier": MetricInfo("Brier (sum over classes)", Direction.LOWER, (0.0, 2.0),
                            "mean Σ_c (p_c − 1[y = c])² on the averaged p"),
    "cal/ece": MetricInfo(f"ECE ({_B} bins)", Direction.LOWER, (0.0, 1.0),
                          "top-label, equal-width bins, L1 weighted by bin mass"),
    "cal/mce": MetricInfo(f"MCE ({_B} bins)", Direction.LOWER, (0.0, 1.0),
                          "largest |acc − conf| over non-empty equal-width bins"),
    "cal/aece": MetricInfo(f"Adaptive ECE ({_B} bins)", Direction.LOWER, (0.0, 1.0),
                           "top-label, equal-count bins, L1 weighted by bin mass"),
    "cal/cwece": MetricInfo(f"Classwise ECE ({_B} bins)", Direction.LOWER, (0.0, 1.0),
                            "mean over classes of the binary ECE of p[:, c] vs 1[y = c] (Kull et al. 2019)"),
    "sel/aurc": MetricInfo("AURC", Direction.LOWER, (0.0, 1.0),
                           "mean over k = 1..N of the error rate of the k most confident points"),
    "ood/<set>/<score>/auroc": MetricInfo("AUROC (OOD positive)", Direction.HIGHER, (0.0, 1.0),
                                          "ROC-AUC, OOD = 1, score larger = more OOD, ties ½"),
    "ood/<set>/<score>/aupr_in": MetricInfo("AUPR-In (ID positive)", Direction.HIGHER, (0.0, 1.0),
                                            "average precision, ID positive, −score"),
    "ood/<set>/<score>/aupr_out": MetricInfo("AUPR-Out (OOD positive)", Direction.HIGHER, (0.0, 1.0),
                                             "average precision, OOD positive, score"),
    "ood/<set>/<score>/fpr95": MetricInfo("FPR95 (OOD positive, TPR 95 %)", Direction.LOWER, (0.0, 1.0),
                                          "fraction of ID with score ≥ the ⌈0.95·n_ood⌉-th largest OOD score"),
    "shift/<kind>/<severity>/acc": MetricInfo("Accuracy under shift", Direction.HIGHER, (0.0, 1.0),
                                              "cls/acc on the shifted test set"),
    "shift/<kind>/<severity>/nll": MetricInfo("NLL under shift (nats)", Direction.LOWER, (0.0, _INF),
                                              "cal/nll on the shifted test set"),
    "shift/<kind>/<severity>/ece": MetricInfo(f"ECE under shift ({_B} bins)", Direction.LOWER, (0.0, 1.0),
                                              "cal/ece on the shifted test set"),
    **{key: MetricInfo(name, Direction(direction), bounds, description)  # posterior fidelity (benchmarks.md §1)
       for key, (name, direction, bounds, description) in REFERENCE_METRICS.items()},
}

#: Near / far OOD groups a dataset may declare for its OOD sets (``DatasetSplits.ood_groups``; default "near").
OOD_GROUPS = ("near", "far")


def metric_info(key: str) -> MetricInfo:
    """The ``MetricInfo`` of a concrete key: "ood/far/msp/auroc" resolves to "ood/<set>/<score>/auroc",
    "shift/rotation/3/acc" to "shift/<kind>/<severity>/acc"; ValueError for a key no pattern matches."""
    if key in METRIC_INFO:
        return METRIC_INFO[key]
    parts = key.split("/")
    if len(parts) == 4 and all(parts) and parts[0] in ("ood", "shift") and (parts[0] != "ood" or parts[2] in SCORES):
        pattern = f"ood/<set>/<score>/{parts[3]}" if parts[0] == "ood" else f"shift/<kind>/<severity>/{parts[3]}"
        if pattern in METRIC_INFO:
            return METRIC_INFO[pattern]
    raise ValueError(f"metric key {key!r}: unknown; expected one of {', '.join(METRIC_INFO)}")


def higher_is_better(key: str) -> bool | None:
    """True / False from ``METRIC_INFO`` (the one source of directions); None for a key it does not know."""
    try:
        return metric_info(key).direction is Direction.HIGHER
    except ValueError:
        return None


def conventions(n_bins: int = DEFAULT_N_BINS) -> dict:
    """JSON-serializable record of the metric conventions (results store ``conventions``, leaderboard footers)."""
    return {
        "predictive": "mean of member probabilities (S, N, C) -> (N, C); never of logits",
        "dtype": "float64",
        "log_base": "e",
        "nll": "from log-probabilities (logsumexp over members when logits exist), "
        f"else log(max(p, {LOG_PROB_FLOOR:.4g}))",
        "brier": "sum over classes of the averaged p, range [0, 2]",
        "ece_bins": int(n_bins),
        "ece_binning": "equal-width on top-label confidence, edges fl(m/M)",
        "ece_boundary": "bins [l, u), last bin closed: confidence 1.0 falls in the last bin "
        "(torchmetrics puts it in a hidden extra bin)",
        "ece_norm": "L1, weighted by bin mass |B_m|/N",
        "mce": "max |acc - conf| over non-empty equal-width bins",
        "aece": "equal-count bins: stable ascending sort, np.array_split sizes, weighted L1",
        "cwece": "Kull et al. 2019: mean over classes of binary ECE of p[:, c] vs 1[y = c], equal-width bins",
        "aurc": "mean over k = 1..N of the error rate among the k most confident (stable descending sort)",
        "ood_scores": list(SCORES),
        "ood_score_direction": "larger = more OOD",
        "ood_scores_available": f"{', '.join(MEMBER_SCORES)} only for S > 1 members; "
        f"{', '.join(LOGIT_SCORES)} only with member logits; absent otherwise (never a constant)",
        "ood_logit_scores": "member logits averaged first (torch-uncertainty): energy = -logsumexp_c mean_s z, "
        "max_logit = -max_c mean_s z (negated: larger = more OOD)",
        "ood_groups": "ood/near/... and ood/far/...: unweighted mean over the OOD sets of that group "
        "(declared by the dataset; undeclared sets are near)",
        "ood_positive": "ood",
        "auroc_ties": "averaged (half credit), as scikit-learn",
        "aupr": "step-wise average precision (scikit-learn); aupr_in: ID positive with -score; aupr_out: OOD positive",
        "fpr95": "t = ceil(0.95 n_ood)-th largest OOD score; fraction of ID with score >= t",
    }


#: Conventions at the default bin count (what ``evaluate`` uses unless told otherwise).
CONVENTIONS = conventions(DEFAULT_N_BINS)


def _check_predictive(pred: Predictive, name: str) -> Predictive:
    if not isinstance(pred, Predictive):
        raise TypeError(f"{name}: expected a Predictive, got {type(pred).__name__}")
    if pred.num_points == 0:
        raise ValueError(f"{name}: no points (N = 0); metrics are undefined")
    return pred


def evaluate(
    pred: Predictive,
    labels: torch.Tensor,
    ood: dict[str, Predictive] | None = None,
    n_bins: int = DEFAULT_N_BINS,
    ood_groups: dict[str, str] | None = None,
) -> dict[str, float]:
    """Every benchmark metric for one predictive (benchmarks.md §1), as plain floats.

    Args:
        pred: predictive on N test points with C classes (member probabilities (S, N, C)).
        labels: (N,) integer labels in [0, C).
        ood: optional {set name: Predictive on M_set OOD points with the same C}; adds
            ``ood/<set>/<score>/{auroc,aupr_in,aupr_out,fpr95}`` for every score both predictives can produce
            (``Predictive.available_scores``).
        n_bins: bins of ECE, MCE, adaptive ECE and classwise ECE.
        ood_groups: optional {set name: "near" | "far"} (sets not named are "near"); adds
            ``ood/near/<score>/<metric>`` and ``ood/far/<score>/<metric>`` (``ood_group_means``).

    Returns:
        {key: value} with ``cls/acc``, ``cal/nll``, ``cal/brier``, ``cal/ece``, ``cal/mce``, ``cal/aece``,
        ``cal/cwece``, ``sel/aurc`` and the OOD keys.
    """
    pred = _check_predictive(pred, "pred")
    labels = check_labels(labels, pred.num_points, pred.num_classes)
    if ood is not None and not isinstance(ood, dict):
        raise TypeError(f"ood: expected a dict of set name -> Predictive, got {type(ood).__name__}")
    for set_name, p_ood in (ood or {}).items():
        if not isinstance(set_name, str) or not set_name or "/" in set_name:
            raise ValueError(f"ood: set name {set_name!r} must be a non-empty string without '/'")
        _check_predictive(p_ood, f"ood[{set_name!r}]")
        if p_ood.num_classes != pred.num_classes:
            raise ValueError(
                f"ood[{set_name!r}]: has {p_ood.num_classes} classes, the test predictive has {pred.num_classes}"
            )
    probs = pred.probs
    conf, correct = top_label(probs, labels)
    bins = reliability_bins(conf, correct, n_bins)
    out = {
        "cls/acc": float(correct.mean()),
        "cal/nll": nll(pred, labels),
        "cal/brier": brier(probs, labels),
        "cal/ece": bins.ece(),
        "cal/mce": bins.mce(),
        "cal/aece": adaptive_bins(conf, correct, n_bins).ece(),
        "cal/cwece": classwise_ece(probs, labels, n_bins),
        "sel/aurc": aurc_from_confidence(conf, correct),
    }
    per_set = {set_name: evaluate_ood(pred, p_ood) for set_name, p_ood in (ood or {}).items()}
    for set_name, values in per_set.items():
        for sub, value in values.items():
            out[f"ood/{set_name}/{sub}"] = value
    if ood_groups is not None:
        for key, value in ood_group_means(per_set, ood_groups).items():
            if key in out and out[key] != value:
                raise ValueError(f"ood: set name {key.split('/')[1]!r} collides with the averaged "
                                 f"{key.split('/')[1]} OOD group; rename the set")
            out[key] = value
    return out


def ood_group_means(per_set: dict[str, dict[str, float]], ood_groups: dict[str, str]) -> dict[str, float]:
    """``ood/<group>/<score>/<metric>`` = unweighted mean over the sets of the group that have that key.

    Args:
        per_set: {set name: {"<score>/<metric>": value}} (``evaluate_ood`` of each set).
        ood_groups: {set name: "near" | "far"}; sets not named are "near"; a name not in ``per_set`` is an error.
    """
    if not isinstance(ood_groups, dict):
        raise TypeError(f"ood_groups: expected a dict of set name -> 'near' | 'far', got {type(ood_groups).__name__}")
    for set_name, group in ood_groups.items():
        if set_name not in per_set:
            raise ValueError(f"ood_groups: set {set_name!r} is not an OOD set; have {', '.join(per_set) or 'none'}")
        if group not in OOD_GROUPS:
            raise ValueError(f"ood_groups[{set_name!r}]: expected one of {list(OOD_GROUPS)}, got {group!r}")
    out = {}
    for group in OOD_GROUPS:
        members = [per_set[s] for s in per_set if ood_groups.get(s, "near") == group]
        for sub in dict.fromkeys(k for values in members for k in values):
            vals = [values[sub] for values in members if sub in values]
            out[f"ood/{group}/{sub}"] = math.fsum(vals) / len(vals)
    return out
