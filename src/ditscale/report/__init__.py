"""Reports of scaling studies: PNG figures and a self-contained ``report.html``.

``write_report(DIR, laws)`` draws ``isoflop.png``, ``laws.png`` and ``residuals.png`` into the
study folder and writes ``report.html`` with them embedded (base64), so the page can be mailed or
opened anywhere on its own.
"""

from __future__ import annotations

from pathlib import Path

from ditscale.report.figures import isoflop_figure, laws_figure, residuals_figure
from ditscale.report.html import render_html, write_html

__all__ = ["isoflop_figure", "laws_figure", "render_html", "residuals_figure", "write_html", "write_report"]


def write_report(out_dir: str | Path, laws: dict, spec=None, *, runs=None, boot=None) -> Path:
    """Figures and ``report.html`` of the study in ``out_dir``; returns the HTML path.

    ``laws`` is the laws.json dict; ``runs`` (a :class:`ditscale.laws.Runs`) and ``boot`` (its
    bootstrap, for the bands; None draws no bands) are read / recomputed from the folder when
    ``runs`` is not given.
    """
    out_dir = Path(out_dir)
    if runs is None:
        from ditscale.study.analyze import fit_study

        runs, _, boot, _ = fit_study(out_dir)
    target = (laws.get("prediction") or {}).get("flops") or getattr(spec, "target_flops", None)
    figs = [
        (isoflop_figure(runs, laws, out_dir / "isoflop.png"),
         "isoFLOP curves: loss vs model size per budget, fitted parabolas, optima (stars); held-out budget dashed "
         "with the backtest prediction (red diamond, 90% interval)"),
        (laws_figure(laws, out_dir / "laws.png", boot=boot, target_flops=target),
         "compute-optimal N, D and loss vs compute, 90% bootstrap bands, backtest refit (dashed), "
         "extrapolation to the target budget (orange)"),
        (residuals_figure(runs, laws, out_dir / "residuals.png"),
         "residuals of the isoFLOP parabolas; grey band: seed-to-seed spread"),
    ]
    name = laws.get("study") or getattr(spec, "name", "study")
    return write_html(out_dir / "report.html", laws, figs, title=f"ditscale study: {name}")
