"""What every step of a study's analysis shares: the study fitted once (:class:`StudyFit`, built by
:func:`ditscale.study.analyze.fit_study`), Approach 3 fitted and bootstrapped (:func:`parametric_fit`),
the one decision of the loss form of record (:func:`form_of_record`) and the one place warnings are
silenced (:func:`quiet`). :mod:`ditscale.study.backtest` and :mod:`ditscale.study.analyze` build on it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ditscale.errors import ConfigError, DataError
from ditscale.laws import Bootstrap, FitConfig, IsoflopFit, Runs, bootstrap, fit_parametric
from ditscale.laws.checks import Check
from ditscale.laws.degenerate import form_degenerate
from ditscale.laws.draws import DrawStore, runs_digest
from ditscale.laws.residuals import ResidualStructure
from ditscale.laws.results import LossLawRule
from ditscale.laws.rungs import RungRule
from ditscale.study.spec import StudySpec


# -- warnings and the form of record ---------------------------------------------------------------
@contextmanager
def quiet() -> Iterator[list[warnings.WarningMessage]]:
    """The one place the analysis silences warnings: every warning raised inside (the fits', numpy's
    floating-point ones) is collected instead of printed; the study's own fit reports them (in
    laws.json's ``warnings``), the refits and predictions drop them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def form_of_record(wanted: str, fitted: Iterable[str], rule: LossLawRule | None = None) -> str:
    """The loss form of record: ``wanted`` (the spec's ``laws.loss_law``; under "auto" the form ``rule``
    chose, :func:`~ditscale.study.backtest.loss_law_rule`) when that form was fitted, else the isoFLOP
    power law ``e C^f`` ("power", always fitted)."""
    return wanted_form(wanted, rule) if wanted_form(wanted, rule) in set(fitted) else "power"


def wanted_form(wanted: str, rule: LossLawRule | None) -> str:
    """The form ``laws.loss_law`` asks for: itself, or under "auto" the form ``rule`` chose ("power"
    without a rule)."""
    if wanted != "auto":
        return wanted
    return "power" if rule is None else rule.chosen


def loss_of_record(wanted: str, forms, rule: LossLawRule | None = None):
    """``(form, L_opt)``: the form of record among ``forms`` (rows with ``form`` and ``loss_opt``, e.g.
    :func:`~ditscale.study.analyze.prediction_forms`; :func:`form_of_record`) and its loss."""
    law = form_of_record(wanted, (f.form for f in forms), rule)
    return law, next(f.loss_opt for f in forms if f.form == law)


def check_target_flops(flops: float) -> None:
    """A one-line error unless ``flops`` (a target budget in training FLOPs) is positive and finite."""
    if not (flops > 0 and math.isfinite(flops)):
        raise ConfigError(f"--flops must be a positive number of training FLOPs, got {flops}")


def form_degeneracy(form: str, fit, boot, parametric, smallest_loss: float) -> tuple[str, ...]:
    """Why loss ``form``'s fit is degenerate (:func:`ditscale.laws.degenerate.form_degenerate`), from the
    isoFLOP ``fit`` and its ``boot`` (power, saturating) or Approach 3's ``parametric`` ``(fit, boot)``."""
    if form == "parametric":
        pfit, pboot = parametric
        names = ("E", "A", "B", "alpha", "beta")
        values, prefix, boot = pfit.values(), "", pboot
    else:
        law = "loss_law" if form == "power" else "loss_law_saturating"
        names = ("coefficient", "exponent") if form == "power" else ("E", "k", "gamma")
        values, prefix = {n: getattr(getattr(fit, law), n) for n in names}, f"{law}."
    ci90 = None if boot is None else {n: boot.ci90(prefix + n) for n in names}
    return form_degenerate(form, values, ci90, smallest_loss)


# -- the study's fits -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyFit:
    """A study's runs read once (runs.csv) and fitted: the Approach 2 ``fit`` of all budgets with its
    bootstrap (None with ``laws.bootstrap: 0``), the isoFLOP point ``checks``, the residual-structure
    test, and ``warnings``: the distinct messages of the fit, the checks and the test, sorted.
    ``to_6nd``: 6ND FLOPs per exact FLOP (:func:`~ditscale.study.analyze.six_nd_per_exact`); ``rows``:
    runs.csv's text cells; ``rule``: under ``laws.loss_law: auto``, how the form of record was chosen
    from the budgets the backtest of record fits (:func:`~ditscale.study.backtest.record_rule`), else
    None. Under ``laws.off_rungs: drop``, ``runs`` lack the off rungs
    :func:`~ditscale.study.rungs.rungs_of_record` found (``rungs``, the rule) and ``all_runs`` holds
    every run (None: ``runs`` are all)."""

    spec: StudySpec
    runs: Runs
    rows: list[dict[str, str]]
    fit: IsoflopFit
    boot: Bootstrap | None
    checks: tuple[Check, ...]
    structure: ResidualStructure
    warnings: tuple[str, ...]
    to_6nd: float
    rule: LossLawRule | None = None
    rungs: RungRule | None = None
    all_runs: Runs | None = None


# -- Approach 3 -------------------------------------------------------------------------------------
# Point fits already made in this process, by the runs (:func:`~ditscale.laws.draws.runs_digest`, the
# draws' key), the options and the function. An analysis fits Approach 3 to the same runs several
# times: each backtest refit at every distance, and the loss-law rule of that refit, which fits those
# runs again and then the runs of the next refits (its inner backtest); the fit is deterministic, so
# each is made once (the T2I quickstart's analysis: 33 fits, 8 distinct).
_POINT_FITS: dict[tuple, object] = {}
_POINT_FITS_KEPT = 256  # each a frozen ParametricFit of a few hundred bytes


def _fit_parametric_once(runs: Runs, options: dict):
    """:func:`fit_parametric` of ``runs``, made once per process (:data:`_POINT_FITS`); errors are not kept."""
    key = (fit_parametric, runs_digest(runs), repr(sorted(options.items())))  # a test may replace the function
    if key not in _POINT_FITS:
        if len(_POINT_FITS) >= _POINT_FITS_KEPT:
            _POINT_FITS.clear()
        _POINT_FITS[key] = fit_parametric(runs, **options)
    return _POINT_FITS[key]


def parametric_fit(runs: Runs, cfg: FitConfig, draws: DrawStore | None = None):
    """Approach 3 fitted to ``runs`` and bootstrapped per ``cfg`` (reusing ``draws``): ``(fit,
    Bootstrap or None)``, or None when the fit fails or is not finite."""
    try:
        with quiet():
            fit = _fit_parametric_once(runs, cfg.parametric_options())
    except (DataError, ValueError, FloatingPointError):
        return None
    if not all(math.isfinite(getattr(fit, k)) for k in ("E", "A", "B", "alpha", "beta")):
        return None
    if cfg.resamples < 2:
        return fit, None
    if draws is None:
        return fit, bootstrap(runs, fit, cfg.resamples, cfg.seed)
    return fit, draws.bootstrap("parametric", runs, fit, cfg.parametric_options(), cfg.resamples, cfg.seed)
