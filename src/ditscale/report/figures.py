"""Figures of a scaling study (matplotlib, Agg backend; PNG files).

- :func:`isoflop_figure`: loss vs N per budget (colour = budget), the fitted parabolas, the
  optima (stars; hollow when at the edge of the grid); the held-out budget in a dashed style with
  the backtest's predicted L* and its 90% interval.
- :func:`laws_figure`: N_opt, D_opt and L_opt vs C on log axes, the fitted power laws with their
  90% bootstrap bands, extrapolated to the target budget; the backtest refit dashed.
- :func:`residuals_figure`: each run's loss relative to its budget's parabola, with the measured
  seed-to-seed spread as a band.
- :func:`extrapolation_figure`: the backtests at every distance: each form's L* error vs the
  extrapolation factor (held-out C / largest fitted C, log axis), filled where the actual L* lies
  inside the prediction's 90% interval, hollow where it does not; the median per distance joined.

Axes: C in training FLOPs, N non-embedding parameters, D image tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ditscale.flops import fmt_flops
from ditscale.laws.extrapolation import error_by_factor, study_noise_floor
from ditscale.laws.fit import LOSS_LAWS, loss_law_name
from ditscale.laws.isoflop import fit_log_n_parabola
from ditscale.laws.parametric import ParametricFit, allocation
from ditscale.laws.results import BacktestSummary, BudgetSummary, LawsSummary


def error_bar(value: float, ci) -> list | None:
    """Error-bar lengths below/above ``value`` for an interval (0 where a percentile interval excludes the point)."""
    if not ci:
        return None
    return [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]


def percent_decimals(ticks, most: int = 6) -> int:
    """The fewest decimals of a percent label that write every tick value (fractions, 0.0002 = 0.02%)
    exactly, so neighbouring ticks never share a label (e.g. every tick "+0.0%"); at most ``most``."""
    values = [float(x) * 100 for x in ticks]
    for d in range(most + 1):
        if all(abs(v - round(v, d)) <= 1e-6 * 10.0**-d for v in values):
            return d
    return most


def percent_formatter(plt):
    """A signed-percent tick formatter whose precision follows the axis's ticks (:func:`percent_decimals`)."""
    fmt = plt.FuncFormatter(lambda v, _: f"{v:+.{percent_decimals(list(fmt.locs) or [v])}%}")
    return fmt


def compact_number(value: float) -> str:
    """A short tick label: ``0.2``, ``50``, ``2e11`` (no ``+`` or leading zero in the exponent)."""
    if not value > 0:
        return ""
    if 1e-3 <= value < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def compact_log_axis(plt, axis) -> None:
    """Brief labels on a log ``axis`` (``ax.xaxis``): every decade, and inside the decades 2 and 5
    when it spans under two decades, every tick under half a decade. matplotlib's own labels on a
    short log axis write each minor tick in full (``2x10^11 3x10^11 ...``) and run into each other."""

    def minor(value: float, _) -> str:
        lo, hi = sorted(axis.get_view_interval())
        decades = np.log10(hi / lo) if lo > 0 else np.inf
        mantissa = round(value / 10 ** np.floor(np.log10(value)), 6) if value > 0 else 0.0
        shown = decades < 0.5 or (decades < 2 and mantissa in (2.0, 5.0))
        return compact_number(value) if shown else ""

    axis.set_major_formatter(plt.FuncFormatter(lambda value, _: compact_number(value)))
    axis.set_minor_formatter(plt.FuncFormatter(minor))


def save_figure(plt, fig, path) -> Path:
    """Lay out ``fig``, write it to ``path`` and close it (every report figure ends so); returns the path."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use: the report's
    figures are the only place that needs matplotlib)."""
    import matplotlib  # lazy: matplotlib (~0.7 s) loads only when a figure is drawn

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use('Agg'), which must come first

    return plt


def _budget_colours(budgets: np.ndarray):
    plt = pyplot()
    cmap = plt.get_cmap("viridis")
    if len(budgets) == 1:
        return {float(budgets[0]): cmap(0.2)}
    logs = np.log(budgets)
    t = (logs - logs.min()) / (logs.max() - logs.min())
    return {float(b): cmap(0.1 + 0.75 * v) for b, v in zip(budgets, t)}


def budget_parabola(log_n: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Coefficients ``(c0, c1, c2)`` of ``loss = c0 + c1 x + c2 x^2`` in ``x = log N`` (unscaled): the
    isoFLOP parabola of :func:`ditscale.laws.isoflop.fit_log_n_parabola`, for plotting on log axes."""
    return fit_log_n_parabola(log_n, loss).unscaled()[0]


def isoflop_figure(runs, laws: "dict | LawsSummary", path: str | Path) -> Path:
    """Loss vs N per budget with parabolas and optima; returns ``path``. ``laws``: laws.json's dict or view."""
    plt = pyplot()
    view = LawsSummary.of(laws)
    label, budgets = runs.budgets()
    colours = _budget_colours(budgets)
    held = {b.flops for b in view.budgets if b.held_out}
    optima = {b.flops: b for b in view.budgets}
    backtest = {row.flops: row for row in view.backtest}
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    for i, c in enumerate(budgets):
        c = float(c)
        idx = label == i
        _draw_budget(ax, runs.params[idx], runs.loss[idx], c, colours[c], c in held, optima.get(c), backtest.get(c))
    ax.set_xscale("log")
    ax.set_xlabel("N, non-embedding parameters")
    ax.set_ylabel("validation loss")
    ax.set_title("isoFLOP curves (stars: parabola minima; hollow star: at the grid's edge)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, frameon=False)
    return save_figure(plt, fig, path)


def _draw_budget(
    ax,
    n: np.ndarray,
    loss: np.ndarray,
    c: float,
    colour,
    is_held: bool,
    opt: BudgetSummary | None,
    row: BacktestSummary | None,
) -> None:
    """One budget of the isoFLOP figure: its runs, parabola, optimum (star) and backtest prediction."""
    name = f"{fmt_flops(c)} FLOPs" + (" (held out)" if is_held else "")
    ax.scatter(
        n,
        loss,
        color=colour,
        marker="s" if is_held else "o",
        s=28,
        zorder=3,
        facecolors="none" if is_held else colour,
        linewidths=1.4,
        label=name,
    )
    if len(np.unique(n)) >= 3:
        coef = budget_parabola(np.log(n), loss)
        xs = np.linspace(np.log(n.min()) - 0.15, np.log(n.max()) + 0.15, 100)
        ax.plot(
            np.exp(xs),
            coef[0] + coef[1] * xs + coef[2] * xs**2,
            color=colour,
            lw=1.6,
            linestyle="--" if is_held else "-",
            zorder=2,
        )
    if opt and not opt.degenerate and np.isfinite(np.nan if opt.loss_opt is None else opt.loss_opt):
        ax.scatter(
            [opt.n_opt],
            [opt.loss_opt],
            marker="*",
            s=190,
            zorder=4,
            edgecolors="black",
            facecolors="white" if opt.edge else colour,
            linewidths=0.9,
        )
    if row is not None:
        n_at = opt.n_opt if opt else float(np.exp(np.log(n).mean()))
        yerr = error_bar(row.predicted_loss, row.predicted_ci90)
        ax.errorbar(
            [n_at * 1.12],
            [row.predicted_loss],
            yerr=yerr,
            fmt="D",
            color="crimson",
            ms=6,
            capsize=3,
            zorder=5,
            label=f"backtest prediction, {loss_law_name(row.loss_law)} ({row.relative_error:+.1%})",
        )


def _band(boot, law: str, cs: np.ndarray):
    if boot is None:
        return None
    a = boot.samples[f"{law}.coefficient"][:, None]
    b = boot.samples[f"{law}.exponent"][:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        y = a * cs[None, :] ** b
    ok = np.all(np.isfinite(y), axis=1)
    if ok.sum() < 10:
        return None
    return np.percentile(y[ok], [5, 95], axis=0)


LAW_PANELS = [
    ("params_law", "n_opt", "N_opt, non-embedding parameters"),
    ("tokens_law", "d_opt", "D_opt, image tokens"),
    ("loss_law", "loss_opt", "L_opt, validation loss"),
]


def laws_figure(
    laws: "dict | LawsSummary",
    path: str | Path,
    *,
    boot=None,
    target_flops: float | None = None,
    verified: list[tuple[float, float]] | None = None,
) -> Path:
    """N_opt, D_opt and L_opt vs C (log axes) with fits, bands and the extrapolation; returns ``path``.

    ``laws``: laws.json's dict or view; ``boot``: the fit's bootstrap (bands; None draws none);
    ``verified``: ``(C, loss)`` of models trained beyond the sweep (``study verify``), starred on the loss panel."""
    plt = pyplot()
    view = LawsSummary.of(laws)
    budgets = [b for b in view.budgets if not b.degenerate]
    cs = np.array([b.flops for b in budgets])
    hi = max(cs.max(), target_flops or 0, *(c for c, _ in verified or ()))
    grid = np.logspace(np.log10(cs.min() / 1.5), np.log10(hi * 1.5), 200)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=110)
    for ax, (law, key, ylabel) in zip(axes, LAW_PANELS):
        _draw_law(ax, view, law, grid, boot)
        _draw_optima(ax, budgets, key)
        by = ""
        if key == "loss_opt":
            _draw_saturating_loss(ax, view, grid)
            _draw_approach3_loss(ax, view, grid)
            for row in view.backtest:
                yerr = error_bar(row.predicted_loss, row.predicted_ci90)
                ax.errorbar(
                    [row.flops],
                    [row.predicted_loss],
                    yerr=yerr,
                    fmt="D",
                    color="crimson",
                    ms=5,
                    capsize=3,
                    zorder=6,
                    label=f"predicted, {loss_law_name(row.loss_law)} ({row.relative_error:+.1%})",
                )
            by = f" ({loss_law_name(view.prediction.loss_law)})" if view.prediction is not None else ""
            for c, loss in verified or ():
                ax.plot(
                    [c],
                    [loss],
                    "*",
                    color="tab:purple",
                    ms=11,
                    zorder=7,
                    label=f"trained at {fmt_flops(c)}: {loss:.3g}",
                )
        est = getattr(view.prediction, key) if view.prediction is not None else None
        if target_flops and est is not None and est.value is not None:
            ax.errorbar(
                [target_flops],
                [est.value],
                yerr=error_bar(est.value, est.ci90),
                fmt="o",
                color="tab:orange",
                ms=6,
                capsize=3,
                zorder=6,
                label=f"target {fmt_flops(target_flops)}: {est.value:.3g}{by}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("C, training FLOPs")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, frameon=False, loc="lower left" if key == "loss_opt" else "upper left")
    axes[0].set_title("compute-optimal model size")
    axes[1].set_title("compute-optimal data")
    axes[2].set_title("compute-optimal loss")
    return save_figure(plt, fig, path)


def _draw_law(ax, view: LawsSummary, law: str, grid: np.ndarray, boot) -> None:
    """The fitted power law over ``grid``, its bootstrap band, and the backtest refit (dashed)."""
    fit = view.law(law)
    y = fit.coefficient * grid**fit.exponent
    record = _of_record(view, "power") if law == "loss_law" else ""
    ax.plot(
        grid, y, color="tab:blue", lw=1.8, label=f"fit, all budgets: {fit.coefficient:.3g} C^{fit.exponent:.3f}{record}"
    )
    band = _band(boot, law, grid)
    if band is not None:
        ax.fill_between(grid, band[0], band[1], color="tab:blue", alpha=0.18, lw=0, label="90% bootstrap band")
    refit = view.backtest_fit.law(law) if view.backtest_fit is not None else None
    if refit is not None:
        ax.plot(
            grid,
            refit.coefficient * grid**refit.exponent,
            color="crimson",
            lw=1.2,
            ls="--",
            label=f"backtest refit: C^{refit.exponent:.3f}",
        )


def _of_record(view: LawsSummary, form: str) -> str:
    """ " (law of record)" when ``form`` is the study's loss form of record (laws.json), else ""."""
    return " (law of record)" if view.loss_law_of_record == form else ""


def _draw_saturating_loss(ax, view: LawsSummary, grid: np.ndarray) -> None:
    """The saturating loss law ``E + k C^-gamma`` over ``grid``; nothing when it was not fitted."""
    sat = view.loss_law_saturating
    if sat is None:
        return
    ax.plot(
        grid,
        sat.E + sat.k * grid ** (-sat.gamma),
        color=FORM_COLOURS["saturating"],
        lw=1.6,
        label=f"saturating: {sat.E:.3g} + {sat.k:.3g} C^-{sat.gamma:.3f}{_of_record(view, 'saturating')}",
    )


def _draw_approach3_loss(ax, view: LawsSummary, grid: np.ndarray) -> None:
    """Approach 3's compute-optimal loss ``L(N_opt(C), D_opt(C))`` over ``grid`` (exact FLOPs, converted
    to 6ND FLOPs as its prediction was); nothing without Approach 3 or its prediction."""
    par = view.parametric
    pred = par.prediction if par is not None else None
    if pred is None or not pred.flops or not pred.flops_6nd:
        return
    values = {k: getattr(par, k) for k in ("E", "A", "B", "alpha", "beta")}
    values.update(allocation(values))
    with np.errstate(all="ignore"):
        loss = ParametricFit.optimum(values, grid * (pred.flops_6nd / pred.flops))[2]
    label = f"Approach 3 L(N_opt, D_opt), floor E = {par.E:.3g}{_of_record(view, 'parametric')}"
    ax.plot(grid, loss, color=FORM_COLOURS["parametric"], lw=1.6, ls="-.", label=label)


def _draw_optima(ax, budgets: list[BudgetSummary], key: str) -> None:
    """The budgets' optima of ``key`` (n_opt, d_opt, loss_opt): fitted (hollow at the grid's edge) and held out."""
    cs = np.array([b.flops for b in budgets])
    vals = np.array([getattr(b, key) for b in budgets])
    held = np.array([bool(b.held_out) for b in budgets])
    edge = np.array([bool(b.edge) for b in budgets])
    fitted = ~held
    ax.scatter(cs[fitted & ~edge], vals[fitted & ~edge], color="black", zorder=4, s=30, label="budget optima")
    if (fitted & edge).any():
        ax.scatter(
            cs[fitted & edge],
            vals[fitted & edge],
            facecolors="white",
            edgecolors="black",
            zorder=4,
            s=30,
            label="optimum at grid edge",
        )
    if held.any():
        ax.scatter(
            cs[held],
            vals[held],
            marker="s",
            facecolors="none",
            edgecolors="crimson",
            linewidths=1.5,
            zorder=5,
            s=46,
            label="held-out budget",
        )


def residuals_figure(runs, laws: "dict | LawsSummary", path: str | Path) -> Path:
    """Relative residual ``loss / parabola - 1`` of every run vs N, by budget; returns ``path``."""
    plt = pyplot()
    view = LawsSummary.of(laws)
    label, budgets = runs.budgets()
    colours = _budget_colours(budgets)
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    noise = view.noise.seed_spread
    if noise:
        ax.axhspan(-noise, noise, color="grey", alpha=0.18, lw=0, label=f"seed-to-seed spread (±{noise:.2%})")
    held = {b.flops for b in view.budgets if b.held_out}
    for i, c in enumerate(budgets):
        idx = label == i
        n, loss = runs.params[idx], runs.loss[idx]
        if len(np.unique(n)) < 3:
            continue
        coef = budget_parabola(np.log(n), loss)
        x = np.log(n)
        r = loss / (coef[0] + coef[1] * x + coef[2] * x * x) - 1
        is_held = float(c) in held
        ax.scatter(
            n,
            r,
            color=colours[float(c)],
            marker="s" if is_held else "o",
            s=24,
            label=f"{fmt_flops(float(c))}" + (" (held out)" if is_held else ""),
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("N, non-embedding parameters")
    ax.set_ylabel("loss / parabola - 1")
    ax.yaxis.set_major_formatter(percent_formatter(plt))
    ax.set_title("isoFLOP residuals vs measurement noise")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, frameon=False, ncol=2)
    return save_figure(plt, fig, path)


FORM_COLOURS = {"power": "tab:blue", "saturating": "tab:green", "parametric": "tab:red"}


def extrapolation_figure(laws: "dict | LawsSummary", path: str | Path) -> Path:
    """Relative L* error vs extrapolation factor, every form (laws.json's ``extrapolation``), over the
    band a right law of record would give at each distance, its L* scattered as the study's
    (:func:`~ditscale.laws.extrapolation.noise_floor`); returns ``path``."""
    plt = pyplot()
    view = LawsSummary.of(laws)
    rows = view.extrapolation or ()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    ax.axhspan(-0.02, 0.02, color="grey", alpha=0.15, lw=0, label="within 2%")
    floor = study_noise_floor(view) if rows else None
    if floor is not None and floor.bands:  # the frame: what noise alone gives a right law of record
        f = [b.factor for b in floor.bands]
        ax.fill_between(
            f,
            [b.low for b in floor.bands],
            [b.high for b in floor.bands],
            color=FORM_COLOURS[floor.form],
            alpha=0.12,
            lw=0,
            label=f"noise alone: a right {loss_law_name(floor.form)} (90%, L* sd {floor.sigma:.2%})",
        )
    groups = error_by_factor(rows)
    for i, form in enumerate(f for f in LOSS_LAWS if any(r.form == f for r in rows)):
        mine = [r for r in rows if r.form == form]
        colour, shift = FORM_COLOURS[form], 1.0 + 0.02 * (i - 1)  # side by side at each factor
        for hit in (True, False):
            pts = [r for r in mine if (r.within_ci90 is True) == hit]
            ax.scatter(
                [r.factor * shift for r in pts],
                [r.relative_error for r in pts],
                s=26,
                color=colour,
                facecolors=colour if hit else "none",
                linewidths=1.2,
                label=loss_law_name(form) if hit else None,
            )
        medians = [(f, e.median) for f, errs in groups.items() for e in errs if e.form == form]
        ax.plot([f * shift for f, _ in medians], [m for _, m in medians], color=colour, lw=1.2, alpha=0.7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(plt.FuncFormatter(lambda v, _: f"{v:.3g}x"))
    ax.set_xlabel("extrapolation factor: held-out C / largest fitted C")
    ax.set_ylabel("L* relative error")
    ax.yaxis.set_major_formatter(percent_formatter(plt))
    ax.set_title("backtests at every distance (filled: inside its 90% interval; line: median)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return save_figure(plt, fig, path)
