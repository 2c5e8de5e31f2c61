"""Llama 3's compute-optimal tokens law, reproduced by Approach 2 on the points digitized from its Figure 2.

Reference numbers: Dubey et al. 2024, "The Llama 3 Herd of Models" (arXiv:2407.21783), Section 3.2.1,
read from text transcriptions of the paper: the optimal training tokens follow N*(C) = A C^alpha
(C in FLOPs), "We find that (alpha, A) = (0.53, 0.29)"; the legend of Figure 3 gives the fitted line
with three digits, alpha = 0.537, A = 0.299; "Extrapolation of the resulting scaling law to
3.8 x 10^25 FLOPs suggests training a 402B parameter model on 16.55T tokens". The paper's numbers do
not quite agree with each other: (0.53, 0.29) gives 10.5T tokens at 3.8e25 and (0.537, 0.299) 16.29T;
402B x 16.55T x 6 is 3.99e25 FLOPs, not 3.8e25. So the three-digit legend is the law we compare with,
and 16.55T / 402B within the 1.6% by which they miss it plus the legend's rounding.

Data: tests/data/laws/llama3_isoflops.csv (133 runs, 10 budgets 6e18 .. 1e22 FLOPs; provenance in the
README there). The points were read from the figure's vector paths, exact to 2e-8 decades of tokens
and 1e-9 in loss, so the digitization adds no error worth a tolerance; the differences left are the
paper's rounding and whatever its fit did that the figure does not show (e.g. runs left off it).

Method: Llama 3 fitted a second-degree polynomial of loss in log tokens per budget and a power law of
the minima. ditscale's parabolas are in log N; with params = C / (6 D), log N = log C - log 6 - log D
at a fixed budget C, so the parabola in log N is the parabola in log D and has the same minimum (the
test checks it against numpy's polyfit in log10 D). Options that match: least squares (robust off),
D* = C / (6 N*) (``tokens="6nd"``), every budget kept (none is at the edge of its runs, checked).

Measured: alpha = 0.536779, A = 0.299355; at 3.8e25 FLOPs D* = 16.102T tokens (-2.7% from 16.55T,
-1.2% from the legend's law) and N* = 393.3B (-2.2% from 402B). Bootstrap over runs (1000 resamples,
seed 0): alpha 90% [0.517, 0.550] (residual bootstrap: [0.523, 0.551]), which holds both 0.53 and
0.537; carried 3,800x beyond the largest budget, the resampled laws put D* at 3.8e25 FLOPs in
90% [12.30T, 19.22T] (-24%, +19%), which holds 16.55T.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ditscale.laws import FitConfig, fit_runs, read_runs_csv
from ditscale.laws.bootstrap import interval90

LLAMA3 = Path(__file__).parent / "data" / "laws" / "llama3_isoflops.csv"
FLAGSHIP_FLOPS = 3.8e25  # Llama 3 405B's pre-training compute
BUDGETS = [6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21, 1e22]


@pytest.fixture(scope="module")
def llama3():
    runs = read_runs_csv(LLAMA3)
    fit, boot = fit_runs(runs, FitConfig(method="isoflop", tokens="6nd", bootstrap=1000, seed=0))
    return runs, fit, boot


def test_llama3_points_are_figure_2(llama3):
    runs, fit, _ = llama3
    assert len(runs) == 133
    assert [b.flops for b in fit.budgets] == BUDGETS
    assert [b.n_runs for b in fit.budgets] == [16, 17, 16, 16, 18, 14, 12, 12, 6, 6]
    np.testing.assert_allclose(6 * runs.params * runs.tokens, runs.flops, rtol=1e-15)  # N = C / (6 D)
    assert not any(b.edge or b.degenerate for b in fit.budgets)


def test_isoflop_minima_are_llama3s_parabolas_in_log_tokens(llama3):
    """Llama 3's polynomial of loss in log10 D per budget has its minimum where ditscale's log-N parabola has."""
    runs, fit, _ = llama3
    label, _ = runs.budgets()
    for k, budget in enumerate(fit.budgets):
        at = label == k
        c2, c1, _ = np.polyfit(np.log10(runs.tokens[at]), runs.loss[at], 2)
        assert 10 ** (-c1 / (2 * c2)) == pytest.approx(budget.d_opt, rel=1e-9)
    assert fit.budgets[-1].d_opt == pytest.approx(2.38237e11, rel=1e-5)  # 238B tokens at 1e22 FLOPs


def test_isoflop_reproduces_llama3_tokens_law(llama3):
    _, fit, boot = llama3
    law = fit.tokens_law
    # ditscale's own result, pinned
    assert law.exponent == pytest.approx(0.5367791270945957, rel=1e-9)
    assert law.coefficient == pytest.approx(0.2993551447462813, rel=1e-7)
    assert law(FLAGSHIP_FLOPS) == pytest.approx(16.102030192e12, rel=1e-7)
    assert fit.params_law(FLAGSHIP_FLOPS) == pytest.approx(FLAGSHIP_FLOPS / (6 * law(FLAGSHIP_FLOPS)), rel=1e-9)
    # the paper's: alpha to the legend's three digits (+-0.0005) with as much again for its unseen fit details;
    # the text's two-digit 0.53 within 0.01. A moves 2.3% per 0.0005 of alpha over the 20 decades from
    # C = 1 FLOP to the budgets, hence 2.5% on the legend's 0.299.
    assert law.exponent == pytest.approx(0.537, abs=1e-3)
    assert law.exponent == pytest.approx(0.53, abs=0.01)
    assert law.coefficient == pytest.approx(0.299, rel=0.025)
    # 3.8e25 FLOPs: the paper's 16.55T sits 1.6% above its own legend law and the legend's rounding moves
    # that law by up to ~3% there, hence 5%; measured -2.7% (tokens) and -2.2% (params, C = 6ND).
    assert law(FLAGSHIP_FLOPS) == pytest.approx(16.55e12, rel=0.05)
    assert fit.params_law(FLAGSHIP_FLOPS) == pytest.approx(402e9, rel=0.05)
    lo, hi = boot.ci90("tokens_law.exponent")
    assert boot.n_failed == 0 and boot.n_resamples == 1000
    assert (lo, hi) == pytest.approx((0.5172, 0.5503), abs=5e-4)
    assert lo < 0.53 and 0.537 < hi  # both of the paper's exponents inside
    flagship = boot.samples["tokens_law.coefficient"] * FLAGSHIP_FLOPS ** boot.samples["tokens_law.exponent"]
    lo, hi = interval90(flagship)
    assert (lo, hi) == pytest.approx((12.300e12, 19.221e12), rel=1e-3)
    assert lo < 16.55e12 < hi
