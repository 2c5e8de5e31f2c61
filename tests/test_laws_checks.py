"""isoFLOP point checks (ditscale.laws.checks) on crafted grids sampled from a known
L(N, D) = E + A/N^alpha + B/D^beta: a well-centred sweep raises nothing; an off-centre grid, a
drifting-centre sweep, a near-duplicate size and an outlier each raise exactly their own check;
minima that bend (a floor E, or a steepening loss) raise loss_bends under the pure power law."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_laws import TRUE, analytic_n_opt, isoflop_grid, law_loss, write_csv

from ditscale.cli import main
from ditscale.laws import Runs, fit_isoflop, isoflop_checks
from ditscale.laws.checks import KINDS, budget_grids, loss_bend, loss_bend_checks, standardized_residuals

BUDGETS = tuple(np.logspace(17, 19, 5))


def sweep(offsets, k=7, span=math.log(16), noise=0.0, seed=0) -> Runs:
    """k sizes per budget, log-spaced over a factor 16, the grid centred at N_opt(C) * exp(offset * span)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, offset in zip(BUDGETS, offsets):
        for x in np.linspace(-span / 2, span / 2, k) + offset * span:
            n = analytic_n_opt(c) * math.exp(x)
            rows.append((c, n, c / (6 * n), law_loss(n, c / (6 * n)) * math.exp(noise * rng.standard_normal())))
    return Runs(*np.array(rows).T)


def checks_of(runs: Runs, loss_law: str = "parametric"):
    """The fit and checks of ``runs``; by default the grid checks only (the law's loss bends towards
    its floor E, which ``loss_law: power`` would flag: see the loss_bends tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_isoflop(runs)
    return fit, isoflop_checks(runs, fit, loss_law)


def kinds(checks) -> list[str]:
    return [c.kind for c in checks]


def with_row(runs: Runs, n: float, c: float, factor: float = 1.0, seed=None) -> Runs:
    """``runs`` plus one run of ``n`` params at budget ``c`` (loss from the law times ``factor``)."""
    d = c / (6 * n)
    seeds = None if seed is None else np.append(np.zeros(len(runs), int), seed)
    return Runs(
        np.append(runs.flops, c),
        np.append(runs.params, n),
        np.append(runs.tokens, d),
        np.append(runs.loss, law_loss(n, d) * factor),
        seed=seeds,
    )


def test_well_centred_sweeps_raise_nothing():
    assert checks_of(sweep([0.0] * 5))[1] == []
    assert checks_of(sweep([0.0] * 5, noise=0.005, seed=3))[1] == []
    fit, checks = checks_of(isoflop_grid())  # the grid of tests/test_laws.py
    assert checks == []
    offsets = [g.offset for g in budget_grids(isoflop_grid(), fit)]
    assert max(abs(u) for u in offsets) < 0.01  # N* sits at the centre


def test_off_centre_grid_raises_only_off_centre():
    fit, checks = checks_of(sweep([0.35] * 5))  # every grid centred 0.35 of its span above N_opt
    assert kinds(checks) == ["off_centre"] * 5
    assert [c.budget for c in checks] == [b.flops for b in fit.budgets]
    assert "off-centre grid" in checks[0].message and "-35% of the grid's log-N span" in checks[0].message
    offsets = [g.offset for g in budget_grids(sweep([0.35] * 5), fit)]
    assert offsets == pytest.approx([-0.347] * 5, abs=2e-3)  # constant: no drift
    # only the budgets beyond 25% are flagged
    _, checks = checks_of(sweep([0.0, 0.0, 0.3, 0.0, 0.0]))
    assert kinds(checks) == ["off_centre"] and checks[0].budget == BUDGETS[2]


def test_drifting_centres_raise_only_drift():
    # offsets from -0.15 to +0.15: no budget off-centre, but N*/centre moves 30% of a span
    runs = sweep(np.linspace(-0.15, 0.15, 5))
    fit, checks = checks_of(runs)
    assert kinds(checks) == ["drifting_centres"] and checks[0].budget is None
    assert "moves -30% of a grid's log-N span" in checks[0].message
    assert kinds(checks_of(sweep(np.linspace(-0.15, 0.15, 5), noise=0.003, seed=1))[1]) == ["drifting_centres"]
    assert checks_of(sweep(np.linspace(-0.08, 0.08, 5)))[1] == []  # 16% drift: within the limit


def test_near_duplicate_sizes_and_copies_but_not_seed_replicates():
    runs = sweep([0.0] * 5)
    n = runs.params[9]  # a size of budget 2
    _, checks = checks_of(with_row(runs, n * 1.01, runs.flops[9]))
    assert kinds(checks) == ["near_duplicate"] and checks[0].budget == runs.flops[9]
    assert "differ by 1.0% (< 2%)" in checks[0].message
    assert checks_of(with_row(runs, n * 1.03, runs.flops[9]))[1] == []  # 3% apart: a size of its own
    replicate = with_row(runs, n, runs.flops[9], factor=1.002, seed=1)  # same N, another seed
    assert checks_of(replicate)[1] == []
    copy = with_row(runs, n, runs.flops[9], seed=0)  # same N, same seed: the run counted twice
    (check,) = checks_of(copy)[1]
    assert check.kind == "near_duplicate" and "2 runs of" in check.message and "share seed 0" in check.message


def test_outlier_raises_only_outlier():
    runs = sweep([0.0] * 5, noise=0.003, seed=1)
    loss = runs.loss.copy()
    loss[17] *= 1.05  # budget 2, middle of its grid: 5% off (about 17 noise SDs)
    bad = Runs(runs.flops, runs.params, runs.tokens, loss, run_id=np.array([f"r{i}" for i in range(len(runs))]))
    _, checks = checks_of(bad)
    assert kinds(checks) == ["outlier"] and checks[0].budget == runs.flops[17]
    assert "run r17 (" in checks[0].message and "robust SDs" in checks[0].message
    assert checks_of(Runs(runs.flops, runs.params, runs.tokens, runs.loss))[1] == []  # without it: nothing


def test_standardized_residuals_have_the_noise_scale():
    # noise around exact parabolas in log N: the standardized residuals have the noise's SD (raw
    # residuals are smaller, by sqrt(1 - leverage), most of all at the grid's ends). 200 budgets of
    # 5 sizes leave 400 residual dof: the SD is known to about 4%.
    rng = np.random.default_rng(0)
    rows = []
    for c in np.logspace(17, 19, 200):
        for x in np.linspace(-1, 1, 5):
            rows.append((c, 1e7 * math.exp(x), c / 6e7, math.exp(1.0 + 0.1 * x * x + 0.01 * rng.standard_normal())))
    runs = Runs(*np.array(rows).T, budget=np.array(rows)[:, 0])
    label, budgets = runs.budgets()
    z = standardized_residuals(runs, label, budgets)
    assert len(budgets) == 200 and np.std(z) == pytest.approx(0.01, rel=0.1)
    three = runs.take(np.isin(np.round(np.log(runs.params / 1e7), 6), [-1.0, 0.0, 1.0]))
    assert np.isnan(standardized_residuals(three, *three.budgets())).all()  # 3 sizes: no residual


def test_checks_reach_cli_json_and_warnings(tmp_path, capsys):
    runs = sweep([0.35] * 5)
    rows = zip(runs.flops, runs.params, runs.tokens, runs.loss)
    f = write_csv(tmp_path / "runs.csv", ["flops", "params", "tokens", "loss"], rows)
    assert main(["fit", "isoflop", str(f), "--json", "--bootstrap", "0"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert [c["kind"] for c in out["checks"]] == ["off_centre"] * 5 and set(out["checks"][0]) == {
        "budget",
        "kind",
        "message",
    }
    assert cap.err.count("ditscale: warning: budget ") == 5 and "off-centre grid" in cap.err
    assert set(KINDS) == {"off_centre", "drifting_centres", "near_duplicate", "outlier", "loss_bends"}


# -- loss_bends: the L_opt law the minima follow ---------------------------------------------------
def wide_sweep(p: dict, noise: float = 0.0, seed: int = 0) -> Runs:
    """9 budgets over 4 decades (1e17-1e21), 7 sizes each centred on N_opt, losses from the law ``p``."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.logspace(17, 21, 9):
        for x in np.linspace(-math.log(4), math.log(4), 7):
            n = analytic_n_opt(c, p) * math.exp(x)
            rows.append((c, n, c / (6 * n), law_loss(n, c / (6 * n), p) * math.exp(noise * rng.standard_normal())))
    return Runs(*np.array(rows).T)


def test_loss_bends_flags_a_floor_only_for_the_power_law():
    """A law with a floor E bends the minima in log-log (the local exponent flattens); a law without
    one gives exactly a power law in C (L_opt ~ C^(-alpha beta / (alpha + beta)), Chinchilla's closed
    form), so nothing bends whatever the noise-free isoFLOP parabolas' bias."""
    floor = wide_sweep(TRUE, noise=0.003, seed=1)
    fit, checks = checks_of(floor, loss_law="power")
    bend = loss_bend(fit)
    assert bend.first_exponent < bend.last_exponent < 0 and bend.t > 2.5
    (check,) = [c for c in checks if c.kind == "loss_bends"]
    assert (
        check.budget is None and "flattens towards a floor" in check.message and "loss_law: parametric" in check.message
    )
    assert f"{bend.first_exponent:.3f}" in check.message and f"{bend.last_exponent:.3f}" in check.message
    assert "loss_bends" not in kinds(checks_of(floor, loss_law="parametric")[1])
    assert "loss_bends" not in kinds(checks_of(floor, loss_law="saturating")[1])
    no_floor = wide_sweep({**TRUE, "E": 0.0})
    fit, checks = checks_of(no_floor, loss_law="power")
    s = TRUE["alpha"] + TRUE["beta"]
    assert fit.loss_law.exponent == pytest.approx(-TRUE["alpha"] * TRUE["beta"] / s, rel=1e-3)
    assert abs(loss_bend(fit).change) < 1e-3 and checks == []


def test_loss_bends_steepening_and_noise():
    """A loss that steepens is flagged with its own advice; noisy minima on a straight power law
    (1% scatter) are not flagged; fewer than 4 budgets measure nothing."""
    budgets = np.logspace(11, 13, 9)
    x = np.log(budgets) - np.log(budgets).mean()

    def fit_of(log_l):
        points = [
            SimpleNamespace(flops=float(c), loss_opt=float(math.exp(y)), degenerate=False)
            for c, y in zip(budgets, log_l)
        ]
        return SimpleNamespace(budgets=points, loss_law=SimpleNamespace(exponent=float(np.polyfit(x, log_l, 1)[0])))

    steep = fit_of(-0.1 * x - 0.02 * x * x + 0.001 * np.sin(7 * x))
    (check,) = loss_bend_checks(steep)
    assert "steepens" in check.message and "over-predicts" in check.message
    rng = np.random.default_rng(0)
    assert loss_bend_checks(fit_of(-0.1 * x + 0.01 * rng.standard_normal(9))) == []
    assert loss_bend(SimpleNamespace(budgets=steep.budgets[:3], loss_law=steep.loss_law)) is None


def test_loss_bends_on_the_committed_quickstart():
    """The quickstart's minima (tests/data/studies/quickstart) flatten from a local exponent of -0.28 to
    -0.16 over 32x of compute: the reason it predicts L_opt with Approach 3 (docs/studies.md)."""
    from ditscale.laws import read_runs_csv

    runs = read_runs_csv(Path(__file__).parent / "data" / "studies" / "quickstart-p2" / "runs.csv")
    fit, checks = checks_of(runs, loss_law="power")
    bend = loss_bend(fit)
    assert bend.first_exponent == pytest.approx(-0.278, abs=0.002) and bend.last_exponent == pytest.approx(
        -0.162, abs=0.002
    )
    assert bend.t == pytest.approx(2.94, abs=0.01)
    assert "loss_bends" in kinds(checks) and "loss_bends" not in kinds(checks_of(runs)[1])
