"""Reports of scaling studies: PNG figures and a self-contained ``report.html``.

``write_report(DIR, laws, spec, runs=runs, boot=boot)`` draws ``isoflop.png``, ``laws.png`` and ``residuals.png`` into the
study folder and writes ``report.html`` with them embedded (base64), so the page can be mailed or
opened anywhere on its own.
"""

from __future__ import annotations

from pathlib import Path

from ditscale.laws.summary import LawsSummary
from ditscale.report.figures import isoflop_figure, laws_figure, residuals_figure
from ditscale.report.html import render_html, write_html

__all__ = ["isoflop_figure", "laws_figure", "render_html", "residuals_figure", "write_html", "write_report"]


def write_report(out_dir: str | Path, laws: "dict | LawsSummary", spec=None, *, runs, boot=None) -> Path:
    """Figures and ``report.html`` of the study in ``out_dir``; returns the HTML path.

    ``laws`` is the laws.json dict (or its :class:`~ditscale.laws.summary.LawsSummary` view);
    ``runs`` (a :class:`ditscale.laws.Runs`) the runs it was fitted to and ``boot`` its bootstrap
    (for the bands; None draws no bands); ``spec`` (a study spec) supplies the target budget and the
    name when laws.json lacks them.
    """
    out_dir = Path(out_dir)
    view = laws if isinstance(laws, LawsSummary) else LawsSummary.from_dict(laws)
    target = (view.prediction.flops if view.prediction is not None else None) or getattr(spec, "target_flops", None)
    figs = [
        (isoflop_figure(runs, view, out_dir / "isoflop.png"),
         "isoFLOP curves: loss vs model size per budget, fitted parabolas, optima (stars); held-out budget dashed "
         "with the backtest prediction (red diamond, 90% interval)"),
        (laws_figure(view, out_dir / "laws.png", boot=boot, target_flops=target),
         "compute-optimal N, D and loss vs compute, 90% bootstrap bands, backtest refit (dashed), "
         "extrapolation to the target budget (orange)"),
        (residuals_figure(runs, view, out_dir / "residuals.png"),
         "residuals of the isoFLOP parabolas; grey band: seed-to-seed spread"),
    ]
    name = view.study or getattr(spec, "name", "study")
    return write_html(out_dir / "report.html", view, figs, title=f"ditscale study: {name}")
