"""Reports of scaling studies: PNG figures and a self-contained ``report.html``.

``write_report(DIR, laws, spec, runs=runs, boot=boot)`` draws ``isoflop.png``, ``laws.png`` and ``residuals.png``
(``extrapolation.png`` when laws.json has backtests at every distance, and, for a study that scored
its samples, ``quality.png`` and ``samples.png``; ``quality_steps.png`` after ``study quality-steps``) into the study
folder and writes ``report.html`` with them embedded (base64), so the page can be mailed or opened
anywhere on its own.
"""

from __future__ import annotations

from pathlib import Path

from ditscale.laws.results import LawsSummary
from ditscale.report.figures import extrapolation_figure, isoflop_figure, laws_figure, residuals_figure
from ditscale.report.html import render_html, write_html
from ditscale.report.quality import accuracy_figure, quality_figure, samples_figure, steps_figure

__all__ = [
    "accuracy_figure",
    "extrapolation_figure",
    "isoflop_figure",
    "laws_figure",
    "quality_figure",
    "render_html",
    "residuals_figure",
    "samples_figure",
    "steps_figure",
    "write_html",
    "write_report",
]


def write_report(
    out_dir: str | Path,
    laws: "dict | LawsSummary",
    spec=None,
    *,
    runs,
    boot=None,
    samples: list | None = None,
    metric_points: dict | None = None,
    steps_points: list | None = None,
    verified: list[tuple[float, float]] | None = None,
) -> Path:
    """Figures and ``report.html`` of the study in ``out_dir``; returns the HTML path.

    ``laws`` is the laws.json dict (or its :class:`~ditscale.laws.results.LawsSummary` record, as read strictly);
    ``runs`` (a :class:`ditscale.laws.Runs`) the runs it was fitted to and ``boot`` its bootstrap
    (for the bands; None draws no bands); ``spec`` (a study spec) supplies the target budget and the
    name when laws.json lacks them; ``samples``: ``(label, uint8 images (N, H, W, 3))`` rows of the
    sample grid (one per budget; a third item, the prompts, captions each cell); ``metric_points``: each
    quality metric's scored models (``{name: [QualityPoint]}``) for the accuracy figure; ``steps_points``:
    ``quality_steps.csv``'s rows (:func:`~ditscale.report.quality.steps_figure`) for the sampling-compute figure;
    ``verified``: ``(C in FLOPs, loss)`` of each model ``study verify`` trained at its predicted N_opt,
    drawn on the loss panel beside the extrapolation.
    """
    out_dir = Path(out_dir)
    view = LawsSummary.of(laws)
    target = (view.prediction.flops if view.prediction is not None else None) or getattr(spec, "target_flops", None)
    figs = [
        (
            isoflop_figure(runs, view, out_dir / "isoflop.png"),
            "isoFLOP curves: loss vs model size per budget, fitted parabolas, optima (stars); held-out budget dashed "
            "with the backtest prediction (red diamond, 90% interval)",
        ),
        (
            laws_figure(view, out_dir / "laws.png", boot=boot, target_flops=target, verified=verified),
            "compute-optimal N, D and loss vs compute, 90% bootstrap bands, backtest refit (dashed), "
            "extrapolation to the target budget (orange); the loss panel draws every fitted loss form "
            "(power law blue, saturating green, Approach 3 red dash-dot), its legend naming the law of record"
            + ("; purple stars: the loss of the model trained there by `study verify`" if verified else ""),
        ),
        (
            residuals_figure(runs, view, out_dir / "residuals.png"),
            "residuals of the isoFLOP parabolas; grey band: seed-to-seed spread",
        ),
    ]
    if view.extrapolation:
        figs.append(
            (
                extrapolation_figure(view, out_dir / "extrapolation.png"),
                "backtests at every distance: each form's L* error vs held-out C / largest fitted C; "
                "filled: inside its 90% interval",
            )
        )
    if view.quality is not None and view.quality.law is not None:
        figs.append(
            (
                quality_figure(view, out_dir / "quality.png", target),
                f"sample quality ({view.quality.metric}) vs compute, with the backtest and the extrapolation, "
                "and vs validation loss",
            )
        )
    accuracies = [n for n in (view.quality_metrics or {}) if n.startswith("accuracy") and n in (metric_points or {})]
    if accuracies:
        figs.append(
            (
                accuracy_figure(view.quality_metrics, metric_points, out_dir / "accuracy.png"),
                (
                    f"accuracy ({', '.join(accuracies)}) vs compute and vs validation loss; dotted: chance level "
                    "(real images given shuffled conditions)"
                ),
            )
        )
    if steps_points:
        figs.append(
            (
                steps_figure(steps_points, out_dir / "quality_steps.png"),
                (
                    "sampling compute vs model compute: quality against sampling FLOPs per image (forward FLOPs x "
                    "model calls), one line per model through its sampler step counts; a small model's line "
                    "reaching below a larger model's at equal FLOPs means more steps make up for size"
                ),
            )
        )
    if samples:
        figs.append(
            (
                samples_figure(samples, out_dir / "samples.png"),
                (
                    "samples of each budget's compute-optimal model (smallest budget at the top), each captioned "
                    "with its prompt for a text-conditional study"
                ),
            )
        )
    name = view.study or getattr(spec, "name", "study")
    return write_html(out_dir / "report.html", view, figs, title=f"ditscale study: {name}")
