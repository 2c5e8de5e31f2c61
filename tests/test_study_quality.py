"""The quality stage of a study, for real on a micro study: each budget's compute-optimal model is
sampled and scored by the shipped shapes evaluator, quality.csv and laws.json's ``quality`` (law,
backtest, quality vs loss) are written, the report shows them, and reruns redo nothing."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ditscale.cli import main
from ditscale.errors import ConfigError, DataError
from ditscale.flops import forward_macs
from ditscale.study import run_study, spec_from_dict
from ditscale.study.analyze import analyze_study
from ditscale.study.quality import QualityFiles, chosen_runs, model_calls, run_quality_steps, steps_points
from ditscale.study.folder import StudyFolder
from test_study_run import MICRO as RUN_MICRO

QUALITY = {"num_samples": 24, "steps": 3, "batch_size": 24}
MICRO = {
    **RUN_MICRO,
    "name": "micro-quality",
    "budgets": [1e8, 2e8, 4e8, 8e8],
    "repeat": {},
    "laws": {"bootstrap": 100},
    "quality": QUALITY,
    "workers": 2,
}  # the micro study of test_study_run.py, one budget more, with a quality stage, on 2 worker processes


def scored_mtimes(out) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in (out / "quality" / "scores").glob("*.json")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out, messages = tmp_path_factory.mktemp("quality") / "micro", []
    outcome = run_study(spec_from_dict(MICRO), out, progress=False, echo=messages.append)
    return out, outcome, messages


def test_each_budgets_optimal_model_is_scored_and_fitted(study):
    out, outcome, messages = study
    assert outcome.complete
    runs = list(csv.DictReader(open(out / "runs.csv")))
    rows = list(csv.DictReader(open(out / "quality.csv")))
    best = {}
    for r in runs:
        if float(r["budget"]) not in best or float(r["loss"]) < float(best[float(r["budget"])]["loss"]):
            best[float(r["budget"])] = r
    assert [r["run_id"] for r in rows] == [best[b]["run_id"] for b in sorted(best)]  # the lowest-loss run per budget
    for row in rows:
        assert row["metric"] == "fd" and float(row["value"]) == float(row["fd"]) > 0
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and int(row["num_samples"]) == 24
        with np.load(out / "quality" / "samples" / f"{row['run_id']}.npz") as data:
            assert data["arr_0"].shape == (24, 8, 8, 3) and data["arr_0"].dtype == np.uint8
            assert list(data["label_names"]) == ["circle", "square", "triangle", "diamond", "cross", "ring"]
    with np.load(out / "quality" / "reference.npz") as ref:
        assert ref["arr_0"].shape == (24, 8, 8, 3) and "captions" in ref

    q = json.loads((out / "laws.json").read_text())["quality"]
    assert q["metric"] == "fd" and math.isfinite(q["law"]["exponent"])
    lo, hi = q["law"]["ci90"]["exponent"]
    assert lo <= hi
    bt = q["backtest"]
    assert bt["flops"] == 8e8 and bt["fitted_budgets"] == 3 and bt["actual"] == pytest.approx(float(rows[-1]["fd"]))
    assert bt["relative_error"] == pytest.approx((bt["predicted"] - bt["actual"]) / bt["actual"])
    assert q["vs_loss"] is not None and -1 <= q["vs_loss"]["spearman"] <= 1
    assert q["prediction"]["flops"] == 1e10 and q["paper"]["exponent"] == -0.234
    html = (out / "report.html").read_text()
    assert "Sample quality" in html and (out / "quality.png").is_file() and (out / "samples.png").is_file()
    # the top budget (the adaptive study's last stage) finished while the pool was up: a worker scored its
    # model before runs.csv was written, the stage in this process the rest; the stage's time counts both
    written = (out / "runs.csv").stat().st_mtime_ns
    early = {k for k, t in scored_mtimes(out).items() if t < written}
    assert early == {rows[-1]["run_id"]}
    top = json.loads((out / "quality" / "scores" / f"{rows[-1]['run_id']}.json").read_text())
    assert f"quality: {rows[-1]['run_id']}: fd {top['fd']:.4g} (on a worker)" in messages
    assert 0 < json.loads((out / "wall.json").read_text())["calls"][0]["quality_s"] < outcome.wall_s


def test_the_laws_fitted_beside_the_last_scoring_are_the_analysis_own(study, tmp_path):
    """Once every run had trained, the loss laws were fitted in a thread while a worker scored the top
    budget's model (FitAhead); the analysis reused them: laws.json and bootstrap.npz equal a fresh
    analysis of the same folder, bit for bit (timings and the folder's path aside)."""
    out, _, messages = study
    assert "laws: every run has trained; fitting the loss laws while the last models are scored" in messages
    assert not any("fitting the laws beside the scoring failed" in m for m in messages)
    again = tmp_path / "again"
    shutil.copytree(out, again)
    fresh = analyze_study(again, report=False)
    kept = json.loads((out / "laws.json").read_text())
    for laws in (fresh, kept):
        laws["wall_time"].pop("analysis_s")
        laws["warnings"] = [w.replace(str(again), str(out)) for w in laws["warnings"]]
    assert fresh == kept
    with np.load(out / "bootstrap.npz") as a, np.load(again / "bootstrap.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a.files)


def check_quality_steps(out) -> None:
    """`study quality-steps`: each budget's best model at 1 and 3 sampler steps (3: the stage's own setting,
    its scores reused), sampling FLOPs per image the analytic forward FLOPs x steps; a rerun redoes nothing."""
    stage = scored_mtimes(out)
    with open(out / "quality.csv") as f:
        quality = list(csv.DictReader(f))
    assert run_quality_steps(out, [3, 1], progress=False, echo=lambda m: None) == len(quality)  # only 1 step is new
    with open(out / "quality_steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run_id"], int(r["steps"])) for r in rows] == [(q["run_id"], k) for q in quality for k in (1, 3)]
    folder = StudyFolder(out)
    for r, q in zip(rows, [q for q in quality for _ in (1, 3)]):
        forward = 2 * forward_macs(folder.run(r["run_id"]).read_result()["config"]["model"]).total
        assert int(r["forward_flops"]) == forward and int(r["model_calls"]) == int(r["steps"])
        assert int(r["sampling_flops"]) == forward * int(r["steps"])  # exact: no guidance (cfg_scale 1)
        assert (r["flops"], r["params"], r["budget"]) == (q["flops"], q["params"], q["budget"])
        assert r["metric"] == "fd" and float(r["value"]) == float(r["fd"]) > 0 and 0 <= float(r["accuracy"]) <= 1
        if r["steps"] == "3":
            assert r["fd"] == q["fd"]  # the quality stage's own score, not made again
    assert all(a["fd"] != b["fd"] for a, b in zip(rows[::2], rows[1::2]))  # 1 step samples differ from 3
    swept = {p.name: p.stat().st_mtime_ns for p in (out / "quality" / "steps" / "scores").glob("*.json")}
    assert len(swept) == len(quality) and scored_mtimes(out) == stage
    text = (out / "quality_steps.csv").read_text()
    assert run_quality_steps(out, [1, 3], progress=False, echo=lambda m: None) == 0  # the rerun redoes nothing
    assert {p.name: p.stat().st_mtime_ns for p in (out / "quality" / "steps" / "scores").glob("*.json")} == swept
    assert (out / "quality_steps.csv").read_text() == text and scored_mtimes(out) == stage
    cfg = spec_from_dict(MICRO).quality
    assert model_calls(replace(cfg, cfg_scale=4.0), 5) == 10  # guidance: conditional and unconditional passes
    with pytest.raises(ConfigError, match="heun makes two"):
        model_calls(replace(cfg, sampler="heun"), 5)


def test_rerun_redoes_nothing_new_settings_redo_the_scores_and_quality_steps_sweeps(study, tmp_path):
    out = study[0]
    check_quality_steps(out)
    before = scored_mtimes(out)
    outcome = run_study(spec_from_dict(MICRO), out, progress=False, echo=lambda m: None)
    assert outcome.trained == [] and scored_mtimes(out) == before
    # one score lost (e.g. a kill between sampling and scoring): only that model is scored again; the one a
    # worker sampled and scored while the runs trained, drawn and scored again here, has the same scores
    lost = sorted(before)[1]
    (out / "quality" / "scores" / f"{lost}.json").unlink()
    early = sorted(before, key=lambda k: before[k])[0]
    scores = json.loads((out / "quality" / "scores" / f"{early}.json").read_text())
    (out / "quality" / "scores" / f"{early}.json").unlink()
    (out / "quality" / "samples" / f"{early}.npz").unlink()
    run_study(spec_from_dict(MICRO), out, progress=False, echo=lambda m: None)
    after = scored_mtimes(out)
    assert {k for k in before if after[k] != before[k]} == {lost, early}
    again = json.loads((out / "quality" / "scores" / f"{early}.json").read_text())
    assert {k: v for k, v in again.items() if not k.endswith("_s")} == {
        k: v for k, v in scores.items() if not k.endswith("_s")
    }
    html = (out / "report.html").read_text()  # that run's new report draws quality_steps.csv too
    assert "sampling compute vs model compute" in html and (out / "quality_steps.png").is_file()
    # other sampling settings: every model is sampled and scored again
    run_study(spec_from_dict({**MICRO, "quality": {**QUALITY, "steps": 2}}), out, progress=False, echo=lambda m: None)
    assert all(scored_mtimes(out)[k] != after[k] for k in after)


def test_runs_all_scores_every_model_of_the_study_seed():
    spec = spec_from_dict({**MICRO, "quality": {**QUALITY, "runs": "all"}})
    rows = [
        {"run_id": f"r{i}", "budget": b, "seed": s, "loss": loss, "params": p}
        for i, (b, s, loss, p) in enumerate(
            [(1e8, 0, 0.5, 10), (1e8, 0, 0.4, 20), (1e8, 1, 0.3, 20), (2e8, 0, 0.3, 10)]
        )
    ]
    picked = chosen_runs(rows, spec)
    assert [(r["run_id"], r["optimal"]) for r in picked] == [("r0", False), ("r1", True), ("r3", True)]
    optimal = chosen_runs(rows, spec_from_dict(MICRO))
    assert [r["run_id"] for r in optimal] == ["r1", "r3"]  # the seed-1 replicate measures noise only


def test_quality_settings_are_checked():
    with pytest.raises(ConfigError, match="quality.inception is not set"):
        spec_from_dict({**MICRO, "quality": {"evaluator": "inception"}})
    with pytest.raises(ConfigError, match="num_samples >= 10"):
        spec_from_dict({**MICRO, "quality": {"num_samples": 2}})
    with pytest.raises(ConfigError, match="unknown key 'sample'"):
        spec_from_dict({**MICRO, "quality": {"sample": 2}})
    assert QualityFiles(StudyFolder("x")).samples("r1").name == "r1.npz"


def test_a_damaged_quality_steps_csv_is_a_one_line_error(tmp_path):
    (tmp_path / "quality_steps.csv").write_text("run_id,budget,params,steps\nr1,1e8,3312,five\n")
    with pytest.raises(DataError, match="quality_steps.csv is damaged .*run `ditscale study quality-steps` again"):
        steps_points(tmp_path)
    assert steps_points(tmp_path / "none") == []


def test_quality_steps_refuses_runs_without_weights_before_writing_anything(tmp_path, capsys):
    """A study folder without its run folders (the committed quickstart: runs.csv and laws.json only):
    quality-steps names the first run it cannot sample, before exporting a reference or scoring anything."""
    out = tmp_path / "qs"
    shutil.copytree(Path(__file__).parent / "data" / "studies" / "quickstart", out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.warns(UserWarning, match="60 run.s. have no folder"):
        assert main(["study", "quality-steps", str(out), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "run c1.6e11-d2w64h2-s0 has no checkpoint with EMA weights to sample" in err and len(err.splitlines()) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
