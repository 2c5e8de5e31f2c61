"""Outputs that say how far they can be trusted (issue 23, items 2, 8, 9, 10): a plan whose bootstrap
cannot give intervals, degenerate fits, far extrapolations, forms that disagree, targets beyond the
family's ladder, and the smaller CLI items. Small in-process checks on real records and real
fitting code; the quickstart's own refit is checked in tests/test_quickstart_laws.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest


from ditscale.cli import main
from ditscale.laws.degenerate import DEGENERATE_DECADES, form_degenerate
from ditscale.laws.predict import extrapolation_warning, forms_disagreement
from ditscale.laws.results import EstimateSummary, FormSummary, LawsSummary, LossLawRule
from ditscale.study import load_spec, spec_from_dict
from ditscale.study.plan import interval_warning

STUDIES = Path(__file__).parent / "data" / "studies"


# -- item 2: a plan whose bootstrap cannot give intervals --------------------------------------------
def test_study_plan_warns_when_the_bootstrap_will_withhold_every_interval(tmp_path, capsys):
    from test_study_spec import BASE

    spec = {**BASE, "models_per_budget": 3}
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    assert main(["study", "plan", str(path), "--csv"]) == 0
    err = capsys.readouterr().err
    assert "warning: models_per_budget is 3 with no seed replicates (repeat.budgets: 0)" in err
    assert "the case bootstrap will give no intervals" in err
    residual = spec_from_dict({**spec, "laws": {"bootstrap_kind": "residual"}})
    assert "from the scatter of the budgets' optima alone" in interval_warning(residual)
    assert interval_warning(spec_from_dict({**spec, "repeat": {"budgets": 1, "seeds": [1]}})) is None
    assert interval_warning(spec_from_dict({**spec, "laws": {"bootstrap": 0}})) is None
    assert interval_warning(spec_from_dict({**spec, "models_per_budget": 4})) is None


# -- item 8: degenerate fits -------------------------------------------------------------------------
def test_degenerate_rule_on_the_committed_and_the_issues_fits():
    qs = LawsSummary.read(STUDIES / "quickstart" / "laws.json")
    smallest = min(b.loss_opt for b in qs.budgets)
    par = qs.parametric
    values = {k: getattr(par, k) for k in ("E", "A", "B", "alpha", "beta")}
    (reason,) = form_degenerate("parametric", values, par.ci90, smallest)
    assert re.match(r"E = [1-9]\.\de-10 is at its bound 0 ", reason)  # 3.5e-10 here: its value at the bound is noise
    sat = qs.loss_law_saturating  # E 0.139 [0.042, 0.21], k's interval 6.0 decades: a fit
    assert form_degenerate("saturating", {"E": sat.E, "k": sat.k, "gamma": sat.gamma}, sat.ci90, smallest) == ()
    p2 = LawsSummary.read(STUDIES / "quickstart-p2" / "laws.json")  # the widest committed interval: k, 7.6 decades
    s2 = p2.loss_law_saturating
    assert form_degenerate("saturating", {"E": s2.E, "k": s2.k, "gamma": s2.gamma}, s2.ci90, smallest) == ()
    # issue 23's own study: a saturating floor at 4.1e-22 and Approach 3's A in [1.4e7, 4.6e24]
    (floor,) = form_degenerate("saturating", {"E": 4.1e-22, "k": 3.0, "gamma": 0.1}, None, 0.2)
    assert floor.startswith("E = 4.1e-22 is at its bound 0")
    ci = {"A": [1.4e7, 4.6e24]}
    (wide,) = form_degenerate("parametric", {**values, "E": 0.1}, ci, 0.2)
    assert wide == "A's 90% interval [1.4e+07, 4.6e+24] spans 17.5 decades (more than 10): the data do not fix it"
    assert DEGENERATE_DECADES == 10
    # the T2I quickstart's Approach 3: a floor above a loss its runs reached (E 0.122, runs down to 0.106)
    t2i = LawsSummary.read(STUDIES / "quickstart-t2i" / "laws.json").parametric
    above = form_degenerate("parametric", {k: getattr(t2i, k) for k in values}, None, 0.1058)
    assert above == (
        "E = 0.122 lies above the smallest loss fitted, 0.106: the form cannot reach a loss the runs already reached",
    )
    assert form_degenerate("saturating", {"E": 0.1057, "k": 3.0, "gamma": 0.1}, None, 0.1058) == ()


def test_the_auto_rule_never_chooses_a_degenerate_form():
    """The T2I quickstart: on the budgets the rule sees (all but the largest) Approach 3 scored best (11%
    against the power law's 24%) but its floor lies above a measured loss and the saturating floor sits
    at 0: both are listed as not eligible, and the power law is of record; the class quickstart's rule
    has nothing to exclude and keeps the saturating law."""
    from ditscale.study.analyze import fit_study

    with pytest.warns(UserWarning, match="kept as recorded"):
        t2i, qs = fit_study(STUDIES / "quickstart-t2i"), fit_study(STUDIES / "quickstart")
    rule = t2i.rule
    assert min(rule.scores, key=rule.scores.get) == "parametric" and rule.chosen == "power"
    assert set(rule.excluded) == {"saturating", "parametric"}
    assert rule.excluded["parametric"][0].startswith("E = 0.125 lies above the smallest loss fitted, 0.115")
    # the floor's value at its bound is solver noise (9.1e-19 where the study ran, 6.3e-25 on another CPU)
    assert re.match(r"E = \d\.\de-(1\d|2\d) is at its bound 0 ", rule.excluded["saturating"][0])
    assert qs.rule.excluded is None and qs.rule.chosen == "saturating"
    assert LossLawRule.from_dict(rule.to_dict()) == rule and "excluded" not in qs.rule.to_dict()


def test_committed_laws_json_still_load_and_round_trip_exactly():
    for path in sorted(STUDIES.glob("*/laws.json")):
        data = json.loads(path.read_text())
        laws = LawsSummary.read(path)
        assert laws.to_dict() == {"schema_version": 1, **data}, path  # p2 predates the version key
        if path.parent.name == "quickstart-p2":  # written before the rule; the quickstarts were run since
            assert all(f.degenerate is None for f in laws.prediction.forms or ())
            assert laws.prediction.nearest.outside_ladder is None


def test_percent_ticks_carry_the_precision_their_data_need():
    from ditscale.report.figures import percent_decimals, percent_formatter, pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [-4e-4, 1e-4, 4e-4])  # residuals of a few hundredths of a percent
    ax.yaxis.set_major_formatter(percent_formatter(plt))
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    plt.close(fig)
    assert len(set(labels)) == len(labels) > 2 and "+0.02%" in labels and "+0.0%" not in labels
    assert percent_decimals([-0.02, 0.0, 0.02]) == 0 and percent_decimals([0.0025, 0.005]) == 2


# -- item 9: far predictions, forms that disagree, a target beyond the ladder -------------------------
def test_the_extrapolation_warning_grows_with_distance_and_names_the_form():
    near = extrapolation_warning(195 * 5.12e12, 5.12e12, form="Approach 3 L(N, D)")
    far = extrapolation_warning(2e8 * 5.12e12, 5.12e12, form="Approach 3 L(N, D)")
    assert near == (
        "extrapolating 2e+02x (2.3 decades of compute) beyond the largest trained budget 5.1e+12 FLOPs; "
        "intervals assume Approach 3 L(N, D) holds that far"
    )
    assert far.startswith("extrapolating 2e+08x (8.3 decades of compute)")
    assert "Approach 3 L(N, D) was never tested" in far and "orders of magnitude, not predictions" in far
    middle = extrapolation_warning(3e4 * 5.12e12, 5.12e12)
    assert "understate the error" in middle and "the isoFLOP power law" in middle
    assert "power law" not in near and extrapolation_warning(99 * 5.12e12, 5.12e12) is None


def test_forms_that_disagree_beyond_their_intervals_warn():
    def form(name, n, n_ci, loss, loss_ci):
        return FormSummary(
            form=name,
            name=name,
            n_opt=EstimateSummary(value=n, ci90=n_ci),
            loss_opt=EstimateSummary(value=loss, ci90=loss_ci),
        )

    power = form("power law", 8.2e6, [6e6, 1.1e7], 0.10, [0.09, 0.11])
    par = form("Approach 3", 4.5e8, [2e8, 9e8], 0.105, [0.10, 0.12])
    (warning,) = forms_disagreement(1e21, (power, par))
    assert warning.startswith("the loss forms disagree on N_opt at C = 1e+21 FLOPs beyond their 90% intervals")
    assert "(54.9x)" in warning and "L_opt" not in warning  # the losses' intervals overlap
    assert forms_disagreement(1e21, (power, power)) == ()


def test_a_target_beyond_the_ladder_says_so():
    from ditscale.study.analyze import _nearest, family_members
    from ditscale.study.plan import base_model_config

    spec = load_spec("quickstart")  # fixed rungs: the largest, d2-w256-h8, has 1.6M non-embedding params
    base = base_model_config(spec)
    members = family_members(spec, 8.2e6, base)
    largest = members[-1]
    assert largest[0] == "d2-w256-h8"
    far = _nearest(spec, base, members, largest[0], 8.2e6)
    assert far.in_ladder is True and far.outside_ladder is True
    assert _nearest(spec, base, members, largest[0], 1.2 * largest[1]).outside_ladder is False


# -- item 10: the smaller items ----------------------------------------------------------------------
def test_sample_names_the_classes_an_exported_folder_records(tmp_path):
    from ditscale.generate.request import exported_class_names
    from ditscale.models.config import DiTConfig
    from ditscale.models.diffusers_io import pipeline_index

    index = pipeline_index(DiTConfig(num_classes=3), ["cat", "dog", "fox"])  # as `ditscale export` writes it
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert exported_class_names(str(tmp_path)) == ["cat", "dog", "fox"]
    assert exported_class_names(str(tmp_path / "missing")) is None


def test_the_quickstart_plan_is_a_cpu_study(capsys):
    assert main(["study", "plan", "--preset", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert "a study sized for a CPU" in out and "GPU-hours" not in out.split("a study sized")[0]
    assert "--slurm" not in out and "run it on Slurm" not in out
    assert main(["study", "plan", "--preset", "quickstart", "--gpu", "A100"]) == 0
    assert "run it on Slurm" in capsys.readouterr().out


# -- every warning line starts the same way ----------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*have no folder")  # the committed study keeps runs.csv, not the runs
def test_every_command_starts_its_warning_lines_alike(tmp_path, capsys):
    """A plan's, a study's and a fit's warnings (the commands' own lines and Python warnings through
    the CLI's format) all read ``ditscale: warning: ...``, as errors read ``ditscale: error: ...``."""
    study = tmp_path / "quickstart"
    shutil.copytree(STUDIES / "quickstart", study, ignore=shutil.ignore_patterns("rerun", "quality"))
    commands = (
        ["study", "plan", "--preset", "quickstart"],  # the prior's optimum below the ladder (plan warnings)
        ["study", "predict", str(study), "--flops", "1e13"],  # off-centre grids, edge optima (laws warnings)
        ["fit", "isoflop", str(study / "runs.csv")],  # the same, raised as Python warnings
    )
    for argv in commands:
        assert main(argv) == 0
        lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert len(lines) >= 3, argv
        assert all(line.startswith("ditscale: warning: ") for line in lines), (argv, lines)
