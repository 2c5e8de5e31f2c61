"""Quality laws (ditscale.laws.quality): power laws of sample quality in compute and in loss, the backtest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ditscale.errors import DataError
from ditscale.laws.quality import PAPER_QUALITY_LAW, QualityPoint, fit_quality, fit_with_bootstrap

BUDGETS = [1e11 * 2 ** (i / 2) for i in range(10)]


def points_on(law, noise: float = 0.0, seed: int = 0, loss=lambda c: 2.0 * c**-0.05) -> list[QualityPoint]:
    """The compute-optimal model of each budget with quality ``law(C)`` (times log-normal noise), plus
    a worse, non-optimal model at each budget."""
    rng = np.random.default_rng(seed)
    out = []
    for i, c in enumerate(BUDGETS):
        q = law(c) * math.exp(noise * rng.standard_normal())
        out.append(QualityPoint(f"opt{i}", c, q, loss(c), 1e5))
        out.append(QualityPoint(f"off{i}", c, 3 * q, 1.1 * loss(c), 3e5, optimal=False))
    return out


def test_exact_power_law_is_recovered_with_tight_intervals_and_a_zero_backtest_error():
    law = lambda c: 2.2566e6 * c**-0.234  # noqa: E731  (Liang et al.'s FID law)
    fit = fit_quality(points_on(law), metric="fid", resamples=200, target_flops=1e14)
    out = fit.to_dict()
    assert out["law"]["exponent"] == pytest.approx(-0.234, abs=1e-9)
    assert out["law"]["coefficient"] == pytest.approx(2.2566e6, rel=1e-6)
    lo, hi = out["law"]["ci90"]["exponent"]
    assert lo == pytest.approx(-0.234, abs=1e-9) and hi == pytest.approx(-0.234, abs=1e-9)
    bt = out["backtest"]
    assert bt["flops"] == BUDGETS[-1] and bt["fitted_budgets"] == 9
    assert bt["relative_error"] == pytest.approx(0.0, abs=1e-9) and bt["within_ci90"]
    assert out["prediction"]["value"] == pytest.approx(law(1e14), rel=1e-9)
    assert out["paper"] == PAPER_QUALITY_LAW
    # the law goes through the optimal models only: the non-optimal ones (3x worse) would shift it
    assert len(out["points"]) == 20 and sum(p["optimal"] for p in out["points"]) == 10


def test_noisy_points_give_intervals_that_hold_the_truth_and_widen_with_noise():
    law = lambda c: 50.0 * (c / 1e11) ** -0.3  # noqa: E731
    narrow = fit_quality(points_on(law, noise=0.02, seed=1), metric="fd", resamples=500).to_dict()["law"]["ci90"][
        "exponent"
    ]
    wide = fit_quality(points_on(law, noise=0.10, seed=1), metric="fd", resamples=500).to_dict()["law"]["ci90"][
        "exponent"
    ]
    assert narrow[0] < -0.3 < narrow[1] and wide[0] < -0.3 < wide[1]
    assert (wide[1] - wide[0]) > 2 * (narrow[1] - narrow[0])


def test_quality_against_loss_and_the_saturating_form():
    loss = lambda c: 0.2 + 3.0 * c**-0.1  # noqa: E731
    sat = lambda c: 5.0 + 4e3 * c**-0.3  # noqa: E731
    out = fit_quality(points_on(sat, loss=loss), metric="fd", resamples=100).to_dict()
    assert out["saturating"]["E"] == pytest.approx(5.0, rel=1e-4)
    assert out["saturating"]["gamma"] == pytest.approx(0.3, rel=1e-4)
    assert 0.5 < out["vs_loss"]["spearman"] < 1  # the 3x-worse off-optimum models break the order a little
    optimal_only = [p for p in points_on(sat, loss=loss) if p.optimal]
    vs_loss = fit_quality(optimal_only, metric="fd", resamples=100).to_dict()["vs_loss"]
    assert vs_loss["spearman"] == pytest.approx(1.0) and vs_loss["exponent"] > 0  # quality falls with the loss


def test_power_law_of_quality_in_loss_is_exact_for_exact_data():
    x = np.array([0.3, 0.35, 0.4, 0.5, 0.6])
    law = fit_with_bootstrap(x, 7.0 * x**2.5, resamples=50)
    assert law.law.exponent == pytest.approx(2.5) and law.law.coefficient == pytest.approx(7.0)
    value, ci = law.predict(0.45)
    assert value == pytest.approx(7.0 * 0.45**2.5) and ci[0] == pytest.approx(value) and ci[1] == pytest.approx(value)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(DataError, match="2 or more budgets"):
        fit_quality([QualityPoint("a", 1e12, 3.0, 0.5, 1e5)], metric="fd")
    with pytest.raises(DataError, match="positive"):
        fit_with_bootstrap(np.array([1e12, 2e12]), np.array([1.0, 0.0]))


def test_no_backtest_without_enough_budgets_to_refit():
    law = lambda c: 10 * c**-0.2  # noqa: E731
    pts = [QualityPoint(str(i), c, law(c), 0.5, 1e5) for i, c in enumerate(BUDGETS[:3])]
    assert fit_quality(pts, metric="fd", resamples=10).backtest is None
    assert fit_quality(pts, metric="fd", holdout=0, resamples=10).backtest is None
