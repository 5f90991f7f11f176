"""ntkbayes: benchmarking Bayesian uncertainty in classification — NTK ensembles against Laplace, deep ensembles
and Gaussian processes, on the same splits and seeds.

``nb.data.load`` → ``nb.methods.create(...).fit(data, seed)`` → ``.predict(x)`` (a :class:`Predictive`) →
``nb.metrics.evaluate``. The documentation ships in the repository's ``docs/``: ``benchmarks.md`` (metric keys,
conventions, datasets), ``math.md`` (the formulas the code cites as ``math.md (a)``–``(e)``), ``suites.md``,
``results.md`` and ``design.md``.
"""

from ntkbayes import data, methods, metrics, models, ntk, results
from ntkbayes.predictive import SCORES, Predictive

__version__ = "0.1.0"

__all__ = ["Predictive", "SCORES", "data", "methods", "metrics", "models", "ntk", "results", "__version__"]
