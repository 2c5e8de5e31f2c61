"""How far a study's laws have held: its backtests at every distance grouped by extrapolation factor.

laws.json's ``extrapolation`` rows (:class:`~ditscale.laws.results.ExtrapolationRow`, written by
:func:`ditscale.study.backtest.extrapolation_study`) each predict one held-out budget from a refit
that stops ``factor`` times below it (``factor = held-out C / largest fitted C``).
:func:`error_by_factor` groups them by distance (factors within 10% of their neighbour share a
group, keyed by its geometric mean) and sums each loss form's error there
(:class:`~ditscale.laws.results.FactorError`: median and range of ``relative_error = (predicted -
actual) / actual``, 90%-interval hits, rows within 2%); :func:`measured_error` picks the group
nearest a prediction's own distance (``study predict``). Read by the report and
``scripts/extrapolation_table.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ditscale.laws.fit import LOSS_LAWS
from ditscale.laws.results import ExtrapolationRow, FactorError, MeasuredError

FACTOR_RTOL = 0.1  # factors within 10% of their neighbour are one distance (budgets placed sqrt(2) apart)


def error_by_factor(
    rows: Iterable[ExtrapolationRow], rtol: float = FACTOR_RTOL
) -> dict[float, tuple[FactorError, ...]]:
    """The extrapolation ``rows`` grouped by distance: factors within ``rtol`` of their neighbour
    share a group (keyed by its geometric-mean factor, ascending), each form's
    :class:`~ditscale.laws.results.FactorError` there (forms in :data:`LOSS_LAWS` order)."""
    rows = sorted(rows, key=lambda r: r.factor)
    groups: list[list[ExtrapolationRow]] = []
    for row in rows:
        if groups and row.factor <= groups[-1][-1].factor * (1 + rtol):
            groups[-1].append(row)
        else:
            groups.append([row])
    out = {}
    for group in groups:
        factor = float(np.exp(np.mean([math.log(r.factor) for r in group])))
        out[factor] = tuple(
            _factor_error(form, factor, [r for r in group if r.form == form])
            for form in LOSS_LAWS
            if any(r.form == form for r in group)
        )
    return out


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
