"""A micro study trained for real (3 budgets x 3 tiny DiTs, a few dozen steps each): runs.csv,
laws.json, report.html, idempotence, resume after an interruption, stale locks, the submitit
launcher, and the predict / compare commands."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from ditscale.cli import main
from ditscale.errors import ConfigError
from ditscale.study import run_study, spec_from_dict
from ditscale.study.launchers import RunTask, SlurmLauncher, SlurmOptions
from ditscale.study.locks import RunLock
from ditscale.study.run import config_sha, execute_run, task_for

MICRO = {
    "name": "micro",
    "data": {"name": "shapes", "image_size": 8},
    "diffusion": {"kind": "flow"},
    "family": {
        "widths": [8, 16, 32],
        "depth": 1,
        "head_dim": 8,
        "model": {"patch_size": 2, "block": "in_context", "learn_sigma": False},
    },
    "budgets": [1e8, 2e8, 4e8],
    "models_per_budget": 3,
    "span": 4,
    "min_steps": 3,
    "prior": {"coefficient": 0.5, "exponent": 0.5},
    "hparams": {"lr": 1e-2, "base_width": 16, "batch_size": 8, "width_rule": "none"},
    "val": {"num_images": 8, "num_timesteps": 2, "buckets": 2},
    "train": {"ema_decay": 0.9, "log_every": 100, "ckpt_every": 1000},
    "repeat": {"budgets": 1, "seeds": [1]},
    "laws": {"bootstrap": 200},
    "workers": 0,
    "target_flops": 1e10,
}
N_RUNS = 3 * 3 + 3  # 3 budgets x 3 models, plus the smallest budget again with seed 1


def micro_spec(**changes):
    return spec_from_dict({**MICRO, **changes})


def mtimes(study) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (study / "runs").glob("*/result.json")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "micro"
    outcome = run_study(micro_spec(), out, progress=False, echo=lambda m: None)
    return out, outcome


def test_micro_study_end_to_end(study):
    out, outcome = study
    assert outcome.complete and len(outcome.trained) == N_RUNS and not outcome.failed
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == N_RUNS
    for row in rows:
        res = json.loads((out / "runs" / row["run_id"] / "result.json").read_text())
        assert float(row["flops"]) == res["flops_exact"] <= float(row["budget"])
        assert float(row["loss"]) == res["val_loss"]
        assert int(row["tokens"]) == 16 * int(row["images"])  # (8 / 2)^2 tokens per image
        assert int(row["params"]) == res["params_non_embedding"]
    assert sorted({float(r["budget"]) for r in rows}) == [1e8, 2e8, 4e8]
    assert {int(r["seed"]) for r in rows if float(r["budget"]) == 1e8} == {0, 1}

    laws = json.loads((out / "laws.json").read_text())
    assert [b["held_out"] for b in laws["budgets"]] == [False, False, True]
    assert {"coefficient", "exponent", "ci90"} <= set(laws["params_law"]) and laws["loss_law"]["ci90"] is not None
    (row,) = laws["backtest"]
    assert row["flops"] == 4e8
    # the prediction is the refit's loss law at the held-out budget; the actual is that budget's own minimum
    refit = laws["backtest_fit"]["loss_law"]
    assert row["predicted_loss"] == pytest.approx(refit["coefficient"] * 4e8 ** refit["exponent"], rel=1e-12)
    assert row["actual_loss"] == pytest.approx(laws["budgets"][2]["loss_opt"], rel=1e-12)
    assert row["relative_error"] == pytest.approx((row["predicted_loss"] - row["actual_loss"]) / row["actual_loss"])
    # seed-to-seed spread, by hand: 3 pairs at 1e8, pooled sd of log loss with 3 degrees of freedom
    pairs = {}
    for r in rows:
        if float(r["budget"]) == 1e8:
            pairs.setdefault(r["params"], []).append(math.log(float(r["loss"])))
    by_hand = math.sqrt(sum((a - b) ** 2 / 2 for a, b in pairs.values()) / 3)
    assert laws["noise"]["seed_dof"] == 3 and laws["noise"]["seed_spread"] == pytest.approx(by_hand, rel=1e-9)
    assert laws["prediction"]["flops"] == 1e10 and laws["wall_time"]["study_s"] > 0

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Backtest" in html and "0.5681" in html
    for name in ("isoflop.png", "laws.png", "residuals.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_second_run_trains_nothing(study, capsys):
    out, _ = study
    before = mtimes(out)
    assert len(before) == N_RUNS
    spec_path = out.parent / "micro.yaml"
    spec_path.write_text(yaml.safe_dump(MICRO))
    assert main(["study", "run", str(spec_path), "--out", str(out), "--no-progress"]) == 0
    assert f"0 run(s) trained, {N_RUNS} already done" in capsys.readouterr().out
    assert mtimes(out) == before


KILL_SCRIPT = """
import json, sys
from ditscale.study import spec_from_dict
from ditscale.study.plan import plan_study
from ditscale.study.run import execute_run, task_for
spec = spec_from_dict(json.loads(sys.argv[1]))
run = next(r for r in plan_study(spec).runs if r.run_id == sys.argv[2])
task = task_for(spec, __import__("pathlib").Path(sys.argv[3]), run, threads=1)
task.config["ckpt_every"] = 5  # resume-safe: the study's config hash ignores it
print(execute_run(task))
"""


@pytest.mark.slow
def test_a_refused_spec_change_writes_nothing(study):
    out, _ = study
    files = ("spec.yaml", "plan.csv", "runs.csv", "wall.json", "laws.json")
    before = {name: (out / name).read_bytes() for name in files}
    changed = micro_spec(hparams={**MICRO["hparams"], "lr": 2e-2})  # every run would train differently
    with pytest.raises(ConfigError, match="different config"):
        run_study(changed, out, progress=False, echo=lambda m: None)
    assert {name: (out / name).read_bytes() for name in files} == before  # spec.yaml still describes the runs


def test_interrupted_study_completes_without_redoing_runs(study, tmp_path):
    src, _ = study
    out = tmp_path / "s"
    shutil.copytree(src, out)
    (out / "laws.json").unlink()
    finished = mtimes(out)
    # these runs never finished: their folders are gone
    lost = ["c2e8-d1w8h1-s0", "c2e8-d1w16h2-s0", "c4e8-d1w8h1-s0", "c4e8-d1w16h2-s0", "c4e8-d1w32h4-s0"]
    for run_id in lost:
        shutil.rmtree(out / "runs" / run_id)
    kept = {k: v for k, v in finished.items() if k not in lost}

    # a max-runs limit stops the study midway: no laws yet
    first = run_study(micro_spec(), out, max_runs=2, progress=False, echo=lambda m: None)
    assert not first.complete and sorted(first.trained) == sorted(lost[:2]) and first.remaining == 3
    assert not (out / "laws.json").exists()

    # a worker killed (SIGKILL) while training leaves a checkpoint and its lock behind
    victim = "c4e8-d1w8h1-s0"  # the longest run left
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, json.dumps(MICRO), victim, str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpts = out / "runs" / victim / "checkpoints"
    while proc.poll() is None and not list(ckpts.glob("step_*/state.json")):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert list(ckpts.glob("step_*/state.json")) and (out / "runs" / victim / "run.lock").exists()
    assert not (out / "runs" / victim / "result.json").exists()

    # the rerun (2 worker processes) breaks the dead worker's lock, resumes the run from its checkpoint,
    # trains the rest, and leaves every finished run alone
    second = run_study(micro_spec(), out, workers=2, progress=False, report=False, echo=lambda m: None)
    assert second.complete and len(second.trained) == 3 and victim in second.trained
    after = mtimes(out)
    assert all(after[k] == v for k, v in kept.items())
    assert len(after) == N_RUNS
    # resumed and fresh runs reproduce the uninterrupted ones (CPU training is deterministic)
    for run_id in lost:
        new = json.loads((out / "runs" / run_id / "result.json").read_text())["val_loss"]
        old = json.loads((src / "runs" / run_id / "result.json").read_text())["val_loss"]
        assert new == pytest.approx(old, rel=1e-5)


def test_a_run_held_by_a_live_worker_is_left_alone(tmp_path):
    spec = micro_spec()
    from ditscale.study.plan import plan_study

    run = plan_study(spec).runs[0]
    task = task_for(spec, tmp_path, run)
    lock = RunLock(tmp_path / "runs" / run.run_id / "run.lock")
    assert lock.acquire()
    try:
        assert execute_run(task) == "busy"
        assert not (tmp_path / "runs" / run.run_id / "result.json").exists()
    finally:
        lock.release()
    assert execute_run(task) == "trained"
    assert execute_run(task) == "done"
    # a changed config for the same run folder is refused
    changed = RunTask(**{**task.__dict__, "config_sha": config_sha({"other": 1})})
    shutil.rmtree(tmp_path / "runs" / run.run_id / "checkpoints")
    (tmp_path / "runs" / run.run_id / "result.json").unlink()
    with pytest.raises(ConfigError, match="trained with a different config"):
        execute_run(changed)


@pytest.mark.slow
def test_submitit_local_executor_runs_one_run(tmp_path):
    spec = micro_spec()
    from ditscale.study.plan import plan_study

    run = plan_study(spec).runs[0]
    task = task_for(spec, tmp_path, run, threads=1)
    seen = []
    launcher = SlurmLauncher(
        tmp_path / "slurm", SlurmOptions(cluster="local", cpus_per_task=1, time_min=10), poll_s=0.2
    )
    launcher.run([task], lambda t, outcome: seen.append((t.run_id, outcome)))
    assert seen == [(run.run_id, "trained")]
    res = json.loads((tmp_path / "runs" / run.run_id / "result.json").read_text())
    assert res["status"] == "done" and res["flops_exact"] == run.flops_exact
    assert list((tmp_path / "slurm").glob("*_0_log.out"))  # submitit's job logs


def test_predict_and_compare_json(study, capsys):
    out, _ = study
    laws = json.loads((out / "laws.json").read_text())
    assert main(["study", "predict", str(out), "--flops", "1e10", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    for key in ("n_opt", "d_opt", "images_opt", "loss_opt"):
        assert set(pred[key]) == {"value", "ci90"} and len(pred[key]["ci90"]) == 2
    law = laws["params_law"]
    assert pred["n_opt"]["value"] == pytest.approx(law["coefficient"] * 1e10 ** law["exponent"], rel=1e-12)
    assert pred["images_opt"]["value"] == pytest.approx(pred["d_opt"]["value"] / 16, rel=1e-12)
    near = pred["nearest"]
    assert {"name", "depth", "hidden_size", "num_heads", "params", "params_total", "in_ladder"} <= set(near)
    assert near["name"] == f"d{near['depth']}-w{near['hidden_size']}-h{near['num_heads']}" and near["depth"] == 1
    assert pred["backtest"][0]["relative_error"] == pytest.approx(laws["backtest"][0]["relative_error"], rel=1e-12)

    assert main(["study", "compare", str(out), str(out), "--flops", "1e10", "--json"]) == 0
    comp = json.loads(capsys.readouterr().out)
    names = {d["name"] for d in comp["differences"]}
    assert {"params_law.exponent", "tokens_law.exponent", "loss_law.exponent", "loss_law.coefficient"} <= names
    for d in comp["differences"]:
        assert d["difference"] == 0.0 and d["a"] == d["b"] and d["resolved"] is not True
        assert set(d) >= {"a_ci90", "b_ci90", "ci90", "resolved"}
    assert comp["loss_a"]["value"] == comp["loss_b"]["value"]

    assert main(["study", "predict", str(out.parent), "--flops", "1e10"]) == 2
    err = capsys.readouterr().err
    assert "is not a study folder" in err and err.count("\n") == 1
