"""isoFLOP point checks: is the sweep laid out so that Approach 2 can be trusted?

Approach 2 fits a parabola in log N per budget, but an isoFLOP profile ``L(N, C/6N)`` is not a
parabola: its two arms have different slopes when alpha != beta. The vertex of the fitted parabola
is therefore shifted from the true optimum by an amount that grows with the distance between the
optimum and the grid's centre, and with the grid's width (Open-Athena's scaling-law-analysis
shows this on noise-free synthetic surfaces). A constant offset shifts every budget's N* by about
the same factor (the coefficient is biased, the exponent barely); an offset that changes with C
biases the exponent. :func:`isoflop_checks` looks for four layouts that make the fit suspect, and
for a loss law that the fit cannot follow:

``off_centre``
    A budget whose fitted N* lies more than ``OFF_CENTRE`` = 25% of its grid's log-N span from the
    grid's centre (the mean log N of its distinct model sizes), i.e. outside the middle half of the
    grid: one arm of the parabola is then fitted on few points and the vertex leans on the
    parabola's shape far from the data. Edge optima (``edge`` in the fit) are off-centre too.
``drifting_centres``
    With 3 or more usable budgets, the offset ``u = (log N* - centre) / span`` regressed on log C:
    flagged when the fitted change of ``u`` across the sweep exceeds ``DRIFT`` = 0.2 (a fifth of a
    grid span) and, with 4 or more budgets, the slope's t-statistic exceeds ``DRIFT_T`` = 2 (so one
    noisy budget does not raise it). This is the layout that biases the exponents.
``near_duplicate``
    Two model sizes of one budget within ``DUPLICATE_RTOL`` = 2% in N (they sit at one point of the
    parabola and count twice there), or, with a ``seed`` column, two runs of one budget with the same
    N and the same seed (a run listed twice). Seed replicates (same N, other seed) are not flagged.
``outlier``
    Per budget with 4 or more sizes, the run with the largest standardized residual
    ``r sqrt(w) / sqrt(1 - h)`` (``r`` its log-loss residual from the budget's least-squares
    parabola, ``h`` its leverage, so every run's value has the noise's variance wherever it sits in
    the grid), when that exceeds ``OUTLIER_K`` = 5 robust standard deviations: 1.4826 x the median
    absolute deviation of the standardized residuals pooled over all such budgets, floored at
    ``SIGMA_FLOOR`` = 1e-4 (so that noise-free synthetic data, whose only residual is the parabola's
    misfit, flag nothing). One run per budget: an outlier also pulls its neighbours' residuals. With
    exactly 4 sizes the parabola leaves one residual degree of freedom, so every run's standardized
    residual has the same size: the budget is flagged without naming a run.
    Measured on 5 budgets x 5 sizes with 0.5% log-normal noise: 1% of sweeps raise a false alarm
    (4% with k = 4), and a run 5% off (10 noise SDs) in the middle of a grid is found 60% of the
    time (85% with 7 sizes per budget); at a grid's ends the parabola absorbs most of it (few dof).

``loss_bends``
    Not a grid layout but what the fitted minima say about the L_opt law: with 4 or more usable
    budgets, ``log L*`` regressed on ``x = log C`` with a quadratic term, ``log L* = a + b x + c x^2``;
    the local exponent ``b + 2 c x`` then changes by ``2 c ptp(x)`` across the sweep. Flagged when
    that change exceeds ``BEND_FRACTION`` = 25% of the power law's exponent and the curvature's
    t-statistic exceeds ``BEND_T`` = 2.5 (p = 0.04 two-sided with the 8 dof of 11 budgets), and
    only when the study predicts L_opt with the pure power law (``loss_law: power``): a loss
    bending towards an irreducible floor (c > 0) is under-predicted past the sweep by ``e C^f``,
    which Approach 3 and the saturating law follow. On 11 budgets over 32x with 1% / 2% noise on
    the minima it raises a false alarm in 0.4% / 3.2% of straight power laws. On the quickstart's
    11 minima (Approach 3's floor E is 37-77% of L*) the local exponent goes from -0.28 to -0.16
    (t = 2.9), and the power law misses the held-out budget by -6.6% where Approach 3 is within 2%.
    :func:`loss_bend` gives the measurement whatever the loss law (laws.json ``loss_bend``).

Repeated points, for every approach: :func:`duplicate_points` names in one line the rows that repeat
one (N, D) point (the same run listed twice, e.g. logged in two units; with ``seed``, only rows of one
seed), which the bootstrap draws as one unit (:meth:`Runs.groups`, :meth:`Runs.tied`); a study and
``ditscale fit`` warn with it (:func:`ditscale.laws.fit.fit_runs`).

Each finding is a :class:`Check` ``(budget, kind, message)`` (``budget`` in FLOPs, None for the
sweep-wide drift); the message is one line saying what is wrong and what to do. Nothing is
refitted or dropped: the checks only report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ditscale.laws.isoflop import fit_log_n_parabola
from ditscale.laws.runs import Runs

OFF_CENTRE = 0.25
DRIFT = 0.2
DRIFT_T = 2.0
DUPLICATE_RTOL = 0.02
OUTLIER_K = 5.0
SIGMA_FLOOR = 1e-4
BEND_FRACTION = 0.25
BEND_T = 2.5
KINDS = ("off_centre", "drifting_centres", "near_duplicate", "outlier", "loss_bends")


@dataclass(frozen=True)
class Check:
    """One finding: the budget it concerns (FLOPs; None for the whole sweep), its kind (one of
    :data:`KINDS`) and a one-line message."""

    budget: float | None
    kind: str
    message: str

    def to_dict(self) -> dict:
        return {"budget": self.budget, "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class Grid:
    """One budget's grid: FLOPs, centre (mean of the distinct log N), span (their log range) and
    the fitted log N* (NaN when degenerate)."""

    flops: float
    centre: float
    span: float
    log_n_opt: float

    @property
    def offset(self) -> float:
        """(log N* - centre) / span: 0 at the centre, +-0.5 at the grid's ends."""
        return (self.log_n_opt - self.centre) / self.span


def _distinct_log_n(params: np.ndarray) -> np.ndarray:
    """Sorted distinct log N (6 decimals, as :meth:`Runs.groups` keys configurations)."""
    return np.unique(np.round(np.log(params), 6))


def budget_grids(runs: Runs, fit) -> list[Grid]:
    """The :class:`Grid` of each budget of ``fit`` (an :class:`IsoflopFit` of ``runs``)."""
    label, _ = runs.budgets(fit.options["budget_rtol"])
    grids = []
    for b, point in enumerate(fit.budgets):
        log_n = _distinct_log_n(runs.params[label == b])
        log_opt = math.log(point.n_opt) if point.n_opt > 0 and not point.degenerate else math.nan
        grids.append(Grid(point.flops, float(log_n.mean()), max(float(np.ptp(log_n)), 1e-12), log_opt))
    return grids


def off_centre_checks(grids: list[Grid]) -> list[Check]:
    """Budgets whose N* lies more than ``OFF_CENTRE`` of the grid's log span from its centre."""
    out = []
    for g in grids:
        if math.isfinite(g.log_n_opt) and abs(g.offset) > OFF_CENTRE:
            out.append(
                Check(
                    g.flops,
                    "off_centre",
                    (
                        f"budget {g.flops:.4g} FLOPs: off-centre grid, N* = {math.exp(g.log_n_opt):.4g} params is {g.offset:+.0%} of "
                        f"the grid's log-N span from its centre {math.exp(g.centre):.4g} (limit {OFF_CENTRE:.0%}); Approach 2 is "
                        "biased by off-centre grids: centre this budget's model sizes on N*"
                    ),
                )
            )
    return out


def drift_checks(grids: list[Grid]) -> list[Check]:
    """A trend of the grid offsets with log C (see the module doc); at most one check."""
    ok = [g for g in grids if math.isfinite(g.log_n_opt)]
    if len(ok) < 3:
        return []
    x, u = np.log([g.flops for g in ok]), np.array([g.offset for g in ok])
    slope, intercept = np.polyfit(x, u, 1)
    drift = float(slope * np.ptp(x))
    if abs(drift) <= DRIFT:
        return []
    if len(ok) >= 4:
        resid = u - (intercept + slope * x)
        se = math.sqrt(float(resid @ resid) / (len(ok) - 2) / float(((x - x.mean()) ** 2).sum()))
        if se > 0 and abs(slope) / se < DRIFT_T:
            return []
    return [
        Check(
            None,
            "drifting_centres",
            (
                f"grid centres drift against the fitted optima: N* moves {drift:+.0%} of a grid's log-N span relative to the "
                f"centres from {ok[0].flops:.3g} to {ok[-1].flops:.3g} FLOPs (limit {DRIFT:.0%}); Approach 2's exponents are "
                "biased by drifting grids: centre each budget on the fitted law and compare with Approach 3"
            ),
        )
    ]


def duplicate_checks(runs: Runs, label: np.ndarray, budget_flops: np.ndarray) -> list[Check]:
    """Model sizes of one budget within ``DUPLICATE_RTOL``, and same-N same-seed runs (see the module doc)."""
    out = []
    for b, c in enumerate(budget_flops):
        idx = np.flatnonzero(label == b)
        log_n = _distinct_log_n(runs.params[idx])
        for lo, hi in zip(log_n[:-1], log_n[1:]):
            if hi - lo < math.log1p(DUPLICATE_RTOL):
                out.append(
                    Check(
                        float(c),
                        "near_duplicate",
                        (
                            f"budget {c:.4g} FLOPs: model sizes {math.exp(lo):.4g} and {math.exp(hi):.4g} params differ by "
                            f"{math.expm1(hi - lo):.1%} (< {DUPLICATE_RTOL:.0%}) and count twice at one point of the parabola: "
                            "move one of them further out"
                        ),
                    )
                )
        if runs.seed is not None:
            keys = np.stack([np.round(np.log(runs.params[idx]), 6), runs.seed[idx]], axis=1)
            values, counts = np.unique(keys, axis=0, return_counts=True)
            for (log_n1, seed), k in zip(values[counts > 1], counts[counts > 1]):
                out.append(
                    Check(
                        float(c),
                        "near_duplicate",
                        (
                            f"budget {c:.4g} FLOPs: {k} runs of {math.exp(log_n1):.4g} params share seed {int(seed)}, so one run "
                            "counts several times: drop the copies"
                        ),
                    )
                )
    return out


def duplicate_points(runs: Runs, shown: int = 3) -> str | None:
    """One line naming the rows that repeat one (params, tokens) point (:meth:`Runs.duplicates`): how
    many points and rows, the first ``shown`` sets by run_id (else by 1-based row number); None if none."""
    sets = runs.duplicates()
    if not sets:
        return None
    name = (lambda i: str(runs.run_id[i])) if runs.run_id is not None else (lambda i: f"row {i + 1}")
    named = ", ".join(" = ".join(name(i) for i in rows) for rows in sets[:shown])
    more = f" and {len(sets) - shown} more" if len(sets) > shown else ""
    same = " with the same seed" if runs.seed is not None else ""
    return (
        f"{len(sets)} (N, D) point(s) appear in {sum(map(len, sets))} rows{same} ({named}{more}): the bootstrap draws "
        "each point's rows as one unit; drop the copies, or give true replicates a seed column"
    )


def standardized_residuals(runs: Runs, label: np.ndarray, budget_flops: np.ndarray) -> np.ndarray:
    """``r_i sqrt(w_i) / sqrt(1 - h_ii)`` of every run: ``r_i`` its log-loss residual from its budget's
    least-squares parabola in log N, ``h_ii`` its leverage (so that each value has the noise's
    variance, whatever its place in the grid); NaN in budgets with fewer than 4 distinct sizes."""
    w = np.ones(len(runs)) if runs.weight is None else runs.weight
    out = np.full(len(runs), np.nan)
    for b in range(len(budget_flops)):
        idx = np.flatnonzero(label == b)
        if len(_distinct_log_n(runs.params[idx])) < 4:
            continue
        log_n, log_l = np.log(runs.params[idx]), np.log(runs.loss[idx])
        parabola = fit_log_n_parabola(log_n, log_l, w[None, idx])
        x = parabola.x(log_n)
        X = np.stack([np.ones_like(x), x, x * x], axis=1)
        lev = w[idx] * np.einsum("ni,ij,nj->n", X, np.linalg.inv(X.T @ (w[idx, None] * X)), X)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[idx] = (log_l - parabola(log_n)[0]) * np.sqrt(w[idx] / np.maximum(1.0 - lev, 0.0))
    return out


def outlier_checks(runs: Runs, label: np.ndarray, budget_flops: np.ndarray) -> list[Check]:
    """Per budget, the run with the largest standardized residual if it exceeds ``OUTLIER_K``
    robust SDs (see the module doc)."""
    z = standardized_residuals(runs, label, budget_flops)
    ok = np.isfinite(z)
    if not ok.any():
        return []
    sigma = max(1.4826 * float(np.median(np.abs(z[ok] - np.median(z[ok])))), SIGMA_FLOOR)
    out = []
    for b, c in enumerate(map(float, budget_flops)):
        idx = np.flatnonzero((label == b) & ok)
        if len(idx) == 0 or np.abs(z[idx]).max() <= OUTLIER_K * sigma:
            continue
        i = idx[np.argmax(np.abs(z[idx]))]
        if len(_distinct_log_n(runs.params[idx])) == 4:  # one residual degree of freedom: every |z| is the same
            out.append(
                Check(
                    c,
                    "outlier",
                    (
                        f"budget {c:.4g} FLOPs: its runs are {abs(z[i]) / sigma:.1f} robust SDs from the budget's parabola "
                        f"(limit {OUTLIER_K:g}); with 4 sizes the residuals cannot tell which run is off: check its runs, "
                        "add sizes, or fit with robust: true"
                    ),
                )
            )
            continue
        name = "" if runs.run_id is None else f" {runs.run_id[i]}"
        out.append(
            Check(
                c,
                "outlier",
                (
                    f"budget {c:.4g} FLOPs: run{name} ({runs.params[i]:.4g} params, loss {runs.loss[i]:.5g}) is "
                    f"{abs(z[i]) / sigma:.1f} robust SDs from the budget's parabola (limit {OUTLIER_K:g}): check that run "
                    "(diverged? wrong config?) or fit with robust: true"
                ),
            )
        )
    return out


@dataclass(frozen=True)
class LossBend:
    """How the isoFLOP minima's L_opt law bends: the local exponent ``d log L* / d log C`` of a
    quadratic in log C at the smallest and the largest usable budget (FLOPs), the change between
    them, and the t-statistic of the quadratic term (positive: flattening towards a floor)."""

    first_flops: float
    last_flops: float
    first_exponent: float
    last_exponent: float
    t: float

    @property
    def change(self) -> float:
        return self.last_exponent - self.first_exponent

    def to_dict(self) -> dict:
        return {
            "first_flops": self.first_flops,
            "last_flops": self.last_flops,
            "first_exponent": self.first_exponent,
            "last_exponent": self.last_exponent,
            "change": self.change,
            "t": self.t if math.isfinite(self.t) else None,
        }  # None: minima exactly on a quadratic


def loss_bend(fit) -> LossBend | None:
    """The bend of ``fit``'s (an :class:`IsoflopFit`) minima L* in log-log, or None with fewer than 4
    usable budgets. The t-statistic is inf for minima that lie exactly on a quadratic."""
    ok = [b for b in fit.budgets if not b.degenerate and b.loss_opt > 0]
    if len(ok) < 4:
        return None
    log_c = np.log([b.flops for b in ok])
    x = log_c - log_c.mean()
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    log_l = np.log([b.loss_opt for b in ok])
    coef, *_ = np.linalg.lstsq(X, log_l, rcond=None)
    resid = log_l - X @ coef
    dof = len(ok) - 3
    s2 = float(resid @ resid) / dof if dof else 0.0
    se = math.sqrt(s2 * float(np.linalg.inv(X.T @ X)[2, 2]))
    t = coef[2] / se if se > 0 else math.copysign(math.inf, coef[2]) if coef[2] else 0.0
    slope = lambda xx: float(coef[1] + 2 * coef[2] * xx)  # noqa: E731
    return LossBend(ok[0].flops, ok[-1].flops, slope(x[0]), slope(x[-1]), float(t))


def loss_bend_checks(fit, loss_law: str = "power") -> list[Check]:
    """The ``loss_bends`` check (see the module doc): [] unless ``loss_law`` is "power" and the
    minima bend by more than ``BEND_FRACTION`` of the exponent with ``|t| > BEND_T``."""
    bend = loss_bend(fit)
    if loss_law != "power" or bend is None or abs(bend.t) <= BEND_T:
        return []
    if abs(bend.change) <= BEND_FRACTION * abs(fit.loss_law.exponent):
        return []
    if bend.change > 0:
        what = (
            "flattens towards a floor",
            "under-predicts",
            "predict it with laws.loss_law: parametric (Approach 3, with an irreducible E) or saturating",
        )
    else:
        what = ("steepens", "over-predicts", "check the largest budgets' runs (schedule, warmup, divergence)")
    return [
        Check(
            None,
            "loss_bends",
            (
                f"L_opt {what[0]}: its local exponent goes from {bend.first_exponent:.3f} at {bend.first_flops:.3g} to "
                f"{bend.last_exponent:.3f} at {bend.last_flops:.3g} FLOPs (t = {bend.t:.1f}), so the power law e C^f "
                f"{what[1]} the loss past the sweep: {what[2]}"
            ),
        )
    ]


def isoflop_checks(runs: Runs, fit, loss_law: str = "power") -> list[Check]:
    """All five checks of ``fit`` (an :class:`IsoflopFit` of ``runs``), in the order off_centre,
    drifting_centres, near_duplicate, outlier, loss_bends (``loss_law``: the study's
    :class:`~ditscale.laws.FitConfig` ``loss_law``); [] when the sweep looks sound."""
    label, budget_flops = runs.budgets(fit.options["budget_rtol"])
    grids = budget_grids(runs, fit)
    return [
        *off_centre_checks(grids),
        *drift_checks(grids),
        *duplicate_checks(runs, label, budget_flops),
        *outlier_checks(runs, label, budget_flops),
        *loss_bend_checks(fit, loss_law),
    ]
