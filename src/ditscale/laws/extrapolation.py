"""How far a study's laws have held: its backtests at every distance grouped by extrapolation factor.

laws.json's ``extrapolation`` rows (:class:`~ditscale.laws.results.ExtrapolationRow`, written by
:func:`ditscale.study.backtest.extrapolation_study`) each predict one held-out budget from a refit
that stops ``factor`` times below it (``factor = held-out C / largest fitted C``).
:func:`error_by_factor` groups them by distance (factors within 10% of their neighbour share a
group, keyed by its geometric mean) and sums each loss form's error there
(:class:`~ditscale.laws.results.FactorError`: median and range of ``relative_error = (predicted -
actual) / actual``, 90%-interval hits, rows within 2%); :func:`measured_error` picks the group
nearest a prediction's own distance (``study predict``). :func:`noise_floor` frames them: the same
backtests on draws from a perfect law whose L* scatter as the study's do about it, so a measured error can
be read as noise or as the form's miss. Read by the report and ``scripts/extrapolation_table.py``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ditscale.laws.fit import LOSS_LAWS
from ditscale.laws.powerlaw import fit_power_law, fit_saturating
from ditscale.laws.results import ExtrapolationRow, FactorError, FloorAt, LawsSummary, MeasuredError

FACTOR_RTOL = 0.1  # factors within 10% of their neighbour are one distance (budgets placed sqrt(2) apart)
EXTRAPOLATION_MIN_FITTED = 5  # refit without the K largest budgets, K = 1, 2, ... while 5 stay fitted


def error_by_factor(
    rows: Iterable[ExtrapolationRow], rtol: float = FACTOR_RTOL
) -> dict[float, tuple[FactorError, ...]]:
    """The extrapolation ``rows`` grouped by distance: factors within ``rtol`` of their neighbour
    share a group (keyed by its geometric-mean factor, ascending), each form's
    :class:`~ditscale.laws.results.FactorError` there (forms in :data:`LOSS_LAWS` order)."""
    rows = list(rows)
    out = {}
    for group in ([rows[j] for j in g] for g in factor_groups([r.factor for r in rows], rtol)):
        factor = float(np.exp(np.mean([math.log(r.factor) for r in group])))
        out[factor] = tuple(
            _factor_error(form, factor, [r for r in group if r.form == form])
            for form in LOSS_LAWS
            if any(r.form == form for r in group)
        )
    return out


def at_distance(factor: float, rows: Iterable) -> list:
    """The ``rows`` (anything with a ``factor``: backtest rows, noise bands) at the distance ``factor``:
    within :data:`FACTOR_RTOL` of it, as :func:`error_by_factor` groups them."""
    return [r for r in rows if abs(r.factor / factor - 1) <= FACTOR_RTOL]


def factor_groups(factors, rtol: float = FACTOR_RTOL) -> list[list[int]]:
    """The indices of ``factors`` grouped by distance, ascending: a factor within ``rtol`` of the
    previous one (in sorted order) joins its group (one home for the grouping of
    :func:`error_by_factor` and :func:`noise_floor`'s bands)."""
    groups: list[list[int]] = []
    for j in sorted(range(len(factors)), key=lambda j: factors[j]):  # stable: ties keep their order
        if groups and factors[j] <= factors[groups[-1][-1]] * (1 + rtol):
            groups[-1].append(j)
        else:
            groups.append([j])
    return groups


def _factor_error(form: str, factor: float, rows: list[ExtrapolationRow]) -> FactorError:
    """One form's measured error at one distance (:func:`error_by_factor`)."""
    errors = [r.relative_error for r in rows]
    return FactorError(
        form=form,
        factor=factor,
        rows=len(rows),
        median=float(np.median(errors)),
        low=float(min(errors)),
        high=float(max(errors)),
        within_ci90=sum(r.within_ci90 is True for r in rows),
        within_2pct=sum(abs(e) <= 0.02 for e in errors),
    )


def measured_error(rows: tuple[ExtrapolationRow, ...] | None, factor: float | None) -> MeasuredError | None:
    """The study's measured backtest error nearest (in log distance) the distance ``factor`` a
    prediction extrapolates; None without rows or a factor."""
    if not rows or factor is None:
        return None
    groups = error_by_factor(rows)
    nearest = min(groups, key=lambda f: abs(math.log(f) - math.log(factor)))
    beyond = factor > max(groups) * (1 + FACTOR_RTOL)
    return MeasuredError(factor=float(factor), measured_factor=nearest, beyond=beyond, forms=groups[nearest])


# -- what noise alone costs: the same backtests on draws from a perfect law -------------------------
FLOOR_DRAWS = 200  # the quickstart's 11 budgets: ~5 s of saturating refits; a fraction's standard error <= 3.5%
FLOOR_SEED = 0
FLOOR_GOAL_FACTOR = 4.0  # issue 21's goal 2: every row up to 4x within 2%
_FLOOR_FORMS = {"power": (fit_power_law, 2), "saturating": (fit_saturating, 3)}  # the fit and its parameters


@dataclass(frozen=True)
class FloorBand:
    """A perfect law's backtest error at one distance (:func:`noise_floor`): ``rows`` per draw at
    ``factor``, the expected fraction of them within 2% (``within_2pct``) and the 5-95% band of
    ``relative_error = (predicted - actual) / actual`` over every draw (``low``, ``high``)."""

    factor: float
    rows: int
    within_2pct: float
    low: float
    high: float


@dataclass(frozen=True)
class NoiseFloor:
    """What noise alone costs a study's backtests if its loss form were right.

    The law of ``form`` fitted to the ``budgets`` L* is taken as the truth, and ``sigma`` is the sd of
    log L* about it (n - p degrees of freedom; p = 2 for the power law ``e C^f``, 3 for the saturating
    ``E + k C^-gamma``). Each of ``draws`` draws scatters every L* about the law by ``exp(sigma z)``,
    z ~ N(0, 1), and redoes the backtests at every distance as the study does them: refit the form
    without the K largest budgets (K = 1, 2, ... while ``min_fitted`` stay), predict each held-out L*
    and compare with the draw's own (noisy) L* there. ``bands``: per distance (factors grouped as
    :func:`error_by_factor` groups them), a :class:`FloorBand`; ``all_within``: the fraction of draws
    in which every row up to :data:`FLOOR_GOAL_FACTOR` lies within 2%. A measured error inside a band
    is what noise gives a right form; one far outside it is the form's own miss. ``sigma`` counts a
    form's misfit as scatter (a law that bends away from the L* widens its own floor), and the draws
    are independent across budgets: L* that wander together (shared trunks, one rung's offset)
    scatter less about the law than their runs do, which ``sigma`` measures directly."""

    form: str
    sigma: float
    budgets: int
    draws: int
    bands: tuple[FloorBand, ...]
    all_within: float

    def band_at(self, factor: float) -> FloorBand | None:
        """The band at the distance ``factor`` (within :data:`FACTOR_RTOL` of it), None where there is none."""
        return next(iter(at_distance(factor, self.bands)), None)


def _right_law(flops: np.ndarray, loss_opt: np.ndarray, form: str, min_fitted: int = 1):
    """``(fit, law, sigma)``: the form's fit function, its fit to the L* (the truth of the draws) and
    the sd of log L* about it; None for another form, too few budgets, or no fit."""
    if form not in _FLOOR_FORMS or len(flops) < min_fitted + 1:
        return None
    fit, n_params = _FLOOR_FORMS[form]
    if len(flops) <= n_params or (law := fit(flops, loss_opt)) is None:
        return None
    return fit, law, float(np.sqrt(np.sum(np.log(loss_opt / law(flops)) ** 2) / (len(flops) - n_params)))


def noise_floor(
    flops: np.ndarray,
    loss_opt: np.ndarray,
    form: str,
    min_fitted: int,
    draws: int = FLOOR_DRAWS,
    seed: int = FLOOR_SEED,
) -> NoiseFloor | None:
    """:class:`NoiseFloor` of the budgets' compute-optimal losses ``loss_opt`` at ``flops`` (training
    FLOPs, ascending) under the isoFLOP ``form`` (power or saturating); None for another form, when
    fewer than ``min_fitted + 1`` budgets leave no backtest, or when the form does not fit them."""
    flops, loss_opt = np.asarray(flops, dtype=np.float64), np.asarray(loss_opt, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if (right := _right_law(flops, loss_opt, form, min_fitted)) is None:
            return None
        fit, law, sigma = right
        rng = np.random.default_rng(seed)
        pairs = [(m, i) for m in range(len(flops) - 1, min_fitted - 1, -1) for i in range(m, len(flops))]
        errors = np.array(
            [
                _draw_errors(fit, flops, law(flops) * np.exp(sigma * rng.standard_normal(len(flops))), pairs)
                for _ in range(draws)
            ]
        )
    factors = np.array([flops[i] / flops[m - 1] for m, i in pairs])
    upto = factors <= FLOOR_GOAL_FACTOR * (1 + FACTOR_RTOL)
    all_within = float(np.mean(np.all(np.abs(np.nan_to_num(errors[:, upto], nan=1.0)) <= 0.02, axis=1)))
    return NoiseFloor(form, sigma, len(flops), draws, _bands(factors, errors), all_within)


def floor_at(
    flops: np.ndarray,
    loss_opt: np.ndarray,
    form: str,
    factor: float,
    actual_sd: float = 0.0,
    draws: int = FLOOR_DRAWS,
    seed: int = FLOOR_SEED,
) -> FloorAt | None:
    """:class:`FloorAt`: the law of ``form`` fitted to all the budgets' L* (``loss_opt`` at ``flops``)
    predicts ``factor`` times the largest budget, on draws from the right law, against the law there
    (``actual_sd`` 0) or one run of it (``actual_sd``: that run's sd of log loss): what the study's own
    prediction at that distance can hope for if its form is right. None where :func:`noise_floor` is."""
    flops, loss_opt = np.asarray(flops, dtype=np.float64), np.asarray(loss_opt, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if (right := _right_law(flops, loss_opt, form)) is None:
            return None
        fit, law, sigma = right
        rng = np.random.default_rng(seed)
        target = factor * flops[-1]
        fits = [fit(flops, law(flops) * np.exp(sigma * rng.standard_normal(len(flops)))) for _ in range(draws)]
        actual = law(target) * np.exp(actual_sd * rng.standard_normal(draws))
    errors = np.array([f(target) / a - 1 for f, a in zip(fits, actual) if f is not None])
    low, high = np.quantile(errors, [0.05, 0.95])
    return FloorAt(
        form=form,
        factor=float(factor),
        sigma=sigma,
        actual_sd=float(actual_sd),
        draws=draws,
        low=float(low),
        high=float(high),
    )


def _draw_errors(fit, flops: np.ndarray, drawn: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """One draw's backtest errors, one per ``(m, i)`` of ``pairs``: the form refitted to the ``m``
    smallest budgets predicts budget ``i`` (NaN where the refit fails)."""
    refits = {m: fit(flops[:m], drawn[:m]) for m in {m for m, _ in pairs}}
    return np.array([np.nan if refits[m] is None else float(refits[m](flops[i])) / drawn[i] - 1 for m, i in pairs])


def _bands(factors: np.ndarray, errors: np.ndarray) -> tuple[FloorBand, ...]:
    """The draws' ``errors`` (draws x rows) grouped by distance as :func:`error_by_factor` groups rows
    (a distance whose refits all failed has no band)."""
    out = []
    for group in factor_groups(factors):
        e = errors[:, group].reshape(-1)
        e = e[np.isfinite(e)]
        if not e.size:  # every refit at this distance failed to fit: no band
            continue
        factor = float(np.exp(np.mean(np.log(factors[group]))))
        low, high = (float(q) for q in np.quantile(e, [0.05, 0.95]))
        out.append(FloorBand(factor, len(group), float(np.mean(np.abs(e) <= 0.02)), low, high))
    return tuple(out)


def loss_law_points(budgets, exclude_edge) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(flops, loss_opt)`` of the ``budgets`` (a fit's :class:`~ditscale.laws.isoflop.BudgetOptimum`
    or laws.json's :class:`~ditscale.laws.results.BudgetSummary`, ascending) that the L_opt law fits:
    usable optima, edge ones too unless ``exclude_edge`` is true."""
    usable = lambda b: b.loss_opt is not None and math.isfinite(b.loss_opt) and not b.degenerate  # noqa: E731
    kept = [b for b in budgets if usable(b) and not (exclude_edge is True and b.edge)]
    return tuple(b.flops for b in kept), tuple(b.loss_opt for b in kept)


def study_noise_floor(
    laws: LawsSummary, min_fitted: int = EXTRAPOLATION_MIN_FITTED, draws: int = FLOOR_DRAWS
) -> NoiseFloor | None:
    """:func:`noise_floor` of a study's laws.json under its law of record (None for Approach 3), with the
    study's own backtest distances by default (:func:`budgets_noise_floor`)."""
    return budgets_noise_floor(
        laws.budgets, laws.options.get("exclude_edge"), laws.loss_law_of_record, min_fitted, draws
    )


def budgets_noise_floor(
    budgets, exclude_edge, form: str, min_fitted: int = EXTRAPOLATION_MIN_FITTED, draws: int = FLOOR_DRAWS
) -> NoiseFloor | None:
    """:func:`noise_floor` of the ``budgets`` the L_opt law fits (:func:`loss_law_points`) under
    ``form``; kept for the process (the report, the docs' tables and a fit made ahead of the analysis
    ask for the same one)."""
    return _kept_floor(*loss_law_points(budgets, exclude_edge), form, min_fitted, draws)


@functools.lru_cache(maxsize=8)
def _kept_floor(flops: tuple, loss: tuple, form: str, min_fitted: int, draws: int) -> NoiseFloor | None:
    return noise_floor(np.array(flops), np.array(loss), form, min_fitted, draws)
