"""Approach 3: fit ``L(N, D) = E + A / N^alpha + B / D^beta`` to all runs (Chinchilla, Epoch AI refit).

As Epoch AI's replication (Besiroglu et al. 2024) we minimise, over theta = (a, b, e, alpha, beta)
with A = exp(a), B = exp(b), E = exp(e)::

    sum_i Huber_delta( LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i ),   delta = 1e-3

with L-BFGS-B (analytic gradient, float64, gtol 1e-10, ftol 1e-14) from a grid of starts alpha,
beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25} (4500 starts), keeping
the best. To stay fast we evaluate the objective at all 4500 grid points (vectorised) and run
L-BFGS-B only from the ``top_k`` best; ``top_k=None`` runs it from every grid point (the check that
both find the same optimum is in docs/laws.md).

``method="varpro"`` (variable projection) starts instead from the best cell of a fine grid of
(alpha, beta) in {0.05, 0.10, ..., 3.00}: in each cell the linear coefficients E, A, B >= 0 are
solved exactly by non-negative least squares (``scipy.optimize.nnls``) on the relative residuals
``(E + A N^-alpha + B D^-beta - L) / L`` (each row weighted by the run's weight), the first-order
approximation of the log-loss residual; the cell whose (E, A, B) has the lowest Huber objective
above is refined, all five parameters together, by the same L-BFGS-B.

``method="best"`` (the default) runs both: L-BFGS-B from lbfgs-grid's ``top_k`` grid starts and from
varpro's best cell, and keeps the lower objective. Either alone can stop in a local minimum (on 24
runs of the quickstart, widths 64-128 at budgets 6.4e11-3.62e12 FLOPs, the grid starts stop at
1.06e-3 with alpha 1.50, or at 3.05e-3 by another CPU's rounding, where varpro reaches 1.23e-4 with
alpha 0.28). The two objectives are recorded (``options["objectives"]``) and ``options["method"]``
names the start that won. They agree within ``AGREE_RTOL`` = 1e-3 of the lower one, plus
``AGREE_ATOL`` = 5e-13 per run (a log-loss residual of 1e-6: noise-free data); one optimum reached
from two starts agrees to 1e-12 or better. Then lbfgs-grid's optimum is kept, so a fit on which both
agree is lbfgs-grid's to the last digit. When they disagree the fit says so in one line (a
:class:`~ditscale.laws.powerlaw.FitWarning`).

N is parameters, D tokens; the compute-optimal allocation assumes C = 6 N D (FLOPs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, nnls
from threadpoolctl import threadpool_limits

from ditscale.errors import ConfigError, DataError
from ditscale.laws.powerlaw import FitWarning, PowerLaw
from ditscale.laws.runs import Runs

GRID = {
    "a": np.arange(0.0, 25.1, 5.0),
    "b": np.arange(0.0, 25.1, 5.0),
    "e": np.arange(-1.0, 1.01, 0.5),
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
}
THETA = ("a", "b", "e", "alpha", "beta")
LBFGS_OPTIONS = {"gtol": 1e-10, "ftol": 1e-14, "maxiter": 10000, "maxfun": 20000, "maxcor": 20}
METHODS = ("best", "lbfgs-grid", "varpro")
AGREE_RTOL = 1e-3  # "best": the two starts' objectives agree within this fraction of the lower one,
AGREE_ATOL = 5e-13  # or within this per run (0.5 r^2 at r = 1e-6 in log loss: noise-free data fit to rounding)
VARPRO_EXPONENTS = np.round(np.arange(1, 61) * 0.05, 10)  # alpha and beta grid of varpro: 0.05 .. 3.00
COEFFICIENT_FLOOR = 1e-6  # varpro: a zero NNLS coefficient starts at this fraction of the median loss


def grid_starts() -> np.ndarray:
    """The (4500, 5) grid of starting points, columns (a, b, e, alpha, beta)."""
    mesh = np.meshgrid(*(GRID[k] for k in THETA), indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def _terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
    """Per-run exponents (t1, t2, t3) and LSE for theta of shape (5,) or (K, 5)."""
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    t3 = np.broadcast_to(e, t1.shape)
    m = np.maximum(np.maximum(t1, t2), t3)
    lse = m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(t3 - m))
    return t1, t2, t3, lse


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def objective(theta, log_n, log_d, log_l, delta=1e-3, weights=None):
    """Sum of Huber(LSE - log L) over runs, and its gradient in theta = (a, b, e, alpha, beta)."""
    theta = np.asarray(theta, dtype=np.float64)
    t1, t2, t3, lse = _terms(theta, log_n, log_d)
    r = lse - log_l
    w = 1.0 if weights is None else weights
    psi = w * np.clip(r, -delta, delta)  # d Huber / d r
    p1, p2, p3 = np.exp(t1 - lse), np.exp(t2 - lse), np.exp(t3 - lse)  # d LSE / d t_k
    grad = np.array(
        [(psi * p1).sum(), (psi * p2).sum(), (psi * p3).sum(), -(psi * p1 * log_n).sum(), -(psi * p2 * log_d).sum()]
    )
    return float((w * huber(r, delta)).sum()), grad


def grid_objective(starts: np.ndarray, log_n, log_d, log_l, delta=1e-3, weights=None) -> np.ndarray:
    """Objective at each row of ``starts`` (K, 5), vectorised (chunks of 500 rows)."""
    w = 1.0 if weights is None else weights
    out = []
    for chunk in np.array_split(starts, max(1, len(starts) // 500)):
        r = _terms(chunk, log_n, log_d)[3] - log_l
        out.append((w * huber(r, delta)).sum(-1))
    return np.concatenate(out)


def one_blas_thread():
    """Context limiting BLAS to one thread: scipy's L-BFGS-B calls BLAS on 5x20 matrices, and a
    multi-threaded OpenBLAS then spends ~30x longer synchronising threads than computing (more so on
    a busy machine)."""
    return threadpool_limits(1, user_api="blas")


def minimize_from(theta0, log_n, log_d, log_l, delta=1e-3, weights=None):
    """L-BFGS-B from ``theta0``; returns scipy's OptimizeResult."""
    return minimize(
        objective,
        np.asarray(theta0, dtype=np.float64),
        args=(log_n, log_d, log_l, delta, weights),
        jac=True,
        method="L-BFGS-B",
        options=LBFGS_OPTIONS,
    )


def nnls_coefficients(columns: np.ndarray, loss: np.ndarray, row_weights: np.ndarray) -> np.ndarray:
    """(E, A, B) >= 0 minimising ``sum_i w_i ((columns_i . x - L_i) / L_i)^2`` (``scipy.optimize.nnls``).

    ``columns`` is ``(n, 3)``: 1, N^-alpha, D^-beta per run; ``row_weights`` the runs' weights.
    Columns are scaled to unit norm for conditioning (N^-alpha can be ~1e-20).
    """
    scale = np.sqrt(row_weights) / loss
    design = columns * scale[:, None]
    norms = np.linalg.norm(design, axis=0)
    norms = np.where(norms > 0, norms, 1.0)
    x, _ = nnls(design / norms, loss * scale)
    return x / norms


def varpro_cells(log_n, log_d, log_l, weights=None) -> np.ndarray:
    """``(len(VARPRO_EXPONENTS)^2, 5)`` thetas (a, b, e, alpha, beta): each (alpha, beta) cell with its
    NNLS (E, A, B) (see :func:`nnls_coefficients`); a zero coefficient is floored so that its term
    is ``COEFFICIENT_FLOOR`` x the median loss at the median run (L-BFGS-B can grow it again)."""
    loss = np.exp(log_l)
    w = np.ones_like(loss) if weights is None else np.asarray(weights, dtype=np.float64)
    floor_at = COEFFICIENT_FLOOR * float(np.median(loss))
    cells = []
    for alpha in VARPRO_EXPONENTS:
        n_term = np.exp(-alpha * log_n)
        for beta in VARPRO_EXPONENTS:
            cols = np.stack([np.ones_like(loss), n_term, np.exp(-beta * log_d)], axis=1)
            x = nnls_coefficients(cols, loss, w)
            x = np.maximum(x, floor_at / np.median(cols, axis=0))
            cells.append([np.log(x[1]), np.log(x[2]), np.log(x[0]), alpha, beta])
    return np.array(cells)


def _starts(method, start, top_k, log_n, log_d, log_l, delta, weights) -> np.ndarray:
    """The L-BFGS-B starting thetas: ``start``; the varpro cell with the lowest objective; or the
    ``top_k`` best of the 4500-point grid (all of it with ``top_k=None``)."""
    if start is not None:
        return np.asarray(start, dtype=np.float64)[None]
    starts = varpro_cells(log_n, log_d, log_l, weights) if method == "varpro" else grid_starts()
    keep = 1 if method == "varpro" else top_k
    if keep is not None and keep < len(starts):
        f0 = grid_objective(starts, log_n, log_d, log_l, delta, weights)
        starts = starts[np.argsort(f0, kind="stable")[:keep]]
    return starts


def _refine(starts, log_n, log_d, log_l, delta, weights):
    """The best finite L-BFGS-B result from ``starts`` (None if none is finite)."""
    best = None
    for theta0 in starts:
        res = minimize_from(theta0, log_n, log_d, log_l, delta, weights)
        if np.isfinite(res.fun) and np.all(np.isfinite(res.x)) and (best is None or res.fun < best.fun):
            best = res
    return best


def _best_of_both(grid, varpro, n_runs: int):
    """``method="best"``: the lower of the lbfgs-grid and varpro optima (lbfgs-grid's when they agree,
    module doc), the name of the winner and both objectives; warns in one line when they disagree."""
    objectives = {m: (None if r is None else float(r.fun)) for m, r in (("lbfgs-grid", grid), ("varpro", varpro))}
    if varpro is None:
        return grid, "lbfgs-grid", objectives
    if grid is None:
        return varpro, "varpro", objectives
    lo, hi = sorted((grid.fun, varpro.fun))
    if hi - lo <= AGREE_RTOL * lo + AGREE_ATOL * n_runs:
        return grid, "lbfgs-grid", objectives
    won, res, lost = ("varpro", varpro, "lbfgs-grid") if varpro.fun < grid.fun else ("lbfgs-grid", grid, "varpro")
    warnings.warn(
        f"Approach 3 ({n_runs} runs): the {lost} start stopped in a local minimum (objective {hi:.4g}) and "
        f"{won} reached {lo:.4g} (alpha {res.x[3]:.3g}, beta {res.x[4]:.3g}); keeping {won}'s fit",
        FitWarning,
        stacklevel=3,
    )
    return res, won, objectives


@dataclass(frozen=True)
class ParametricFit:
    """Fitted ``L(N, D) = E + A / N^alpha + B / D^beta`` (N parameters, D tokens).

    ``n_opt_law``/``d_opt_law`` give the compute-optimal parameters and tokens under C = 6 N D
    (FLOPs): ``N_opt = G (C/6)^a``, ``D_opt = G^-1 (C/6)^b`` with ``G = (alpha A / (beta B))^(1/(alpha+beta))``,
    ``a = beta / (alpha + beta)``, ``b = alpha / (alpha + beta)``.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_runs: int
    options: dict = field(default_factory=dict)
    method: str = "parametric"

    @property
    def theta(self) -> np.ndarray:
        return np.log([self.A, self.B, self.E]).tolist() + [self.alpha, self.beta]

    def loss(self, params, tokens):
        """Predicted loss at N = ``params``, D = ``tokens``."""
        return (
            self.E + self.A / np.asarray(params, float) ** self.alpha + self.B / np.asarray(tokens, float) ** self.beta
        )

    @property
    def n_opt_law(self) -> PowerLaw:
        v = allocation(self.values())
        return PowerLaw(float(v["n_opt_law.coefficient"]), float(v["n_opt_law.exponent"]))

    @property
    def d_opt_law(self) -> PowerLaw:
        v = allocation(self.values())
        return PowerLaw(float(v["d_opt_law.coefficient"]), float(v["d_opt_law.exponent"]))

    def values(self) -> dict[str, float]:
        """Fitted numbers by name (E, A, B, alpha, beta; the allocation laws' coefficient and exponent)."""
        v = {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}
        return {**v, **{k: float(x) for k, x in allocation(v).items()}}

    @staticmethod
    def optimum(values, flops, saturating: bool = False):
        """Compute-optimal (N params, D tokens, loss) at ``flops`` FLOPs from named values (arrays broadcast)."""
        c = np.asarray(flops, dtype=np.float64)
        n = values["n_opt_law.coefficient"] * c ** values["n_opt_law.exponent"]
        d = values["d_opt_law.coefficient"] * c ** values["d_opt_law.exponent"]
        loss = values["E"] + values["A"] / n ** values["alpha"] + values["B"] / d ** values["beta"]
        return n, d, loss

    def to_dict(self, boot=None) -> dict:
        """JSON-ready summary (floats at full precision); with ``boot``, 90% intervals and standard errors
        of E, A, B, alpha, beta and of both allocation laws' coefficient and exponent (the shape of
        the isoFLOP laws in laws.json: ``{"coefficient", "exponent", "ci90": {...}, "se": {...}}``)."""
        keys = ("E", "A", "B", "alpha", "beta")
        out = {"method": self.method, **{k: getattr(self, k) for k in keys}}
        out["ci90"] = None if boot is None else {k: boot.ci90(k) for k in keys}
        out["se"] = None if boot is None else {k: boot.se(k) for k in keys}
        for law in ("n_opt_law", "d_opt_law"):
            p, fields = getattr(self, law), ("coefficient", "exponent")
            out[law] = {
                "coefficient": p.coefficient,
                "exponent": p.exponent,
                "ci90": None if boot is None else {f: boot.ci90(f"{law}.{f}") for f in fields},
                "se": None if boot is None else {f: boot.se(f"{law}.{f}") for f in fields},
            }
        out.update(n_runs=self.n_runs, objective=self.objective, options=dict(self.options))
        out["bootstrap"] = None if boot is None else boot.info()
        return out


def allocation(values) -> dict:
    """Compute-optimal allocation under C = 6 N D from E, A, B, alpha, beta (floats or arrays).

    Returns ``n_opt_law.coefficient/exponent`` (N_opt = coef * C^exp, parameters) and
    ``d_opt_law.coefficient/exponent`` (D_opt in tokens), C in FLOPs.
    """
    A, B, alpha, beta = (np.asarray(values[k], dtype=np.float64) for k in ("A", "B", "alpha", "beta"))
    s = alpha + beta
    with np.errstate(invalid="ignore", divide="ignore"):
        log_g = (np.log(alpha * A) - np.log(beta * B)) / s
        a, b = beta / s, alpha / s
    return {
        "n_opt_law.coefficient": np.exp(log_g - a * np.log(6.0)),
        "n_opt_law.exponent": a,
        "d_opt_law.coefficient": np.exp(-log_g - b * np.log(6.0)),
        "d_opt_law.exponent": b,
    }


def fit_parametric(
    runs: Runs,
    *,
    delta: float = 1e-3,
    top_k: int | None = 20,
    weights: np.ndarray | None = None,
    start: np.ndarray | None = None,
    method: str = "best",
) -> ParametricFit:
    """Fit ``L(N, D) = E + A/N^alpha + B/D^beta`` (N params, D tokens) Epoch-AI style (see module doc).

    Args:
        runs: the runs (flops unused; N = params, D = tokens).
        delta: Huber threshold on log-loss residuals (1e-3 as Chinchilla and Epoch AI).
        top_k: lbfgs-grid: run L-BFGS-B from the ``top_k`` grid points with the lowest objective
            (None: all 4500). varpro refines its single best (alpha, beta) cell.
        weights: optional per-run weights (the bootstrap passes resampling counts), multiplying the
            runs' own ``weight`` column if it has one.
        start: a single start theta = (a, b, e, alpha, beta) instead of the grid (bootstrap warm start).
        method: "best" (both below, the lower objective kept; ``options["method"]`` names the winner
            and ``options["objectives"]`` holds both), "lbfgs-grid" (Epoch AI's grid of starts) or
            "varpro" (NNLS for E, A, B on an (alpha, beta) grid, then the same L-BFGS-B refinement).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown parametric method {method!r}; use one of {', '.join(METHODS)}")
    if len(runs) < 6:
        raise DataError(f"the parametric fit has 5 parameters and needs at least 6 runs, got {len(runs)}; add runs")
    log_n, log_d, log_l = np.log(runs.params), np.log(runs.tokens), np.log(runs.loss)
    if runs.weight is not None:
        weights = runs.weight if weights is None else runs.weight * weights
    options = {"delta": delta, "top_k": top_k}
    with one_blas_thread():
        if method == "best" and start is None:
            grid = _starts("lbfgs-grid", None, top_k, log_n, log_d, log_l, delta, weights)
            cell = _starts("varpro", None, top_k, log_n, log_d, log_l, delta, weights)
            best, won, objectives = _best_of_both(
                _refine(grid, log_n, log_d, log_l, delta, weights),
                _refine(cell, log_n, log_d, log_l, delta, weights),
                len(runs),
            )
            options.update(starts=len(grid) + len(cell), method=won, objectives=objectives)
        else:
            starts = _starts(method, start, top_k, log_n, log_d, log_l, delta, weights)
            best = _refine(starts, log_n, log_d, log_l, delta, weights)
            options.update(starts=len(starts), method=method)
    if best is None:
        raise DataError(
            f"the parametric fit of {len(runs)} runs did not converge from any start; check the runs' losses"
        )
    a, b, e, alpha, beta = best.x
    return ParametricFit(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=float(alpha),
        beta=float(beta),
        objective=float(best.fun),
        n_runs=len(runs),
        options=options,
    )
