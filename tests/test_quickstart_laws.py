"""The quickstart's laws from its measured runs: the runs.csv of the README's main command (a
fresh clone on the 2-core CPU; tests/data/studies/README.md) refitted exactly as `study run` fits
it, checked against the laws.json that run wrote and against the goals the quickstart must meet
(issue 9): >= 30x of compute, N_opt / D_opt exponent intervals at most 0.25 wide from both the
isoFLOP approach and Approach 3, a backtest whose actual N_opt lies inside its predicted interval
and whose loss of record is within 2% (Approach 3, the preset's laws.loss_law; the isoFLOP power
law misses, pinned here), an N_opt
prediction at the target narrower than 4x, study_mfu >= 0.3 in under 15 minutes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ditscale.study import load_spec
from ditscale.study.analyze import analyze_study
from ditscale.study.folder import StudyFolder

DATA = Path(__file__).parent / "data" / "studies" / "quickstart"


@pytest.fixture(scope="module")
def refit(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    folder = StudyFolder(out)
    folder.create()
    folder.write_spec(load_spec("quickstart"))
    shutil.copy(DATA / "runs.csv", folder.runs_csv)
    return analyze_study(out, report=False), json.loads((DATA / "laws.json").read_text())


def width(ci: list[float]) -> float:
    return ci[1] - ci[0]


def test_refit_equals_the_measured_laws(refit):
    laws, measured = refit
    for key in ("params_law", "tokens_law", "loss_law"):
        assert laws[key]["exponent"] == pytest.approx(measured[key]["exponent"], rel=1e-9)
        assert laws[key]["ci90"]["exponent"] == pytest.approx(measured[key]["ci90"]["exponent"], rel=1e-9)
    for key in ("n_opt_law", "d_opt_law"):
        assert laws["parametric"][key]["exponent"] == pytest.approx(measured["parametric"][key]["exponent"], rel=1e-6)
    assert laws["backtest"][0]["relative_error"] == pytest.approx(measured["backtest"][0]["relative_error"], rel=1e-9)


def test_the_quickstart_resolves_its_laws(refit):
    laws, measured = refit
    budgets = [b["flops"] for b in laws["budgets"]]
    assert max(budgets) / min(budgets) >= 30
    for key in ("params_law", "tokens_law"):
        assert width(laws[key]["ci90"]["exponent"]) <= 0.25, key
    for key in ("n_opt_law", "d_opt_law"):
        assert width(laws["parametric"][key]["ci90"]["exponent"]) <= 0.25, key
    (row,), (a3,) = laws["backtest"], laws["parametric"]["backtest"]
    assert row["n_opt_within_ci90"] is True and a3["n_opt_within_ci90"] is True
    # The loss of record is Approach 3's (laws.loss_law: parametric): within 2% and inside its interval.
    assert row["loss_law"] == "parametric" and laws["loss_law_of_record"] == "parametric"
    assert abs(row["relative_error"]) <= 0.02 and row["within_ci90"] is True
    assert (
        row["relative_error"] == a3["relative_error"]
        and laws["prediction"]["loss_opt"] == laws["parametric"]["prediction"]["loss_opt"]
    )
    # The isoFLOP power law in C misses the held-out L* (-6.65%): L_opt flattens towards Approach 3's
    # floor E, which a pure power law cannot follow; the loss_bends measurement says so (it warns
    # only under loss_law: power). docs/studies.md, "The loss law of record".
    assert row["forms"]["power"]["relative_error"] < -0.02 and laws["parametric"]["E"] > 0.7 * row["actual_loss"]
    assert laws["loss_bend"]["change"] > 0.25 * abs(laws["loss_law"]["exponent"]) and laws["loss_bend"]["t"] > 2.5
    lo, hi = laws["prediction"]["n_opt"]["ci90"]
    assert hi / lo < 4
    assert (
        measured["compute"]["study_mfu"] >= 0.3
        and measured["compute"]["trained_flops"] < measured["compute"]["grid_flops"]
    )
    assert measured["wall_time"]["study_s"] < 15 * 60
