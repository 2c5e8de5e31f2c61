"""Figures of a study's sample quality (matplotlib, Agg backend; PNG files).

- :func:`quality_figure`: the quality metric of each budget's compute-optimal model against
  compute (the fitted power law extrapolated to the target budget, the held-out budget with the
  backtest's prediction and its 90% interval), and against validation loss (every scored model).
  The real-vs-real floor (laws.json's ``quality_metrics``) is drawn dashed where known.
- :func:`accuracy_figure`: every accuracy of ``quality_metrics`` against compute (compute-optimal
  models, their laws) and against loss (every scored model), each with its chance level (dotted).
- :func:`steps_figure`: quality against total sampling FLOPs per image, one line per model (its step
  counts), from ``ditscale study quality-steps``: can more steps on a small model match a larger one?
- :func:`samples_figure`: a grid of samples, one row per budget's compute-optimal model, each cell
  captioned with its prompt for a text-conditional study.

Axes: C in training FLOPs; quality in the metric's units (lower is better); accuracy a fraction
(higher is better); loss in val-loss units.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ditscale.flops import fmt_flops
from ditscale.laws.results import LawsSummary, QualityMetricSummary, QualitySummary
from ditscale.report.figures import compact_log_axis, error_bar, pyplot, save_figure


def quality_figure(laws: LawsSummary, path: str | Path, target_flops: float | None = None) -> Path:
    """Quality vs compute (left) and vs validation loss (right); returns ``path``."""
    plt = pyplot()
    q = laws.quality
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    _quality_vs_compute(left, q, target_flops)
    _quality_vs_loss(right, q)
    floor = (laws.quality_metrics or {}).get(q.metric)
    if floor is not None and floor.floor is not None:
        for ax in (left, right):
            ax.axhline(floor.floor, color="grey", ls="--", lw=1, label=f"real vs real {floor.floor:.3g}")
            ax.legend(fontsize=7, frameon=False)
    return save_figure(plt, fig, path)


def _quality_vs_compute(ax, q: QualitySummary, target_flops: float | None) -> None:
    opt = [p for p in q.points if p.optimal]
    held = q.backtest.flops if q.backtest is not None else None
    cs = np.array([p.flops for p in opt])
    ys = np.array([p.quality for p in opt])
    is_held = cs == held
    ax.scatter(cs[~is_held], ys[~is_held], color="black", zorder=4, s=30, label="compute-optimal models")
    others = [p for p in q.points if not p.optimal]
    if others:
        ax.scatter(
            [p.flops for p in others], [p.quality for p in others], color="grey", s=12, alpha=0.6, label="other models"
        )
    hi = max(cs.max(), target_flops or 0.0)
    grid = np.geomspace(cs.min(), hi, 100)
    law = q.law
    ax.plot(
        grid,
        law.coefficient * grid**law.exponent,
        color="tab:blue",
        lw=1.8,
        label=f"fit: {law.coefficient:.3g} C^{law.exponent:.3f}",
    )
    if q.backtest is not None:
        bt = q.backtest
        ax.scatter(
            [bt.flops],
            [bt.actual],
            marker="s",
            facecolors="none",
            edgecolors="crimson",
            s=46,
            zorder=5,
            label="held-out budget",
        )
        ax.errorbar(
            [bt.flops],
            [bt.predicted],
            yerr=error_bar(bt.predicted, bt.predicted_ci90),
            fmt="D",
            color="crimson",
            ms=5,
            capsize=3,
            label=f"backtest prediction ({bt.relative_error:+.1%})",
        )
    pred = q.prediction
    if pred is not None and pred.value is not None:
        ax.errorbar(
            [pred.flops],
            [pred.value],
            yerr=error_bar(pred.value, pred.ci90),
            fmt="o",
            color="tab:orange",
            ms=6,
            capsize=3,
            label=f"prediction at {fmt_flops(pred.flops)}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        compact_log_axis(pyplot(), axis)
    ax.set_xlabel("C, training FLOPs")
    ax.set_ylabel(q.metric or "quality")
    ax.set_title(f"{q.metric} of the compute-optimal models (paper: FID ∝ C^{q.paper.exponent})")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, frameon=False)


def _quality_vs_loss(ax, q: QualitySummary) -> None:
    loss = np.array([p.loss for p in q.points])
    ys = np.array([p.quality for p in q.points])
    ax.scatter(loss, ys, c=np.log([p.flops for p in q.points]), cmap="viridis", s=24, zorder=4)
    if q.vs_loss is not None:
        grid = np.linspace(loss.min(), loss.max(), 50)
        v = q.vs_loss
        rho = "" if v.spearman is None else f", Spearman {v.spearman:.2f}"
        ax.plot(
            grid,
            v.coefficient * grid**v.exponent,
            color="tab:blue",
            lw=1.5,
            label=f"fit: {v.coefficient:.3g} L^{v.exponent:.2f}{rho}",
        )
        ax.legend(fontsize=7, frameon=False)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        compact_log_axis(pyplot(), axis)
    ax.set_xlabel("validation loss")
    ax.set_ylabel(q.metric or "quality")
    ax.set_title("quality vs loss (colour: budget)")
    ax.grid(True, which="both", alpha=0.25)


def accuracy_figure(metrics: dict[str, QualityMetricSummary], points: dict[str, list], path: str | Path) -> Path:
    """Each accuracy (``accuracy_*`` of ``metrics``, its scored models ``points``: QualityPoint lists) vs compute (left: compute-optimal
    models and the law in C) and vs validation loss (right: every scored model and the law in loss), its
    chance level dotted in its colour; returns ``path``."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    names = [n for n in metrics if n.startswith("accuracy") and n in points]
    for name, colour in zip(names, plt.get_cmap("tab10").colors):
        m, pts = metrics[name], points[name]
        opt = sorted((p for p in pts if p.optimal), key=lambda p: p.flops)
        cs = np.array([p.flops for p in opt])
        left.plot(cs, [p.quality for p in opt], "o", color=colour, ms=4, label=f"{name} (best {m.best_value:.3g})")
        right.plot([p.loss for p in pts], [p.quality for p in pts], "o", color=colour, ms=4, label=name)
        if m.law is not None:
            grid = np.geomspace(cs.min(), cs.max(), 50)
            left.plot(grid, m.law.coefficient * grid**m.law.exponent, color=colour, lw=1.2)
        if m.vs_loss is not None:
            loss = np.linspace(min(p.loss for p in pts), max(p.loss for p in pts), 50)
            right.plot(loss, m.vs_loss.coefficient * loss**m.vs_loss.exponent, color=colour, lw=1.2)
        for ax in (left, right):
            if m.chance is not None:
                ax.axhline(m.chance, color=colour, ls=":", lw=1)
    left.set_xscale("log")
    compact_log_axis(plt, left.xaxis)
    left.set_xlabel("C, training FLOPs")
    left.set_title("accuracy of the compute-optimal models (dotted: chance)")
    right.set_xlabel("validation loss")
    right.set_title("accuracy vs loss (all scored models)")
    for ax in (left, right):
        ax.set_ylabel("accuracy (fraction of samples)")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.25)
    left.legend(fontsize=6, frameon=False)
    return save_figure(plt, fig, path)


def steps_figure(points: list, path: str | Path) -> Path:
    """Quality (lower is better) against sampling FLOPs per image, one line per model through its step
    counts, labelled with its parameter count and budget; ``points``: rows with ``run_id``, ``budget``,
    ``params``, ``steps``, ``sampling_flops``, ``value`` and ``metric``
    (:class:`ditscale.study.quality.StepsPoint`); returns ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4.4), dpi=120)
    models = sorted({(p.params, p.budget, p.run_id) for p in points})
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(models)))
    for (params, budget, run_id), colour in zip(models, colours):
        line = sorted((p for p in points if p.run_id == run_id), key=lambda p: p.steps)
        xs, ys = [p.sampling_flops for p in line], [p.value for p in line]
        ax.plot(xs, ys, "o-", color=colour, ms=4, label=f"N = {params:.3g} params (best at {fmt_flops(budget)})")
        for p in line:
            ax.annotate(
                str(p.steps), (p.sampling_flops, p.value), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        compact_log_axis(plt, axis)
    ax.set_xlabel("sampling FLOPs per image (forward FLOPs x model calls)")
    ax.set_ylabel(points[0].metric)
    ax.set_title("sampling compute vs model compute (numbers: sampler steps)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside: lines cross
    return save_figure(plt, fig, path)


def samples_figure(rows: list[tuple], path: str | Path, per_row: int = 8) -> Path:
    """A grid of samples: one row per ``(label, uint8 images (N, H, W, 3)[, prompts])``, the first
    ``per_row`` images, each cell captioned with its prompt when the row has prompts (then at most 6 a row)."""
    plt = pyplot()
    captioned = any(len(row) > 2 and row[2] for row in rows)
    per_row = min(per_row, 6) if captioned else per_row
    cell, band = (1.5, 0.4) if captioned else (0.9, 0.0)
    fig, axes = plt.subplots(
        len(rows),
        per_row,
        figsize=(per_row * cell + 1.6, len(rows) * (cell + band) + 0.3),
        dpi=120,
        squeeze=False,
    )
    for row, line in zip(rows, axes):
        label, images, prompts = row[0], row[1], (row[2] if len(row) > 2 else None)
        for j, ax in enumerate(line):
            if j < len(images):
                ax.imshow(images[j], interpolation="nearest")
            if prompts and j < len(prompts):
                ax.set_xlabel(textwrap.fill(prompts[j], 26), fontsize=4.5, linespacing=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
        line[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    hspace = band / cell + 0.08
    fig.subplots_adjust(left=0.17, right=0.99, top=0.99, bottom=0.01 + 0.04 * captioned, wspace=0.05, hspace=hspace)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
