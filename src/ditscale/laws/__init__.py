"""Scaling laws of training runs (numpy/scipy only): estimators, bootstrap intervals, predictions.

Three estimators, after Chinchilla (Hoffmann et al. 2022), all on a :class:`Runs` table of
(flops [FLOPs], params [N], tokens [D, image tokens], loss):

- ``envelope`` (Approach 1): the best run per log-spaced compute bin, power laws in C.
- ``isoflop`` (Approach 2): a parabola in log N per isoFLOP budget, power laws of the optima in C
  (Liang et al. 2026 use this for DiTs).
- ``parametric`` (Approach 3): ``L(N, D) = E + A/N^alpha + B/D^beta``, fitted as Epoch AI's refit.

Quick use::

    runs = read_runs_csv("runs.csv")
    fit, boot = fit_runs(runs, {"method": "isoflop", "bootstrap": 1000})
    predict(fit, 1e21, boot=boot).n_opt      # Estimate(value=..., ci90=[lo, hi]), parameters
    fit.to_dict(boot)                        # the laws.json shape
    LawsSummary.read("DIR/laws.json")        # a typed view of a study's laws.json

Modules (no cycles among them): ``runs`` (the table), ``powerlaw``, ``compute_laws``, the three
estimators ``envelope`` / ``isoflop`` (also the one home of the isoFLOP parabola and the edge rule) /
``parametric`` (grid and variable-projection starts, the better kept), ``checks`` (isoFLOP point checks: off-centre
and drifting grids, near-duplicate sizes, outliers), ``bootstrap``, ``fit`` (:class:`FitConfig`,
:func:`fit_runs`), ``predict`` (with the backtest), ``compare``, ``noise`` (seed vs parabola
scatter), ``residuals`` (does a model size sit off its parabolas at every budget), ``draws``
(bootstrap draws stored and reused by key), ``results`` (the typed laws.json schema), ``extrapolation``
(backtest error by distance), ``simulate`` (sweeps of a known L(N, D), for the intervals' coverage),
``rungs`` (the rule that leaves out a size sitting off its parabolas at every budget).
"""

from __future__ import annotations

from ditscale.laws.bootstrap import Bootstrap, bootstrap
from ditscale.laws.checks import Check, isoflop_checks
from ditscale.laws.compare import Comparison, Difference, compare
from ditscale.laws.envelope import EnvelopeFit, EnvelopePoint, fit_envelope
from ditscale.laws.fit import DEFAULT_RESAMPLES, FIT_FUNCTIONS, FitConfig, fit_runs
from ditscale.laws.isoflop import BudgetOptimum, IsoflopFit, LogNParabola, fit_isoflop, fit_log_n_parabola
from ditscale.laws.noise import noise_summary
from ditscale.laws.parametric import ParametricFit, fit_parametric
from ditscale.laws.powerlaw import FitWarning, PowerLaw, SaturatingLaw, fit_power_law, fit_saturating
from ditscale.laws.predict import BacktestRow, Estimate, Prediction, backtest, nearest_model, predict
from ditscale.laws.runs import Runs, read_runs_csv
from ditscale.laws.results import LawsSummary

__all__ = [
    "BacktestRow",
    "Bootstrap",
    "BudgetOptimum",
    "Check",
    "Comparison",
    "DEFAULT_RESAMPLES",
    "Difference",
    "EnvelopeFit",
    "EnvelopePoint",
    "Estimate",
    "FIT_FUNCTIONS",
    "FitConfig",
    "FitWarning",
    "IsoflopFit",
    "LawsSummary",
    "LogNParabola",
    "ParametricFit",
    "PowerLaw",
    "Prediction",
    "Runs",
    "SaturatingLaw",
    "backtest",
    "bootstrap",
    "compare",
    "fit_envelope",
    "fit_isoflop",
    "fit_log_n_parabola",
    "fit_parametric",
    "fit_power_law",
    "fit_runs",
    "fit_saturating",
    "isoflop_checks",
    "nearest_model",
    "noise_summary",
    "predict",
    "read_runs_csv",
]
