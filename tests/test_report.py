"""Report: figures from a synthetic study (no training) and the self-contained HTML page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ditscale.laws import Runs, bootstrap, fit_isoflop
from ditscale.report import isoflop_figure, laws_figure, render_html, residuals_figure
from ditscale.report.figures import budget_parabola
from ditscale.study.spec import PAPER_LAWS

# laws.json is read strictly (ditscale.laws.results): the synthetic laws below fill the keys they do not
# set from the committed quickstart's laws.json
BASE = json.loads((Path(__file__).parent / "data" / "studies" / "quickstart" / "laws.json").read_text())


def synthetic_runs() -> Runs:
    """Exact parabolas in log N: L = L*(C) + 0.05 (log N - log N*(C))^2 with N* = 0.1 C^0.5,
    L* = 20 C^-0.1, D = C / (6 N) tokens; 5 sizes per budget spanning a factor 8."""
    rows = []
    for c in (1e10, 4e10, 1.6e11):
        n_star, l_star = 0.1 * c**0.5, 20 * c**-0.1
        for k in np.linspace(-1.5, 1.5, 5) * math.log(2):
            n = n_star * math.exp(k)
            rows.append((c, n, c / (6 * n), l_star + 0.05 * k * k))
    r = np.array(rows)
    return Runs(flops=r[:, 0], params=r[:, 1], tokens=r[:, 2], loss=r[:, 3], budget=r[:, 0])


def test_budget_parabola_recovers_the_coefficients():
    x = np.log([1e3, 3e3, 1e4, 3e4, 1e5])
    loss = 2.0 - 0.3 * x + 0.02 * x * x
    assert budget_parabola(x, loss) == pytest.approx([2.0, -0.3, 0.02], rel=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_figures_and_html(tmp_path):
    runs = synthetic_runs()
    fit = fit_isoflop(runs)
    boot = bootstrap(runs, fit, 50, 0)
    # exact data: the fit recovers the generating laws
    assert fit.params_law.exponent == pytest.approx(0.5, abs=1e-9)
    assert fit.loss_law.exponent == pytest.approx(-0.1, abs=1e-9)
    laws = {**BASE, "study": "synthetic", **fit.to_dict(boot), "paper": PAPER_LAWS, "warnings": ["an example warning"]}
    laws.update(parametric=None, quality=None)
    laws["budgets"][-1]["held_out"] = True
    predicted = 20 * 1.6e11**-0.1 * 1.015
    laws["backtest"] = [
        {
            **BASE["backtest"][0],
            "flops": 1.6e11,
            "predicted_loss": predicted,
            "predicted_ci90": [predicted * 0.99, predicted * 1.01],
            "actual_loss": 20 * 1.6e11**-0.1,
            "relative_error": 0.015,
        }
    ]
    laws["backtest_fit"] = fit.to_dict()
    laws["prediction"] = {
        **BASE["prediction"],
        "flops": 1e13,
        "n_opt": {"value": 3.2e5, "ci90": [2e5, 5e5]},
        "d_opt": {"value": 5e6, "ci90": [4e6, 6e6]},
        "images_opt": {"value": 7.8e4, "ci90": [6e4, 9e4]},
        "loss_opt": {"value": 1.0, "ci90": [0.9, 1.1]},
        "nearest": {**BASE["prediction"]["nearest"], "name": "d2-w64-h8", "params": 100_096},
    }
    laws["noise"] = {
        **BASE["noise"],
        "seed_spread": 0.01,
        "seed_groups": 2,
        "residual_spread": 0.012,
        "residual_to_seed_ratio": 1.2,
    }
    laws["wall_time"] = {
        **BASE["wall_time"],
        "study_s": 123.0,
        "calls": 1,
        "runs_wall_s_sum": 200.0,
        "runs_cpu_s_sum": 190.0,
    }
    figs = [
        (isoflop_figure(runs, laws, tmp_path / "isoflop.png"), "isoflop"),
        (laws_figure(laws, tmp_path / "laws.png", boot=boot, target_flops=1e13), "laws"),
        (residuals_figure(runs, laws, tmp_path / "residuals.png"), "residuals"),
    ]
    for png, _ in figs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    html = render_html(laws, figs, title="ditscale study: synthetic")
    assert html.count("data:image/png;base64,") == 3
    assert "<span class='ok'>+1.50%</span>" in html  # within 2%: green
    assert "0.5681" in html and "186.9" in html and "-0.0273" in html  # the paper's laws
    assert "0.5000" in html  # our params exponent
    assert "d2-w64-h8 (100,096 params)" in html
    assert "warning: an example warning" in html
    laws["backtest"][0]["relative_error"] = -0.031
    assert "<span class='bad'>-3.10%</span>" in render_html(laws, figs, title="t")


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (1.6e11, 5.12e12, ["2e11", "5e11", "1e12", "2e12", "5e12"]),  # 1.5 decades: decades, 2 and 5
        (0.21, 0.4, ["0.3", "0.4"]),  # under half a decade: every tick
        (1.6e11, 5.12e13, ["1e12", "1e13"]),  # 2.5 decades: the decades alone
    ],
)
def test_short_log_axes_get_brief_labels_that_do_not_run_together(lo, hi, expected):
    from ditscale.report.figures import compact_log_axis, compact_number, pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([lo, hi], [1, 2])
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    compact_log_axis(plt, ax.xaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)]
    ticks = list(ax.get_xticks(minor=False)) + list(ax.get_xticks(minor=True))
    plt.close(fig)
    shown = sorted((t, s) for t, s in zip(ticks, labels) if s and lo <= t <= hi)
    assert [s for _, s in shown] == expected
    assert [compact_number(v) for v in (2e11, 1e-4, 0.25, 50.0, 0.0)] == ["2e11", "1e-4", "0.25", "50", ""]
