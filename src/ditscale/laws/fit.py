"""Fitting a method to runs: :class:`FitConfig` (the ``laws:`` section of a study spec) and :func:`fit_runs`.

Kept apart from the package ``__init__`` so modules of :mod:`ditscale.laws` (e.g. the backtest in
:mod:`ditscale.laws.predict`) can use the method table without importing the package.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from ditscale.config import from_dict
from ditscale.errors import ConfigError, DataError
from ditscale.laws.bootstrap import KINDS as BOOTSTRAP_KINDS, bootstrap
from ditscale.laws.checks import duplicate_points
from ditscale.laws.draws import DrawStore
from ditscale.laws.envelope import fit_envelope
from ditscale.laws.isoflop import EXCLUDE_EDGE, fit_isoflop
from ditscale.laws.parametric import METHODS as PARAMETRIC_METHODS, fit_parametric
from ditscale.laws.powerlaw import FitWarning
from ditscale.laws.rungs import OFF_RUNGS
from ditscale.laws.runs import Runs

FIT_FUNCTIONS = {"isoflop": fit_isoflop, "parametric": fit_parametric, "envelope": fit_envelope}
DEFAULT_RESAMPLES = {"isoflop": 1000, "envelope": 1000, "parametric": 200}
# FitConfig.loss_law's choices (the L_opt law of record) and the names reports give them
LOSS_LAW_NAMES = {
    "power": "isoFLOP power law",
    "saturating": "isoFLOP saturating law",
    "parametric": "Approach 3 L(N, D)",
}
LOSS_LAWS = tuple(LOSS_LAW_NAMES)
LOSS_LAW_CHOICES = (*LOSS_LAWS, "auto")  # "auto": chosen by a rule that sees only the fitted budgets


def loss_law_name(loss_law: str | None) -> str:
    """The report name of a loss form (a laws.json written before forms were named: the power law)."""
    return LOSS_LAW_NAMES.get(loss_law or "power", str(loss_law))


@dataclass
class FitConfig:
    """How to fit laws to a study's runs (e.g. the ``laws:`` section of a study spec).

    Attributes:
        method: "isoflop" (Approach 2), "parametric" (Approach 3) or "envelope" (Approach 1).
        bootstrap: resamples for the intervals (0: none; None: 1000, or 200 for parametric).
        seed: bootstrap seed.
        bootstrap_kind: "case" (resample runs, the default) or "residual" (Approach 2 only: resample
            the parabolas' residuals, plus the between-budget scatter of the optima; intervals as wide
            as the estimate's real spread on simulated sweeps, docs/laws.md). Approach 3 keeps "case".
        robust, tokens, edge_margin, exclude_edge, budget_rtol: isoflop options (:func:`fit_isoflop`).
        bins_per_decade, min_runs_per_bin, flops_range: envelope options (:func:`fit_envelope`).
        delta, top_k: parametric options (:func:`fit_parametric`).
        parametric_method: how Approach 3 is solved: "best" (both of the next two, the lower
            objective kept, the default), "lbfgs-grid" (Epoch AI's grid of starts) or "varpro" (NNLS
            for E, A, B per (alpha, beta), then refined); ``fit_parametric``'s ``method``.
        loss_law: which L_opt law a study's predictions and backtest of record use: "power" (``e C^f``,
            Liang et al.'s form), "saturating" (``E + k C^-gamma`` fitted to the isoFLOP minima) or
            "parametric" (Approach 3's ``L(N_opt, D_opt)``, whose floor E is fitted to every run).
            The last two follow a loss that bends towards an irreducible floor within the sweep, which
            the pure power law under-predicts (the ``loss_bends`` check says when). N_opt and D_opt
            always come from ``method``; every form is fitted, backtested and reported side by side.
            "auto": a study chooses the form by an inner backtest on its fitted budgets alone
            (:func:`ditscale.study.backtest.loss_law_rule`, recorded as laws.json's ``loss_law_rule``).
        off_rungs: "keep" (every rung, the default) or "drop": a study leaves out, from every fit, the
            model sizes that sit off their parabolas at every budget, by the rule
            :data:`ditscale.laws.rungs.RUNG_RULE` decided on the fitted budgets alone (laws.json's
            ``rung_rule``). A study option: :func:`fit_runs` fits the runs it is given.
    """

    method: str = "isoflop"
    bootstrap: int | None = None
    seed: int = 0
    bootstrap_kind: str = "case"
    robust: bool = False
    tokens: str = "interpolate"
    edge_margin: float = 0.05
    exclude_edge: bool | str = False
    budget_rtol: float = 0.1
    bins_per_decade: int = 8
    min_runs_per_bin: int = 2
    flops_range: tuple[float, float] | None = None
    delta: float = 1e-3
    top_k: int | None = 20
    parametric_method: str = "best"
    loss_law: str = "power"
    off_rungs: str = "keep"

    def __post_init__(self) -> None:
        if self.method not in FIT_FUNCTIONS:
            raise ConfigError(f"unknown fit method {self.method!r}; choose one of {', '.join(FIT_FUNCTIONS)}")
        if self.tokens not in ("interpolate", "6nd"):
            raise ConfigError(f"tokens must be 'interpolate' or '6nd', got {self.tokens!r}")
        if self.parametric_method not in PARAMETRIC_METHODS:
            raise ConfigError(
                f"unknown parametric_method {self.parametric_method!r}; choose one of {', '.join(PARAMETRIC_METHODS)}"
            )
        if self.loss_law not in LOSS_LAW_CHOICES:
            raise ConfigError(
                f"loss_law must be one of {', '.join(LOSS_LAWS)}, got {self.loss_law!r}; "
                "or auto (chosen by a backtest inside the fitted budgets)"
            )
        if self.exclude_edge not in EXCLUDE_EDGE:
            raise ConfigError(f"exclude_edge must be false, true or allocation, got {self.exclude_edge!r}")
        if self.off_rungs not in OFF_RUNGS:
            raise ConfigError(f"off_rungs must be one of {', '.join(OFF_RUNGS)}, got {self.off_rungs!r}")
        if self.bootstrap_kind not in BOOTSTRAP_KINDS:
            raise ConfigError(
                f"bootstrap_kind must be one of {', '.join(BOOTSTRAP_KINDS)}, got {self.bootstrap_kind!r}"
            )
        if self.bootstrap_kind == "residual" and self.method != "isoflop":
            raise ConfigError(f"bootstrap_kind residual is Approach 2's (method isoflop), not {self.method}'s")
        if self.bootstrap is not None and self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be >= 0 resamples, got {self.bootstrap}")

    @property
    def resamples(self) -> int:
        return DEFAULT_RESAMPLES[self.method] if self.bootstrap is None else self.bootstrap

    def fit_options(self) -> dict:
        """Keyword arguments of the method's fit function."""
        if self.method == "parametric":
            return self.parametric_options()
        keys = (
            ("robust", "tokens", "edge_margin", "exclude_edge", "budget_rtol")
            if self.method == "isoflop"
            else ("bins_per_decade", "min_runs_per_bin", "flops_range")
        )
        return {k: getattr(self, k) for k in keys}

    def parametric_options(self) -> dict:
        """Keyword arguments of :func:`fit_parametric` (also when ``method`` is another approach:
        a study fits Approach 3 beside its isoFLOP laws)."""
        return {"delta": self.delta, "top_k": self.top_k, "method": self.parametric_method}


def check_losses_vary(runs: Runs) -> None:
    """Refuse runs whose losses are all equal: they say nothing about where the optimum lies, and every
    fit would still return a law (an N* anywhere on the grid, an N_opt of zero width)."""
    if len(runs) > 1 and float(runs.loss.max()) == float(runs.loss.min()):
        raise DataError(
            f"every one of the {len(runs)} runs has loss {float(runs.loss[0]):.6g}: equal losses say nothing about "
            "the compute-optimal model; check the loss column (each run's own final loss)"
        )


def check_finite_laws(method: str, fit, runs: Runs) -> None:
    """Refuse a point fit whose allocation laws are not positive finite numbers (e.g. losses near 1e308:
    the parametric form overflows), rather than print NaN laws."""
    laws = [("N_opt", fit.n_opt_law), ("D_opt", fit.d_opt_law)] if method == "parametric" else []
    laws += [("N_opt", fit.params_law)] if method == "isoflop" else []
    for name, law in laws:
        if not (math.isfinite(law.exponent) and math.isfinite(law.coefficient) and law.coefficient > 0):
            raise DataError(
                f"the {method} fit of {len(runs)} runs gives no usable {name} law (coefficient {law.coefficient:.4g}, "
                f"exponent {law.exponent:.4g}); the losses (from {float(runs.loss.min()):.4g} to "
                f"{float(runs.loss.max()):.4g}) are outside what the fit can represent: check the loss column"
            )


def fit_runs(runs: Runs, config: FitConfig | dict | None = None, draws: DrawStore | None = None):
    """Fit ``config.method`` to ``runs`` and bootstrap it; returns ``(fit, Bootstrap or None)``.

    Rows that repeat one (N, D) point are named in one :class:`FitWarning`
    (:func:`~ditscale.laws.checks.duplicate_points`) and drawn as one unit by the bootstrap
    (:meth:`Runs.tied`). ``draws``: a :class:`~ditscale.laws.draws.DrawStore` whose matching draws
    are reused (and where new ones are kept); without it the bootstrap is always drawn."""
    cfg = config if isinstance(config, FitConfig) else from_dict(FitConfig, config or {}, where="laws config")
    repeated = duplicate_points(runs)
    if repeated is not None:
        warnings.warn(repeated, FitWarning, stacklevel=2)
    check_losses_vary(runs)
    fit = FIT_FUNCTIONS[cfg.method](runs, **cfg.fit_options())
    check_finite_laws(cfg.method, fit, runs)
    if not cfg.resamples:
        return fit, None
    tied = runs.tied()
    if draws is None:
        return fit, bootstrap(tied, fit, cfg.resamples, cfg.seed, cfg.bootstrap_kind)
    return fit, draws.bootstrap(cfg.method, tied, fit, cfg.fit_options(), cfg.resamples, cfg.seed, cfg.bootstrap_kind)
