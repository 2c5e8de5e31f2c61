"""Shared trunks (Hägele et al. 2024): a branch off a trunk is exactly the run it replaces.

- train level: branches of one trunk (constant lr, and wsd with a 1-sqrt cooldown; EMA windows
  of their own) equal independently trained runs bit for bit: weights, EMA, optimizer,
  result.json and metrics lines (all but timings);
- study level: a micro study with ``share_trunks`` writes the same runs.csv as without, and a
  study killed (SIGKILL) mid-trunk and run again gives that runs.csv too.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import MICRO_MODEL

from ditscale.study import run_study, spec_from_dict
from ditscale.study.analyze import compute_summary
from ditscale.study.folder import StudyFolder
from ditscale.train import checkpoint as ckpt
from ditscale.train.budget import run_length
from ditscale.train.config import load_train_config
from ditscale.train.loop import train
from ditscale.train.rundir import RunDir
from ditscale.train.trunk import Branch, branch_point, train_trunk

MICRO_RUN = [
    *MICRO_MODEL,
    "val.num_images=8",
    "val.num_timesteps=4",
    "val.buckets=2",
    "log_every=5",
    "optim.warmup_steps=3",
    "optim.schedule=constant",
    "ckpt_every=0",
    "max_steps=null",
    "optim.lr=1e-3",
    "ema_decay=0.9",
    "val.every=40",
]
TIMINGS = ("images_per_s", "mfu", "wall_time_s", "checkpoint")


def run_config(flops: float, ema_start: int, *extra: str):
    return load_train_config("tiny", MICRO_RUN + [f"flops={flops}", f"ema_start={ema_start}", *extra])


def lines(path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMINGS} for x in path.read_text().splitlines()]


def test_branches_equal_independent_runs(tmp_path):
    per_image = run_length(8, run_config(1e9, 0).model_config(), max_steps=1).flops_per_image
    configs = {
        "full": run_config(101 * 8 * per_image, 20),  # 101 full batches: the trunk writes its last log line
        "short": run_config(6.2e8, 30),  # ends mid-batch: its last, smaller step is its own
        "long": run_config(1.2e9, 0),  # EMA from the first step
        "wsd": run_config(1.6e9, 60, "optim.schedule=wsd", "optim.cooldown_frac=0.25", "optim.cooldown_shape=1-sqrt"),
    }
    alone = {name: train(cfg, tmp_path / "alone" / name, progress=False) for name, cfg in configs.items()}
    branches = [Branch(cfg, RunDir(tmp_path / "shared" / name)) for name, cfg in configs.items()]
    assert train_trunk(tmp_path / "trunk", branches) == []
    points = {b.name: b.point for b in branches}
    length = run_length(8, configs["wsd"].model_config(), flops=1.6e9)
    assert (
        points["wsd"] == branch_point(configs["wsd"], length) == length.total_steps - round(0.25 * length.total_steps)
    )
    assert points["full"] == alone["full"]["steps"] == 101 and 101 % 5  # branches at its very last step
    assert points["short"] < points["long"] < points["wsd"]  # the branch points differ; one trunk serves all
    for name in configs:
        shared = json.loads((tmp_path / "shared" / name / "result.json").read_text())
        assert {k: v for k, v in shared.items() if k not in TIMINGS} == {
            k: v for k, v in alone[name].items() if k not in TIMINGS
        }
        final = f"step_{alone[name]['steps']:08d}"
        for stem in ("model", "ema", "optimizer"):
            a = ckpt.load_tensors(tmp_path / "alone" / name / "checkpoints" / final, stem)
            b = ckpt.load_tensors(tmp_path / "shared" / name / "checkpoints" / final, stem)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name}: {stem} differs"
        assert lines(tmp_path / "shared" / name / "metrics.jsonl") == lines(tmp_path / "alone" / name / "metrics.jsonl")
    log = (tmp_path / "trunk" / "train.log").read_text().splitlines()  # the trunk's progress, as a run's
    end = max(points.values())
    assert log[0].endswith(f" start at step 0/{end}") and f" step {end}/{end} (100.0%) loss " in log[-2]
    assert log[-1].endswith(f" trunk done at step {end}: 4 branch(es) served") and len(log) >= 3
    # run again: every branch is done, nothing trains
    before = {b.name: b.out.result.stat().st_mtime_ns for b in branches}
    assert (
        train_trunk(tmp_path / "trunk", [Branch(c, RunDir(tmp_path / "shared" / n)) for n, c in configs.items()]) == []
    )
    assert {b.name: b.out.result.stat().st_mtime_ns for b in branches} == before


def test_a_text_encoder_trained_with_the_model_branches_too(tmp_path):
    small = [x for x in MICRO_RUN if not x.startswith(("optim.lr", "ema_decay", "val.every"))]
    configs = {
        name: load_train_config("tiny-text", small + [f"flops={flops}"]) for name, flops in (("a", 4e8), ("b", 8e8))
    }
    alone = {name: train(cfg, tmp_path / "alone" / name, progress=False) for name, cfg in configs.items()}
    assert (
        train_trunk(tmp_path / "trunk", [Branch(c, RunDir(tmp_path / "shared" / n)) for n, c in configs.items()]) == []
    )
    for name in configs:
        final = f"step_{alone[name]['steps']:08d}"
        for stem in ("model", "ema", "text_encoder", "text_encoder_ema", "optimizer"):
            a = ckpt.load_tensors(tmp_path / "alone" / name / "checkpoints" / final, stem)
            b = ckpt.load_tensors(tmp_path / "shared" / name / "checkpoints" / final, stem)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name}: {stem} differs"


def test_a_failing_branch_leaves_the_others_alone(tmp_path, monkeypatch):
    from ditscale.errors import TrainingError
    from ditscale.train import trunk

    real = trunk.loop.train

    def train_or_fail(cfg, out, **kw):
        if str(out).endswith("bad"):
            raise TrainingError("loss became nan at step 3; lower the learning rate")
        return real(cfg, out, **kw)

    monkeypatch.setattr(trunk.loop, "train", train_or_fail)
    branches = [
        Branch(run_config(flops, 0), RunDir(tmp_path / name))
        for name, flops in (("a", 4e8), ("bad", 6.2e8), ("c", 8e8))
    ]
    assert train_trunk(tmp_path / "trunk", branches) == []
    assert [b.error for b in branches] == [None, "loss became nan at step 3; lower the learning rate", None]
    assert [(tmp_path / n / "result.json").exists() for n in ("a", "bad", "c")] == [True, False, True]


def test_runs_that_cannot_share_are_refused(tmp_path):
    from ditscale.errors import ConfigError

    cosine = [Branch(run_config(6.2e8, 0, "optim.schedule=cosine"), RunDir(tmp_path / "a"))]
    with pytest.raises(ConfigError, match="shared trunks need 'constant' or 'wsd'"):
        train_trunk(tmp_path / "t", cosine)
    other_lr = [
        Branch(run_config(6.2e8, 0), RunDir(tmp_path / "b")),
        Branch(run_config(1.2e9, 0, "optim.lr=2e-3"), RunDir(tmp_path / "c")),
    ]
    with pytest.raises(ConfigError, match="cannot share a trunk"):
        train_trunk(tmp_path / "t", other_lr)


# The study level ------------------------------------------------------------------------------------
STUDY = {
    "name": "trunks",
    "data": {"name": "shapes", "image_size": 8},
    "diffusion": {"kind": "flow"},
    "family": {
        "widths": [8, 16, 32],
        "depth": 1,
        "head_dim": 8,
        "model": {"patch_size": 2, "block": "in_context", "learn_sigma": False},
    },
    "budgets": [2e8, 4e8, 8e8],
    "models_per_budget": 3,
    "span": 4,
    "min_steps": 3,
    "prior": {"coefficient": 0.5, "exponent": 0.5},
    "hparams": {
        "lr": 1e-2,
        "base_width": 16,
        "batch_size": 8,
        "width_rule": "none",
        "schedule": "constant",
        "warmup_steps": 5,
        "ema_fraction": 0.2,
        "ema_window": 0.4,
    },
    "val": {"num_images": 8, "num_timesteps": 2, "buckets": 2},
    "train": {"log_every": 10, "ckpt_every": 1000},
    "laws": {"bootstrap": 0},
    "workers": 0,
    "target_flops": 1e10,
}
STABLE = ("wall_s", "cpu_s")  # timings: everything else in runs.csv must match


def runs_csv(out) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in STABLE} for row in csv.DictReader(open(out / "runs.csv"))]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    out = tmp_path_factory.mktemp("shared") / "s"
    outcome = run_study(
        spec_from_dict({**STUDY, "share_trunks": True}), out, progress=False, report=False, echo=lambda m: None
    )
    assert outcome.complete and not outcome.failed and len(outcome.trained) == 9
    return out


@pytest.fixture(scope="module")
def independent(tmp_path_factory):
    out = tmp_path_factory.mktemp("independent") / "s"
    assert run_study(spec_from_dict(STUDY), out, progress=False, report=False, echo=lambda m: None).complete
    return out


@pytest.mark.slow
def test_shared_study_equals_independent_runs(independent, shared):
    out = shared
    assert runs_csv(out) == runs_csv(independent)
    trunks = sorted(p.name for p in (out / "trunks").iterdir())
    assert trunks == ["d1w16h2-b8-s0", "d1w32h4-b8-s0", "d1w8h1-b8-s0"]  # each model trained once as a trunk
    # laws.json's compute block: the grid is the same; what was trained is the grid less each
    # branch's shared steps, plus every trunk once
    shared, alone = compute_summary(StudyFolder(out)), compute_summary(StudyFolder(independent))
    assert shared["grid_flops"] == alone["grid_flops"] == alone["trained_flops"]
    by_hand = alone["grid_flops"]
    for trunk in (out / "trunks").iterdir():
        data = json.loads((trunk / "trunk.json").read_text())
        by_hand += data["trained"]["flops"] - sum(data["shared_flops"].values())
        assert data["trained"]["flops"] == max(data["shared_flops"].values())  # the trunk ends at its last branch
    assert shared["trained_flops"] == pytest.approx(by_hand, rel=1e-12)
    assert shared["trained_flops"] < 0.8 * shared["grid_flops"]
    assert shared["matmul_peak_flops"] > 1e9 and 0 < shared["study_mfu"] < 1


KILL = """
import json, sys
from ditscale.study import run_study, spec_from_dict
from ditscale.study.analyze import compute_summary
from ditscale.study.folder import StudyFolder
run_study(spec_from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False, report=False, echo=lambda m: None)
"""


@pytest.mark.slow
def test_study_killed_mid_trunk_gives_the_same_runs(independent, shared, tmp_path):
    out = tmp_path / "killed"
    spec = {**STUDY, "share_trunks": True, "train": {"log_every": 10, "ckpt_every": 10}}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL, json.dumps(spec), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list((out / "trunks").glob("*/checkpoints/step_*/state.json")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no trunk checkpoint appeared"
        time.sleep(0.002)
    proc.kill()  # SIGKILL, mid-trunk
    proc.wait()
    assert not (out / "runs.csv").exists()
    assert run_study(spec_from_dict(spec), out, progress=False, report=False, echo=lambda m: None).complete
    assert runs_csv(out) == runs_csv(independent)
    logs = [(t / "train.log").read_text() for t in (out / "trunks").iterdir() if (t / "train.log").is_file()]
    assert any(" resume at step " in log for log in logs)  # the killed trunk's log goes on where it stopped
    # the compute the study spent is counted as without the kill (re-trained steps are not "trained")
    assert compute_summary(StudyFolder(out))["trained_flops"] == compute_summary(StudyFolder(shared))["trained_flops"]
