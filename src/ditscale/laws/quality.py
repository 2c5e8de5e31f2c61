"""Quality laws: sample quality as a power law in compute and in validation loss (numpy/scipy only).

Liang et al. (2026, Sec. 4.3) evaluate the compute-optimal model of each isoFLOP budget and find
that FID falls as a power law in compute, ``FID = 2.2566e6 C^-0.234`` (C in FLOPs), and that the
pretraining loss tracks generation quality. This module fits the same laws to a study's evaluated
models:

- ``law``: ``Q = coefficient * C^exponent`` through the compute-optimal models (least squares on
  ``log Q``), with 90% intervals from a pairs bootstrap over budgets;
- ``saturating``: ``Q = E + k C^-gamma`` (a floor for a quality measure that cannot reach 0,
  e.g. the Fréchet distance of finite sample sets);
- ``vs_loss``: ``Q = coefficient * L^exponent`` over every evaluated model, with the rank
  correlation of quality and loss;
- the backtest: the same law refitted without the held-out budgets predicts their quality;
- :func:`fit_metric`: the law, backtest and law in loss of any other metric of the stage (an
  accuracy, higher is better) with its chance level, floor and the top budget's best value
  (laws.json's ``quality_metrics``).

Units: C in training FLOPs; Q in the metric's own units (FID, or the shapes evaluator's FD; lower
is better); L in the runs' validation-loss units; ``relative_error = (predicted - actual) / actual``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from ditscale.errors import DataError
from ditscale.laws.bootstrap import interval90
from ditscale.laws.powerlaw import PowerLaw, SaturatingLaw, fit_power_law, fit_saturating, loglog_fit

# Liang et al. 2026, the FID of their compute-optimal DiTs on ImageNet 256 against training FLOPs.
PAPER_QUALITY_LAW = {"metric": "fid", "coefficient": 2.2566e6, "exponent": -0.234}


@dataclass(frozen=True)
class QualityPoint:
    """One evaluated model: ``flops`` (its training FLOPs budget), ``quality`` (the metric, lower is
    better), ``loss`` (its validation loss), ``params`` (non-embedding), ``optimal`` (whether it is
    its budget's compute-optimal model: the law in C is fitted through these only)."""

    run_id: str
    flops: float
    quality: float
    loss: float
    params: float
    optimal: bool = True


@dataclass(frozen=True)
class LawWithIntervals:
    """A power law ``y = coefficient * x^exponent`` with the bootstrap's resampled coefficients and exponents."""

    law: PowerLaw
    coefficients: np.ndarray
    exponents: np.ndarray

    def predict(self, x: float) -> tuple[float, list[float] | None]:
        """``y(x)`` and its 90% interval over the resamples."""
        with np.errstate(over="ignore", invalid="ignore"):
            draws = self.coefficients * float(x) ** self.exponents
        return float(self.law(x)), interval90(draws)

    def to_dict(self) -> dict:
        return {
            "coefficient": self.law.coefficient,
            "exponent": self.law.exponent,
            "ci90": {"coefficient": interval90(self.coefficients), "exponent": interval90(self.exponents)},
        }


def fit_with_bootstrap(x: np.ndarray, y: np.ndarray, resamples: int = 1000, seed: int = 0) -> LawWithIntervals:
    """Least-squares ``log y = log a + b log x`` and a pairs bootstrap of it (points drawn with
    replacement; draws with fewer than two distinct x give NaN and are left out of the intervals)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.any(x <= 0) or np.any(y <= 0) or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError(
            "a quality power law needs positive, finite compute and quality values; check the evaluated runs"
        )
    law = fit_power_law(x, y)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), size=(resamples, len(x)))
    weights = (
        np.stack([np.bincount(p, minlength=len(x)) for p in picks]).astype(np.float64)
        if resamples
        else np.zeros((0, len(x)))
    )
    intercept, slope = loglog_fit(np.log(x), np.broadcast_to(np.log(y), weights.shape), weights)
    return LawWithIntervals(law, np.exp(np.atleast_1d(intercept)), np.atleast_1d(slope))


@dataclass(frozen=True)
class QualityBacktest:
    """The quality law refitted without the held-out budgets, at the largest of them."""

    flops: float
    predicted: float
    predicted_ci90: list[float] | None
    actual: float
    fitted_budgets: int

    @property
    def relative_error(self) -> float:
        return (self.predicted - self.actual) / self.actual

    def to_dict(self) -> dict:
        ci = self.predicted_ci90
        return {
            "flops": self.flops,
            "predicted": self.predicted,
            "predicted_ci90": ci,
            "actual": self.actual,
            "relative_error": self.relative_error,
            "fitted_budgets": self.fitted_budgets,
            "within_ci90": None if ci is None else bool(ci[0] <= self.actual <= ci[1]),
        }


@dataclass(frozen=True)
class QualityLaws:
    """The quality laws of a study (see the module docstring); ``to_dict`` is laws.json's ``quality``."""

    metric: str
    points: tuple[QualityPoint, ...]
    law: LawWithIntervals
    saturating: SaturatingLaw | None
    vs_loss: LawWithIntervals | None
    spearman: float | None
    backtest: QualityBacktest | None
    prediction: dict | None

    def to_dict(self) -> dict:
        sat = self.saturating
        vs_loss = None if self.vs_loss is None else {**self.vs_loss.to_dict(), "spearman": self.spearman}
        return {
            "metric": self.metric,
            "law": self.law.to_dict(),
            "saturating": None if sat is None else {"E": sat.E, "k": sat.k, "gamma": sat.gamma},
            "vs_loss": vs_loss,
            "backtest": None if self.backtest is None else self.backtest.to_dict(),
            "prediction": self.prediction,
            "points": [p.__dict__ for p in self.points],
            "paper": PAPER_QUALITY_LAW,
        }


def _optimal(points: list[QualityPoint]) -> list[QualityPoint]:
    """The compute-optimal point of each budget, smallest budget first."""
    best: dict[float, QualityPoint] = {}
    for p in points:
        if p.optimal and (p.flops not in best or p.loss < best[p.flops].loss):
            best[p.flops] = p
    return [best[c] for c in sorted(best)]


def quality_backtest(optimal: list[QualityPoint], holdout: int, resamples: int, seed: int) -> QualityBacktest | None:
    """Refit through all but the ``holdout`` largest budgets and predict the largest one's quality
    (None when fewer than 3 budgets would remain to fit)."""
    if holdout < 1 or len(optimal) - holdout < 3:
        return None
    fitted, held = optimal[:-holdout], optimal[-1]
    refit = fit_with_bootstrap([p.flops for p in fitted], [p.quality for p in fitted], resamples, seed)
    predicted, ci = refit.predict(held.flops)
    return QualityBacktest(held.flops, predicted, ci, held.quality, len(fitted))


def fit_quality(
    points: list[QualityPoint],
    *,
    metric: str,
    holdout: int = 1,
    resamples: int = 1000,
    seed: int = 0,
    target_flops: float | None = None,
) -> QualityLaws:
    """Fit the quality laws of ``points`` (see the module docstring).

    The law in C goes through each budget's compute-optimal model, held-out budgets included (as
    the loss laws of laws.json); the backtest refits without the ``holdout`` largest budgets.
    ``target_flops``: also predict the quality there, with a 90% interval.
    """
    optimal = _optimal(points)
    if len(optimal) < 2:
        raise DataError(
            f"quality laws need evaluated models at 2 or more budgets, got {len(optimal)}; evaluate more runs"
        )
    flops, quality = np.array([p.flops for p in optimal]), np.array([p.quality for p in optimal])
    law = fit_with_bootstrap(flops, quality, resamples, seed)
    saturating = fit_saturating(flops, quality) if len(optimal) >= 4 else None
    vs_loss, rho = _vs_loss(points, resamples, seed)
    prediction = None
    if target_flops is not None:
        value, ci = law.predict(target_flops)
        prediction = {"flops": float(target_flops), "value": value, "ci90": ci}
    return QualityLaws(
        metric,
        tuple(points),
        law,
        saturating,
        vs_loss,
        rho,
        quality_backtest(optimal, holdout, resamples, seed),
        prediction,
    )


def _vs_loss(points: list[QualityPoint], resamples: int, seed: int) -> tuple[LawWithIntervals | None, float | None]:
    """Quality against validation loss over every evaluated model, and their Spearman rank correlation."""
    loss, quality = np.array([p.loss for p in points]), np.array([p.quality for p in points])
    if len(np.unique(loss)) < 3:
        return None, None
    rho = float(spearmanr(loss, quality).statistic)
    return fit_with_bootstrap(loss, quality, resamples, seed + 1), (rho if math.isfinite(rho) else None)


# -- every metric of a quality stage: laws.json's quality_metrics --------------------------------------
@dataclass(frozen=True)
class MetricLaws:
    """One metric's laws (laws.json's ``quality_metrics[NAME]``): the power law in C through the
    compute-optimal models with its 90% intervals, its backtest, the law in loss with the Spearman rank
    correlation (each None when the metric has a value <= 0, e.g. an accuracy of 0, which no power law
    fits), the metric's ``chance`` level and ``floor`` (the value real data reaches; None when unknown),
    and ``best_value``: the score of the top budget's compute-optimal model."""

    law: LawWithIntervals | None
    backtest: QualityBacktest | None
    vs_loss: LawWithIntervals | None
    spearman: float | None
    chance: float | None
    floor: float | None
    best_value: float

    def to_dict(self) -> dict:
        vs_loss = None if self.vs_loss is None else {**self.vs_loss.to_dict(), "spearman": self.spearman}
        return {
            "law": None if self.law is None else self.law.to_dict(),
            "backtest": None if self.backtest is None else self.backtest.to_dict(),
            "vs_loss": vs_loss,
            "chance": self.chance,
            "floor": self.floor,
            "best_value": self.best_value,
        }


def fit_metric(
    points: list[QualityPoint],
    *,
    holdout: int = 1,
    resamples: int = 1000,
    seed: int = 0,
    chance: float | None = None,
    floor: float | None = None,
) -> MetricLaws:
    """:class:`MetricLaws` of one metric's ``points`` (``quality`` holds the metric, higher or lower
    better), fitted exactly as :func:`fit_quality` fits the primary metric."""
    optimal = _optimal(points)
    if len(optimal) < 2:
        raise DataError(
            f"quality laws need evaluated models at 2 or more budgets, got {len(optimal)}; evaluate more runs"
        )
    best = float(optimal[-1].quality)
    values = np.array([p.quality for p in points])
    if not (np.isfinite(values).all() and (values > 0).all()):  # a power law cannot pass through 0
        return MetricLaws(None, None, None, None, chance, floor, best)
    law = fit_with_bootstrap([p.flops for p in optimal], [p.quality for p in optimal], resamples, seed)
    vs_loss, rho = _vs_loss(points, resamples, seed)
    return MetricLaws(law, quality_backtest(optimal, holdout, resamples, seed), vs_loss, rho, chance, floor, best)
