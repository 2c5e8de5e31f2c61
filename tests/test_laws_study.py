"""A study's laws.json with the fits that hold up: Approach 3 with bootstrap intervals (and its
prediction at the target), the isoFLOP point checks, the backtest of N_opt; read back through
LawsSummary and shown in the report. The study folder is synthetic (runs.csv from a known L(N, D),
no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_laws import TRUE
from test_laws_checks import BUDGETS, sweep

from ditscale.errors import ConfigError
from ditscale.laws.results import LawsSummary
from ditscale.report import render_html
from ditscale.study import folder as folder_module
from ditscale.study import spec_from_dict
from ditscale.study.analyze import analyze_study, predict_study
from ditscale.study.folder import StudyFolder

SPEC = {
    "name": "synthetic",
    "data": {"name": "shapes", "image_size": 8},
    "diffusion": {"kind": "flow"},
    "family": {
        "widths": [8, 16, 32],
        "depth": 1,
        "head_dim": 8,
        "model": {"patch_size": 2, "block": "in_context", "learn_sigma": False},
    },
    "budgets": list(BUDGETS),
    "models_per_budget": 3,
    "laws": {"bootstrap": 100, "parametric_method": "varpro"},
    "workers": 0,
    "target_flops": 1e21,
}


def synthetic_study(out, spec: dict, report: bool = False) -> dict:
    """Write the 5-budget sweep (0.5% noise, the middle budget's grid off-centre) as the runs.csv
    of a study folder with ``spec``, and analyse it (no training; with ``report``, report.html too);
    returns laws.json."""
    folder = StudyFolder(out)
    folder.create()
    folder.write_spec(spec_from_dict(spec))
    runs = sweep([0.0, 0.0, 0.35, 0.0, 0.0], noise=0.005, seed=2)
    with open(folder.runs_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "budget", "flops", "params", "tokens", "loss", "seed"])
        for i in range(len(runs)):
            w.writerow([f"r{i}", runs.flops[i], runs.flops[i], runs.params[i], runs.tokens[i], runs.loss[i], 0])
    return analyze_study(out, report=report)


@pytest.fixture(scope="module")
def laws(tmp_path_factory):
    """laws.json of a 5-budget sweep (0.5% noise) whose middle budget's grid is off-centre."""
    out = tmp_path_factory.mktemp("study")
    return synthetic_study(out, SPEC), out


def test_loss_law_saturating_drives_prediction_and_backtest(tmp_path, laws):
    """``laws.loss_law: saturating``: the backtest and ``predict`` give L_opt from E + k C^-gamma;
    N_opt and the laws themselves are those of the default study."""
    power, _ = laws
    sat = synthetic_study(tmp_path, {**SPEC, "laws": {**SPEC["laws"], "loss_law": "saturating"}})
    (row,), (row_p,) = sat["backtest"], power["backtest"]
    law = sat["backtest_fit"]["loss_law_saturating"]
    c = row["flops"]
    assert row["predicted_loss"] == pytest.approx(law["E"] + law["k"] * c ** -law["gamma"], rel=1e-12)
    assert row["predicted_loss"] != pytest.approx(row_p["predicted_loss"], rel=1e-6)
    assert row["predicted_n_opt"] == row_p["predicted_n_opt"] and row["actual_loss"] == row_p["actual_loss"]
    assert sat["loss_law"] == power["loss_law"] and sat["params_law"] == power["params_law"]
    full = sat["loss_law_saturating"]
    pred = predict_study(tmp_path, 1e21, with_backtest=False)
    assert pred["loss_opt"]["value"] == pytest.approx(full["E"] + full["k"] * 1e21 ** -full["gamma"], rel=1e-12)
    with pytest.raises(ConfigError, match="loss_law must be one of power, saturating, parametric, got 'floor'"):
        spec_from_dict({**SPEC, "laws": {"loss_law": "floor"}})


def test_loss_law_parametric_drives_prediction_and_backtest(tmp_path, laws):
    """``laws.loss_law: parametric``: the backtest of record and ``predict`` give L_opt from Approach 3
    (refitted without the held-out budget for the backtest), N_opt from the isoFLOP laws; every row
    carries all three forms' errors, and the report and ``study predict`` name the form."""
    power, _ = laws
    par = synthetic_study(tmp_path, {**SPEC, "laws": {**SPEC["laws"], "loss_law": "parametric"}})
    (row,), (row_p,), (row_3,) = par["backtest"], power["backtest"], par["parametric"]["backtest"]
    assert row["loss_law"] == "parametric" and row_p["loss_law"] == "power"
    for key in ("predicted_loss", "predicted_ci90", "relative_error", "within_ci90"):
        assert row[key] == row_3[key] and row["forms"]["parametric"][key] == row_3[key]
        assert row["forms"]["power"][key] == row_p[key]
    assert set(row["forms"]) == {"power", "saturating", "parametric"}
    assert row["predicted_n_opt"] == row_p["predicted_n_opt"] != row_3["predicted_n_opt"]
    assert abs(row["relative_error"]) < 0.01  # the sweep's true law is L(N, D): Approach 3 holds
    assert par["loss_law_of_record"] == "parametric" and power["loss_law_of_record"] == "power"
    assert par["prediction"]["loss_opt"] == par["parametric"]["prediction"]["loss_opt"]  # no 6ND column: C as given
    assert par["prediction"]["n_opt"] == power["prediction"]["n_opt"]
    assert par["loss_bend"] == power["loss_bend"] and par["loss_bend"]["first_flops"] == BUDGETS[0]
    assert not any("laws.loss_law" in w for w in par["warnings"])
    page = render_html(par, [], title="t")
    assert "L_opt (validation loss; Approach 3 L(N, D))" in page and "Every loss form refitted" in page


def test_study_predict_names_the_loss_form(tmp_path, capsys):
    """``study predict`` prints L_opt with its form, and each backtest row's errors of every form."""
    from ditscale.cli import main

    synthetic_study(tmp_path, {**SPEC, "laws": {**SPEC["laws"], "loss_law": "parametric"}})
    capsys.readouterr()
    assert main(["study", "predict", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    pred = predict_study(tmp_path, 1e21)
    assert f"L_opt  {pred['loss_opt']['value']:.4f}" in out and "(Approach 3 L(N, D))" in out
    row = pred["backtest"][0]
    errors = ", ".join(
        f"{name} {row['forms'][k]['relative_error']:+.2%}"
        for k, name in (
            ("power", "isoFLOP power law"),
            ("saturating", "isoFLOP saturating law"),
            ("parametric", "Approach 3 L(N, D)"),
        )
    )
    assert f"    every form: {errors}" in out


def test_loss_law_falls_back_with_a_warning(tmp_path, monkeypatch):
    """Approach 3 that does not converge: L_opt and the backtest come from the power law, with a warning."""
    from ditscale.study import fitted

    def diverges(*args, **kwargs):
        raise ValueError("Approach 3 did not converge")

    monkeypatch.setattr(fitted, "fit_parametric", diverges)  # every Approach 3 fit: the study's and the refits'
    out = synthetic_study(tmp_path, {**SPEC, "laws": {**SPEC["laws"], "loss_law": "parametric"}})
    assert out["loss_law_of_record"] == "power" and out["backtest"][0]["loss_law"] == "power"
    assert set(out["backtest"][0]["forms"]) == {"power", "saturating"}
    assert any(w.startswith("laws.loss_law is 'parametric' but Approach 3 did not converge") for w in out["warnings"])


def test_each_approach_3_point_fit_is_made_once(monkeypatch):
    """An analysis fits Approach 3 to one set of runs many times (each backtest refit and its rule's
    inner refits): the first fit is kept, by the runs' N, D, loss, weights and the options."""
    from ditscale.laws import FitConfig, fit_parametric
    from ditscale.laws.runs import Runs
    from ditscale.study import fitted

    calls = []

    def counted(runs, **options):
        calls.append(len(runs))
        return fit_parametric(runs, **options)

    monkeypatch.setattr(fitted, "fit_parametric", counted)
    rng = np.random.default_rng(0)
    n, d = np.repeat([1e5, 2e5, 4e5], 3), np.tile([1e8, 3e8, 1e9], 3)
    loss = (0.1 + 300 / n**0.3 + 2000 / d**0.3) * (1 + 0.002 * rng.standard_normal(9))
    runs = Runs(flops=6 * n * d, params=n, tokens=d, loss=loss)
    cfg = FitConfig(bootstrap=0)
    first, again = fitted.parametric_fit(runs, cfg), fitted.parametric_fit(runs, cfg)
    assert again[0] is first[0] and calls == [9]
    other = Runs(flops=runs.flops, params=n, tokens=d, loss=loss * 1.01)
    weighted = Runs(flops=runs.flops, params=n, tokens=d, loss=loss, weight=np.full(9, 2.0))
    assert fitted.parametric_fit(other, cfg)[0].E != first[0].E and fitted.parametric_fit(weighted, cfg)
    assert fitted.parametric_fit(runs, FitConfig(bootstrap=0, top_k=5))
    assert calls == [9, 9, 9, 9]  # another loss, other weights, other options: each fitted


def test_laws_json_has_checks_in_both_forms(laws):
    laws, _ = laws
    (check,) = laws["checks"]
    assert check["kind"] == "off_centre" and check["budget"] == BUDGETS[2]
    assert check["message"] in laws["warnings"]


def test_laws_json_parametric_has_intervals_and_prediction(laws):
    laws, _ = laws
    par = json.loads(json.dumps(laws["parametric"], allow_nan=False))
    assert par["bootstrap"]["resamples"] == 100 and par["options"]["method"] == "varpro"
    s = TRUE["alpha"] + TRUE["beta"]
    for name, truth in (("alpha", TRUE["alpha"]), ("beta", TRUE["beta"])):
        lo, hi = par["ci90"][name]
        assert lo < par[name] < hi and lo < truth < hi and par["se"][name] > 0
    lo, hi = par["n_opt_law"]["ci90"]["exponent"]
    assert lo < TRUE["beta"] / s < hi and par["n_opt_law"]["se"]["exponent"] > 0
    assert set(par["d_opt_law"]) == {"coefficient", "exponent", "ci90", "se"}
    pred = par["prediction"]
    assert pred["flops"] == 1e21
    lo, hi = pred["loss_opt"]["ci90"]
    assert lo < pred["loss_opt"]["value"] < hi


def test_backtest_rows_have_n_opt(laws):
    laws, _ = laws
    (row,) = laws["backtest"]
    refit = laws["backtest_fit"]["params_law"]
    assert row["flops"] == BUDGETS[-1]
    assert row["predicted_n_opt"] == pytest.approx(refit["coefficient"] * row["flops"] ** refit["exponent"], rel=1e-12)
    assert row["actual_n_opt"] == laws["budgets"][-1]["n_opt"]
    lo, hi = row["predicted_n_opt_ci90"]
    assert row["n_opt_within_ci90"] is (lo <= row["actual_n_opt"] <= hi) is True
    # the existing keys are still there
    assert {"predicted_loss", "predicted_ci90", "actual_loss", "relative_error", "within_ci90"} <= set(row)
    assert abs(row["relative_error"]) < 0.02


def test_parametric_backtest_refits_approach_3_without_the_held_out_budget(laws):
    """Approach 3's own backtest: the same held-out budget and actual values as the isoFLOP backtest,
    its prediction from L(N, D) refitted on the other budgets (the sweep's true law is L(N, D))."""
    laws, out = laws
    (row,), (iso,) = laws["parametric"]["backtest"], laws["backtest"]
    assert row["flops"] == iso["flops"] and row["actual_loss"] == iso["actual_loss"]
    assert row["actual_n_opt"] == iso["actual_n_opt"]
    assert row["predicted_loss"] != iso["predicted_loss"] and abs(row["relative_error"]) < 0.01
    lo, hi = row["predicted_n_opt_ci90"]
    assert lo < row["predicted_n_opt"] < hi and row["n_opt_within_ci90"] is (lo <= row["actual_n_opt"] <= hi)
    view = LawsSummary.read(out / "laws.json")
    assert view.parametric.backtest[0].predicted_loss == row["predicted_loss"] and row["loss_law"] == "parametric"
    page = render_html(laws, [], title="t")
    section = page.split("<h2>Approach 3 backtest")[1].split("<h2>")[0]
    assert f"<td>Approach 3 L(N, D)</td><td>{row['predicted_loss']:.4f}</td>" in section
    # a laws.json written before rows named their form (the committed quickstart's Approach 3 rows)
    old = {
        **laws,
        "parametric": {**laws["parametric"], "backtest": [{k: v for k, v in row.items() if k != "loss_law"}]},
    }
    assert "<td>Approach 3 L(N, D)</td>" in render_html(old, [], title="t").split("<h2>Approach 3 backtest")[1]


def test_summary_view_and_report_show_the_new_outputs(laws):
    laws, out = laws
    view = LawsSummary.read(out / "laws.json")
    assert view.checks[0].kind == "off_centre" and view.checks[0].budget == BUDGETS[2]
    assert view.backtest[0].predicted_n_opt_ci90 == laws["backtest"][0]["predicted_n_opt_ci90"]
    assert view.backtest[0].n_opt_within_ci90 is True
    par = view.parametric
    assert par.n_opt_law.se["exponent"] == laws["parametric"]["n_opt_law"]["se"]["exponent"]
    assert par.prediction.loss_opt.ci90 == laws["parametric"]["prediction"]["loss_opt"]["ci90"]
    assert par.options["method"] == "varpro" and par.bootstrap["resamples"] == 100
    html = render_html(laws, [], title="t")
    assert "Approach 3: N_opt = G (C/6)^a" in html and "isoFLOP point checks" in html and "off-centre grid" in html
    exp = laws["parametric"]["n_opt_law"]["exponent"]
    assert f"{exp:.4f}" in html
    assert "predicted N_opt" in html and "<span class='ok'>" in html
    empty = LawsSummary.from_dict({**laws, "checks": [], "parametric": None})  # a study without checks or Approach 3
    assert empty.checks == () and empty.parametric is None


def test_predict_study_backtest_carries_n_opt(laws):
    laws, out = laws
    pred = predict_study(out, 1e21)
    assert pred["backtest"][0]["predicted_n_opt"] == pytest.approx(laws["backtest"][0]["predicted_n_opt"], rel=1e-12)
    assert any("off-centre grid" in w for w in pred["warnings"])
    assert math.isfinite(pred["n_opt"]["value"]) and np.isfinite(pred["loss_opt"]["ci90"]).all()


def test_laws_json_and_report_name_their_code_and_spec(laws):
    import torch

    from ditscale.io import sha256_json
    from ditscale.laws.results import LawsSummary
    from ditscale.report.html import render_html

    data, out = laws
    prov = data["provenance"]
    assert prov["torch"] == torch.__version__ and prov["spec_sha256"] == sha256_json(spec_from_dict(SPEC).to_dict())
    assert len(prov["spec_sha256"]) == 64 and prov["python"].count(".") == 2
    html = render_html(LawsSummary.from_dict(data), [], title="t")
    assert f"spec SHA-256 {prov['spec_sha256']}" in html and f"torch {torch.__version__}" in html
    assert ("with uncommitted changes" in html) == bool(prov["git_dirty"])


def test_report_draws_approach_3_loss_curve(laws):
    """The L_opt panel draws Approach 3's L(N_opt(C), D_opt(C)) from laws.json's numbers: the curve
    passes through Approach 3's own prediction at the target (no 6ND column here: C as given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ditscale.report.figures import _draw_approach3_loss

    laws, _ = laws
    view = LawsSummary.from_dict(laws)
    fig, ax = plt.subplots()
    grid = np.array([1e18, 1e21])
    _draw_approach3_loss(ax, view, grid)
    (line,) = ax.get_lines()
    plt.close(fig)
    assert line.get_label().startswith("Approach 3 L(N_opt, D_opt), floor E = ")
    assert line.get_ydata()[1] == pytest.approx(laws["parametric"]["prediction"]["loss_opt"]["value"], rel=1e-12)
    assert line.get_ydata()[0] > line.get_ydata()[1] > laws["parametric"]["E"]


def test_report_draws_the_saturating_law_of_record_through_its_prediction():
    """The committed quickstart's law of record is the saturating form: the L_opt panel draws it,
    names it the law of record, and the curve meets the orange target point (predict's L_opt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ditscale.report.figures import _draw_approach3_loss, _draw_saturating_loss

    view = LawsSummary.read(Path(__file__).parent / "data" / "studies" / "quickstart" / "laws.json")
    assert view.loss_law_of_record == "saturating"
    fig, ax = plt.subplots()
    _draw_saturating_loss(ax, view, np.array([1e11, view.prediction.flops]))
    _draw_approach3_loss(ax, view, np.array([1e11, view.prediction.flops]))
    saturating, approach3 = ax.get_lines()
    plt.close(fig)
    assert saturating.get_label().endswith("(law of record)") and "law of record" not in approach3.get_label()
    assert saturating.get_ydata()[1] == pytest.approx(view.prediction.loss_opt.value, rel=1e-9)


def test_an_analysis_reads_runs_csv_once(tmp_path, monkeypatch):
    """``analyze_study`` (fit, backtests, laws.json and the report) reads runs.csv once, through the
    folder's checked reader, and passes its rows down (StudyFit.rows) to everything else that needs them."""
    rows_reads, text_reads = [], []
    read_rows, read_text = StudyFolder.read_runs_rows, folder_module.read_text
    monkeypatch.setattr(StudyFolder, "read_runs_rows", lambda self: rows_reads.append(self.root) or read_rows(self))
    monkeypatch.setattr(
        folder_module, "read_text", lambda path, *a: text_reads.append(Path(path).name) or read_text(path, *a)
    )
    laws = synthetic_study(tmp_path, {**SPEC, "laws": {**SPEC["laws"], "bootstrap": 0}}, report=True)
    assert rows_reads == [tmp_path] and text_reads.count("runs.csv") == 1
    assert laws["backtest"] and (tmp_path / "report.html").is_file()  # the backtest and the report ran
