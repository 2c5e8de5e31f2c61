"""Resume after SIGKILL is bit-identical to an uninterrupted run; a corrupt checkpoint is skipped."""

import json
import os
import shutil
import subprocess
import sys
import time
import warnings

import pytest
import torch

from ditscale.train import checkpoint as ckpt
from ditscale.train.config import load_train_config
from ditscale.train.loop import train

# ~0.1 s per step on one core: the run is still going when the first checkpoint appears.
SMALL = ["model.hidden_size=64", "model.depth=2", "batch_size=32", "val.num_images=8", "log_every=10"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(out):
    return [
        sys.executable,
        "-m",
        "ditscale",
        "train",
        "tiny",
        "--out",
        str(out),
        "--max-steps",
        "40",
        "--ckpt-every",
        "10",
        "--no-progress",
        *SMALL,
    ]


def final_tensors(out):
    path = out / "checkpoints" / "step_00000040"
    return {stem: ckpt.load_tensors(path, stem) for stem in ("model", "ema", "optimizer")}


def assert_identical(a, b):
    for stem in ("model", "ema", "optimizer"):
        assert a[stem].keys() == b[stem].keys()
        for key in a[stem]:
            assert torch.equal(a[stem][key], b[stem][key]), f"{stem}:{key} differs"


def test_sigkill_resume_is_bit_identical(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    reference = subprocess.Popen(command(ref), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.Popen(command(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step_00000010").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.kill()  # SIGKILL
    proc.wait()
    assert proc.returncode == -9
    assert not (out / "result.json").exists()  # killed mid-run
    killed_at = ckpt.list_checkpoints(out / "checkpoints")[0][0]
    assert killed_at < 40

    assert reference.wait() == 0, reference.stderr.read().decode()
    resumed = subprocess.run(command(out), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 40
    assert_identical(final_tensors(ref), final_tensors(out))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (ref / "metrics.jsonl").read_text().splitlines()]

    # Corrupt the newest checkpoint: the rerun warns, resumes from step 30 and ends identical again.
    newest = out / "checkpoints" / "step_00000040" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    (out / "result.json").unlink()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # match the subprocesses' OMP_NUM_THREADS=1 bit for bit
    try:
        with pytest.warns(UserWarning, match="step_00000040.*model.safetensors does not match its SHA-256"):
            result = train(load_train_config("tiny", [*SMALL, "max_steps=40", "ckpt_every=10"]), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result["steps"] == 40
    assert_identical(final_tensors(ref), final_tensors(out))


def test_a_resume_on_another_thread_count_says_it_is_not_bit_identical(tmp_path):
    """Each checkpoint records its torch threads: a CPU matmul sums in another order on another count
    (docs/training.md), so a resume there warns and names the --threads that keeps the run bit-identical."""
    cfg = load_train_config("tiny", [*SMALL, "max_steps=4", "ckpt_every=2"])
    checkpoints, threads = tmp_path / "checkpoints", torch.get_num_threads()

    def resume_from_step_2(n: int) -> list[str]:
        shutil.rmtree(checkpoints / "step_00000004")
        (tmp_path / "result.json").unlink()
        torch.set_num_threads(n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert train(cfg, tmp_path, progress=False)["steps"] == 4
        return [str(w.message) for w in caught if "torch threads" in str(w.message)]

    try:
        torch.set_num_threads(1)
        train(cfg, tmp_path, progress=False)
        assert json.loads((checkpoints / "step_00000002" / "state.json").read_text())["torch_threads"] == 1
        assert resume_from_step_2(1) == []
        (said,) = resume_from_step_2(2)
        assert said.startswith("resuming step_00000002 on 2 torch threads, written on 1: ")
        assert said.endswith("pass --threads 1 for that")
        assert json.loads((checkpoints / "step_00000004" / "state.json").read_text())["torch_threads"] == 2
    finally:
        torch.set_num_threads(threads)
