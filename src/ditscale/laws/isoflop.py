"""Approach 2 (isoFLOP profiles): per budget a parabola of loss in log N, then power laws in C.

For each isoFLOP budget C (FLOPs) we fit ``loss = c0 + c1 x + c2 x^2`` with ``x = log N`` by
weighted least squares (weights: the runs' ``weight`` column, else equal; ``robust=True``: a Huber
M-estimate by iteratively reweighted least squares, threshold 1.345 robust standard deviations of
the pooled least-squares residuals). The
optimum is ``N* = exp(-c1 / 2 c2)``, ``L* = c0 - c1^2 / 4 c2``. ``D*`` (tokens) is, by default,
interpolated from the budget's own runs (a least-squares line of log D on log N evaluated at
log N*), which keeps the runs' exact compute accounting; ``tokens="6nd"`` uses ``D* = C / (6 N*)``.

A budget is flagged ``edge`` when N* lies outside, or within ``edge_margin`` (a fraction of the
budget's log-N span) of the edge of, the budget's N range, and ``degenerate`` when the parabola does
not open upwards (c2 <= 0); both warn. Degenerate budgets are left out of the power laws
``N_opt = a C^b``, ``D_opt = c C^d``, ``L_opt = e C^f`` (least squares in log-log) and of the
saturating ``L = E + k C^-gamma``; edge budgets are kept unless ``exclude_edge``: ``True`` leaves them
out of every law, ``"allocation"`` out of the N_opt and D_opt laws only (an edge budget's N* is its
parabola's extrapolation beyond the runs, but its L* stays within reach of its best run, so the loss
laws keep it: :func:`edge_masks`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ditscale.errors import DataError
from ditscale.laws.compute_laws import ComputeLaws
from ditscale.laws.powerlaw import FitWarning, PowerLaw, fit_saturating, loglog_fit
from ditscale.laws.runs import Runs

EXCLUDE_EDGE = (False, True, "allocation")  # exclude_edge: keep edge budgets, leave them out of every law, or
# out of the N_opt and D_opt laws only
HUBER_K = 1.345  # Huber threshold in robust standard deviations (95% efficiency under normal noise)


def parabola_fit(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, huber_delta: float | None = None, iters: int = 100
) -> np.ndarray:
    """Weighted least-squares parabolas ``y = c0 + c1 x + c2 x^2``, batched over resamples.

    ``x`` is ``(n,)``; ``y`` is ``(n,)`` or ``(B, n)`` (one set of values per row, e.g. a
    parametric bootstrap); ``weights`` is ``(B, n)``. With ``huber_delta`` the fit is a Huber
    M-estimate (iteratively reweighted least squares with weights ``min(1, delta / |residual|)``).
    Returns ``(B, 3)`` coefficients; needs 3 distinct x with positive weight in every row.
    """
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    rhs_form = "bn,ni,n->bi" if np.ndim(y) == 1 else "bn,ni,bn->bi"

    def solve(w):
        lhs = np.einsum("bn,ni,nj->bij", w, X, X)
        rhs = np.einsum(rhs_form, w, X, y)
        return np.linalg.solve(lhs, rhs[..., None])[..., 0]

    coef = solve(weights)
    if huber_delta is None:
        return coef
    for _ in range(iters):
        r = np.abs(y - coef @ X.T)
        robust_w = np.minimum(1.0, huber_delta / np.maximum(r, 1e-300))
        new = solve(weights * robust_w)
        done = np.max(np.abs(new - coef)) <= 1e-13 * (1.0 + np.max(np.abs(coef)))
        coef = new
        if done:
            break
    return coef


@dataclass(frozen=True)
class LogNParabola:
    """Parabolas ``y = c0 + c1 x + c2 x^2`` in centred, rescaled ``x = (log N - center) / scale``.

    The one home of the isoFLOP parabola (the fits, their bootstrap, the noise summary and the
    report's figures all fit it here). Centring log N and dividing by its range keeps the normal
    equations well conditioned. ``coef`` is ``(B, 3)``: one parabola per weight row.
    """

    coef: np.ndarray
    center: float
    scale: float

    def x(self, log_n: np.ndarray) -> np.ndarray:
        """The fit's variable ``(log N - center) / scale`` at ``log_n``."""
        return (log_n - self.center) / self.scale

    def __call__(self, log_n: np.ndarray) -> np.ndarray:
        """``(B, n)`` values of the parabolas at ``log_n`` ``(n,)``."""
        x = self.x(log_n)
        c = self.coef
        return c[:, :1] + c[:, 1:2] * x + c[:, 2:3] * x * x

    def minimum(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(log N*, y*, curvature)``, each ``(B,)``: the vertex ``x* = -c1 / 2 c2``, ``y* = c0 - c1^2 / 4 c2``
        (NaN where the parabola does not open upwards, c2 <= 0) and ``c2`` in y per (log N)^2."""
        c0, c1, c2 = self.coef.T
        ok = c2 > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            xs = np.where(ok, -c1 / (2 * c2), np.nan)
            y = np.where(ok, c0 - c1 * c1 / (4 * c2), np.nan)
        return self.center + self.scale * xs, y, c2 / self.scale**2

    def unscaled(self) -> np.ndarray:
        """``(B, 3)`` coefficients ``(a0, a1, a2)`` of ``y = a0 + a1 log N + a2 (log N)^2``."""
        c0, c1, c2 = self.coef.T
        m, s = self.center, self.scale
        # y = c0 + c1 (log N - m) / s + c2 (log N - m)^2 / s^2, expanded
        a2 = c2 / s**2
        a1 = c1 / s - 2 * c2 * m / s**2
        a0 = c0 - c1 * m / s + c2 * m**2 / s**2
        return np.stack([a0, a1, a2], axis=1)


def fit_log_n_parabola(
    log_n: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, huber_delta: float | None = None
) -> LogNParabola:
    """The isoFLOP parabola of ``y`` (e.g. loss) in log N (``log_n`` ``(n,)``, natural log of parameters).

    ``weights`` is ``(B, n)`` (one fit per row; None: one equal-weight fit); ``y`` is ``(n,)`` or
    ``(B, n)``; ``huber_delta`` makes it a Huber M-estimate (see :func:`parabola_fit`). Needs 3
    distinct N with positive weight per row.
    """
    center, scale = log_n.mean(), max(np.ptp(log_n), 1e-12)
    w = np.ones((1, len(log_n))) if weights is None else weights
    return LogNParabola(parabola_fit((log_n - center) / scale, y, w, huber_delta), center, scale)


def inside_grid(log_n, lo: float, hi: float, edge_margin: float):
    """The edge rule: True where log N* lies in ``[lo + m, hi - m]``, ``m = edge_margin * (hi - lo)``,
    for a budget whose runs span ``lo .. hi`` in log N (False for NaN). Works on scalars and arrays."""
    margin = edge_margin * (hi - lo)
    return (log_n >= lo + margin) & (log_n <= hi - margin)


@dataclass(frozen=True)
class BudgetOptimum:
    """The compute-optimal point of one isoFLOP budget.

    Attributes:
        flops: the budget's compute C, FLOPs.
        n_opt: N*, parameters; d_opt: D*, tokens; loss_opt: L*, the parabola's minimum.
        edge: N* is outside or near the edge of the budget's N range (extrapolated; add runs).
        degenerate: the parabola does not open upwards (no minimum); left out of the laws.
        n_runs: runs in the budget; curvature: c2, loss per (log N)^2.
        params_range: (smallest, largest) N among the budget's runs.
    """

    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    edge: bool
    degenerate: bool
    n_runs: int
    curvature: float
    params_range: tuple[float, float]

    def to_dict(self) -> dict:
        """JSON-ready; a degenerate budget's n_opt, d_opt, loss_opt are null."""
        num = {
            k: (None if math.isnan(v) else v)
            for k, v in (("n_opt", self.n_opt), ("d_opt", self.d_opt), ("loss_opt", self.loss_opt))
        }
        return {"flops": self.flops, **num, "edge": self.edge, "degenerate": self.degenerate, "n_runs": self.n_runs}


@dataclass(frozen=True)
class IsoflopFit(ComputeLaws):
    """Approach 2 result: per-budget optima and the compute laws fitted to them."""

    budgets: tuple[BudgetOptimum, ...] = ()
    n_runs: int = 0
    options: dict = field(default_factory=dict)
    method: str = "isoflop"

    def to_dict(self, boot=None) -> dict:
        """JSON-ready summary (floats at full precision); with ``boot``, 90% intervals and standard errors."""
        return self.fit_dict(boot, "budgets", self.budgets)


def check_budgets(runs: Runs, label: np.ndarray, budget_flops: np.ndarray) -> None:
    """Raise :class:`DataError` naming any budget with fewer than 3 runs or 3 distinct model sizes."""
    for b, c in enumerate(budget_flops):
        idx = label == b
        if idx.sum() < 3 or len(np.unique(runs.params[idx])) < 3:
            what = (
                f"{int(idx.sum())} run{'s' if idx.sum() != 1 else ''}"
                if idx.sum() < 3
                else f"only {len(np.unique(runs.params[idx]))} distinct model sizes"
            )
            raise DataError(
                f"budget {c:.4g} FLOPs has {what}; Approach 2 fits a parabola and needs at least 3 "
                "model sizes per budget: add runs or drop that budget"
            )


def budget_optima(
    runs: Runs,
    label: np.ndarray,
    budget_flops: np.ndarray,
    weights: np.ndarray,
    tokens: str = "interpolate",
    huber_delta: float | None = None,
    loss: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Parabola optima of every budget for each row of ``weights`` ``(B, n_runs)`` (and of ``loss``
    ``(B, n_runs)``, per-row losses, when given; else the runs' own).

    Returns arrays of shape ``(B, n_budgets)``: ``log_n`` (log N*), ``log_d`` (log D*, tokens),
    ``loss`` (L*), ``curvature`` (c2 in loss per (log N)^2; NaN optimum where c2 <= 0).
    """
    shape = (weights.shape[0], len(budget_flops))
    out = {k: np.full(shape, np.nan) for k in ("log_n", "log_d", "loss", "curvature")}
    for b, c in enumerate(budget_flops):
        idx = np.flatnonzero(label == b)
        log_n = np.log(runs.params[idx])
        y = runs.loss[idx] if loss is None else loss[:, idx]
        parabola = fit_log_n_parabola(log_n, y, weights[:, idx], huber_delta)
        out["log_n"][:, b], out["loss"][:, b], out["curvature"][:, b] = parabola.minimum()
        if tokens == "interpolate":
            intercept, slope = loglog_fit(log_n, np.log(runs.tokens[idx])[None, :].repeat(shape[0], 0), weights[:, idx])
            out["log_d"][:, b] = intercept + slope * out["log_n"][:, b]
        else:
            out["log_d"][:, b] = math.log(c / 6.0) - out["log_n"][:, b]
    return out


def edge_masks(usable: np.ndarray, edge: np.ndarray, exclude_edge: bool | str) -> tuple[np.ndarray, np.ndarray]:
    """``(allocation, loss)``: the budgets the N_opt / D_opt laws and the L_opt laws fit, from the
    ``usable`` optima (finite, convex) and the ``edge`` flags, per ``exclude_edge`` (module doc)."""
    allocation = usable & ~edge if exclude_edge else usable
    return allocation, (allocation if exclude_edge is True else usable)


def laws_from_optima(
    budget_flops: np.ndarray, optima: dict[str, np.ndarray], use: np.ndarray, use_loss: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Batched log-log fits of N*, D*, L* against budget FLOPs over the budgets where ``use`` is True
    (the L* law over ``use_loss`` when given, :func:`edge_masks`)."""
    log_c = np.log(budget_flops)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_l = np.log(optima["loss"])
    use = use & np.isfinite(optima["log_n"]) & np.isfinite(log_l)
    use_loss = use if use_loss is None else use_loss & np.isfinite(optima["log_n"]) & np.isfinite(log_l)
    out = {}
    for law, log_y in (("params_law", optima["log_n"]), ("tokens_law", optima["log_d"]), ("loss_law", log_l)):
        mask = use_loss if law == "loss_law" else use
        intercept, slope = loglog_fit(log_c, np.where(mask, log_y, 0.0), mask.astype(np.float64))
        out[f"{law}.coefficient"], out[f"{law}.exponent"] = np.exp(intercept), slope
    return out


def robust_scale(runs: Runs, label: np.ndarray, budget_flops: np.ndarray, weights: np.ndarray) -> float:
    """Huber threshold: 1.345 x 1.4826 x median |residual| of the least-squares parabolas, all budgets pooled."""
    res = []
    for b in range(len(budget_flops)):
        idx = np.flatnonzero(label == b)
        log_n = np.log(runs.params[idx])
        res.append(runs.loss[idx] - fit_log_n_parabola(log_n, runs.loss[idx], weights[None, idx])(log_n)[0])
    sigma = 1.4826 * float(np.median(np.abs(np.concatenate(res))))
    return max(HUBER_K * sigma, 1e-12 * float(np.median(runs.loss)))


def fit_isoflop(
    runs: Runs,
    *,
    robust: bool = False,
    tokens: str = "interpolate",
    edge_margin: float = 0.05,
    exclude_edge: bool | str = False,
    budget_rtol: float = 0.1,
) -> IsoflopFit:
    """Approach 2: fit isoFLOP parabolas per budget and compute laws across budgets (see module doc).

    Args:
        runs: the runs; budgets come from the ``budget`` column or from grouping ``flops``
            (relative tolerance ``budget_rtol``, see :meth:`Runs.budgets`).
        robust: Huber M-estimate parabolas instead of least squares.
        tokens: ``"interpolate"`` (D* from the runs' own log D vs log N) or ``"6nd"`` (D* = C / 6N*).
        edge_margin: flag N* within this fraction of the log-N span of a budget's smallest or largest N.
        exclude_edge: leave edge budgets out of the power laws (they are always reported): ``True``
            out of every law, ``"allocation"`` out of the N_opt and D_opt laws only.

    Returns an :class:`IsoflopFit` with N* in parameters, D* in tokens, budgets in FLOPs.
    """
    if tokens not in ("interpolate", "6nd"):
        raise DataError(f"tokens must be 'interpolate' or '6nd', got {tokens!r}")
    label, budget_flops = runs.budgets(budget_rtol)
    check_budgets(runs, label, budget_flops)
    w = np.ones((1, len(runs))) if runs.weight is None else runs.weight[None, :]
    delta = robust_scale(runs, label, budget_flops, w[0]) if robust else None
    opt = budget_optima(runs, label, budget_flops, w, tokens, delta)
    budgets = []
    for b, c in enumerate(budget_flops):
        idx = label == b
        lo, hi = np.log(runs.params[idx].min()), np.log(runs.params[idx].max())
        log_n = opt["log_n"][0, b]
        degenerate = not np.isfinite(log_n)
        edge = (not degenerate) and not inside_grid(log_n, lo, hi, edge_margin)
        if degenerate:
            warnings.warn(
                f"budget {c:.4g} FLOPs: loss is not convex in log N (curvature {opt['curvature'][0, b]:.3g}); "
                "left out of the laws: add runs on both sides of the optimum",
                FitWarning,
                stacklevel=2,
            )
        elif edge:
            warnings.warn(
                f"budget {c:.4g} FLOPs: optimum N* = {np.exp(log_n):.4g} is at or beyond the edge of the runs "
                f"({np.exp(lo):.4g}..{np.exp(hi):.4g} params); extend the model sizes",
                FitWarning,
                stacklevel=2,
            )
        budgets.append(
            BudgetOptimum(
                float(c),
                float(np.exp(log_n)),
                float(np.exp(opt["log_d"][0, b])),
                float(opt["loss"][0, b]),
                bool(edge),
                bool(degenerate),
                int(idx.sum()),
                float(opt["curvature"][0, b]),
                (float(np.exp(lo)), float(np.exp(hi))),
            )
        )
    usable = np.array([not b.degenerate and b.loss_opt > 0 for b in budgets])
    use, use_loss = edge_masks(usable, np.array([b.edge for b in budgets]), exclude_edge)
    if use.sum() < 2:
        raise DataError(
            f"only {int(use.sum())} budget(s) have a usable optimum; the laws need at least 2: add budgets "
            "or runs around each budget's optimum"
        )
    v = {k: float(x[0]) for k, x in laws_from_optima(budget_flops, opt, use[None, :], use_loss[None, :]).items()}
    saturating = fit_saturating(budget_flops[use_loss], opt["loss"][0, use_loss])
    options = {
        "robust": robust,
        "tokens": tokens,
        "edge_margin": edge_margin,
        "exclude_edge": exclude_edge,
        "budget_rtol": budget_rtol,
        "huber_delta": delta,
    }
    return IsoflopFit(
        params_law=PowerLaw(v["params_law.coefficient"], v["params_law.exponent"]),
        tokens_law=PowerLaw(v["tokens_law.coefficient"], v["tokens_law.exponent"]),
        loss_law=PowerLaw(v["loss_law.coefficient"], v["loss_law.exponent"]),
        loss_law_saturating=saturating,
        budgets=tuple(budgets),
        n_runs=len(runs),
        options=options,
    )
