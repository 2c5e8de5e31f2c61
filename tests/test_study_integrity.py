"""Study and run-folder integrity (issue 12): the design depends on results only, workers die with
``study run``, no path leaves its folder, nothing is written before a config is accepted, damaged
or edited study files are caught (and derived ones rebuilt), one process per training run folder.

Each test failed on the code before its fix (see docs/reliability.md). Studies here are tiny: 1-3
budgets of 1-layer DiTs of width 8-32 on 8x8 images, most runs under a second."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ditscale.cli import main
from ditscale.data.store import STORE_FORMAT, STORE_VERSION, read_meta, read_shard_records
from ditscale.errors import ConfigError, DataError
from ditscale.study import run_study, spec_from_dict
from ditscale.study import run as study_run
from ditscale.study.folder import StudyFolder
from ditscale.study.plan import plan_study
from ditscale.study.replan import folder_plan
from test_study_run import MICRO as RUN_MICRO

# test_study_run's micro study without its seed replicates, checkpoints at the default interval and
# fewer bootstrap resamples (these tests check integrity, not intervals).
TINY = {
    **{k: v for k, v in RUN_MICRO.items() if k != "repeat"},
    "name": "tiny",
    "train": {"ema_decay": 0.9, "log_every": 100},
    "laws": {"bootstrap": 50},
}
QUIET = {"progress": False, "echo": lambda m: None}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# Holds a run lock from another process until its stdin closes (prints "held" once it has it).
HOLD = """
import sys
from ditscale.study.locks import RunLock
lock = RunLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def tiny_spec(**changes):
    return spec_from_dict({**TINY, **changes})


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the lock file ``path``; close its stdin to release it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ditscale: error: ") and err.count("\n") == 1, err
    return err


# 1. The design depends on results only -----------------------------------------------------------
def test_a_run_held_elsewhere_delays_the_next_budget_until_its_result_exists(tmp_path, monkeypatch):
    """Adaptive study; another process holds a run of the smallest budget. The third budget is not
    planned (nor frozen in plan.csv) while that run has no result; once it has one, the third grid
    is centred on the fit, exactly as in an uninterrupted study. (Old code: planned from the prior
    at once and frozen.)"""
    monkeypatch.setattr(study_run, "HELD_POLL_S", 0.2, raising=False)  # (raising: runs on old code too)
    spec, out = tiny_spec(), tmp_path / "s"
    first = [r for r in plan_study(spec).runs if r.budget in spec.budgets[:2]]
    held = first[0]
    holder = hold_lock(out / "runs" / held.run_id / "run.lock")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(done=run_study(spec, out, report=False, **QUIET)))
    try:
        worker.start()
        others = [out / "runs" / r.run_id / "result.json" for r in first if r is not held]
        deadline = time.time() + 300
        while worker.is_alive() and not all(p.exists() for p in others) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # several polls of the held run
        assert worker.is_alive() and all(p.exists() for p in others)
        assert set(StudyFolder(out).read_plan()) == set(spec.budgets[:2])  # 4e8 not planned, not frozen
    finally:
        release(holder)  # its holder gives the run up unfinished: the study trains it itself
        worker.join(600)
    assert outcome["done"].complete and held.run_id in outcome["done"].trained
    frozen = StudyFolder(out).read_plan()
    third = frozen[spec.budgets[2]]
    assert {r.centre for r in third} == {"fit"}
    uninterrupted = folder_plan(spec, StudyFolder(out), {b: frozen[b] for b in spec.budgets[:2]})
    assert [r for r in uninterrupted.runs if r.budget == spec.budgets[2]] == third


# 2. Workers die with `study run` ----------------------------------------------------------------
def children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(stat.parent.name)] = int(fields[1])
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent_of.items() if pp == p}
        out |= kids
        todo.extend(kids)
    return out


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_study_run_kills_its_workers_and_a_rerun_completes(tmp_path):
    """SIGKILL of `study run --workers 2` while its workers train: within a few seconds no worker
    is left (old code: they trained on, holding their runs' locks), and a rerun completes."""
    spec = {**TINY, "budgets": [1e8, 2e8, 3.2e9], "adaptive": False}  # the 3.2e9 runs take seconds
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ditscale",
            "study",
            "run",
            str(spec_path),
            "--out",
            str(out),
            "--workers",
            "2",
            "--no-progress",
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 180
        while proc.poll() is None and not list(out.glob("runs/*/checkpoints")) and time.time() < deadline:
            time.sleep(0.05)
        workers = children(proc.pid)
        assert proc.poll() is None and workers  # training in its workers
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 5
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert [p for p in workers if alive(p)] == []
    again = run_study(spec_from_dict(spec), out, report=False, **QUIET)
    assert again.complete and again.trained


# 3. No path leaves its folder -------------------------------------------------------------------
def test_a_run_id_that_leaves_the_study_is_refused(tmp_path, capsys):
    """plan.csv with run_id ../../escaped: a one-line error naming plan.csv, nothing written
    outside the study (old code: trained the run in tmp_path/escaped)."""
    spec = {**TINY, "adaptive": False}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "study"
    folder = StudyFolder(out)
    folder.create()
    run = plan_study(spec_from_dict(spec)).runs[0]
    folder.write_plan([type(run)(**{**run.__dict__, "run_id": "../../escaped"})])
    assert main(["study", "run", str(spec_path), "--out", str(out), "--no-progress"]) == 2
    assert not (tmp_path / "escaped").exists()
    err = one_line_error(capsys)
    assert str(folder.plan_csv) in err and "'../../escaped' is not a run name" in err


def test_latent_store_shard_paths_stay_inside_the_store(tmp_path):
    """meta.json naming shard files outside the store (../x.npy, /etc/passwd) is refused naming
    meta.json (old code: read ../x.json, and tried /etc/passwd.json)."""
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "outside.json").write_text(json.dumps({"labels": [3], "captions": None}))
    for bad in ("../outside.npy", "/etc/passwd", "sub/shard-00000.npy"):
        meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "shards": [{"file": bad, "start": 0, "count": 1}]}
        (store / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(DataError, match="meta.json: shard file .* is not a .npy file name inside the store"):
            read_meta(store)
        with pytest.raises(DataError, match="is not a .npy file name inside the store"):
            read_shard_records(store, meta)
    good = {"format": STORE_FORMAT, "version": STORE_VERSION, "shards": [{"file": "shard-00000.npy"}]}
    (store / "shard-00000.json").write_text(json.dumps({"labels": [1, 2], "captions": None}))
    (store / "meta.json").write_text(json.dumps(good))
    assert read_shard_records(store, read_meta(store)) == ([1, 2], [])


# 4. Nothing is written before a config is accepted ------------------------------------------------
SMALL_TRAIN = [
    "model.depth=1",
    "model.hidden_size=32",
    "model.num_heads=2",
    "batch_size=4",
    "val.num_images=0",
    "--no-progress",
]


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--max-steps", "2", "model.num_heads=5"], "not divisible by num_heads 5"),
        (["--flops", "1"], "less than one image's training cost"),
    ],
)
def test_a_refused_training_config_writes_nothing(tmp_path, capsys, bad, message):
    """A config refused by a check that needs the resolved model (old code: after config.yaml was
    written, so the fixed config was then refused as 'a different config')."""
    out = tmp_path / "run"
    args = ["train", "tiny", "--out", str(out), *SMALL_TRAIN]
    assert main([*args, *bad]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()
    assert main([*args, "--max-steps", "2"]) == 0  # the fixed config trains in the same folder
    assert json.loads((out / "result.json").read_text())["steps"] == 2


def test_a_training_config_without_an_end_is_refused():
    """An empty or default training config has no max_steps and no flops: refused (this already
    held before issue 12; kept as a guard)."""
    from ditscale.config import from_dict
    from ditscale.train.config import TrainConfig

    for build in (lambda: from_dict(TrainConfig, {}), TrainConfig):
        with pytest.raises(ConfigError, match="give exactly one of max_steps and flops"):
            build()


# 5. Damaged or edited study files ----------------------------------------------------------------
@pytest.fixture()
def synthetic(tmp_path):
    """A finished 3-budget study folder whose runs' result.json are written by hand (no training):
    loss = 2 C^-0.05 (1 + 0.05 ln(N / N*)^2), N* = 0.5 C^0.5."""
    spec = tiny_spec(adaptive=False)
    out = tmp_path / "s"
    folder = StudyFolder(out)
    folder.create()
    folder.write_spec(spec)
    runs = plan_study(spec).runs
    folder.write_plan(runs)
    for r in runs:
        loss = 2 * r.budget**-0.05 * (1 + 0.05 * math.log(r.params_non_embedding / (0.5 * r.budget**0.5)) ** 2)
        result = {
            "status": "done",
            "val_loss": loss,
            "flops_exact": r.flops_exact,
            "flops_6nd": r.flops_6nd,
            "params": r.params,
            "params_non_embedding": r.params_non_embedding,
            "tokens": r.tokens,
            "images": r.images,
            "steps": r.steps,
            "wall_time_s": 1.0,
        }
        folder.run(r.run_id).root.mkdir(parents=True)
        folder.run(r.run_id).result.write_text(json.dumps(result))
    study_run.collect_runs(out)
    return spec, out


def test_an_edited_loss_in_runs_csv_is_reported_and_rebuilt(synthetic):
    """One loss edited in runs.csv: reading it warns naming the run and rebuilds runs.csv from the
    runs' result.json, so the prediction does not move (old code: it moved)."""
    from ditscale.study.analyze import predict_study

    spec, out = synthetic
    before = predict_study(out, 1e10)["loss_opt"]["value"]
    text = (out / "runs.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    true_loss = rows[4]["loss"]
    rows[4]["loss"] = str(float(true_loss) * 0.5)
    with open(out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.warns(UserWarning, match=f"run {rows[4]['run_id']} has loss .* but its result.json gives"):
        after = predict_study(out, 1e10)["loss_opt"]["value"]
    assert after == before
    assert (out / "runs.csv").read_text() == text  # rebuilt to the true values


def test_runs_without_a_folder_keep_their_rows(synthetic):
    """A study shipped without its run folders (or a run folder deleted to train it again): runs.csv
    is those runs' only record, so reading it keeps their rows, with a warning, instead of rebuilding
    runs.csv without them (old code: it was rewritten empty and the analysis failed). A run whose folder
    is back is checked against its result.json again."""
    import shutil

    from ditscale.study.analyze import predict_study

    spec, out = synthetic
    before, text = predict_study(out, 1e10)["loss_opt"]["value"], (out / "runs.csv").read_text()
    gone = sorted((out / "runs").iterdir())
    shutil.move(str(gone[0]), str(out / "moved"))
    with pytest.warns(UserWarning, match="1 run\\(s\\) have no folder .* kept as recorded"):
        assert predict_study(out, 1e10)["loss_opt"]["value"] == before
    shutil.rmtree(out / "runs")
    with pytest.warns(UserWarning, match=f"{len(gone)} run\\(s\\) have no folder"):
        assert predict_study(out, 1e10)["loss_opt"]["value"] == before
    assert (out / "runs.csv").read_text() == text


def test_a_truncated_spec_yaml_is_an_error_not_defaults(synthetic, capsys):
    """spec.yaml cut before its laws section: one-line error naming the file (old code: defaults
    filled in the rest and `study predict` answered)."""
    _, out = synthetic
    text = (out / "spec.yaml").read_text()
    (out / "spec.yaml").write_text(text[: text.index("\nlaws:") + 1])
    assert main(["study", "predict", str(out)]) == 2
    err = one_line_error(capsys)
    assert f"{out / 'spec.yaml'} is truncated" in err
    (out / "spec.yaml").write_text("name: x\nfamily: !!python/object/apply:os.system ['true']\n")
    assert main(["study", "predict", str(out), "--flops", "1e10"]) == 2
    assert "spec.yaml" in (err := one_line_error(capsys)) and "python/object/apply:os.system' is not allowed" in err


def test_a_damaged_laws_json_is_reported_and_rebuilt(synthetic):
    """laws.json cut short: `study run` on the finished study says so and refits it from the runs
    (old code: a JSONDecodeError traceback); no run is trained or touched."""
    spec, out = synthetic
    results = {p: p.read_bytes() for p in out.glob("runs/*/result.json")}
    (out / "laws.json").write_text('{"study": "tiny", "params_law": {"coeff')
    said = []
    outcome = run_study(spec, out, progress=False, echo=said.append)
    assert outcome.complete and not outcome.trained
    assert any("laws.json is damaged" in m for m in said)
    laws = json.loads((out / "laws.json").read_text())
    assert laws["study"] == "tiny" and len(laws["budgets"]) == 3
    assert {p: p.read_bytes() for p in out.glob("runs/*/result.json")} == results


# 7. One process per training run folder ------------------------------------------------------------
def test_a_second_train_on_a_held_run_folder_is_refused(tmp_path, capsys):
    """`ditscale train --out D` while another process holds D/run.lock: exit 2, one line naming
    the holder's pid, nothing written (old code: both trained)."""
    out = tmp_path / "run"
    holder = hold_lock(out / "run.lock")
    try:
        assert main(["train", "tiny", "--out", str(out), "--max-steps", "2", *SMALL_TRAIN]) == 2
        assert f"pid {holder.pid} on host" in one_line_error(capsys)
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    finally:
        release(holder)
    assert main(["train", "tiny", "--out", str(out), "--max-steps", "2", *SMALL_TRAIN]) == 0
    assert not (out / "run.lock").exists()


def test_study_run_ending_with_a_run_held_elsewhere_exits_3(tmp_path, capsys):
    """Another process holds a run's lock to the end: `study run` trains the rest, says the run is not
    finished and exits 3, the documented "run the same command again" status, not 1 (a bug) nor 0 (done).
    (Old code: exit 1.)"""
    from ditscale.cli import main

    spec_dict = {**TINY, "adaptive": False, "laws": {"bootstrap": 0}}
    spec, out = tmp_path / "spec.yaml", tmp_path / "s"
    spec.write_text(json.dumps(spec_dict))
    held = plan_study(spec_from_dict(spec_dict)).runs[0]
    holder = hold_lock(out / "runs" / held.run_id / "run.lock")
    try:
        assert main(["study", "run", str(spec), "--out", str(out), "--no-progress"]) == 3
    finally:
        release(holder)
    assert "1 run(s) not finished" in capsys.readouterr().err
