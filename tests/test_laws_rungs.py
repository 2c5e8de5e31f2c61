"""The off-rung rule (``laws.off_rungs: drop``, :mod:`ditscale.laws.rungs`): a size that sits off its
parabolas at every budget is left out, decided from the fitted budgets alone, and recorded.

The synthetic sweeps are a ladder of sizes (sqrt(2) apart) from the known law
:data:`ditscale.laws.simulate.QUICKSTART_LAW`: each of 11 budgets over 32x trains the 6 ladder sizes
nearest its optimum, so sizes repeat across budgets as in a study; 1% multiplicative noise, seeded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ditscale.errors import ConfigError
from ditscale.laws import FitConfig, Runs, fit_isoflop, read_runs_csv
from ditscale.laws.predict import holdout_split
from ditscale.laws.results import LawsSummary, RungRuleSummary
from ditscale.laws.rungs import MIN_SIZES, RUNG_RULE, drop_sizes, rung_rule
from ditscale.laws.simulate import QUICKSTART_FLOPS, QUICKSTART_LAW
from ditscale.report.html import _rung_section
from ditscale.study import load_spec
from ditscale.study.analyze import fit_study
from ditscale.study.backtest import extrapolation_study
from ditscale.study.folder import StudyFolder
from ditscale.study.rungs import refit_rungs, rung_summary, rungs_of_record

QUICKSTART = Path(__file__).parent / "data" / "studies" / "quickstart-p2"
LADDER = 1e5 * 2 ** (np.arange(-8, 14) / 2)
OFF = 2e5  # the ladder size every budget trains (11 of 11): the off rung of the tests
DROP = FitConfig(off_rungs="drop")


def ladder_sweep(seed: int, off: float | None = None, factor: float = 1.1, sizes: int = 6) -> Runs:
    """11 budgets x ``sizes`` ladder sizes of the known law, 1% noise; the size ``off`` (if any) has its
    loss multiplied by ``factor`` at every budget."""
    rng = np.random.default_rng(seed)
    cells = []
    for c in np.geomspace(*QUICKSTART_FLOPS, 11):
        nearest = np.argsort(np.abs(np.log(LADDER / QUICKSTART_LAW.n_opt(c))))[:sizes]
        cells += [(c, n) for n in LADDER[np.sort(nearest)]]
    flops, params = (np.array(x) for x in zip(*cells, strict=True))
    tokens = flops / (6 * params)
    loss = QUICKSTART_LAW.loss(params, tokens) * np.exp(0.01 * rng.standard_normal(len(flops)))
    if off is not None:
        loss = np.where(np.isclose(params, off), loss * factor, loss)
    return Runs(flops=flops, params=params, tokens=tokens, loss=loss, budget=flops)


def n_opt_exponent(runs: Runs) -> float:
    return float(fit_isoflop(runs).params_law.exponent)


def scaled(runs: Runs, mask: np.ndarray, factor: float) -> Runs:
    return dataclasses.replace(runs, loss=np.where(mask, runs.loss * factor, runs.loss))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_off_rung_is_dropped_and_the_exponent_moves_back(seed):
    runs = ladder_sweep(seed, off=OFF)
    rule = rung_rule(runs)
    assert rule.dropped == (OFF,) and rule.rule == RUNG_RULE
    first, last = rule.steps[0], rule.steps[-1]
    assert first.p_value < 0.01 and first.dropped == OFF and last.dropped is None and last.p_value >= 0.01
    picked = next(s for s in first.sizes if s.params == OFF)
    assert picked.qualifies and picked.budgets == 11 and picked.above >= 9 and picked.offset > 0.05
    assert picked.t == max((s.t for s in first.sizes if s.qualifies), key=abs)
    truth = QUICKSTART_LAW.n_opt_exponent
    kept, dropped = n_opt_exponent(runs), n_opt_exponent(rule.apply(runs))
    assert kept - truth > 0.07  # the +10% rung bends the parabolas: N_opt's exponent +0.09-0.12
    assert abs(dropped - truth) < 0.03 and abs(dropped - truth) < abs(kept - truth) / 3
    assert not np.isin(rule.apply(runs).params, [OFF]).any() and len(rule.apply(runs)) == len(runs) - 11
    assert "N = 2e+05" in rule.message


@pytest.mark.parametrize("seed", range(8))
def test_a_clean_sweep_drops_nothing(seed):
    runs = ladder_sweep(seed)
    rule = rung_rule(runs)
    assert rule.dropped == () and len(rule.steps) == 1 and rule.steps[0].p_value >= 0.01
    assert rule.apply(runs) is runs and rule.message is None and "passes" in rule.stopped


def test_a_rung_whose_drop_would_leave_3_sizes_is_kept_and_said_so():
    runs = ladder_sweep(0, off=OFF, factor=1.3, sizes=MIN_SIZES)
    rule = rung_rule(runs)
    assert rule.dropped == () and rule.steps[0].p_value < 0.01
    assert "N = 2e+05 qualifies" in rule.stopped and f"fewer than {MIN_SIZES} sizes: kept" in rule.stopped


def test_the_choice_ignores_the_held_out_budget():
    """``rungs_of_record`` decides on the budgets the backtest of record fits: scaling the held-out
    budget's losses by 0.9 or 1.1 leaves the rule's inputs and choice unchanged; altering a fitted
    budget changes the inputs (so the test can fail)."""
    runs = ladder_sweep(3, off=OFF)
    largest = runs.budget == runs.budget.max()
    base, rule = rungs_of_record(runs, 1, DROP)
    assert rule.dropped == (OFF,) and rule.fitted_max_flops < runs.budget.max()
    assert len(base) == len(runs) - 11  # applied to every budget, the held-out one included
    for factor in (0.9, 1.1):
        moved, other = rungs_of_record(scaled(runs, largest, factor), 1, DROP)
        assert other.to_dict() == rule.to_dict()
        assert np.array_equal(moved.params, base.params) and not np.array_equal(moved.loss, base.loss)
    fitted = (runs.budget == np.unique(runs.budget)[-2]) & np.isclose(runs.params, OFF)
    _, changed = rungs_of_record(scaled(runs, fitted, 1.1), 1, DROP)
    assert changed.steps[0].p_value != rule.steps[0].p_value
    # an extrapolation refit decides on its own fitted budgets, blind to what it holds out
    sub = holdout_split(runs, 3)[0]
    fit_sub, own = refit_rungs(sub, DROP)
    assert own.fitted_max_flops == sub.budget.max() and own.dropped == (OFF,) and len(fit_sub) < len(sub)
    assert refit_rungs(sub, FitConfig()) == (sub, None) and rungs_of_record(runs, 1, FitConfig()) == (runs, None)


def test_the_option_is_validated_and_keep_is_the_default():
    assert FitConfig().off_rungs == "keep" and load_spec("quickstart").laws.off_rungs == "keep"
    assert load_spec("quickstart", ["laws.off_rungs=drop"]).laws.off_rungs == "drop"
    with pytest.raises(ConfigError, match="off_rungs must be one of keep, drop"):
        FitConfig(off_rungs="auto")


def test_quickstart_keeps_its_width_48_rung_because_it_brackets_the_optima():
    """The committed quickstart (holdout 1): on its 10 fitted budgets the width-48 one-head rung
    (56,640 params) qualifies (its own offset +0.20 in log loss, t = 8.4; width 64's mean residual is
    the larger, -3.9%, bent by the cliff), but without it 6 budgets' optima fall to the edge of the
    sizes left, so the rule keeps it and says why (the unguarded drop: docs/laws.md)."""
    runs = read_runs_csv(QUICKSTART / "runs.csv")
    left, rule = rungs_of_record(runs, 1, DROP)
    assert rule.dropped == () and left is runs and rule.fitted_max_flops == pytest.approx(3.62e12, rel=1e-2)
    assert rule.stopped.startswith("N = 5.664e+04 qualifies (t = 8.36) but without it 6 budget(s) (from 1.6e+11")
    (step,) = rule.steps
    assert step.p_value < 1e-6 and step.dropped is None
    w48, w64 = step.sizes[0], step.sizes[1]
    assert w48.offset == pytest.approx(0.200, abs=0.002) and w48.above == w48.budgets == 9 and w48.qualifies
    assert abs(w64.mean_residual) > abs(w48.mean_residual) and abs(w48.t) > abs(w64.t)
    # without the guard it would be dropped, and the F-test of the rest would pass
    rest = drop_sizes(runs, [56640.0])
    assert len(rest) == len(runs) - int(np.isclose(runs.params, 56640).sum()) and drop_sizes(runs, []) is runs
    assert rung_rule(holdout_split(rest, 1)[0]).steps[0].p_value == pytest.approx(0.73, abs=0.01)
    record = rung_summary(rule)
    assert isinstance(record, RungRuleSummary) and RungRuleSummary.from_dict(record.to_dict()) == record


def write_sweep(folder: StudyFolder, runs: Runs) -> None:
    lines = ["run_id,budget,seed,params,tokens,flops,loss"]
    lines += [
        f"r{i},{runs.budget[i]:.17g},0,{runs.params[i]:.17g},{runs.tokens[i]:.17g},{runs.flops[i]:.17g},{runs.loss[i]:.17g}"
        for i in range(len(runs))
    ]
    folder.runs_csv.write_text("\n".join(lines) + "\n")


def test_a_study_fits_without_the_off_rungs_and_laws_json_records_the_rule(tmp_path):
    folder = StudyFolder(tmp_path)
    folder.create()
    spec = load_spec(str(QUICKSTART / "spec.yaml"), ["laws.off_rungs=drop", "laws.bootstrap=0"])
    folder.write_spec(spec)
    runs = ladder_sweep(0, off=OFF)
    write_sweep(folder, runs)
    study = fit_study(tmp_path, spec)
    assert study.rungs.dropped == (OFF,) and len(study.all_runs) == len(study.rows) == len(runs)
    assert not np.isin(study.runs.params, [OFF]).any() and study.structure.p_value > 0.01
    assert any(w.startswith("laws.off_rungs: drop left out N = 2e+05") for w in study.warnings)
    keep = fit_study(tmp_path, dataclasses.replace(spec, laws=dataclasses.replace(spec.laws, off_rungs="keep")))
    assert keep.rungs is None and keep.all_runs is None and len(keep.runs) == len(runs)
    assert keep.structure.p_value < 1e-6 and len(study.fit.budgets) == len(keep.fit.budgets) == 11
    truth = QUICKSTART_LAW.n_opt_exponent
    assert abs(study.fit.params_law.exponent - truth) < abs(keep.fit.params_law.exponent - truth) / 3
    assert "left out N = 2e+05; the F-test passes" in _rung_section(rung_summary(study.rungs))[0]  # the report's line
    old = LawsSummary.read(QUICKSTART / "laws.json")
    assert old.rung_rule is None and old.extrapolation_rung_rules is None and "rung_rule" not in old.to_dict()


def test_every_extrapolation_refit_decides_on_its_own_budgets(tmp_path):
    """The study's rule ignores its held-out budget (its losses x0.9 or x1.1: the same rule), and each
    refit of the backtests at every distance records the rule of its own fitted budgets."""
    folder = StudyFolder(tmp_path)
    folder.create()
    spec = load_spec(str(QUICKSTART / "spec.yaml"), ["laws.off_rungs=drop", "laws.bootstrap=0"])
    folder.write_spec(spec)
    runs = ladder_sweep(1, off=OFF)
    write_sweep(folder, runs)
    study = fit_study(tmp_path, spec)
    for factor in (0.9, 1.1):
        write_sweep(folder, scaled(runs, runs.budget == runs.budget.max(), factor))
        assert fit_study(tmp_path, spec).rungs == study.rungs
    write_sweep(folder, runs)
    ext = extrapolation_study(study)
    budgets = np.unique(runs.budget)
    assert [r.fitted_max_flops for r in ext.rung_rules] == list(budgets[-2:3:-1])  # K = 1 .. 6
    assert all(r.dropped == (OFF,) for r in ext.rung_rules) and ext.rung_rules[0] == study.rungs
    for k, rule in enumerate(ext.rung_rules, start=1):
        assert rule == refit_rungs(holdout_split(runs, k)[0], DROP)[1]
