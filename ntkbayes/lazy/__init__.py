"""The lazy-regime study (docs/math.md (c)): ``ntkbayes lazy [SUITE] [--out DIR] [--device D]``.

Plenk, Calvo-Ordonez, Cartea, Gal, van der Wilk, Ciosek, "The Neural Tangent Kernel for Classification" (2026)
argue that a wide network trained on cross-entropy stays in the lazy regime — its empirical NTK barely moves and
its trained function is that of its linearization f_lin = f0 + J(θ − θ0), whose optimum is the kernel solution of
docs/math.md (c) — when the problem has a finite optimum: λ > 0 (``(λ/2)‖θ − θ_a‖²`` on the mean CE, anchor θ_a ∈
{θ0, 0}) or λ = 0 with label-smoothed targets Y = (1 − ε)·onehot + ε/C. With λ = 0 and one-hot targets there is no
finite minimizer (docs/math.md (c)): the logits grow without bound and the linearization must eventually break.
This module measures those claims on small subsets of real data (``ntkbayes.data.load``), in three parts:

* **width sweep** — per regime and width, the NTK-ensemble members (``mode="network"``) trained by full-batch
  L-BFGS to the gradient tolerance ``tol``; at the end: kernel drift ‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F on a probe set
  (full (N, N, C, C) empirical NTK, ``ntk.diagnostics``), Taylor linearization gap |f(θ_T) − f_lin(θ_T)|,
  parameter movement ‖θ_T − θ0‖ / ‖θ0‖, max |logit|; and a least-squares log-log slope of each against width;
* **trajectory** — plain full-batch gradient descent at one width for a fixed horizon, the same measures
  against training time t = step · lr (the horizon is the point here: there is no "convergence" for λ = 0 one-hot);
* **agreement** — total variation ½Σ_c|p_c − q_c| between the member predictive probabilities of the
  ``network``, ``linearized`` and ``kernel`` (empirical NTK) modes of ``ntk_ensemble`` on test points, against
  width (same θ0 in all three modes).

Outputs under the results directory: ``width_sweep.csv``, ``slopes.csv``, ``trajectory.csv``, ``agreement.csv``
(one row per member), ``table.md`` (summary tables), ``figures/*.png`` (and PDF where the report's figure
settings write it), ``conventions.json`` and a ``README.md`` of findings whose verdicts are computed from the
numbers by the rules stated in it.

Modules: :mod:`.config` (the strict study file, with the value checks of suite files), :mod:`.study` (data
subsets, fits, the three parts), :mod:`.outputs` (slopes, verdicts, tables, figures, README). The ``ntkbayes
lazy`` command is ``ntkbayes.cli.cmd_lazy``.
"""


from ntkbayes.lazy.config import DEFAULT_REGIMES, REGIME_KEYS, TABLE_KEYS, TOP_KEYS, LazyConfig, Regime, load_config
from ntkbayes.lazy.outputs import SLOPE_METRICS, conventions, findings, fit_slopes, write_outputs
from ntkbayes.lazy.study import PAIRS, record_steps, run_study, subsample, trajectory

__all__ = ["DEFAULT_REGIMES", "LazyConfig", "PAIRS", "REGIME_KEYS", "Regime", "SLOPE_METRICS", "TABLE_KEYS",
           "TOP_KEYS", "conventions", "findings", "fit_slopes", "load_config", "record_steps", "run_study",
           "subsample", "trajectory", "write_outputs"]
