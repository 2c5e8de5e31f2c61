"""`study predict` and `study compare` reuse the bootstrap draws the analysis stored in
DIR/bootstrap.npz (issue 13.4), and atomic writes honour the umask (issue 13.3).

The study is the quickstart's measured runs.csv (tests/data/studies) analysed with 100 resamples
(no training). "Reuse" is checked by making the resampling itself raise: no timing assertions."""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from ditscale.cli import main
from ditscale.io import atomic_write_json, atomic_write_npz, atomic_write_text
from ditscale.laws.draws import DrawStore
from ditscale.laws.results import ComparisonSummary
from ditscale.study import load_spec
from ditscale.study.analyze import (
    analyze_study,
    compare_studies,
    draws_note,
    draws_path,
    predict_study,
    study_prediction,
)
from ditscale.study.folder import StudyFolder

DATA = Path(__file__).parent / "data" / "studies" / "quickstart-p2"
COMMITTED = Path(__file__).parent / "data" / "studies"  # the two quickstarts as run (read, never written)
bootstrap_module = importlib.import_module("ditscale.laws.bootstrap")  # the package's `bootstrap` is the function


def make_study(out: Path) -> dict:
    folder = StudyFolder(out)
    folder.create()
    folder.write_spec(load_spec(str(DATA / "spec.yaml"), ["laws.bootstrap=100"]))
    shutil.copy(DATA / "runs.csv", folder.runs_csv)
    return analyze_study(out, report=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs")
    return out, make_study(out)


@pytest.fixture
def no_resampling(monkeypatch):
    """Every bootstrap (isoflop, parametric, envelope) fails loudly if it draws."""

    def boom(*args, **kwargs):
        raise AssertionError("the bootstrap was drawn again")

    monkeypatch.setattr(bootstrap_module, "_bootstrap_isoflop", boom)
    monkeypatch.setattr(bootstrap_module, "_bootstrap_each", boom)


def test_analysis_stores_every_draw(study):
    out, laws = study
    with np.load(draws_path(out), allow_pickle=False) as arrays:
        store = DrawStore.from_arrays(arrays)
    kinds = sorted(kind for kind, _ in store.entries.values())
    refits = len({r["fitted_max_flops"] for r in laws["extrapolation"]})  # the backtests at every distance
    # the fit of all budgets, the backtest of record's refit (the same runs and resamples as the K = 1 refit
    # of the backtests at every distance: one entry) and the K = 2 .. 6 refits
    assert refits == 6 and kinds == ["isoflop"] * 7 + ["parametric"] * 7
    boots = [b for _, b in store.entries.values()]
    assert {b.n_resamples for b in boots} == {100} and {b.seed for b in boots} == {0}
    iso = next(
        b
        for kind, b in store.entries.values()
        if kind == "isoflop" and b.ci90("params_law.exponent") == laws["params_law"]["ci90"]["exponent"]
    )
    assert iso.ci90("loss_law.exponent") == laws["loss_law"]["ci90"]["exponent"]


def test_predict_reuses_the_stored_draws_and_equals_laws_json(study, no_resampling):
    out, laws = study
    pred = predict_study(out, laws["prediction"]["flops"])
    stored = laws["prediction"]
    for key in (
        "n_opt",
        "d_opt",
        "images_opt",
        "loss_opt",
        "nearest",
        "forms",
        "exponents",
        "extrapolation",
        "residual_structure",
        "warnings",
    ):
        assert pred[key] == stored[key], key
    assert pred["notes"] == []
    assert pred["backtest"] == laws["backtest"]  # the backtest refit's draws are stored too
    (a3,) = [f for f in pred["forms"] if f["name"].startswith("Approach 3")]
    assert a3["n_opt"] == laws["parametric"]["prediction"]["n_opt"]
    assert a3["loss_opt"] == laws["parametric"]["prediction"]["loss_opt"]


def test_compare_with_itself_is_exactly_zero(study, no_resampling):
    out, laws = study
    comp = compare_studies(out, out, flops=1e13)
    for d in comp["differences"]:
        assert d["a_ci90"] == d["b_ci90"] and d["difference"] == 0.0 and d["resolved"] is False
        if d["ci90"] is not None:
            assert d["ci90"] == [0.0, 0.0]
    exp = next(d for d in comp["differences"] if d["name"] == "params_law.exponent")
    assert exp["a_ci90"] == laws["params_law"]["ci90"]["exponent"]
    assert comp["loss_a"] == comp["loss_b"] and comp["notes"] == []


def test_compare_gives_each_studys_loss_of_record_as_predict_does(no_resampling, capsys):
    # The committed quickstarts' forms of record differ (saturating; the power law, the T2I study's
    # other forms being degenerate): compare's loss at C is the one predict gives, each its own form.
    qs, t2i = COMMITTED / "quickstart", COMMITTED / "quickstart-t2i"
    comp = compare_studies(qs, t2i, flops=1e13)
    assert (comp["loss_a_law"], comp["loss_b_law"]) == ("saturating", "power")
    for side, folder in (("a", qs), ("b", t2i)):
        pred = study_prediction(folder, 1e13, with_backtest=False)
        assert comp[f"loss_{side}"] == pred.loss_opt.to_dict() and comp[f"loss_{side}_law"] == pred.loss_law
    power = next(f for f in study_prediction(qs, 1e13, with_backtest=False).forms if f.form == "power")
    assert abs(comp["loss_a"]["value"] / power.loss_opt.value - 1) > 0.05  # the power law's answer differs there
    old = {k: v for k, v in comp.items() if k not in ("loss_a_law", "loss_b_law")}  # written before the forms
    assert ComparisonSummary.from_dict(old).loss_a_law is None
    assert ComparisonSummary.from_dict(comp).to_dict() == comp
    assert main(["study", "compare", str(qs), str(t2i), "--flops", "1e13"]) == 0
    out = capsys.readouterr().out
    assert "A: 0.1979  90% [0.1842, 0.2154] (isoFLOP saturating law)" in out
    assert "B: 0.1168  90% [0.0915, 0.1558] (isoFLOP power law)" in out


def test_cli_predict_prints_every_form_without_redrawing(study, no_resampling, capsys):
    out, laws = study
    assert main(["study", "predict", str(out), "--flops", "5e16"]) == 0
    captured = capsys.readouterr()
    assert "isoFLOP power law" in captured.out and "Approach 3 L(N, D)" in captured.out
    assert "isoFLOP saturating law" in captured.out
    assert (
        "extrapolating 9.8e+03x (4.0 decades of compute) beyond the largest trained budget 5.1e+12 FLOPs"
        in captured.err
    )
    assert "note:" not in captured.err


def test_report_reuse_draws_keeps_the_intervals_and_drops_stale_draws(tmp_path, study, no_resampling, capsys):
    """`study report --reuse-draws` refits without drawing (every resampling raises here), writes the
    intervals laws.json had, and keeps only the draws this analysis used: a stale entry (draws of runs
    no longer in the study) is dropped from bootstrap.npz."""
    out, laws = study
    copy = tmp_path / "qs"
    shutil.copytree(out, copy)
    with np.load(draws_path(copy), allow_pickle=False) as arrays:
        store = DrawStore.from_arrays(arrays)
    kept = list(store.entries)
    store.entries["f" * 64] = store.entries[kept[0]]  # as if drawn from an older runs.csv
    atomic_write_npz(draws_path(copy), store.to_arrays())
    assert main(["study", "report", str(copy), "--reuse-draws"]) == 0
    assert "note:" not in capsys.readouterr().err
    again = json.loads((copy / "laws.json").read_text())
    for key in ("params_law", "tokens_law", "loss_law", "prediction", "backtest", "extrapolation", "parametric"):
        assert again[key] == laws[key], key
    with np.load(draws_path(copy), allow_pickle=False) as arrays:
        assert list(DrawStore.from_arrays(arrays).entries) == kept
    assert (copy / "report.html").is_file()
    redrawn = DrawStore(loaded=True, redrawn=["isoflop"])  # what a report that had to redraw says
    assert draws_note(copy, redrawn, stored=True).endswith(
        "other runs.csv rows or laws options; the new draws are stored there"
    )
    assert draws_note(copy, redrawn).endswith(f"`ditscale study report {copy}` stores the draws again")


def test_changed_runs_are_redrawn_and_said_so(tmp_path, study):
    out, laws = study
    shutil.copytree(out, tmp_path / "qs")
    runs_csv = tmp_path / "qs" / "runs.csv"
    with open(runs_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["loss"] = str(float(rows[0]["loss"]) * 1.01)
    with open(runs_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pred = predict_study(tmp_path / "qs", 5e13, with_backtest=False)
    (note,) = pred["notes"]
    assert note.startswith("bootstrap redrawn (isoflop, parametric):") and "other runs.csv rows" in note
    assert pred["n_opt"]["ci90"] != laws["prediction"]["n_opt"]["ci90"]
    draws_path(tmp_path / "qs").unlink()
    (note,) = predict_study(tmp_path / "qs", 5e13, with_backtest=False)["notes"]
    assert "is missing" in note


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
        atomic_write_npz(tmp_path / "c.npz", {"x": np.zeros(2)})
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "c.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.npz"]  # no temp files left
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": 1}


def test_report_shows_every_form_and_the_residual_test(study):
    from ditscale.report import render_html

    out, laws = study
    page = render_html(laws, [], title="quickstart")
    assert "Every fitted form at C = 5e+13 FLOPs" in page and "Approach 3 L(N, D)" in page
    assert "Residual structure by model size" in page and "isoFLOP residuals depend on model size" in page
    assert "extrapolation (target / largest trained budget)" in page and "9.77x" in page
    assert "N_opt exponent loosely resolved" in page


def test_predict_states_epochs_of_a_finite_dataset(study, no_resampling, tmp_path, capsys):
    """The same runs on a folder of 18 train images: D_opt in epochs, with a warning past 16 (issue 23.7);
    laws.json's prediction of the shapes study (procedural) has no epochs key."""
    out, laws = study
    assert "epochs_opt" not in laws["prediction"] and "train_images" not in laws["prediction"]
    copy = tmp_path / "qs"
    shutil.copytree(out, copy)
    images = tmp_path / "imgs"
    for name in ("a", "b"):  # 20 listed (empty) images, 2 held out: predictions list files, never decode them
        (images / name).mkdir(parents=True)
        for i in range(10):
            (images / name / f"{i}.png").write_bytes(b"")
    spec = load_spec(str(copy / "spec.yaml"), ["data.name=folder", f"data.path={images}"])
    StudyFolder(copy).write_spec(spec)
    assert main(["study", "predict", str(copy), "--flops", "4e12", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["train_images"] == 18
    assert pred["epochs_opt"]["value"] == pred["images_opt"]["value"] / 18
    assert pred["epochs_opt"]["ci90"] == [x / 18 for x in pred["images_opt"]["ci90"]]
    value = pred["epochs_opt"]["value"]
    (warning,) = [w for w in pred["warnings"] if "epochs of the 18 train images" in w]
    assert warning.startswith(f"D_opt at 4e+12 FLOPs is {value:.3g} epochs of the 18 train images, past 16")
    assert main(["study", "predict", str(copy), "--flops", "4e12"]) == 0
    assert f"{value:.3g} epochs of the 18 train images" in capsys.readouterr().out
