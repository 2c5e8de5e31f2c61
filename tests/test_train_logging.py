"""Mixed precision on CPU, the compile guard, W&B / TensorBoard logging with sample grids, progress
lines outside a terminal, train.log, --threads and the versions block of result.json."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ditscale
from ditscale.errors import ConfigError
from ditscale.io import sha256_json
from ditscale.train import loop
from ditscale.train.config import load_train_config
from ditscale.train.data_order import rank_batches
from ditscale.train.distributed import DistInfo
from ditscale.train.metrics import read_metrics
from ditscale.train.progress import ProgressLog, format_duration, progress_text
from ditscale.train.provenance import git_commit, git_dirty, versions
from ditscale.train.rundir import RunDir
from test_train import MICRO, one_thread  # noqa: F401 - the micro config and the autouse one-thread fixture


def micro(*extra: str):
    return load_train_config("tiny", MICRO + list(extra))


# bf16 autocast on CPU ---------------------------------------------------------------------------
def _steps(cfg, out: Path, n: int) -> tuple[loop.Run, list[float], list[torch.dtype]]:
    """``n`` training steps of ``cfg``; returns the run, the losses and the dtypes of the first block's
    first Linear layer's outputs during those steps."""
    run = loop.build_run(cfg, RunDir(out), DistInfo(), torch.device("cpu"))
    linear = next(m for m in run.trainable.blocks[0].modules() if isinstance(m, torch.nn.Linear))
    dtypes: list[torch.dtype] = []
    handle = linear.register_forward_hook(lambda mod, args, output: dtypes.append(output.dtype))
    batches = rank_batches(run.dataset, run.order, run.length.batch_at, run.length.batch_size, range(n), run.info, 0)
    run.net.train()
    losses = [loop.train_step(run, step, next(batches))[0] for step in range(n)]
    handle.remove()
    return run, losses, dtypes


def test_bf16_autocast_on_cpu_keeps_fp32_master_weights(tmp_path):
    with pytest.warns(UserWarning, match="bf16 autocast on CPU"):
        run, losses, dtypes = _steps(micro("max_steps=3", "precision=bf16", "cpu_bf16=true"), tmp_path / "bf16", 3)
    _, ref, ref_dtypes = _steps(micro("max_steps=3"), tmp_path / "fp32", 3)
    assert run.autocast == torch.bfloat16
    assert dtypes == [torch.bfloat16] * 3 and ref_dtypes == [torch.float32] * 3  # the matmul ran in bf16
    # fp32 master weights, fp32 AdamW state (the multi-tensor form on CPU, not fused) and fp32 EMA
    assert all(p.dtype == torch.float32 for p in run.trainable.parameters())
    states = [run.opt.state[p] for p in run.trainable.parameters() if p.requires_grad]
    assert len(states) > 10 and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in states)
    assert run.opt.defaults["foreach"] is True and not run.opt.defaults["fused"]
    assert all(v.dtype == torch.float32 for v in run.ema.state_dict().values())
    # The loss is finite and within 0.1% of the fp32 run's (bf16 keeps 8 bits of mantissa, ~0.4% per
    # rounding, but the loss averages many; measured: at most 5e-5 relative over 20 steps), yet not
    # bit-identical after the first update (at step 0 the zero-initialised output layer hides it).
    assert all(np.isfinite(losses)) and losses == pytest.approx(ref, rel=1e-3)
    assert losses[0] == ref[0] and losses[1:] != ref[1:]


def test_bf16_on_cpu_without_cpu_bf16_trains_fp32_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="set cpu_bf16: true"):
        run, losses, dtypes = _steps(micro("max_steps=2", "precision=bf16"), tmp_path, 2)
    assert run.autocast is None and dtypes == [torch.float32] * 2
    with pytest.raises(ConfigError, match="cpu_bf16: true needs precision: bf16"):
        micro("max_steps=2", "cpu_bf16=true")


def test_bf16_run_records_autocast_in_result(tmp_path):
    with pytest.warns(UserWarning):
        result = loop.train(micro("max_steps=2", "precision=bf16", "cpu_bf16=true"), tmp_path, progress=False)
    assert result["autocast"] == "bfloat16" and np.isfinite(result["val_loss"])
    assert loop.train(micro("max_steps=2"), tmp_path / "fp32", progress=False)["autocast"] is None


def test_compile_failure_falls_back_with_one_line_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("inductor needs a C++ compiler\nsecond line of the traceback text")

    monkeypatch.setattr(torch, "compile", broken)
    net = torch.nn.Linear(2, 2)
    with pytest.warns(UserWarning) as caught:
        assert loop.maybe_compile(net, micro("max_steps=1", "compile=true"), torch.device("cuda")) is net
    [w] = caught
    assert str(w.message) == ("torch.compile failed (RuntimeError: inductor needs a C++ compiler); training uncompiled")
    with pytest.warns(UserWarning, match="compile=true is for GPUs"):  # CPU: never calls torch.compile
        assert loop.maybe_compile(net, micro("max_steps=1", "compile=true"), torch.device("cpu")) is net
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loop.maybe_compile(net, micro("max_steps=1"), torch.device("cuda")) is net


# Sample grids, TensorBoard and W&B --------------------------------------------------------------
def test_tensorboard_gets_scalars_and_sample_grids(tmp_path):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = micro("max_steps=6", "val.every=3", "val.sample_images=4", "val.sample_steps=2", "tensorboard=true")
    loop.train(cfg, tmp_path, progress=False)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "samples" in acc.Tags()["images"] and {"train_loss", "val_loss", "lr"} <= set(acc.Tags()["scalars"])
    images = acc.Images("samples")
    # 4 images of 8x8 enlarged 8x to 64x64, 2 per row, 2 px black padding: 2 * (64 + 2) + 2 = 134
    assert [e.step for e in images] == [3, 6] and (images[0].width, images[0].height) == (134, 134)
    assert [e.step for e in acc.Scalars("train_loss")] == [2, 4, 6]
    grid = np.asarray(Image.open(tmp_path / "samples" / "step_00000006.png"))
    assert grid.shape == (134, 134, 3) and (tmp_path / "samples" / "step_00000003.png").exists()
    assert grid[:2].max() == 0 and grid[2:66, 2:66].std() > 0  # black padding, a non-constant sample


def test_sample_grids_need_a_pixel_model(tmp_path):
    cfg = micro("max_steps=1", "val.sample_images=2", "model.in_channels=4")
    with pytest.raises(ConfigError, match="latent space"):
        loop.train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()
    with pytest.raises(ConfigError, match="val.num_images is 0"):
        micro("max_steps=1", "val.sample_images=2", "val.num_images=0")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_run_holds_the_logged_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    out = tmp_path / "run"
    cfg = micro(
        "max_steps=4", "wandb.project=ditscale-test", "wandb.mode=offline", "val.sample_images=2", "val.sample_steps=2"
    )
    result = loop.train(cfg, out, progress=False)
    run_id = (out / "wandb_run_id").read_text().strip()
    [folder] = (tmp_path / "wb" / "wandb").glob(f"offline-run-*-{run_id}")
    data = (folder / f"run-{run_id}.wandb").read_bytes()
    logged = {k for r in read_metrics(out) for k, v in r.items() if isinstance(v, float)}
    assert {"train_loss", "lr", "images_per_s", "val_loss", "val_loss_ema"} <= logged
    for key in [*logged, "samples", "ema_decay", "sample_images"]:  # scalars, the grid, the config
        assert key.encode() in data, key
    assert json.dumps(result["val_loss"]).encode() in data  # the value itself, as W&B stores it (JSON)
    assert list((folder / "files" / "media" / "images").glob("samples_4_*.png"))


def test_wandb_missing_is_a_one_line_error_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"wandb is not installed; pip install 'ditscale\[wandb\]'") as err:
        loop.train(micro("max_steps=1", "wandb.project=p"), tmp_path / "run", progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
    loop.train(micro("max_steps=1", "wandb.project=p", "wandb.mode=disabled"), tmp_path / "off", progress=False)


# Progress lines, train.log, --threads, versions -------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_every_n_seconds(tmp_path):
    clock = FakeClock()
    log = ProgressLog(tmp_path / "train.log", total=10, start=2, every=25.0, echo=False, clock=clock)
    log.begin()
    for done in range(3, 8):  # 10 s per step of 8 images
        clock.now += 10.0
        log.update(done, loss=0.1 * done, images=8)
    log.end("done")
    lines = [line.split(" ", 1)[1] for line in (tmp_path / "train.log").read_text().splitlines()]
    assert lines == [
        "resume at step 2/10",
        # after 3 steps (30 s): loss mean(0.3, 0.4, 0.5), 24 images / 30 s, eta 7 steps x 10 s
        "step 5/10 (50.0%) loss 0.4000 images/s 0.8 elapsed 0:00:30 eta 0:00:50",
        "step 7/10 (70.0%) loss 0.6500 images/s 0.8 elapsed 0:00:50 eta 0:00:30",  # the rest, flushed by end
        "done",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", (tmp_path / "train.log").read_text().split(" ")[0])
    assert format_duration(3 * 3600 + 61.4) == "3:01:01" and format_duration(float("nan")) == "?"
    assert progress_text(0, 5, None, 0.0, 0.0, float("nan")).endswith("loss n/a images/s 0.0 elapsed 0:00:00 eta ?")


PROGRESS = re.compile(
    r"^\S+Z step (\d+)/(\d+) \(\d+\.\d%\) loss \d+\.\d{4} images/s [\d.]+ "
    r"elapsed \d+:\d\d:\d\d eta \d+:\d\d:\d\d$"
)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ditscale", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_progress_lines_train_log_threads_and_versions(tmp_path):
    out = tmp_path / "run"
    proc = _cli("tiny", "--out", str(out), "--max-steps", "6", "--progress-every", "0", "--threads", "2", *MICRO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stdout = proc.stdout.splitlines()
    progress = [line for line in stdout if PROGRESS.match(line)]
    assert [PROGRESS.match(line).groups() for line in progress] == [(str(s), "6") for s in range(1, 7)]
    assert json.loads(stdout[-1])["status"] == "done"  # the summary stays the last stdout line
    log = (out / "train.log").read_text().splitlines()
    assert log[0].endswith("start at step 0/6") and log[1:7] == progress and "done: 6 steps" in log[7]
    result = json.loads((out / "result.json").read_text())
    assert result["versions"]["torch"] == torch.__version__
    assert result["versions"]["ditscale"] == ditscale.__version__
    assert result["versions"]["python"] == platform.python_version()
    assert result["config_sha256"] == sha256_json(result["config"])
    assert result["torch_threads"] == 2
    # resuming appends to train.log
    proc = _cli("tiny", "--out", str(out), "--max-steps", "8", "--force", "--progress-every", "1000", *MICRO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log2 = (out / "train.log").read_text().splitlines()
    assert (
        log2[:8] == log
        and log2[8].endswith("resume at step 6/8")
        and log2[9].split(" ", 1)[1].startswith("step 8/8 (100.0%)")
    )


def test_cli_rejects_bad_progress_and_thread_values(tmp_path, capsys):
    from ditscale.cli import main

    for flag, value in (("--progress-every", "-1"), ("--progress-every", "nan"), ("--threads", "0")):
        assert main(["train", "tiny", "--out", str(tmp_path), flag, value]) == 2
        assert flag in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_versions_block(tmp_path):
    info = versions()
    assert set(info) == {"ditscale", "torch", "python", "git_commit", "git_dirty", "hostname", "device"}
    assert info["torch"] == torch.__version__ and info["device"]
    assert git_commit(tmp_path) is None and git_dirty(tmp_path) is None  # not a git checkout
    commit = info["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)


def test_git_dirty_tells_uncommitted_changes(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "one")
    assert git_dirty(tmp_path) is False and re.fullmatch(r"[0-9a-f]{40}", git_commit(tmp_path))
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) is True
