"""Residual structure of the isoFLOP parabolas: do the residuals depend on the model size?

A study trains the same rungs of a ladder at several budgets. If one rung trains differently (a
one-head or patch-width model, say), it sits above (or below) the isoFLOP curve at every budget,
bends each parabola towards it and shifts N*. Noise does not repeat that way, so the test asks
whether one offset per model size, shared by all budgets, explains the residuals better than
chance: the extra-sum-of-squares F-test of two nested least-squares models of log loss,

- null: a parabola in log N per budget (3 parameters each),
- alternative: the same plus one offset per model size that appears in 2 or more budgets,

``F = ((RSS0 - RSS1) / q) / (RSS1 / dof)`` with ``q`` the extra rank and ``dof`` the alternative's
residual degrees of freedom; the p-value is the F(q, dof) tail. The fit is in log loss (noise is
multiplicative, so equal in every budget), weighted by the runs' ``weight`` column if any. Seed
replicates add pure-error degrees of freedom. The structure is flagged when ``p < 0.01``
(:data:`P_THRESHOLD`: at most 1 false alarm in 100 studies with independent Gaussian noise). With 3
sizes per budget and no replicates the parabolas fit exactly and nothing can be tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ditscale.laws.runs import Runs

P_THRESHOLD = 0.01


@dataclass(frozen=True)
class SizeResidual:
    """A model size's mean log-loss residual from its budgets' parabolas (about the relative offset)."""

    params: float
    budgets: int
    mean_residual: float
    above: int

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "budgets": self.budgets,
            "mean_residual": self.mean_residual,
            "above": self.above,
        }


@dataclass(frozen=True)
class ResidualStructure:
    """The per-size F-test (module doc): ``p_value`` None when it cannot be tested; ``warn`` when p < threshold."""

    statistic: float | None
    dof: tuple[int, int]
    p_value: float | None
    sizes: tuple[SizeResidual, ...]
    threshold: float = P_THRESHOLD

    @property
    def warn(self) -> bool:
        return self.p_value is not None and self.p_value < self.threshold

    @property
    def message(self) -> str | None:
        """The one-line warning, or None when the residuals show no size structure."""
        if not self.warn:
            return None
        worst = max(self.sizes, key=lambda s: abs(s.mean_residual))
        side = "above" if worst.mean_residual > 0 else "below"
        count = worst.above if worst.mean_residual > 0 else worst.budgets - worst.above
        return (
            f"isoFLOP residuals depend on model size across budgets: one offset per size explains them "
            f"(F = {self.statistic:.3g} on {self.dof[0]} and {self.dof[1]} dof, p = {self.p_value:.2g} < "
            f"{self.threshold:g}); N = {worst.params:.4g} sits {abs(worst.mean_residual):.1%} {side} its parabolas "
            f"on average ({side} at {count} of {worst.budgets} budgets): such a rung bends the parabolas and "
            f"shifts N*; check it or leave it out"
        )

    def to_dict(self) -> dict:
        return {
            "test": "per-size offsets, F-test",
            "statistic": self.statistic,
            "dof": list(self.dof),
            "p_value": self.p_value,
            "threshold": self.threshold,
            "warn": self.warn,
            "sizes": [s.to_dict() for s in self.sizes],
            "message": self.message,
        }


def _design(runs: Runs, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X0, S, size)``: the per-budget parabola columns (log N centred and scaled per budget), the
    indicators of sizes in 2+ budgets, and each run's size index."""
    log_n = np.log(runs.params)
    size = np.unique(np.round(log_n, 6), return_inverse=True)[1].reshape(-1)
    blocks = []
    for b in np.unique(label):
        m = label == b
        x = (log_n - log_n[m].mean()) / max(np.ptp(log_n[m]), 1e-12)
        blocks += [m * 1.0, m * x, m * x * x]
    shared = [k for k in np.unique(size) if len(np.unique(label[size == k])) >= 2]
    indicators = [(size == k) * 1.0 for k in shared]
    return np.stack(blocks, axis=1), np.stack(indicators, axis=1) if indicators else np.zeros((len(runs), 0)), size


def _rss(X: np.ndarray, y: np.ndarray) -> tuple[float, int, np.ndarray]:
    """Residual sum of squares, rank and residuals of the least-squares fit of y on X."""
    coef, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ coef
    return float(r @ r), int(rank), r


def residual_structure(runs: Runs, budget_rtol: float = 0.1) -> ResidualStructure:
    """The per-size F-test of the isoFLOP residuals (module doc) for ``runs`` grouped into budgets."""
    label = runs.budgets(budget_rtol)[0]
    X0, S, size = _design(runs, label)
    sw = np.sqrt(runs.weight) if runs.weight is not None else np.ones(len(runs))
    y = np.log(runs.loss) * sw
    rss0, rank0, resid = _rss(X0 * sw[:, None], y)
    rss1, rank1, _ = _rss(np.hstack([X0, S]) * sw[:, None], y)
    q, dof = rank1 - rank0, len(runs) - rank1
    sizes = _size_residuals(runs, label, size, resid / sw)
    if q == 0 or dof == 0:
        return ResidualStructure(None, (q, dof), None, sizes)
    scale = 1e-24 * float(y @ y)  # noise-free data: no structure to speak of below round-off
    if rss0 - rss1 <= scale:
        return ResidualStructure(0.0, (q, dof), 1.0, sizes)
    f = ((rss0 - rss1) / q) / max(rss1 / dof, scale)
    return ResidualStructure(float(f), (q, dof), float(stats.f.sf(f, q, dof)), sizes)


def _size_residuals(runs: Runs, label: np.ndarray, size: np.ndarray, resid: np.ndarray) -> tuple[SizeResidual, ...]:
    """Per size in 2+ budgets: its mean residual over budgets (replicates averaged first) and how
    many budgets it lies above."""
    out = []
    for k in np.unique(size):
        per_budget = [resid[(size == k) & (label == b)].mean() for b in np.unique(label[size == k])]
        if len(per_budget) >= 2:
            out.append(
                SizeResidual(
                    float(runs.params[size == k][0]),
                    len(per_budget),
                    float(np.mean(per_budget)),
                    int(sum(r > 0 for r in per_budget)),
                )
            )
    return tuple(out)


@dataclass(frozen=True)
class SizeOffset:
    """One size's own offset (log loss) added to its budgets' parabolas: the null model of the module
    doc plus the indicator of that size alone. ``offset`` is its least-squares coefficient (about the
    relative loss excess), ``t = offset / se`` on ``dof`` residual degrees of freedom (se from that
    model's own residual variance) and ``p_value`` its two-sided t tail; ``t`` and ``p_value`` are
    None when the offset cannot be tested (no residual dof, or the size is fitted exactly)."""

    params: float
    offset: float | None
    t: float | None
    dof: int
    p_value: float | None


def size_offsets(runs: Runs, budget_rtol: float = 0.1) -> tuple[SizeOffset, ...]:
    """Each size in 2+ budgets tested alone (:class:`SizeOffset`), in the order of
    :attr:`ResidualStructure.sizes`."""
    label = runs.budgets(budget_rtol)[0]
    X0, S, _ = _design(runs, label)
    sw = np.sqrt(runs.weight) if runs.weight is not None else np.ones(len(runs))
    y = np.log(runs.loss) * sw
    rank0 = _rss(X0 * sw[:, None], y)[1]
    out = []
    for j in range(S.shape[1]):
        X = np.hstack([X0, S[:, j : j + 1]]) * sw[:, None]
        coef, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
        r, dof = y - X @ coef, len(runs) - int(rank)
        params = float(runs.params[S[:, j] > 0][0])
        var = float(r @ r) / dof * float(np.linalg.pinv(X.T @ X)[-1, -1]) if dof > 0 and rank > rank0 else 0.0
        if var <= 1e-24 * float(y @ y):
            out.append(SizeOffset(params, float(coef[-1]) if rank > rank0 else None, None, dof, None))
            continue
        t = float(coef[-1]) / math.sqrt(var)
        out.append(SizeOffset(params, float(coef[-1]), t, dof, float(2 * stats.t.sf(abs(t), dof))))
    return tuple(out)
