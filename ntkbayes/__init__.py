"""ntkbayes: benchmarking Bayesian uncertainty in classification — NTK ensembles against Laplace, deep ensembles
and Gaussian processes, on the same splits and seeds."""

from ntkbayes import data, methods, metrics, models, ntk
from ntkbayes.predictive import SCORES, Predictive

__version__ = "0.1.0"

__all__ = ["Predictive", "SCORES", "data", "methods", "metrics", "models", "ntk", "__version__"]
