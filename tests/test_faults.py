"""Fault tests (issue 12): `study run` killed (SIGKILL) at random points, two `study run` processes
on one folder, and a disk that fills up while a checkpoint is written.

Each compares with an uninterrupted study: every run finishes exactly once (one ``done`` line in its
train.log, one row in runs.csv), no result is lost, and the fitted laws are those of the
uninterrupted study.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ditscale.study import run_study, spec_from_dict
from test_study_run import MICRO, N_RUNS
from test_train import MICRO as TRAIN_MICRO

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SPEC = {**MICRO, "workers": 2}


def study_cmd(spec_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "ditscale.cli", "study", "run", str(spec_path), "--out", str(out), "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The micro study run without interruption (2 worker processes, as the faulted ones)."""
    out = tmp_path_factory.mktemp("ref") / "study"
    outcome = run_study(spec_from_dict(SPEC), out, progress=False, echo=lambda m: None)
    assert outcome.complete
    return out


@pytest.fixture
def spec_path(tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def results(study: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["val_loss"] for p in (study / "runs").glob("*/result.json")}


def assert_same_study(study: Path, reference: Path) -> None:
    """Every run finished once, with the uninterrupted study's result; the same laws."""
    got, want = results(study), results(reference)
    assert sorted(got) == sorted(want) and len(got) == N_RUNS
    for run_id, loss in want.items():
        assert got[run_id] == pytest.approx(loss, rel=1e-5), run_id  # resumed runs are bit-exact up to threads
        log = (study / "runs" / run_id / "train.log").read_text().splitlines()
        assert sum(line.split(" ", 1)[-1].startswith("done:") for line in log) == 1, (run_id, log)
    rows = (study / "runs.csv").read_text().splitlines()
    assert len(rows) == N_RUNS + 1 and len(set(rows)) == len(rows)
    a, b = (json.loads((s / "laws.json").read_text()) for s in (study, reference))
    for law in ("params_law", "tokens_law", "loss_law"):
        assert a[law]["exponent"] == pytest.approx(b[law]["exponent"], rel=1e-4, abs=1e-6), law


def test_sigkill_at_random_points_loses_nothing(reference, spec_path, tmp_path):
    out, rng = tmp_path / "study", random.Random(12)
    for _ in range(4):  # kill -9 the `study run` process at a random moment; its workers die with it
        proc = subprocess.Popen(
            study_cmd(spec_path, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(1.5, 5.0))
        proc.kill()
        proc.wait()
    done = subprocess.run(study_cmd(spec_path, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_study(out, reference)


def test_two_study_runs_on_one_folder_share_the_work(reference, spec_path, tmp_path):
    out = tmp_path / "study"
    procs = [
        subprocess.Popen(study_cmd(spec_path, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    # The process that finishes first may leave while the other still trains a run: it says so and
    # exits 3 (unfinished); the last one to finish sees the study complete, fits it and exits 0.
    codes = [p.returncode for p in procs]
    assert sorted(codes) in ([0, 0], [0, 3]), [err[-2000:] for _, err in outputs]
    for code, (_, err) in zip(codes, outputs):
        assert code == 0 or "not finished; run the same command again to continue" in err, err[-2000:]
    assert_same_study(out, reference)


# A full disk while a checkpoint is written ----------------------------------------------------------
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_keeps_the_previous_checkpoint_valid(tmp_path):
    from ditscale.train.checkpoint import latest_checkpoint, list_checkpoints, verify_checkpoint

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1400k"):
        pytest.skip("could not mount a tmpfs here")
    try:
        out = disk / "run"
        argv = [
            sys.executable,
            "-m",
            "ditscale.cli",
            "train",
            "tiny",
            "--out",
            str(out),
            "--max-steps",
            "40",
            "--ckpt-every",
            "1",
            "--no-progress",
            "keep_checkpoints=5",
            *TRAIN_MICRO,
        ]
        proc = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        err = proc.stderr.strip().splitlines()[-1]
        assert err.startswith("ditscale: error: could not write checkpoint") and "earlier checkpoints are intact" in err
        saved = list_checkpoints(out / "checkpoints")
        assert saved and not list((out / "checkpoints").glob(".tmp_*"))  # the half-written one is removed
        for _, path in saved:
            verify_checkpoint(path)  # every checkpoint left is whole (checksums match)
        step = latest_checkpoint(out / "checkpoints")[1]["step"]
        # with space again the run resumes from that checkpoint and finishes
        moved = tmp_path / "run"
        shutil.copytree(out, moved)
        argv[argv.index(str(out))] = str(moved)
        again = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        log = (moved / "train.log").read_text()
        assert f"resume at step {step}/40" in log and json.loads((moved / "result.json").read_text())["steps"] == 40
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_on_any_write_of_a_run_is_one_line(tmp_path, capsys):
    """Issue 24: a full disk while appending metrics.jsonl gave an OSError traceback; only checkpoint
    writes had the one-line message. With k pages of space left, the k-th write of a run fails: the
    lock, config.yaml, train.log, metrics.jsonl; each is one line naming the file. In process."""
    from ditscale.cli import main

    disk, size = tmp_path / "disk", 2 << 20
    if not _mount_tmpfs(disk, f"{size}"):
        pytest.skip("could not mount a tmpfs here")
    argv = ["train", "tiny", "--out", str(disk / "run"), "--no-progress", *TRAIN_MICRO, "max_steps=4", "log_every=1"]
    try:
        for pages, name in enumerate(("run.lock", "config.yaml", "train.log", "metrics.jsonl")):
            shutil.rmtree(disk / "run", ignore_errors=True)
            (disk / "filler").write_bytes(b"\0" * (size - pages * 4096))  # tmpfs counts whole pages
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "Traceback" not in err, err
            assert err.startswith(f"ditscale: error: could not write '{disk / 'run' / name}' (No space left"), err
            assert "free space and run the same command again" in err
            assert not (disk / "run" / "run.lock").exists()  # no lock left behind, empty or not
        (disk / "filler").unlink()  # with space again the same command finishes the run
        assert main(argv) == 0
        assert json.loads((disk / "run" / "result.json").read_text())["steps"] == 4
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path, capsys):
    """Issue 24: a SIGKILLed `data export` left its temp file (500 MB at scale) for good. A writer
    killed inside an atomic write (a forked child, SIGKILLed there) leaves its temp file; the next
    `data export` to the same file removes it, and keeps the temp file of a live writer."""
    from ditscale.cli import main
    from ditscale.io import atomic_path

    out = tmp_path / "ref.npz"
    child = os.fork()
    if child == 0:  # the killed writer
        try:
            with atomic_path(out) as tmp:
                tmp.write_bytes(b"\0" * 4096)
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    assert os.waitpid(child, 0)[1] == signal.SIGKILL
    (stale,) = tmp_path.iterdir()
    assert stale.name.startswith(".ref.npz.") and stale.name.endswith(".tmp") and stale.stat().st_size == 4096
    with atomic_path(out) as live:  # a live writer of the same file (this process), mid-write
        live.write_bytes(b"live")
        assert main(["data", "export", "shapes", "--num", "2", "--image-size", "8", "--quiet", "--out", str(out)]) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "ref.npz"])  # the stale one is gone
    assert out.read_bytes() == b"live"
    capsys.readouterr()
