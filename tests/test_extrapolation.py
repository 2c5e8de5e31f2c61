"""Backtests at every distance and the loss law of record by rule (issue 21, goals 1 and 3).

The study is the quickstart's measured runs.csv (tests/data/studies) refitted with 20 resamples and
``laws.loss_law: auto`` (no training): laws.json's ``extrapolation`` holds every form's prediction of
every held-out budget for K = 1..6 (11 budgets, at least 5 fitted), and the form of record is chosen
from the fitted budgets alone, so altering the held-out budget's losses cannot move it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ditscale.cli import main
from ditscale.errors import ConfigError
from ditscale.laws import FitConfig
from ditscale.laws.extrapolation import (
    at_distance,
    error_by_factor,
    floor_at,
    loss_law_points,
    measured_error,
    noise_floor,
    study_noise_floor,
)
from ditscale.laws.powerlaw import SaturatingLaw
from ditscale.laws.predict import backtest
from ditscale.laws.results import ExtrapolationRow, LawsSummary
from ditscale.report import extrapolation_figure, render_html
from ditscale.study import load_spec
from ditscale.study.analyze import analyze_study, fit_study, near_tie_warning
from ditscale.study.backtest import backtest_study, extrapolation_study, rule_margin
from ditscale.study.folder import StudyFolder

DATA = Path(__file__).parent / "data" / "studies" / "quickstart-p2"
STUDIES = Path(__file__).parent / "data" / "studies"
HELD_OUT = 5.12e12  # the quickstart's largest budget: its backtest of record holds it out


def make_study(out: Path, scale: float = 1.0, budget: float = HELD_OUT, overrides=("laws.loss_law=auto",)) -> Path:
    """A study folder of the quickstart's runs (20 resamples), the losses of ``budget`` times ``scale``."""
    folder = StudyFolder(out)
    folder.create()
    folder.write_spec(load_spec(str(DATA / "spec.yaml"), ["laws.bootstrap=20", *overrides]))
    with open(DATA / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if float(row["budget"]) == budget:
            row["loss"] = repr(float(row["loss"]) * scale)
    with open(folder.runs_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = make_study(tmp_path_factory.mktemp("qs_auto"))
    return out, LawsSummary.of(analyze_study(out, report=False))


# -- goal 1: backtests at every distance -----------------------------------------------------------
def test_every_refit_predicts_every_held_out_budget_by_every_form(study):
    _, laws = study
    rows = laws.extrapolation
    # 11 budgets, K = 1..6 (5 stay fitted): 1 + 2 + ... + 6 = 21 predictions per form
    assert {r.form: sum(x.form == r.form for x in rows) for r in rows} == {
        "power": 21,
        "saturating": 21,
        "parametric": 21,
    }
    assert {round(r.factor, 1) for r in rows} == {1.4, 2.0, 2.8, 4.0, 5.7, 8.0}
    budgets = sorted(b.flops for b in laws.budgets)
    for r in rows:
        assert r.fitted_max_flops in budgets[4:-1] and r.flops > r.fitted_max_flops
        assert r.factor == pytest.approx(r.flops / r.fitted_max_flops)
        assert r.relative_error == pytest.approx((r.predicted_loss - r.actual_loss) / r.actual_loss)
        lo, hi = r.predicted_ci90
        assert r.within_ci90 is (lo <= r.actual_loss <= hi)
    # the actual L* is the budget's own minimum in the fit of all budgets
    actual = {b.flops: b.loss_opt for b in laws.budgets}
    assert all(r.actual_loss == actual[r.flops] for r in rows)
    # of record: the form the rule chose for each refit (auto picks the power law on every one of them)
    assert laws.extrapolation_of_record == tuple(r for r in rows if r.form == "power")
    assert [rule.chosen for rule in laws.extrapolation_rules] == ["power"] * 6


def test_the_farthest_rows_equal_the_fit_commands_backtest(study):
    """K = 6's power-law rows are `ditscale fit isoflop runs.csv --backtest 6`'s (one home for the math)."""
    out, laws = study
    cfg = load_spec(str(DATA / "spec.yaml")).laws
    rows = backtest(StudyFolder(out).read_runs(), 6, "isoflop", **cfg.fit_options())
    mine = [r for r in laws.extrapolation if r.form == "power" and r.fitted_max_flops == 6.4e11]
    assert [r.relative_error for r in mine] == pytest.approx([r.relative_error for r in rows], rel=1e-12)
    assert mine[-1].factor == pytest.approx(8, rel=0.02) and mine[-1].relative_error == pytest.approx(-0.062, abs=5e-4)
    a3 = [r for r in laws.extrapolation if r.form == "parametric" and r.factor > 7]
    assert len(a3) == 1 and a3[0].relative_error == pytest.approx(0.149, abs=5e-4)


def test_error_by_factor_groups_distances_and_counts_hits():
    def row(factor, err, form="power", inside=True):
        return ExtrapolationRow(
            fitted_max_flops=1.0,
            flops=factor,
            factor=factor,
            form=form,
            predicted_loss=1 + err,
            predicted_ci90=[0.9, 1.1],
            actual_loss=1.0,
            relative_error=err,
            within_ci90=inside,
            predicted_n_opt=1.0,
            predicted_n_opt_ci90=None,
            actual_n_opt=None,
            n_opt_within_ci90=None,
        )

    rows = [row(1.41, 0.01), row(1.42, -0.05, inside=False), row(1.415, 0.03, "parametric"), row(4.0, 0.1)]
    groups = error_by_factor(rows)
    (near, far) = groups
    assert near == pytest.approx(1.415, rel=1e-3) and far == 4.0
    power, a3 = groups[near]
    assert (power.form, power.rows, power.within_ci90, power.within_2pct) == ("power", 2, 1, 1)
    assert (power.median, power.low, power.high) == pytest.approx((-0.02, -0.05, 0.01))
    assert (a3.form, a3.rows) == ("parametric", 1)
    at3 = measured_error(tuple(rows), 3.0)
    assert at3.measured_factor == 4.0 and at3.beyond is False
    at10 = measured_error(tuple(rows), 10.0)
    assert at10.measured_factor == 4.0 and at10.beyond is True
    assert measured_error((), 3.0) is None
    # the rows at a group's distance are the group's: what the report and the tables count hits over
    assert at_distance(near, rows) == rows[:3] and at_distance(far, rows) == rows[3:]
    assert at_distance(2.0, rows) == []


def test_predict_prints_the_measured_error_at_its_distance(study, capsys):
    out, laws = study
    assert laws.prediction.measured_error.measured_factor == pytest.approx(8, rel=0.02)
    assert laws.prediction.measured_error.beyond is True  # the target is 9.8x: beyond every backtest
    assert main(["study", "predict", str(out), "--flops", "2e13"]) == 0
    text = capsys.readouterr().out
    assert "measured backtest error at 4x (this C is 3.91x the largest budget, the nearest distance measured)" in text
    assert "isoFLOP power law        -4.5% [-8.8%, +2.2%] (3 rows;" in text
    assert "Approach 3 L(N, D)       +12.5% [+12.4%, +14.0%] (3 rows; 0 inside the 90% interval, 0 within 2%)" in text


def test_predict_frames_its_distance_with_the_noise_a_right_law_would_give(study, capsys):
    """``study predict`` (not laws.json) adds the band a right law of record would miss its C by, its
    L* scattered as the study's and checked against one run with the study's seed spread."""
    out, laws = study
    assert laws.prediction.noise_floor is None  # laws.json keeps its schema
    assert main(["study", "predict", str(out), "--flops", "2e13", "--json"]) == 0
    frame = json.loads(capsys.readouterr().out)["noise_floor"]
    points = loss_law_points(laws.budgets, laws.options.get("exclude_edge"))
    expected = floor_at(*points, frame["form"], 2e13 / points[0][-1], actual_sd=laws.noise.seed_spread)
    assert frame == expected.to_dict() and frame["form"] == laws.prediction.loss_law
    assert frame["low"] < -0.02 and frame["high"] > 0.02 and frame["actual_sd"] == laws.noise.seed_spread
    assert main(["study", "predict", str(out), "--flops", "2e13"]) == 0
    text = capsys.readouterr().out
    assert f"misses this C by [{frame['low']:+.1%}, {frame['high']:+.1%}] against one run" in text


def test_report_draws_error_against_distance(study, tmp_path):
    _, laws = study
    png = extrapolation_figure(laws, tmp_path / "extrapolation.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = render_html(laws, [], title="t")
    assert "Backtests at every distance" in page and "The loss law of record, by rule" in page
    assert "5.66x" in page and page.count("in 90%") == 3 * 6 + 1  # 6 distances x 3 forms, and the header
    floor = study_noise_floor(laws)  # the frame beside each distance: a right law of record's band
    assert "noise alone: a right law of record" in page and f"(sd {floor.sigma:.2%}; 200 draws" in page
    for b in floor.bands:
        assert f"[{b.low:+.1%}, {b.high:+.1%}], {b.within_2pct:.0%} within 2%" in page


# -- goal 3: the form of record sees only the fitted budgets ---------------------------------------
def test_auto_is_a_choice_and_other_names_are_refused():
    assert FitConfig(loss_law="auto").loss_law == "auto"
    with pytest.raises(ConfigError, match="loss_law must be one of power, saturating, parametric, got 'floor'"):
        FitConfig(loss_law="floor")


def rule_of(out: Path):
    study = fit_study(out)
    return study.rule, backtest_study(study).rows[0].loss_law


def test_the_rule_does_not_see_the_held_out_budget(study, tmp_path):
    out, laws = study
    rule, law = rule_of(out)
    assert laws.loss_law_rule == rule and laws.loss_law_of_record == law == rule.chosen == "power"
    assert rule.fitted_max_flops == 3.62e12 and len(rule.inputs) == 6  # j = 1, 2, 3 of the 10 fitted budgets
    assert max(x.flops for x in rule.inputs) == 3.62e12
    # the saturating law's floor fits 0 here: it ties with the power law, and the tie goes to power
    assert rule.scores["saturating"] == pytest.approx(rule.scores["power"], abs=1e-6)
    assert rule.scores["parametric"] > 2 * rule.scores["power"]
    points = ("laws.loss_law=auto", "laws.bootstrap=0")  # the rule uses point fits: no resamples needed
    for scale in (0.9, 1.1):
        altered = make_study(tmp_path / f"held_{scale}", scale, overrides=points)
        assert rule_of(altered) == (rule, law), scale
    # ...while the same change to a fitted budget moves the rule's inputs (the check can fail)
    fitted = make_study(tmp_path / "fitted", 1.1, budget=3.62e12, overrides=points)
    assert rule_of(fitted)[0].inputs != rule.inputs


def test_a_fixed_loss_law_has_no_rule(tmp_path):
    out = make_study(tmp_path / "qs", overrides=("laws.bootstrap=0",))
    study = fit_study(out)
    assert study.rule is None and study.spec.laws.loss_law == "parametric"
    assert backtest_study(study).rows[0].loss_law == "parametric"
    assert not math.isnan(backtest_study(study).rows[0].relative_error)
    # the rows of record: Approach 3's loss, N_opt from the isoFLOP refit (as the backtest of record)
    ext = extrapolation_study(study)
    power, a3 = ([r for r in ext.rows if r.form == form] for form in ("power", "parametric"))
    assert [r.form for r in ext.of_record] == ["parametric"] * 21 and ext.rules == ()
    assert [r.relative_error for r in ext.of_record] == [r.relative_error for r in a3]
    assert [r.predicted_n_opt for r in ext.of_record] == [r.predicted_n_opt for r in power]
    assert [r.predicted_n_opt for r in a3] != [r.predicted_n_opt for r in power]


STREAMS = Path(__file__).parent / "data" / "studies" / "quickstart-streams"


def test_refits_with_too_few_optima_add_no_rows_and_say_so(tmp_path):
    """The quickstart on per-trunk image streams (tests/data/studies/quickstart-streams): the optima of
    its six smallest budgets lie below its smallest model, so without the 3 or more largest of the
    fitted budgets fewer than 2 usable optima are left. The inner rule scores the refits it can make
    and the backtests at every distance keep K = 1-3, each skipped K one warning line (both raised
    before, stopping the whole analysis)."""
    folder = StudyFolder(tmp_path / "s")
    folder.create()
    folder.write_spec(load_spec(str(STREAMS / "spec.yaml"), ["laws.bootstrap=20"]))
    (tmp_path / "s" / "runs.csv").write_bytes((STREAMS / "runs.csv").read_bytes())
    study = fit_study(tmp_path / "s")
    assert [x.fitted_max_flops for x in study.rule.inputs] == [2.56e12, 1.81e12, 1.81e12]  # j = 1, 2 of 3
    assert study.rule.chosen == "power"
    margin = rule_margin(study.rule)  # power over saturating on 3 rows, by a near tie
    assert (margin.runner_up, margin.rows, margin.resolved) == ("saturating", 3, False) and 0 < margin.t < 1
    ext = extrapolation_study(study)
    assert sorted({r.fitted_max_flops for r in ext.of_record}) == [1.81e12, 2.56e12, 3.62e12]  # K = 1, 2, 3
    assert len(ext.of_record) == 6 and len(ext.skipped) == 3
    assert ext.skipped[0].startswith("the backtest without the 4 largest budgets has no rows: only 1 budget(s)")


def test_rule_margin_tells_a_resolved_choice_from_a_near_tie():
    """The committed quickstart's rule of record beat the power law at all 6 of its inner rows (paired t
    4.3: resolved), but its refits without the 3 and 4 largest budgets chose the saturating law by
    near ties, which the same study on another CPU (runs within 0.53%) tipped to the power law. The
    T2I study's rule had no rival (the other forms degenerate). A near tie warns with both forms'
    L_opt, a resolved choice does not."""
    laws = LawsSummary.read(STUDIES / "quickstart" / "laws.json")
    other = LawsSummary.read(STUDIES / "quickstart-other-cpu" / "laws.json")
    t2i = LawsSummary.read(STUDIES / "quickstart-t2i" / "laws.json")
    record = rule_margin(laws.loss_law_rule)
    assert (record.chosen, record.runner_up, record.rows, record.resolved) == ("saturating", "power", 6, True)
    assert record.t == pytest.approx(4.29, abs=0.01) and record.gap == pytest.approx(0.0253, abs=1e-4)
    refits = {r.fitted_max_flops: r for r in laws.extrapolation_rules}
    tipped = {r.fitted_max_flops: r for r in other.extrapolation_rules}
    for c in (1.81e12, 1.28e12):
        here, there = rule_margin(refits[c]), rule_margin(tipped[c])
        assert (here.chosen, there.chosen) == ("saturating", "power") and not (here.resolved or there.resolved)
    one_row = rule_margin(refits[6.4e11])
    assert one_row.rows == 1 and one_row.t is None and not one_row.resolved  # one row cannot resolve
    assert rule_margin(t2i.loss_law_rule) is None  # saturating and Approach 3 excluded: no rival
    forms = laws.prediction.forms
    assert near_tie_warning(laws.loss_law_rule, forms, "saturating", 5e13) is None
    line = near_tie_warning(refits[1.81e12], forms, "saturating", 5e13)
    sat, power = (next(f.loss_opt.value for f in forms if f.form == k) for k in ("saturating", "power"))
    assert line.startswith("the loss form of record, the isoFLOP saturating law, won the inner backtest")
    assert "near tie (paired t = 0.27 over 6 inner row(s)" in line and f"L_opt {sat:.4g} and {power:.4g}" in line
    assert near_tie_warning(refits[1.81e12], forms, "power", 5e13) is None  # a fallback has its own warning


# -- the noise frame: the same backtests on draws from a right law ---------------------------------------
BUDGETS = 1.6e11 * 2 ** (np.arange(11) / 2)  # the quickstart's 11 budgets, sqrt(2) apart


def saturating_points(sd: float, seed: int = 0) -> np.ndarray:
    """L* of an exact saturating law at :data:`BUDGETS`, scattered by ``exp(sd z)``."""
    law = SaturatingLaw(E=0.14, k=2680.0, gamma=0.358)  # the committed quickstart's law of record
    return law(BUDGETS) * np.exp(sd * np.random.default_rng(seed).standard_normal(len(BUDGETS)))


def test_a_right_law_without_scatter_backtests_exactly():
    floor = noise_floor(BUDGETS, saturating_points(0.0), "saturating", 5, draws=5)
    assert floor.sigma < 1e-6 and floor.all_within == 1.0 and floor.budgets == 11
    assert [b.rows for b in floor.bands] == [6, 5, 4, 3, 2, 1]
    assert [round(b.factor, 2) for b in floor.bands] == [1.41, 2.0, 2.83, 4.0, 5.66, 8.0]
    assert all(b.within_2pct == 1.0 and max(-b.low, b.high) < 1e-4 for b in floor.bands)


def test_scatter_widens_the_floor_with_distance():
    """L* scattered by 1%: sigma is measured from the points (8 dof), every band is wider than the
    last, fewer rows land within 2% the farther out, and all 18 rows up to 4x rarely do."""
    floor = noise_floor(BUDGETS, saturating_points(0.01), "saturating", 5, draws=50)
    assert 0.005 < floor.sigma < 0.02
    widths = [b.high - b.low for b in floor.bands]
    assert widths == sorted(widths) and widths[0] > 0.02
    shares = [b.within_2pct for b in floor.bands]
    assert shares[0] > 0.6 and shares[-1] < shares[0] and floor.all_within < 0.2
    again = noise_floor(BUDGETS, saturating_points(0.01), "saturating", 5, draws=50)
    assert again == floor  # seeded: the same frame on every call


def test_the_frame_at_a_target_adds_the_trained_runs_own_noise():
    points = saturating_points(0.01)
    law_only = floor_at(BUDGETS, points, "saturating", 10.0, draws=100)
    one_run = floor_at(BUDGETS, points, "saturating", 10.0, actual_sd=0.03, draws=100)
    assert law_only.low < 0 < law_only.high and law_only.actual_sd == 0.0
    assert one_run.high - one_run.low > law_only.high - law_only.low + 0.03
    farther = floor_at(BUDGETS, points, "saturating", 40.0, draws=100)
    assert farther.high - farther.low > law_only.high - law_only.low


def test_the_frame_needs_an_isoflop_form_and_a_backtest():
    points = saturating_points(0.01)
    assert noise_floor(BUDGETS, points, "parametric", 5) is None
    assert noise_floor(BUDGETS[:5], points[:5], "saturating", 5) is None  # no budget left to hold out
    assert floor_at(BUDGETS[:3], points[:3], "saturating", 10.0) is None  # 3 parameters, 3 points
    power = noise_floor(BUDGETS, points, "power", 5, draws=20)
    assert power.form == "power" and power.sigma > 0.01  # the power law's misfit counts as scatter


def test_the_committed_quickstarts_miss_at_10x_is_its_form_not_noise():
    """docs/studies.md: the saturating law of record's L* scatter 0.57% about it; a right law of that
    form, checked against one run, misses 10x by ~5% at most, where the verified run missed by +19.4%."""
    laws = LawsSummary.read(STUDIES / "quickstart" / "laws.json")
    flops, loss = loss_law_points(laws.budgets, laws.options.get("exclude_edge"))
    band = floor_at(flops, loss, laws.loss_law_of_record, 10.0, actual_sd=laws.noise.seed_spread, draws=100)
    assert band.form == "saturating" and round(band.sigma, 4) == 0.0057
    assert -0.07 < band.low < -0.03 and 0.03 < band.high < 0.07
    assert not band.low <= 0.194 <= band.high
