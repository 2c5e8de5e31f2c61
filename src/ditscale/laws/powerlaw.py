"""Power laws in compute: ``y = coefficient * C^exponent`` and the saturating ``L = E + k C^-gamma``.

C is training compute in FLOPs throughout.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

from ditscale.errors import DataError


class FitWarning(UserWarning):
    """A fit is usable but suspect (edge optimum, degenerate budget, saturating fit failed)."""


@dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient * C ** exponent`` with C in FLOPs (y: params, tokens or loss)."""

    coefficient: float
    exponent: float

    def __call__(self, flops):
        return self.coefficient * np.asarray(flops, dtype=np.float64) ** self.exponent


@dataclass(frozen=True)
class SaturatingLaw:
    """``L = E + k * C ** -gamma`` with C in FLOPs; E >= 0 is the irreducible loss."""

    E: float
    k: float
    gamma: float

    def __call__(self, flops):
        return self.E + self.k * np.asarray(flops, dtype=np.float64) ** -self.gamma


def loglog_fit(
    log_x: np.ndarray, log_y: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line ``log_y = intercept + slope * log_x``, batched.

    ``log_x`` is ``(n,)``; ``log_y`` and ``weights`` are ``(n,)`` or ``(B, n)`` (a zero weight drops
    a point). Returns ``(intercept, slope)`` of shape ``()`` or ``(B,)``; NaN where fewer than two
    distinct x carry weight.
    """
    log_y = np.asarray(log_y, dtype=np.float64)
    w = np.ones_like(log_y) if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), log_y.shape)
    log_y = np.where(w > 0, log_y, 0.0)  # NaN in dropped points must not leak into the sums
    sw = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * log_x).sum(-1) / sw
        my = (w * log_y).sum(-1) / sw
        dx = log_x - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        slope = (w * dx * (log_y - my[..., None])).sum(-1) / sxx
        slope = np.where(sxx > 1e-12 * np.maximum(sw, 1.0), slope, np.nan)
    return my - slope * mx, slope


def fit_power_law(flops: np.ndarray, y: np.ndarray) -> PowerLaw:
    """Least-squares fit of ``log y = log coefficient + exponent * log C`` (C in FLOPs)."""
    flops, y = np.asarray(flops, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(np.unique(flops)) < 2:
        raise DataError(
            f"a power law in compute needs at least 2 distinct budgets, got {len(np.unique(flops))}; add budgets"
        )
    intercept, slope = loglog_fit(np.log(flops), np.log(y))
    return PowerLaw(float(np.exp(intercept)), float(slope))


def _log_saturating(x: np.ndarray, E: float, k: float, gamma: float) -> np.ndarray:
    return np.log(E + k * np.exp(-gamma * x))


def _log_saturating_jac(x: np.ndarray, E: float, k: float, gamma: float) -> np.ndarray:
    p = np.exp(-gamma * x)
    L = E + k * p
    return np.stack([1.0 / L, p / L, -x * k * p / L], axis=1)


def fit_saturating(flops: np.ndarray, loss: np.ndarray, start: SaturatingLaw | None = None) -> SaturatingLaw | None:
    """Fit ``L = E + k C^-gamma`` (E >= 0, k >= 0, gamma >= 0) by least squares on log L.

    Uses ``scipy.optimize.curve_fit`` with C rescaled by its geometric mean for conditioning; starts
    from ``start`` or from the pure power law with E = L_min / 2. Needs 4 or more points (3
    parameters plus one degree of freedom); returns None (with a :class:`FitWarning`) if there are
    fewer or the fit does not converge.
    """
    flops, loss = np.asarray(flops, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if len(flops) < 4:
        warnings.warn(
            f"saturating loss law skipped: needs at least 4 budgets, got {len(flops)}", FitWarning, stacklevel=2
        )
        return None
    log_c0 = float(np.mean(np.log(flops)))
    x = np.log(flops) - log_c0
    if start is None:
        intercept, slope = loglog_fit(x, np.log(loss))
        E0 = 0.5 * float(loss.min())
        k0 = float(np.exp(intercept)) - E0  # power law value at C0, minus E0
        gamma0 = max(-float(slope) * (k0 + E0) / k0, 1e-3)  # same local slope at C0
    else:
        E0, gamma0 = start.E, start.gamma
        k0 = start.k * np.exp(-start.gamma * log_c0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (E, k, gamma), _ = curve_fit(
                _log_saturating,
                x,
                np.log(loss),
                p0=(E0, max(k0, 1e-12), gamma0),
                jac=_log_saturating_jac,
                bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, np.inf]),
                method="trf",
                xtol=1e-14,
                ftol=1e-14,
                gtol=1e-14,
                max_nfev=2000,
            )
    except (RuntimeError, ValueError) as err:
        warnings.warn(
            f"saturating loss law did not converge ({err}); reporting the pure power law only", FitWarning, stacklevel=2
        )
        return None
    return SaturatingLaw(float(E), float(k * np.exp(gamma * log_c0)), float(gamma))
