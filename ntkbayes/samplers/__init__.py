"""MCMC samplers for gold-standard posterior references (Izmailov et al. 2021, "What are Bayesian neural network
posteriors really like?"): NUTS over a network's parameters (pyro-ppl), elliptical slice sampling of GP-classification
latents, and the R-hat / bulk-ESS diagnostics that decide whether a reference is trusted."""

from ntkbayes.samplers.diagnostics import ESS_MIN, RHAT_MAX, bulk_ess, rhat, summarize
from ntkbayes.samplers.elliptical import EllipticalResult, elliptical_slice
from ntkbayes.samplers.gp_classification import GPClassificationPosterior, sample_gp_classification
from ntkbayes.samplers.nuts import NUTSResult, nuts

__all__ = ["ESS_MIN", "RHAT_MAX", "EllipticalResult", "GPClassificationPosterior", "NUTSResult", "bulk_ess",
           "elliptical_slice", "nuts", "rhat", "sample_gp_classification", "summarize"]
