"""Simulated isoFLOP sweeps from a known ``L(N, D)``: do the bootstrap intervals cover the truth?

The known law is Chinchilla's form ``L = E + A / N^alpha + B / D^beta`` (N parameters, D tokens) with
``D = C / (6 N)``, its constants scaled to the quickstart's ranges (:data:`QUICKSTART_LAW`: losses
0.2-0.5, the compute-optimal N from 1e5 at C = 1.6e11 FLOPs to 4.8e5 at 5.1e12 FLOPs).

Truth. Under ``C = 6 N D`` the compute-optimal size is exactly ``N_opt(C) = G (C / 6)^(beta / (alpha +
beta))`` with ``G = (alpha A / (beta B))^(1 / (alpha + beta))`` at every budget (E shifts the loss,
not where its minimum lies), so the N_opt exponent an estimator targets over any range of budgets is
``beta / (alpha + beta)``: :attr:`KnownLaw.n_opt_exponent`. A biased estimator (e.g. a parabola
vertex on a grid that drifts off the optimum) is counted against this truth.

A sweep (:func:`simulated_sweep`) has ``budgets`` budgets log-spaced over ``span`` (11 over 32x),
``sizes`` model sizes per budget log-spaced over ``grid_ratio`` (8x, as the quickstart's 7x) and
centred on ``N_opt(C) * drift^(k / (budgets - 1))`` at the k-th budget (``drift = 1``: centred;
``drift = 2``: the largest budget's grid centre is 2x its optimum), and losses ``L(N, D) exp(noise z)``,
``z ~ N(0, 1)`` per run. :func:`interval_coverage` draws many sweeps, asks an estimator for the point
estimate and 90% interval of the N_opt exponent, and returns how often the interval holds the truth
and how wide it is against the spread of the point estimate (:class:`Coverage`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ditscale.laws.powerlaw import FitWarning
from ditscale.laws.runs import Runs


@dataclass(frozen=True)
class KnownLaw:
    """``L(N, D) = E + A / N^alpha + B / D^beta``; N parameters, D tokens, budgets C = 6 N D FLOPs."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return self.E + self.A / np.asarray(params) ** self.alpha + self.B / np.asarray(tokens) ** self.beta

    @property
    def n_opt_exponent(self) -> float:
        """The true N_opt exponent ``beta / (alpha + beta)`` (module doc: exact at every budget)."""
        return self.beta / (self.alpha + self.beta)

    def n_opt(self, flops: np.ndarray) -> np.ndarray:
        """Compute-optimal parameters at ``flops`` FLOPs: ``G (C / 6)^(beta / (alpha + beta))``."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return g * (np.asarray(flops, dtype=np.float64) / 6.0) ** self.n_opt_exponent


def law_at(alpha: float, beta: float, *, E: float, reducible: float, params: float, flops: float) -> KnownLaw:
    """The law with exponents ``alpha``, ``beta`` and floor ``E`` whose optimum at ``flops`` FLOPs is
    ``params`` parameters with loss ``E + reducible`` (A and B solved for: at the optimum the two
    terms are in the ratio beta : alpha)."""
    t_n = reducible * beta / (alpha + beta)
    return KnownLaw(E, t_n * params**alpha, (reducible - t_n) * (flops / (6.0 * params)) ** beta, alpha, beta)


# the quickstart's ranges: losses 0.2-0.5, floor E = 0.17, N_opt = 1e5 at its smallest budget 1.6e11
# FLOPs (2.8e5 at 5.1e12); exponents between Chinchilla's (0.34, 0.28) and the quickstart's own
# Approach 3 fit (1.94, 0.69), whose deep bowls a 1-2% noise does not swamp on an 8x grid
QUICKSTART_LAW = law_at(0.7, 0.6, E=0.17, reducible=0.3, params=1e5, flops=1.6e11)
QUICKSTART_FLOPS = (1.6e11, 5.12e12)


def simulated_sweep(
    law: KnownLaw,
    rng: np.random.Generator,
    *,
    noise: float,
    drift: float = 1.0,
    budgets: int = 11,
    sizes: int = 5,
    grid_ratio: float = 8.0,
    flops_range: tuple[float, float] = QUICKSTART_FLOPS,
) -> Runs:
    """One isoFLOP sweep of ``law`` (module doc): ``budgets x sizes`` runs with multiplicative noise ``noise``."""
    flops = np.geomspace(*flops_range, budgets)
    centre = law.n_opt(flops) * drift ** (np.arange(budgets) / max(budgets - 1, 1))
    offsets = np.geomspace(grid_ratio**-0.5, grid_ratio**0.5, sizes)
    params = np.round((centre[:, None] * offsets[None, :]).ravel())
    c = np.repeat(flops, sizes)
    tokens = c / (6.0 * params)
    loss = law.loss(params, tokens) * np.exp(noise * rng.standard_normal(len(c)))
    return Runs(flops=c, params=params, tokens=tokens, loss=loss, budget=c)


@dataclass(frozen=True)
class Coverage:
    """How well 90% intervals of an estimate hold a known truth over ``n`` simulated sweeps.

    Attributes:
        coverage: fraction of sweeps whose interval holds the truth (binomial standard error
            ``sqrt(0.9 * 0.1 / n)`` at the nominal 90%).
        width_ratio: median interval width over the 5-95% spread of the point estimates (1: the
            interval is as wide as the estimate's real spread).
        bias: median point estimate minus the truth; n: sweeps whose fit and interval succeeded.
    """

    coverage: float
    width_ratio: float
    bias: float
    n: int


Estimator = Callable[[Runs, int], tuple[float, list[float] | None]]


def interval_coverage(
    estimate: Estimator, truth: float, sweep: Callable[[np.random.Generator], Runs], n_sweeps: int, seed: int = 0
) -> Coverage:
    """Draw ``n_sweeps`` sweeps (``sweep(rng)``) and score ``estimate(runs, seed) -> (point, [lo, hi])``
    against ``truth`` (:class:`Coverage`); sweeps whose fit or interval fails are left out of ``n``."""
    rng = np.random.default_rng(seed)
    points, lo, hi = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        for i in range(n_sweeps):
            point, ci = estimate(sweep(rng), seed + i)
            if ci is None or not (math.isfinite(point) and all(map(math.isfinite, ci))):
                continue
            points.append(point)
            lo.append(ci[0])
            hi.append(ci[1])
    points, lo, hi = np.array(points), np.array(lo), np.array(hi)
    spread = float(np.subtract(*np.percentile(points, [95.0, 5.0])))
    return Coverage(
        coverage=float(np.mean((lo <= truth) & (truth <= hi))),
        width_ratio=float(np.median(hi - lo) / spread),
        bias=float(np.median(points) - truth),
        n=len(points),
    )
