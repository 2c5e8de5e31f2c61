"""Bootstrap intervals for every fitted coefficient and exponent, resampling whole runs (or residuals).

A resample draws resampling units with replacement (a unit is a run, a training curve with its
``run_id``, or with ``seed`` all seed replicates of one configuration, see :meth:`Runs.groups`) and
refits with the point fit's options. A unit drawn k times gets weight k, which equals fitting the
duplicated rows.

- ``isoflop``: stratified by budget (each budget draws as many units as it has), redrawing a
  budget until the drawn runs hold at least 3 distinct model sizes; the parabolas and log-log fits
  of all resamples are solved at once (batched normal equations), the saturating law per resample
  with a warm start. 1000 resamples take about a second. A budget of exactly 3 units cannot be
  case-resampled (the only draw that keeps 3 sizes is the budget itself, so every resample would
  repeat the point fit and the interval would collapse to zero width); its runs get a parametric
  draw instead: each resample multiplies their losses by ``exp(sigma_r z)``, ``z ~ N(0, 1)`` per
  run, where ``sigma_r = sigma sqrt(dof / chi2_dof)`` carries the uncertainty of the measured
  noise ``sigma`` (seed replicates and the residuals of budgets with 4+ sizes pooled,
  :func:`~ditscale.laws.noise.log_loss_noise`, ``dof`` degrees of freedom). Runs with no such
  measurement (every budget 3 sizes, no seed replicates) get no intervals (every resample
  counted ``failed``) and a :class:`FitWarning` (:data:`NO_NOISE_MESSAGE`).
- ``parametric``: each resample is refitted by L-BFGS-B warm-started from the point estimate only
  (not from the 4500-point grid or the varpro grid), so 100-200 resamples take seconds. With a
  ``budget`` column (a study's runs.csv) the draw is stratified by budget like the isoflop one
  (each budget draws as many units as it has; no 3-size rule, the surface fit needs none), so
  every resample keeps the study's design; without it the units are drawn from all runs.
- ``envelope``: each resample refits the envelope of the drawn curves.

``kind="residual"`` (Approach 2 only; ``FitConfig.bootstrap_kind``) resamples residuals instead of
runs, because case resampling leaves ~3 distinct sizes per budget and gives intervals 3-4x wider
than the real spread of the estimate (docs/laws.md, benchmarks/interval_coverage.py):

1. each budget's point parabola is kept; its runs' relative residuals ``L / fit - 1`` (a budget of
   m runs scaled by ``sqrt(m / (m - 3))``), pooled over all budgets and centred, are drawn with
   replacement, one per run: the resample's losses are ``fit (1 + r)``; the parabolas and optima
   are refitted in one batch. Runs whose budgets all have 3 runs have no residuals: the optima are
   kept and moved by the scatter term alone (step 2, with the scale's own uncertainty; a
   :class:`FitWarning` says so, :func:`_scatter_only`): on simulated 3-size sweeps its 90% intervals
   cover 0.82-0.90 (docs/laws.md);
2. the between-budget scatter term: the point optima scatter about the fitted N_opt law by
   ``s^2 = sum e_b^2 / (K - 2)``; the parabolas' noise explains ``v``, the mean resampled
   variance of a budget's log N*; ``max(0, s^2 - v)`` more is drawn as independent normal shifts
   of every budget's log N* (D* moves along its budget's log D-log N line), so scatter of the
   optima that the runs' noise does not explain widens the interval.

The laws are then refitted as for ``case``. Pooling assumes one multiplicative noise level for all
budgets: where the parabolas do not fit (a steep wing), that lack of fit is spread over every
budget, and the intervals widen.

Intervals are 90% percentile intervals (5th and 95th percentiles); standard errors are the standard
deviations of the resampled values. Results are deterministic given ``seed``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from ditscale.errors import DataError
from ditscale.laws.compute_laws import LAW_FIELDS
from ditscale.laws.envelope import fit_envelope
from ditscale.laws.isoflop import budget_optima, edge_masks, fit_log_n_parabola, inside_grid, laws_from_optima
from ditscale.laws.noise import log_loss_noise
from ditscale.laws.parallel import map_tasks
from ditscale.laws.parametric import fit_parametric, one_blas_thread
from ditscale.laws.powerlaw import FitWarning, fit_saturating
from ditscale.laws.runs import Runs


def interval90(x: np.ndarray) -> list[float] | None:
    """The 5th and 95th percentiles of ``x`` (NaNs ignored), or None if none is finite."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return None if len(x) == 0 else [float(v) for v in np.percentile(x, [5.0, 95.0])]


@dataclass(frozen=True)
class Bootstrap:
    """Resampled values of a fit: ``samples[name]`` is an array over resamples (NaN where a refit failed).

    Names are those of the fit's ``values()``, e.g. ``"params_law.exponent"`` or ``"alpha"``.
    """

    method: str
    samples: dict[str, np.ndarray]
    seed: int
    n_failed: int = 0
    kind: str = "case"

    @property
    def n_resamples(self) -> int:
        return len(next(iter(self.samples.values())))

    def ci90(self, name: str) -> list[float] | None:
        """90% percentile interval ``[lo, hi]`` of ``name``."""
        return interval90(self.samples[name])

    def se(self, name: str) -> float | None:
        """Bootstrap standard error (standard deviation over resamples) of ``name``; None if < 2 refits."""
        x = self.samples[name]
        x = x[np.isfinite(x)]
        with np.errstate(over="ignore"):  # power-law coefficients can be heavy-tailed
            return float(np.std(x, ddof=1)) if len(x) > 1 else None

    def info(self) -> dict:
        """Resamples, seed, failed refits, and (``nonfinite``) by quantity the resamples that refitted
        but gave no finite value (e.g. an allocation with alpha <= 0): intervals leave both out;
        ``kind`` when it is not ``"case"``."""
        out = {"resamples": self.n_resamples, "seed": self.seed, "failed": self.n_failed}
        if self.kind != "case":  # written only when not the default, so case-bootstrap files keep their keys
            out["kind"] = self.kind
        nonfinite = {k: int((~np.isfinite(v)).sum()) - self.n_failed for k, v in self.samples.items()}
        nonfinite = {k: n for k, n in nonfinite.items() if n > 0}
        if nonfinite:
            out["nonfinite"] = nonfinite
        return out


def _draw_counts(rng: np.random.Generator, n: int, units: int) -> np.ndarray:
    """(n, units) multiplicities of ``units`` draws with replacement from ``units`` items."""
    draws = rng.integers(0, units, size=(n, units)) + units * np.arange(n)[:, None]
    return np.bincount(draws.ravel(), minlength=n * units).reshape(n, units).astype(np.float64)


NO_NOISE_MESSAGE = (
    "bootstrap intervals withheld: every budget has only 3 model sizes (a parabola through 3 "
    "points fits them exactly) and there are no seed replicates, so the runs hold no measure of the "
    "loss noise; add a 4th model size per budget or seed replicates (repeat:), or use the residual bootstrap "
    "(laws.bootstrap_kind: residual), whose intervals then come from the scatter of the budgets' optima"
)


def _three_unit_runs(label: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mask of the runs in budgets of exactly 3 resampling units (no case resample but the budget
    itself keeps 3 sizes: they get the parametric draw)."""
    fixed = np.zeros(len(label), dtype=bool)
    for b in np.unique(label):
        rows = label == b
        fixed[rows] = len(np.unique(groups[rows])) == 3
    return fixed


def _isoflop_weights(
    runs: Runs, label: np.ndarray, budget_flops: np.ndarray, groups: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, n_runs) resampling weights, stratified by budget, >= 3 distinct model sizes per budget
    (weight 1 in budgets of exactly 3 units: :func:`_three_unit_runs`)."""
    w, fixed = np.zeros((n, len(runs))), _three_unit_runs(label, groups)
    for b, c in enumerate(budget_flops):
        rows = np.flatnonzero(label == b)
        unit_ids, unit_of_row = np.unique(groups[rows], return_inverse=True)
        if fixed[rows[0]]:
            w[:, rows] = 1.0
            continue
        size_of_row = np.unique(runs.params[rows], return_inverse=True)[1]
        todo = np.arange(n)
        for _ in range(1000):
            counts = _draw_counts(rng, len(todo), len(unit_ids))[:, unit_of_row]
            sizes = np.zeros((len(todo), size_of_row.max() + 1))
            np.add.at(sizes, (slice(None), size_of_row), counts)
            ok = (sizes > 0).sum(1) >= 3
            w[todo[ok][:, None], rows] = counts[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                break
        else:
            raise DataError(
                f"budget {c:.4g} FLOPs: could not draw 3 distinct model sizes in 1000 tries; add runs to it"
            )
    return w


def _parametric_losses(
    runs: Runs, fixed: np.ndarray, n: int, rng: np.random.Generator, budget_rtol: float
) -> np.ndarray | None:
    """(n, n_runs) losses: the runs' own, those in ``fixed`` multiplied by ``exp(sigma_r z)`` (module
    doc); None when the runs measure no noise (intervals are then withheld)."""
    sigma, dof = log_loss_noise(runs, budget_rtol)
    if sigma is None:
        return None
    sigma_r = sigma * np.sqrt(dof / rng.chisquare(dof, size=n))
    z = rng.standard_normal((n, int(fixed.sum())))
    loss = np.repeat(runs.loss[None, :], n, axis=0)
    loss[:, fixed] *= np.exp(sigma_r[:, None] * z)
    return loss


def _bootstrap_isoflop(runs, fit, n, rng):
    opts = fit.options
    label, budget_flops = runs.budgets(opts["budget_rtol"])
    groups = runs.groups()
    w, fixed = _isoflop_weights(runs, label, budget_flops, groups, n, rng), _three_unit_runs(label, groups)
    if runs.weight is not None:
        w = w * runs.weight
    loss = _parametric_losses(runs, fixed, n, rng, opts["budget_rtol"]) if fixed.any() else runs.loss
    if loss is None:
        warnings.warn(NO_NOISE_MESSAGE, FitWarning, stacklevel=3)
        return {k: np.full(n, np.nan) for k in fit.values()}, n
    opt = budget_optima(
        runs, label, budget_flops, w, opts["tokens"], opts["huber_delta"], loss if loss.ndim == 2 else None
    )
    return _laws_of_optima(fit, budget_flops, opt)


def _laws_of_optima(fit, budget_flops: np.ndarray, opt: dict[str, np.ndarray]):
    """``(samples, failed)``: the compute laws refitted to each resample's budget optima ``opt`` (arrays
    ``(n, n_budgets)``, :func:`budget_optima`), edge budgets left out as the point fit left them out."""
    opts, n = fit.options, opt["log_n"].shape[0]
    usable = np.isfinite(opt["log_n"])
    edge = np.zeros_like(usable)
    for b, point in enumerate(fit.budgets):
        lo, hi = np.log(point.params_range)
        edge[:, b] = usable[:, b] & ~inside_grid(opt["log_n"][:, b], lo, hi, opts["edge_margin"])
    use, use_loss = edge_masks(usable, edge, opts["exclude_edge"])
    samples = laws_from_optima(budget_flops, opt, use, use_loss)
    sat = np.full((n, 3), np.nan)
    if fit.loss_law_saturating is not None:
        ok = use_loss & np.isfinite(opt["loss"]) & (opt["loss"] > 0)
        refit = functools.partial(_refit_saturating, fit.loss_law_saturating)
        laws = map_tasks(refit, [(budget_flops[ok[i]], opt["loss"][i, ok[i]]) for i in range(n)])
        for i, law in enumerate(laws):
            if law is not None:
                sat[i] = law
    for j, f in enumerate(LAW_FIELDS["loss_law_saturating"]):
        samples[f"loss_law_saturating.{f}"] = sat[:, j]
    failed = int((use.sum(1) < 2).sum())
    return samples, failed


def _refit_saturating(start, points: tuple[np.ndarray, np.ndarray]) -> tuple[float, float, float] | None:
    """One resample's saturating loss law through its optima ``points`` (flops, L*), warm-started
    from the point fit's law ``start``: ``(E, k, gamma)``, or None when it fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        law = fit_saturating(*points, start=start)
    return None if law is None else (law.E, law.k, law.gamma)


def _residual_losses(runs: Runs, fit, label: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """(n, n_runs) losses of the residual bootstrap: each run's fitted parabola value times ``1 + r``,
    ``r`` drawn with replacement from the relative residuals of all budgets' parabolas (pooled: the
    noise is multiplicative; centred; a budget of m runs scaled by ``sqrt(m / (m - 3))``, undoing the
    shrinkage of fitting 3 coefficients to m points). None when no budget has more than 3 runs."""
    w = np.ones(len(runs)) if runs.weight is None else runs.weight
    fitted, pool = np.empty(len(runs)), []
    for b in np.unique(label):
        idx = np.flatnonzero(label == b)
        log_n = np.log(runs.params[idx])
        fitted[idx] = fit_log_n_parabola(log_n, runs.loss[idx], w[None, idx], fit.options["huber_delta"])(log_n)[0]
        if len(idx) > 3:
            pool.append((runs.loss[idx] / fitted[idx] - 1.0) * np.sqrt(len(idx) / (len(idx) - 3)))
    if not pool:
        return None
    pool = np.concatenate(pool)
    pool -= pool.mean()
    return fitted * (1.0 + pool[rng.integers(0, len(pool), size=(n, len(runs)))])


def _d_slopes(runs: Runs, fit, label: np.ndarray) -> np.ndarray:
    """Each budget's d log D / d log N: along which line a shift of its log N* moves its log D* (-1 with
    ``tokens="6nd"``; with ``"interpolate"``, the budget's runs' own log D - log N line)."""
    slope = np.full(len(fit.budgets), -1.0)
    if fit.options["tokens"] == "interpolate":
        for b in range(len(fit.budgets)):
            idx = label == b
            slope[b] = np.polyfit(np.log(runs.params[idx]), np.log(runs.tokens[idx]), 1)[0]
    return slope


def _budget_scatter(runs: Runs, fit, label: np.ndarray, opt: dict[str, np.ndarray], rng: np.random.Generator):
    """Add the between-budget scatter term to the resampled optima ``opt`` (in place).

    The point optima scatter about the fitted N_opt law by ``s^2 = sum e_b^2 / (K - 2)`` (``e_b`` the
    residuals of log N* of the K budgets in the law). The parabolas' noise explains ``v``, the mean
    over budgets of the resampled log N*'s variance; the rest, ``max(0, s^2 - v)`` (a power law that
    does not hold exactly, budgets that differ beyond their runs' noise), is added to every budget's
    log N* as independent normal draws, and moves log D* along the budget's own log D-log N line (-1
    with ``tokens="6nd"``)."""
    degenerate, edge = (np.array([getattr(p, k) for p in fit.budgets]) for k in ("degenerate", "edge"))
    use = edge_masks(~degenerate, edge, fit.options["exclude_edge"])[0]  # the budgets of the N_opt law
    if use.sum() < 3:
        return
    log_c = np.log([p.flops for p in fit.budgets])
    law = fit.params_law
    e = np.log([p.n_opt for p in fit.budgets])[use] - np.log(law.coefficient) - law.exponent * log_c[use]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a budget degenerate in every resample: no variance
        within = float(np.nanmean(np.nanvar(opt["log_n"][:, use], axis=0)))
    excess = max(0.0, float(np.sum(e * e)) / (use.sum() - 2) - within) if np.isfinite(within) else 0.0
    shift = np.sqrt(excess) * rng.standard_normal(opt["log_n"].shape)
    slope = _d_slopes(runs, fit, label)
    opt["log_n"] += shift
    opt["log_d"] += slope * shift


def _bootstrap_isoflop_residual(runs, fit, n, rng):
    """Approach 2's residual bootstrap (module doc): resampled parabola residuals, then the between-budget
    scatter term of the optima; with no residuals (3 sizes per budget), the scatter alone
    (:func:`_scatter_only`)."""
    opts = fit.options
    label, budget_flops = runs.budgets(opts["budget_rtol"])
    loss = _residual_losses(runs, fit, label, n, rng)
    if loss is None:
        return _scatter_only(runs, fit, label, budget_flops, n, rng)
    w = np.ones((n, len(runs))) if runs.weight is None else np.repeat(runs.weight[None, :], n, axis=0)
    opt = budget_optima(runs, label, budget_flops, w, opts["tokens"], opts["huber_delta"], loss)
    _budget_scatter(runs, fit, label, opt, rng)
    return _laws_of_optima(fit, budget_flops, opt)


SCATTER_ONLY_MESSAGE = (
    "every budget has only 3 model sizes and there are no seed replicates: the intervals come from the "
    "scatter of the budgets' optima about the fitted laws alone (a regression bootstrap with K - 2 degrees "
    "of freedom); a 4th model size per budget or seed replicates (repeat:) measure the runs' noise too"
)


def _scatter_only(runs: Runs, fit, label: np.ndarray, budget_flops: np.ndarray, n: int, rng: np.random.Generator):
    """The residual bootstrap of a sweep whose parabolas have no residuals (every budget 3 runs): each
    resample keeps the point optima and moves them by the between-budget scatter only, a regression
    bootstrap. log N* (and log D* along its budget's line) moves by ``sigma_r z``, ``sigma_r = s sqrt((K -
    2) / chi2_{K-2})`` per resample (``s^2 = sum e_b^2 / (K - 2)``, the optima's residuals about the fitted
    N_opt law, so the scale's own uncertainty widens the interval as a t distribution does); log L* moves
    likewise by the scatter of the optima's losses about the loss power law. A :class:`FitWarning`
    (:data:`SCATTER_ONLY_MESSAGE`) says where the intervals come from."""
    opts = fit.options
    w = np.ones((1, len(runs))) if runs.weight is None else runs.weight[None, :]
    point = budget_optima(runs, label, budget_flops, w, opts["tokens"], opts["huber_delta"])
    opt = {k: np.repeat(v, n, axis=0) for k, v in point.items()}
    degenerate, edge = (np.array([getattr(p, k) for p in fit.budgets]) for k in ("degenerate", "edge"))
    use, use_loss = edge_masks(~degenerate, edge, opts["exclude_edge"])
    if use.sum() < 3 or use_loss.sum() < 3:
        warnings.warn(NO_NOISE_MESSAGE, FitWarning, stacklevel=4)
        return {k: np.full(n, np.nan) for k in fit.values()}, n
    warnings.warn(SCATTER_ONLY_MESSAGE, FitWarning, stacklevel=4)
    log_c = np.log(budget_flops)
    shift_n = _scatter_draws(np.log([p.n_opt for p in fit.budgets]), log_c, fit.params_law, use, n, rng)
    slope = _d_slopes(runs, fit, label)
    opt["log_n"] += shift_n
    opt["log_d"] += slope * shift_n
    shift_l = _scatter_draws(np.log([p.loss_opt for p in fit.budgets]), log_c, fit.loss_law, use_loss, n, rng)
    opt["loss"] *= np.exp(shift_l)
    return _laws_of_optima(fit, budget_flops, opt)


def _scatter_draws(log_y: np.ndarray, log_c: np.ndarray, law, use: np.ndarray, n: int, rng: np.random.Generator):
    """``(n, K)`` normal draws of the scatter of ``log_y`` about ``law`` (a power law in C) over the budgets
    ``use``, each resample's scale ``s sqrt(dof / chi2_dof)`` (``dof`` = used budgets - 2)."""
    e = log_y[use] - np.log(law.coefficient) - law.exponent * log_c[use]
    dof = int(use.sum()) - 2
    scale = np.sqrt(float(np.sum(e * e)) / dof) * np.sqrt(dof / rng.chisquare(dof, size=(n, 1)))
    return scale * rng.standard_normal((n, len(log_c)))


def _unit_strata(runs: Runs) -> np.ndarray | None:
    """Budget label of each resampling unit when ``runs`` has a ``budget`` column and no unit spans
    two budgets (then the parametric draw is stratified by budget); else None."""
    if runs.budget is None:
        return None
    groups, label = runs.groups(), runs.budgets()[0]
    strata = np.full(groups.max() + 1, -1)
    strata[groups] = label
    return strata if np.array_equal(strata[groups], label) else None


def _unit_counts(rng: np.random.Generator, n: int, n_units: int, strata: np.ndarray | None) -> np.ndarray:
    """(n, n_units) multiplicities: all units drawn together, or each stratum drawing its own units."""
    if strata is None:
        return _draw_counts(rng, n, n_units)
    counts = np.zeros((n, n_units))
    for s in np.unique(strata):
        units = np.flatnonzero(strata == s)
        counts[:, units] = _draw_counts(rng, n, len(units))
    return counts


def _bootstrap_each(runs, fit, n, rng, refit, strata=None):
    """Resample units (within ``strata`` if given, one label per unit) and call ``refit(weights) ->
    values dict or None`` (a module-level function or partial: the resamples are refitted on
    :func:`~ditscale.laws.parallel.map_tasks`' worker processes); failures (None) become NaN."""
    groups = runs.groups()
    n_units = groups.max() + 1
    out = {k: np.full(n, np.nan) for k in fit.values()}
    counts = _unit_counts(rng, n, n_units, strata)
    results = map_tasks(refit, [counts[i][groups] for i in range(n)])
    for i, values in enumerate(results):
        for k, v in (values or {}).items():
            out[k][i] = v
    return out, sum(values is None for values in results)


def _refit_parametric(runs: Runs, delta: float, theta: np.ndarray, weights: np.ndarray) -> dict | None:
    """One resample of Approach 3, warm-started from the point fit's ``theta``: its values, or None
    when it fails. A resample's allocation can be NaN (alpha <= 0): no warning for that."""
    with warnings.catch_warnings(), one_blas_thread(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", FitWarning)
        try:
            return fit_parametric(runs, delta=delta, weights=weights, start=theta).values()
        except DataError:
            return None


def _refit_envelope(runs: Runs, options: dict, weights: np.ndarray) -> dict | None:
    """One resample of the envelope fit (the drawn curves), or None when it fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        try:
            return fit_envelope(
                runs.take(weights > 0),
                bins_per_decade=options["bins_per_decade"],
                min_runs_per_bin=options["min_runs_per_bin"],
                flops_range=options["flops_range"],
            ).values()
        except DataError:
            return None


KINDS = ("case", "residual")


def bootstrap(runs: Runs, fit, n: int = 1000, seed: int = 0, kind: str = "case") -> Bootstrap:
    """Resample ``runs`` ``n`` times (whole runs, see module doc) and refit as ``fit`` was fitted.

    Args:
        runs: the runs ``fit`` was fitted to.
        fit: an :class:`IsoflopFit`, :class:`EnvelopeFit` or :class:`ParametricFit`.
        n: number of resamples (e.g. 1000 for isoflop/envelope, 100-200 for parametric).
        seed: seed of the numpy generator; equal seeds give equal results.
        kind: "case" (resample runs) or "residual" (Approach 2 only: resample its parabolas'
            residuals, plus the between-budget scatter of the optima; module doc).
    """
    if kind not in KINDS:
        raise DataError(f"unknown bootstrap kind {kind!r}; use case or residual")
    if kind == "residual" and fit.method != "isoflop":
        raise DataError(f"the residual bootstrap is Approach 2's (isoflop); {fit.method} uses the case bootstrap")
    if n < 2:
        raise DataError(f"the bootstrap needs at least 2 resamples, got {n}; use e.g. --bootstrap 1000")
    rng = np.random.default_rng(seed)
    if fit.method == "isoflop":
        draw = _bootstrap_isoflop_residual if kind == "residual" else _bootstrap_isoflop
        samples, failed = draw(runs, fit, n, rng)
    elif fit.method == "parametric":
        refit = functools.partial(_refit_parametric, runs, fit.options["delta"], fit.theta)
        samples, failed = _bootstrap_each(runs, fit, n, rng, refit, strata=_unit_strata(runs))
    elif fit.method == "envelope":
        samples, failed = _bootstrap_each(runs, fit, n, rng, functools.partial(_refit_envelope, runs, fit.options))
    else:
        raise DataError(f"unknown fit method {fit.method!r}; use isoflop, parametric or envelope")
    return Bootstrap(method=fit.method, samples=samples, seed=seed, n_failed=failed, kind=kind)
