"""Predictions from fitted laws at a target compute, nearest model of a family, and backtests.

A prediction says how far it extrapolates: ``extrapolation`` is the target C over the largest
trained budget, and beyond :data:`EXTRAPOLATION_WARN` (100x, two decades of compute past the data)
it carries a warning that its intervals assume its loss form holds that far (the bootstrap only
knows the scatter of the fitted budgets, not whether the law bends beyond them), worded more
strongly past 4 and 6 decades (:func:`extrapolation_warning`); :func:`forms_disagreement` warns
when two loss forms' intervals at the target do not overlap.
:func:`exponent_resolution` puts an exponent's interval into words: unresolved when its 90%
interval includes 0, loosely resolved when it is wider than :data:`INTERVAL_GOAL` (0.25).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ditscale.errors import DataError
from ditscale.laws.bootstrap import interval90
from ditscale.laws.fit import FIT_FUNCTIONS, LOSS_LAW_NAMES
from ditscale.laws.isoflop import fit_isoflop
from ditscale.laws.runs import Runs


EXTRAPOLATION_WARN = 100.0  # warn when the target is more than this many times the largest trained budget
EXTRAPOLATION_FAR = 1e4  # beyond 4 decades of compute the warning says the intervals understate the error
EXTRAPOLATION_BLIND = 1e6  # beyond 6 decades it says the values are orders of magnitude, not predictions
INTERVAL_GOAL = 0.25  # an allocation exponent's 90% interval should be at most this wide (issue 9)


def extrapolation_warning(
    flops: float, largest: float | None, factor: float = EXTRAPOLATION_WARN, form: str = "the isoFLOP power law"
) -> str | None:
    """The one-line warning for a target ``flops`` more than ``factor`` times the largest trained
    budget ``largest`` (FLOPs), else None. It names the loss ``form`` the prediction comes from and
    grows with the distance: past :data:`EXTRAPOLATION_FAR` (4 decades) the intervals understate the
    error, past :data:`EXTRAPOLATION_BLIND` (6 decades) the values are orders of magnitude."""
    if largest is None or flops <= factor * largest:
        return None
    x = flops / largest
    head = (
        f"extrapolating {x:.2g}x ({math.log10(x):.1f} decades of compute) beyond the largest trained budget "
        f"{largest:.2g} FLOPs"
    )
    if x <= EXTRAPOLATION_FAR:
        return f"{head}; intervals assume {form} holds that far"
    if x <= EXTRAPOLATION_BLIND:
        return (
            f"{head}, far beyond the data: intervals assume {form} holds over {math.log10(x):.0f} decades and "
            "understate the error; read the values as estimates, not measurements"
        )
    return (
        f"{head}, more than {math.log10(EXTRAPOLATION_BLIND):.0f} decades beyond the data where {form} was "
        "never tested: read the values as orders of magnitude, not predictions; the intervals do not bound them"
    )


def below_sweep_warning(flops: float, smallest: float | None, factor: float = EXTRAPOLATION_WARN) -> str | None:
    """The one-line warning for a target ``flops`` more than ``factor`` times below the smallest trained
    budget ``smallest`` (FLOPs), as :func:`extrapolation_warning` warns above the largest; else None."""
    if smallest is None or flops * factor >= smallest:
        return None
    x = smallest / flops
    return (
        f"extrapolating {x:.2g}x ({math.log10(x):.1f} decades of compute) below the smallest trained budget "
        f"{smallest:.2g} FLOPs: no run was trained near this budget, and the laws were fitted to larger ones; "
        "read the values as estimates, not measurements"
    )


def form_phrase(form: str) -> str:
    """Loss ``form`` (power, saturating, parametric) in a sentence: "the isoFLOP power law", ...,
    "Approach 3 L(N, D)"."""
    name = LOSS_LAW_NAMES[form]
    return name if form == "parametric" else f"the {name}"


def forms_disagreement(flops: float, forms) -> tuple[str, ...]:
    """One warning per quantity (N_opt, L_opt) on which two fitted loss ``forms`` (records with ``name``,
    ``n_opt`` and ``loss_opt``, each a value and ``ci90``) disagree beyond their 90% intervals at
    ``flops`` (the intervals do not overlap): each interval is conditional on its own form, so the
    spread between forms is an uncertainty none of them shows."""
    out = []
    for key, what in (("n_opt", "N_opt"), ("loss_opt", "L_opt")):
        apart = []
        for i, a in enumerate(forms):
            for b in forms[i + 1 :]:
                ea, eb = getattr(a, key), getattr(b, key)
                if ea.ci90 and eb.ci90 and (ea.ci90[1] < eb.ci90[0] or eb.ci90[1] < ea.ci90[0]):
                    ratio = max(ea.value, eb.value) / min(ea.value, eb.value)
                    apart.append(
                        f"{a.name} {ea.value:.4g} [{ea.ci90[0]:.4g}, {ea.ci90[1]:.4g}] vs {b.name} {eb.value:.4g} "
                        f"[{eb.ci90[0]:.4g}, {eb.ci90[1]:.4g}] ({ratio:.3g}x)"
                    )
        if apart:
            out.append(
                f"the loss forms disagree on {what} at C = {flops:.3g} FLOPs beyond their 90% intervals: "
                f"{'; '.join(apart)}; each interval assumes its own form, so the spread between forms is "
                "the larger uncertainty"
            )
    return tuple(out)


def exponent_resolution(name: str, value: float, ci90: list[float] | None, goal: float | None = INTERVAL_GOAL) -> dict:
    """An exponent's interval in words: ``{name, value, ci90, width, includes_zero, message}``.

    ``message`` (else None): "<name> unresolved: its 90% interval [lo, hi] includes 0", or, when
    ``goal`` is given and the interval is wider, "<name> loosely resolved: its 90% interval [lo, hi]
    is w wide (goal 0.25)". Without an interval (no bootstrap, or intervals withheld, which warns
    on its own) there is nothing to say: message None.
    """
    out = {"name": name, "value": value, "ci90": ci90, "width": None, "includes_zero": None, "message": None}
    if ci90 is None:
        return out
    lo, hi = ci90
    out.update(width=hi - lo, includes_zero=bool(lo <= 0 <= hi))
    if out["includes_zero"]:
        out["message"] = f"{name} unresolved: its 90% interval [{lo:.3g}, {hi:.3g}] includes 0"
    elif goal is not None and hi - lo > goal:
        out["message"] = (
            f"{name} loosely resolved: its 90% interval [{lo:.3g}, {hi:.3g}] is {hi - lo:.2g} wide (goal {goal:g})"
        )
    return out


def largest_budget(fit) -> float | None:
    """The largest trained budget of an isoflop (``budgets``) or envelope (``envelope``) fit, FLOPs; None otherwise."""
    points = getattr(fit, "budgets", None) or getattr(fit, "envelope", None)
    return max(p.flops for p in points) if points else None


def smallest_budget(fit) -> float | None:
    """The smallest trained budget of an isoflop or envelope fit, FLOPs; None otherwise."""
    points = getattr(fit, "budgets", None) or getattr(fit, "envelope", None)
    return min(p.flops for p in points) if points else None


@dataclass(frozen=True)
class Estimate:
    """A predicted value with its bootstrap 90% interval ``[lo, hi]`` (None without a bootstrap)."""

    value: float
    ci90: list[float] | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "ci90": self.ci90}


@dataclass(frozen=True)
class Prediction:
    """Compute-optimal allocation at ``flops`` FLOPs.

    Attributes:
        n_opt: parameters; d_opt: training tokens; images_opt: training images
            (``d_opt / tokens_per_image``, None unless tokens_per_image was given); loss_opt: loss.
        nearest: ``(name, params)`` of the family member closest to n_opt in log N, or None.
        largest_budget: the largest trained budget (FLOPs), None when unknown.
        extrapolation: ``flops / largest_budget``; warnings: the extrapolation warning, if any.
    """

    flops: float
    n_opt: Estimate
    d_opt: Estimate
    loss_opt: Estimate
    images_opt: Estimate | None = None
    nearest: tuple[str, float] | None = None
    largest_budget: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def extrapolation(self) -> float | None:
        return None if self.largest_budget is None else self.flops / self.largest_budget

    def to_dict(self) -> dict:
        return {
            "flops": self.flops,
            "n_opt": self.n_opt.to_dict(),
            "d_opt": self.d_opt.to_dict(),
            "loss_opt": self.loss_opt.to_dict(),
            "images_opt": None if self.images_opt is None else self.images_opt.to_dict(),
            "nearest": None if self.nearest is None else {"name": self.nearest[0], "params": self.nearest[1]},
            "largest_budget": self.largest_budget,
            "extrapolation": self.extrapolation,
            "warnings": list(self.warnings),
        }


def nearest_model(params: float, family: Sequence[tuple[str, float]]) -> tuple[str, float]:
    """The ``(name, params)`` of ``family`` closest to ``params`` in log distance |log N - log N_i|."""
    if not family:
        raise DataError("the model family is empty; give (name, params) pairs")
    return min(family, key=lambda m: abs(math.log(m[1]) - math.log(params)))


def predict(
    fit,
    flops: float,
    *,
    boot=None,
    tokens_per_image: float | None = None,
    family: Sequence[tuple[str, float]] | None = None,
    saturating: bool = False,
    trained_flops: float | None = None,
) -> Prediction:
    """Compute-optimal N (params), D (tokens), loss at ``flops`` FLOPs, with bootstrap intervals.

    Args:
        fit: an isoflop, envelope or parametric fit.
        flops: target training compute, FLOPs.
        boot: the fit's :class:`Bootstrap`; gives each estimate a 90% interval.
        tokens_per_image: image tokens per training image; adds ``images_opt`` = D / tokens_per_image.
        family: ``(name, params)`` pairs; adds the member nearest to N_opt (log distance).
        saturating: for isoflop/envelope fits, predict the loss with ``E + k C^-gamma`` instead of
            the pure power law (parametric fits always use L(N_opt, D_opt)).
        trained_flops: the largest trained budget, in the units of ``flops`` (default: the fit's
            largest budget; a parametric fit knows none). Sets ``extrapolation`` and, beyond
            :data:`EXTRAPOLATION_WARN` times it, the warning.
    """
    if not (flops > 0 and math.isfinite(flops)):
        raise DataError(f"target compute must be a positive number of FLOPs, got {flops!r}")
    if saturating and getattr(fit, "loss_law_saturating", True) is None:
        raise DataError("the saturating loss law was not fitted (needs 4 or more budgets); predict without it")
    point = [float(x) for x in fit.optimum(fit.values(), flops, saturating)]
    draws = fit.optimum(boot.samples, flops, saturating) if boot is not None else (None,) * 3
    est = [Estimate(p, None if d is None else interval90(d)) for p, d in zip(point, draws)]
    images = None
    if tokens_per_image is not None:
        if tokens_per_image <= 0:
            raise DataError(f"tokens_per_image must be positive, got {tokens_per_image}")
        lo_hi = est[1].ci90 and [x / tokens_per_image for x in est[1].ci90]
        images = Estimate(point[1] / tokens_per_image, lo_hi)
    near = nearest_model(point[0], family) if family else None
    largest = largest_budget(fit) if trained_flops is None else float(trained_flops)
    form = form_phrase("saturating" if saturating else "parametric" if fit.method == "parametric" else "power")
    warns = [extrapolation_warning(float(flops), largest, form=form)]
    if trained_flops is None:  # the fit's own budgets, in the units of ``flops``
        warns.append(below_sweep_warning(float(flops), smallest_budget(fit)))
    warns = tuple(w for w in warns if w)
    return Prediction(float(flops), est[0], est[1], est[2], images, near, largest, warns)


@dataclass(frozen=True)
class BacktestRow:
    """One held-out budget: its FLOPs, the refit's predicted compute-optimal loss, the budget's own
    isoFLOP minimum L* ("actual"), and ``relative_error = (predicted - actual) / actual``; the
    refit's predicted N_opt (params) and the budget's own fitted N* (None when that optimum is an
    edge or degenerate one, so not a measurement of N_opt)."""

    flops: float
    predicted_loss: float
    actual_loss: float
    relative_error: float
    predicted_n_opt: float | None = None
    actual_n_opt: float | None = None

    def to_dict(self) -> dict:
        return {
            "flops": self.flops,
            "predicted_loss": self.predicted_loss,
            "actual_loss": self.actual_loss,
            "relative_error": self.relative_error,
            "predicted_n_opt": self.predicted_n_opt,
            "actual_n_opt": self.actual_n_opt,
        }


def holdout_split(runs: Runs, k: int, budget_rtol: float = 0.1) -> tuple[Runs, np.ndarray]:
    """The runs of all but the ``k`` largest budgets, and the held-out budgets' FLOPs (ascending)."""
    label, budget_flops = runs.budgets(budget_rtol)
    if not 1 <= k <= len(budget_flops) - 2:
        raise DataError(
            f"backtest holds out k={k} of {len(budget_flops)} budgets; keep at least 2: use 1 <= k <= "
            f"{len(budget_flops) - 2}"
        )
    held = np.arange(len(budget_flops) - k, len(budget_flops))
    return runs.take(~np.isin(label, held)), budget_flops[held]


def backtest_rows(refit, full_isoflop, held_flops, saturating: bool = False, to_6nd: float = 1.0) -> list[BacktestRow]:
    """Rows of a backtest: ``refit`` (fitted without the held-out budgets) predicts each budget of
    ``held_flops``; the "actual" loss and N* are that budget's in ``full_isoflop``, the isoFLOP fit
    of all runs (its N* is None where the budget's optimum is flagged edge or degenerate).
    ``to_6nd``: 6ND FLOPs per FLOP of ``held_flops``, for a refit that allocates C = 6ND (Approach 3)."""
    actual = {b.flops: b for b in full_isoflop.budgets}
    rows = []
    for c in map(float, held_flops):
        n_pred, _, loss_pred = (float(x) for x in refit.optimum(refit.values(), c * to_6nd, saturating))
        b = actual[c]
        n_act = None if (b.edge or b.degenerate) else b.n_opt
        rows.append(BacktestRow(c, loss_pred, b.loss_opt, (loss_pred - b.loss_opt) / b.loss_opt, n_pred, n_act))
    return rows


def backtest(
    runs: Runs,
    k: int = 1,
    method: str = "isoflop",
    saturating: bool = False,
    parametric_method: str | None = None,
    **options,
) -> list[BacktestRow]:
    """Refit without the ``k`` largest budgets and predict their compute-optimal loss and N_opt.

    The "actual" loss of a held-out budget is the minimum L* of its own isoFLOP parabola (fitted on
    all runs; with the same options when ``method`` is "isoflop"), its actual N_opt that parabola's
    N* (None for an edge or degenerate optimum). ``method`` is the refit: "isoflop", "parametric" or
    "envelope"; ``options`` go to its fit function (``budget_rtol``, an isoflop option, also defines
    the budgets for every method); ``parametric_method`` is the parametric refit's ``method``
    ("lbfgs-grid" or "varpro"). Losses are in the runs' loss units, N_opt in parameters.
    """
    if method not in FIT_FUNCTIONS:
        raise DataError(f"unknown method {method!r}; use one of {', '.join(FIT_FUNCTIONS)}")
    rtol = options.get("budget_rtol", 0.1)
    train, held_flops = holdout_split(runs, k, rtol)
    iso_opts = options if method == "isoflop" else {"budget_rtol": rtol}
    fit_opts = options if method == "isoflop" else {key: v for key, v in options.items() if key != "budget_rtol"}
    if method == "parametric" and parametric_method is not None:
        fit_opts = {**fit_opts, "method": parametric_method}
    refit = FIT_FUNCTIONS[method](train, **fit_opts)
    return backtest_rows(refit, fit_isoflop(runs, **iso_opts), held_flops, saturating)
