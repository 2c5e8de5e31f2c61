"""The text-to-image quickstart's laws from its measured runs: the study folder of `ditscale study run
--preset quickstart-t2i` (the 2-core CPU; tests/data/studies/README.md) refitted exactly as `study run`
fits it and checked against the laws.json that run wrote, and against issue 22's goals, the missed
ones pinned as measured (docs/studies.md, "The text-to-image quickstart"; docs/quality.md): >= 30x
of compute, N_opt / D_opt exponent intervals at most 0.25 wide, a `quality_metrics` section whose
FD and per-attribute accuracies each carry a law, a backtest, a chance level and a floor."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REFIT_REL, assert_refit_matches, refit_committed_study

from ditscale.study import load_spec
from ditscale.study.folder import StudyFolder

DATA = Path(__file__).parent / "data" / "studies" / "quickstart-t2i"
ATTRIBUTES = ("shape", "colour", "size", "count", "position", "background")


@pytest.fixture(scope="module")
def refit(tmp_path_factory):
    """The committed folder analysed again as `study report --reuse-draws` does, reusing its stored
    bootstrap draws (none redrawn: runs.csv and the spec are those of the draws); every point fit, rule
    and backtest is recomputed."""
    return refit_committed_study(DATA, tmp_path_factory, runs=58)


def width(ci: list[float]) -> float:
    return ci[1] - ci[0]


def test_the_committed_study_is_the_presets(refit):
    laws, measured = refit
    spec = load_spec("quickstart-t2i")
    assert StudyFolder(DATA).read_spec() == spec
    assert spec.family.model["conditioning"] == "text" and spec.family.model["block"] == "in_context"
    assert spec.diffusion["kind"] == "flow" and spec.train["text_encoder"] == "word"
    assert_refit_matches(laws["quality_metrics"], measured["quality_metrics"], "quality_metrics")
    assert_refit_matches(laws["prediction"], measured["prediction"], "prediction")


def test_refit_equals_the_measured_laws(refit):
    laws, measured = refit
    for key in ("params_law", "tokens_law", "loss_law"):
        assert laws[key]["exponent"] == pytest.approx(measured[key]["exponent"], rel=REFIT_REL)
        assert laws[key]["ci90"]["exponent"] == pytest.approx(measured[key]["ci90"]["exponent"], rel=REFIT_REL)
    assert laws["loss_law_rule"]["chosen"] == measured["loss_law_rule"]["chosen"]
    mine = [r["relative_error"] for r in laws["extrapolation_of_record"]]
    assert mine == pytest.approx([r["relative_error"] for r in measured["extrapolation_of_record"]], rel=REFIT_REL)


def test_goal_one_bars_as_measured(refit):
    """Span >= 30x and both Approach 2 exponent intervals <= 0.25 wide, the N_opt interval excluding 0
    (met); the extrapolation goals of issue 21 are missed (pinned); 13 min 29 s from a fresh clone on
    the idle machine (goal 15 minutes: met; the first study, whose word encoder had a layer, took 14
    min 28 s to 16 min 49 s: docs/studies.md)."""
    laws, measured = refit
    budgets = [b["flops"] for b in laws["budgets"]]
    assert max(budgets) / min(budgets) >= 30
    n, d = laws["params_law"]["ci90"]["exponent"], laws["tokens_law"]["ci90"]["exponent"]
    assert width(n) <= 0.25 and width(d) <= 0.25
    assert 0 < n[0] and d[0] > 0.5  # the optimum grows with compute; data takes most of it
    rows = laws["extrapolation_of_record"]
    assert max(r["factor"] for r in rows) >= 4 and len(rows) == 21
    assert max(abs(r["relative_error"]) for r in rows if r["factor"] <= 4.01) > 0.2  # goal 2%: missed
    wall = measured["wall_time"]  # study_s: training, then sampling and scoring; analysis_s: the fits
    assert 13 * 60 < wall["study_s"] + wall["analysis_s"] < 14 * 60


def test_every_quality_metric_carries_its_frame(refit):
    """FD (the primary metric, `quality`) and one accuracy per caption attribute, plus all of them
    right at once, each with its chance level (real images, shuffled captions) and floor (real
    images with their own captions; FD: two disjoint real halves at the samples' count)."""
    laws, measured = refit
    metrics = laws["quality_metrics"]
    assert set(metrics) == {"fd", "accuracy_all", *(f"accuracy_{a}" for a in ATTRIBUTES)}
    assert laws["quality"]["metric"] == "fd" and metrics["fd"]["law"] == laws["quality"]["law"]
    assert_refit_matches(laws["quality"]["law"], measured["quality"]["law"], "quality.law")
    assert metrics["fd"]["chance"] is None and 10 < metrics["fd"]["floor"] < 100
    for name in ("fd", "accuracy_shape", "accuracy_colour", "accuracy_position", "accuracy_background"):
        m = metrics[name]
        assert m["law"] and m["backtest"] and m["vs_loss"], name  # every score is > 0 at every budget
        if name != "fd":
            assert 0 < m["chance"] < m["best_value"] <= m["floor"] <= 1, name


def test_recognisable_samples_as_measured(refit):
    """Issue 22's goal 3 on the T2I quickstart, missed and pinned: read at the prompted cell, the top
    budget's best model draws the prompted colour (3.3x its chance given the position) but its shape
    is chance there, and its FD is 14x the real-vs-real floor (goal 10x). (Its position 0.615 is what
    the 5.6 of 9 cells the evaluator finds occupied give by themselves: docs/quality.md.)"""
    metrics = refit[0]["quality_metrics"]
    position, shape, colour = (metrics[f"accuracy_{a}"] for a in ("position", "shape", "colour"))
    given = {
        name: (m["best_value"] / position["best_value"], m["chance"] / position["chance"])
        for name, m in (("shape", shape), ("colour", colour))
    }
    assert given["colour"][0] > 2 * given["colour"][1] and given["shape"][0] < 1.1 * given["shape"][1]
    assert shape["best_value"] > 2 * shape["chance"]  # the literal reading passes: position does the work
    assert metrics["fd"]["best_value"] > 10 * metrics["fd"]["floor"]
