"""The quickstart's laws from its measured runs: the runs.csv of the README's main command (a
fresh clone on the 2-core CPU; tests/data/studies/README.md) refitted exactly as `study run` fits
it, checked against the laws.json that run wrote and against the goals the quickstart must meet
(issues 9 and 21), with the goals it misses pinned as measured (docs/studies.md, "The quickstart
study"): >= 30x of compute, N_opt / D_opt exponent intervals at most 0.25 wide (Approach 2), a
loss form of record chosen by a rule that sees only the fitted budgets, backtests at every
distance from 1.4x to 8x whose actual L* and N_opt lie inside their 90% intervals, in under 15
minutes; and the verification of the prediction at 10x the sweep (verify.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REFIT_REL, assert_refit_matches, refit_committed_study

from ditscale.study import load_spec
from ditscale.study.folder import StudyFolder

DATA = Path(__file__).parent / "data" / "studies" / "quickstart"


@pytest.fixture(scope="module")
def refit(tmp_path_factory):
    """The committed study folder (spec, plan, runs.csv, wall.json, quality.csv, stored draws, laws.json;
    no run folders) analysed again as `study report --reuse-draws` does, reusing its stored bootstrap
    draws (their keys hash the runs and options they were drawn from: none is redrawn, so runs.csv and
    the spec are those of the draws, the extrapolation refits' bootstraps included). Every point fit,
    rule and backtest is recomputed; a fresh draw of the same seed gives the same draws (the
    schema round-trip test of test_structure.py redraws an analysis from scratch)."""
    return refit_committed_study(DATA, tmp_path_factory, runs=60)


def test_the_committed_study_is_the_presets_and_a_study_folder(refit):
    """The folder holds the preset's spec, and analysing it again keeps what it cannot recompute
    without its run and trunk folders (the compute, with a note) and the quality laws."""
    laws, measured = refit
    assert StudyFolder(DATA).read_spec() == load_spec("quickstart")
    assert laws["compute"] == measured["compute"]
    assert_refit_matches(laws["quality"], measured["quality"], "quality")
    assert any(w.startswith("compute kept from") for w in laws["warnings"])
    # the prediction is the committed one, with what issue 23 added: each form's degenerate flag (Approach
    # 3's floor E = 3.5e-10 sits at its bound 0; 3.9e-10 before a reanalysis on another CPU: its value at
    # the bound is solver noise), the nearest model's outside_ladder, and their warnings
    assert_refit_matches(laws["prediction"], measured["prediction"], "prediction")
    degenerate = {f["form"]: f["degenerate"] for f in measured["prediction"]["forms"]}
    assert degenerate["power"] == [] and degenerate["saturating"] == []
    assert [r.split(" is at")[0] for r in degenerate["parametric"]] == ["E = 3.5e-10"]
    assert measured["prediction"]["nearest"]["outside_ladder"] is False
    warned = measured["prediction"]["warnings"]
    assert any(w.startswith("Approach 3 L(N, D) is degenerate: E = 3.5e-10 is at its bound 0") for w in warned)
    for what in ("N_opt", "L_opt"):
        assert any(w.startswith(f"the loss forms disagree on {what} at C = 5e+13 FLOPs beyond") for w in warned)


def test_the_committed_quality_metrics_carry_their_frame(refit):
    """quality.csv holds each budget's FD and class accuracy and quality/frame.json their frame: `study
    report` fits both as it fits the primary law, each beside its chance level and real-data value."""
    laws, measured = refit
    metrics = laws["quality_metrics"]
    assert_refit_matches(metrics, measured["quality_metrics"], "quality_metrics")
    assert set(metrics) == {"fd", "accuracy_class"}
    assert metrics["fd"]["law"] == laws["quality"]["law"] and metrics["fd"]["backtest"] == laws["quality"]["backtest"]
    assert metrics["fd"]["best_value"] == 1456.4788651135925 and metrics["accuracy_class"]["best_value"] == 0.374
    accuracy = metrics["accuracy_class"]
    assert 0 < accuracy["law"]["exponent"] and accuracy["backtest"]["actual"] == 0.374
    # chance: real images with shuffled labels; floor: FD of two disjoint sets of 1000 real images, and
    # the accuracy of real images with their own labels. Issue 22's goal 3 is missed, as measured:
    assert accuracy["chance"] == 0.36 and accuracy["floor"] == 1.0 and metrics["fd"]["chance"] is None
    assert metrics["fd"]["floor"] == pytest.approx(60.28, abs=0.01)
    assert accuracy["best_value"] < 2 * accuracy["chance"] and metrics["fd"]["best_value"] > 10 * metrics["fd"]["floor"]


def width(ci: list[float]) -> float:
    return ci[1] - ci[0]


def test_refit_equals_the_measured_laws(refit):
    laws, measured = refit
    for key in ("params_law", "tokens_law", "loss_law"):
        assert laws[key]["exponent"] == pytest.approx(measured[key]["exponent"], rel=REFIT_REL)
        assert laws[key]["ci90"]["exponent"] == pytest.approx(measured[key]["ci90"]["exponent"], rel=REFIT_REL)
    for key in ("n_opt_law", "d_opt_law"):
        assert laws["parametric"][key]["exponent"] == pytest.approx(
            measured["parametric"][key]["exponent"], rel=REFIT_REL
        )
    assert laws["backtest"][0]["relative_error"] == pytest.approx(
        measured["backtest"][0]["relative_error"], rel=REFIT_REL
    )
    assert laws["loss_law_rule"]["chosen"] == measured["loss_law_rule"]["chosen"]
    for key in ("factor", "relative_error"):
        mine = [r[key] for r in laws["extrapolation_of_record"]]
        assert mine == pytest.approx([r[key] for r in measured["extrapolation_of_record"]], rel=REFIT_REL)


def test_the_quickstart_resolves_its_laws(refit):
    laws, measured = refit
    budgets = [b["flops"] for b in laws["budgets"]]
    assert max(budgets) / min(budgets) >= 30
    for key in ("params_law", "tokens_law"):
        assert width(laws[key]["ci90"]["exponent"]) <= 0.25, key
    # The smallest budgets' optimum lies below the smallest model (width 64; narrower ones are a
    # capacity cliff): those budgets are edge and, under exclude_edge: allocation, left out of the
    # N_opt and D_opt laws only.
    edge = [b["flops"] for b in laws["budgets"] if b["edge"]]
    assert edge and max(edge) < 1e12 and laws["options"]["exclude_edge"] == "allocation"
    # The form of record is chosen by the inner backtest on the fitted budgets (laws.loss_law: auto).
    (row,) = laws["backtest"]
    assert laws["loss_law_rule"]["fitted_max_flops"] < row["flops"]
    assert row["loss_law"] == laws["loss_law_of_record"] == laws["loss_law_rule"]["chosen"] == "saturating"
    assert abs(row["relative_error"]) <= 0.02 and row["within_ci90"] is True and row["n_opt_within_ci90"] is True
    assert (
        measured["compute"]["trained_flops"] < measured["compute"]["grid_flops"]
        and measured["wall_time"]["study_s"] + measured["wall_time"]["analysis_s"] < 15 * 60
    )
    assert measured["compute"]["study_mfu"] >= 0.33  # of the peak measured in the same run (issue 21, goal 7)


def test_backtests_at_every_distance(refit):
    """Goal 2 of issue 21, as measured: every row of record (1.4x to 8x) has its actual L* and N_opt
    inside the predicted 90% intervals, but not every L* within 2% (the frontier is pinned)."""
    laws, _ = refit
    rows = laws["extrapolation_of_record"]
    assert max(r["factor"] for r in rows) >= 4 and len(rows) == 21
    assert all(r["within_ci90"] and r["n_opt_within_ci90"] for r in rows)
    near = [abs(r["relative_error"]) for r in rows if r["factor"] <= 4.01]
    assert max(near) < 0.035 and 0.02 < max(near)  # goal: <= 2% at every row up to 4x (missed)


def test_the_verification_at_10x():
    """`study verify --sizes 3` at 10x the largest budget, as committed (verify.json)."""
    v = json.loads((DATA / "verify.json").read_text())
    assert v["factor"] == pytest.approx(10.0) and len(v["sizes"]) == 3
    assert v["within_ci90"] is True
    assert v["relative_error"] > 0.03  # goal |error| <= 3%: missed (the saturating law's floor)
    assert v["within_seed_noise"] is True


def test_the_blind_verification_at_20x():
    """`study verify --sizes 1` at 20x, its every-form prediction written before it trained: the law of
    record misses by +24.7% inside its interval; the power law misses by -8.0% outside its own."""
    v = json.loads((DATA / "verify-20x.json").read_text())
    forms = {f["form"]: f["loss_opt"] for f in json.loads((DATA / "predict-20x.json").read_text())["forms"]}
    assert v["factor"] == pytest.approx(20.0) and v["predicted_loss"] == forms["saturating"]["value"]
    assert v["within_ci90"] is True and v["relative_error"] == pytest.approx(0.2474, abs=1e-4)
    power = forms["power"]
    assert (power["value"] - v["actual_loss"]) / v["actual_loss"] == pytest.approx(-0.0796, abs=1e-4)
    assert not power["ci90"][0] <= v["actual_loss"] <= power["ci90"][1]


def test_the_refit_comparison_can_fail():
    """assert_refit_matches: a floor at its bound in other solver noise passes (number and text); a
    point fit off by 1e-4, an interval off by 20% or a flipped flag does not."""
    measured = json.loads((DATA / "laws.json").read_text())
    same = json.loads(json.dumps(measured))
    same["quality"]["saturating"]["E"] = 1e-20
    for form in same["prediction"]["forms"]:
        form["degenerate"] = [d.replace("3.5e-10", "6.3e-25") for d in form["degenerate"]]
    for key in ("quality", "prediction"):
        assert_refit_matches(same[key], measured[key], key)
    changes = ((("loss_law", "exponent"), 1.0001), (("extrapolation", 0, "predicted_n_opt_ci90", 0), 1.2))
    for path, value in (*changes, (("backtest", 0, "within_ci90"), None)):
        wrong = json.loads(json.dumps(measured))
        *head, last = path
        node = wrong
        for step in head:
            node = node[step]
        node[last] = (not node[last]) if value is None else node[last] * value
        with pytest.raises(AssertionError):
            assert_refit_matches(wrong[path[0]], measured[path[0]], path[0])
