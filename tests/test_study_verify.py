"""``ditscale study verify``: a micro study trained for real (3 budgets x 3 tiny DiTs, shared trunks),
then its prediction at 2x the largest budget trained (one size, then three): the JSON's values against
the runs' own result.json and ``study predict``, the study's recipe, a branch off a copy of the study's
trunk equal to the run trained alone, reuse of finished runs, one-line errors."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from ditscale.cli import main
from ditscale.errors import DataError
from ditscale.study import run_study, spec_from_dict
from ditscale.study.executor import RunTask, config_sha, execute_run
from ditscale.study.plan import train_config
from test_study_run import MICRO

# 3 budgets x 3 tiny DiTs, seed replicates at the smallest; each model a shared trunk (constant lr)
SPEC = {
    **MICRO,
    "share_trunks": True,
    # EMA over each run's last 40%: a window that opens after the study's branch points, so a longer run can branch off
    "hparams": {**MICRO["hparams"], "schedule": "constant", "warmup_steps": 2, "ema_fraction": 0.2, "ema_window": 0.4},
    "train": {"log_every": 100, "ckpt_every": 1000},
    "laws": {"bootstrap": 100},
}
C = 8e8  # 2x the largest budget
KEYS = {
    "flops",
    "factor",
    "predicted_loss",
    "predicted_ci90",
    "actual_loss",
    "relative_error",
    "within_ci90",
    "sizes",
    "predicted_n_opt",
    "best_params",
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "micro"
    outcome = run_study(spec_from_dict(SPEC), out, progress=False, echo=lambda m: None)
    assert outcome.complete and not outcome.failed
    return out


def cli_json(capsys, *argv) -> tuple[dict, str]:
    assert main(["study", *argv, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def tree_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def result_mtimes(out) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "verify").glob("*/result.json")}


@pytest.mark.slow
def test_verify_one_size_against_the_prediction_and_its_run(study, tmp_path, capsys):
    pred, _ = cli_json(capsys, "predict", str(study), "--flops", str(C))
    trunks = tree_bytes(study / "trunks")
    v, err = cli_json(capsys, "verify", str(study), "--flops", str(C), "--no-progress")
    assert KEYS <= set(v) and v["flops"] == C and v["factor"] == 2.0  # 8e8 / 4e8, the largest budget
    assert "2x the largest budget" in err and "FLOPs to train: about" in err  # the estimate comes first
    # the prediction is study predict's at C: the loss law of record and its interval, N_opt
    assert v["predicted_loss"] == pred["loss_opt"]["value"] and v["predicted_ci90"] == pred["loss_opt"]["ci90"]
    assert v["predicted_n_opt"] == pred["n_opt"]["value"] and v["loss_law"] == pred["loss_law"]
    (size,) = v["sizes"]
    assert size["name"] == pred["nearest"]["name"] and size["params"] == pred["nearest"]["params"]
    res = json.loads((study / "verify" / size["run_id"] / "result.json").read_text())
    assert v["actual_loss"] == size["loss"] == res["val_loss"] and size["params"] == res["params_non_embedding"]
    assert 0.99 * C < res["flops_exact"] <= C and v["best_params"] == size["params"]
    assert v["relative_error"] == pytest.approx((v["predicted_loss"] - v["actual_loss"]) / v["actual_loss"], rel=1e-12)
    lo, hi = v["predicted_ci90"]  # (an interval: the seed replicates measure the noise)
    assert v["within_ci90"] == (lo <= v["actual_loss"] <= hi)
    # the study's own recipe: the TrainConfig a budget-C grid of the study would give this rung
    spec = spec_from_dict(SPEC)
    rung = (pred["nearest"]["depth"], pred["nearest"]["hidden_size"], pred["nearest"]["num_heads"])
    cfg = train_config(spec, rung, budget=C, batch_size=8, steps=size["steps"], seed=0).to_dict()
    assert json.loads((study / "verify" / size["run_id"] / "study.json").read_text())["config_sha"] == config_sha(cfg)
    assert json.loads((study / "verify" / "verify.json").read_text()) == v
    assert json.loads((study / "verify" / "verify-8e8.json").read_text()) == v  # kept per C
    shown = cli_json(capsys, "predict", str(study), "--flops", str(C))[0]["verifications"]
    assert shown == [v]
    # verify redrew the report: a star at (C, the trained loss) on the loss panel, named in the figure's caption
    assert "purple stars: the loss of the model trained there by `study verify`" in (study / "report.html").read_text()
    # it branched off a copy of the study's trunk of that model, and equals the run trained alone
    trunk = json.loads((study / "verify" / "trunks" / f"d1w{rung[1]}h{rung[2]}-b8-s0" / "trunk.json").read_text())
    assert size["run_id"] in trunk["shared_flops"] and tree_bytes(study / "trunks") == trunks
    alone = tmp_path / "alone"
    assert execute_run(RunTask(size["run_id"], str(alone), cfg, config_sha(cfg), res["flops_exact"], 0)) == "trained"
    assert json.loads((alone / "result.json").read_text())["val_loss"] == res["val_loss"]

    before = result_mtimes(study)
    again, err = cli_json(capsys, "verify", str(study), "--flops", str(C), "--no-progress")
    assert again == v and result_mtimes(study) == before and "nothing to train" in err
    assert v["n_opt_gap"] == 0.0 and v["within_seed_noise"] is None  # one size: nothing to compare


@pytest.mark.slow
def test_verify_three_sizes_reuses_the_n_opt_run(study, capsys):
    before = result_mtimes(study)  # the one-size verification above, if it ran first
    v, _ = cli_json(capsys, "verify", str(study), "--flops", str(C), "--sizes", "3", "--no-progress")
    sizes = v["sizes"]
    assert [s["role"] for s in sizes] == ["half", "n_opt", "double"]
    params = [s["params"] for s in sizes]
    assert params == sorted(params) and len(set(params)) == 3
    assert params[0] < v["predicted_n_opt"] < params[2]  # else the middle one would not be the nearest
    assert v["best_params"] == min(sizes, key=lambda s: s["loss"])["params"]
    assert v["actual_loss"] == sizes[1]["loss"]
    # within seed noise of the best: the gap in log loss against the 90% band of two runs' difference
    best = min(s["loss"] for s in sizes)
    assert v["n_opt_gap"] == pytest.approx(math.log(v["actual_loss"] / best), rel=1e-12, abs=0)
    spread = json.loads((study / "laws.json").read_text())["noise"]["seed_spread"]
    assert v["seed_spread"] == spread > 0
    assert v["within_seed_noise"] == (v["n_opt_gap"] <= 1.645 * math.sqrt(2) * spread)
    for s in sizes:
        res = json.loads((study / "verify" / s["run_id"] / "result.json").read_text())
        assert s["loss"] == res["val_loss"] and res["flops_exact"] <= C
    kept = {k: t for k, t in result_mtimes(study).items() if k in before}
    assert kept == before  # a size trained before is not trained again
    # the text answer (nothing left to train): the prediction, each size, where the answer is kept
    assert main(["study", "verify", str(study), "--flops", str(C), "--sizes", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "verified at C = 8e+08 training FLOPs, 2x the largest budget (4e+08):"
    assert f"error {100 * v['relative_error']:+.2f}%" in out[2]
    assert [line.split()[1] for line in out if line.startswith("    d1-")] == ["(half", "(n_opt", "(double)"]
    assert out[-2] == f"  {study / 'verify' / 'verify-8e8.json'} (and verify.json beside it: the latest)"
    assert out[-1].endswith("report.html (redrawn: the trained loss starred on laws.png's loss panel)")


def test_one_line_errors(study, tmp_path, capsys):
    assert main(["study", "verify", str(study), "--flops", "2e8"]) == 2
    err = capsys.readouterr().err
    assert "below the study's largest budget 4e+08" in err and err.count("\n") == 1
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(study / "spec.yaml", bare / "spec.yaml")
    assert main(["study", "verify", str(bare), "--flops", str(C)]) == 2
    err = capsys.readouterr().err
    assert "has no laws.json yet" in err and err.count("\n") == 1
    assert main(["study", "verify", str(study), "--flops", "1e15", "--max-hours", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "above --max-hours 1" in err[-1] and not list((study / "verify").glob("c1e15*"))


def test_predict_lists_every_kept_verification_and_warns_on_a_damaged_one(tmp_path, capsys):
    """The committed quickstart's two verifications (10x, 20x) as a study's verify/ folder would keep them:
    `study predict` prints each (prediction of record, trained loss, error, interval) and --json carries
    them; a damaged record is one warning and the rest still print."""
    from pathlib import Path

    from ditscale.study.verified import PredictAnswer, Verification, read_verifications

    data = Path(__file__).parent / "data" / "studies" / "quickstart"
    out = tmp_path / "qs"
    shutil.copytree(data, out)
    (out / "verify").mkdir()
    shutil.copy(data / "verify.json", out / "verify" / "verify-5.12e13.json")
    shutil.copy(data / "verify-20x.json", out / "verify" / "verify.json")  # from before per-C files: still read
    ten, twenty = (json.loads((data / name).read_text()) for name in ("verify.json", "verify-20x.json"))
    got, damaged = read_verifications(out)
    assert [v.to_dict() for v in got] == [ten, twenty] and [v.factor for v in got] == [10.0, 20.0] and damaged == []
    assert main(["study", "predict", str(out), "--flops", "5.12e13"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at10 = next(line for line in lines if line.startswith("    at 5.12e+13 FLOPs"))
    assert "(10x the largest budget): predicted 0.1716  90% [0.1423, 0.2089] (isoFLOP saturating law)" in at10
    assert (
        "trained d2-w128-h4 0.1437: error +19.4%, inside the 90% interval; best of 3 sizes: d2-w192-h6 0.1395" in at10
    )
    assert any(line.startswith("    at 1.024e+14 FLOPs (20x the largest budget)") for line in lines)
    (out / "verify" / "verify-5.12e13.json").write_text('{"flops": 5.12e13}')
    assert main(["study", "predict", str(out), "--flops", "5.12e13", "--json"]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert answer["verifications"] == [twenty]  # the others still show
    assert "verify-5.12e13.json is not a verification written by `ditscale study verify`" in captured.err
    read = PredictAnswer.from_dict(answer, "p.json")  # --json reads back as what wrote it
    assert read.to_dict() == answer and read.verifications[0].factor == 20.0 and read.prediction.flops == 5.12e13
    older = json.loads((data / "predict.json").read_text())  # written before predict listed verifications
    assert "verifications" not in older and PredictAnswer.from_dict(older, "p.json").verifications == ()
    for bad, words in (
        ({**answer, "extra": 1}, "unknown key 'extra'"),
        ({**answer, "verifications": {}}, "a list"),
        ([answer], "not an answer of `ditscale study predict --json`"),
    ):
        with pytest.raises(DataError, match=words):
            PredictAnswer.from_dict(bad, "p.json")
    wrong = (
        {**ten, "actual_loss": "abc"},
        {**ten, "within_ci90": "yes"},
        {**ten, "sizes": [{**ten["sizes"][0], "loss": None}]},
    )
    for bad in ([1, 2], {**ten, "extra": 1}, {**ten, "sizes": [1]}, {**ten, "predicted_ci90": [1]}, *wrong):
        with pytest.raises(DataError, match="not a verification"):
            Verification.from_dict(bad, "f.json")
