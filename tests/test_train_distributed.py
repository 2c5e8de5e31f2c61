"""2 CPU processes (torchrun, gloo) train the same weights as 1 process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import MICRO_MODEL

from ditscale.train import checkpoint as ckpt
from ditscale.train.config import load_train_config
from ditscale.train.data_order import DataOrder, step_seed
from ditscale.train.distributed import DistInfo, shard_bounds
from ditscale.train.loop import train
from ditscale.train.metrics import read_metrics

MICRO = [
    *MICRO_MODEL,
    "val.num_images=4",
    "val.num_timesteps=4",
    "val.buckets=2",
    "log_every=1",
    "optim.warmup_steps=0",
    "ckpt_every=0",
    "max_steps=null",
]


def test_shard_bounds_and_data_order():
    assert [shard_bounds(5, DistInfo(r, 2)) for r in (0, 1)] == [(0, 3), (3, 5)]
    assert [shard_bounds(8, DistInfo(r, 2)) for r in (0, 1)] == [(0, 4), (4, 8)]
    assert [shard_bounds(1, DistInfo(r, 2)) for r in (0, 1)] == [(0, 1), (1, 1)]
    order = DataOrder(5, seed=0)  # finite: a permutation per epoch, epochs chained
    items = order.items(3, 5)
    assert [e for e, _ in items] == [0, 0, 1, 1, 1]
    assert sorted(i for _, i in order.items(0, 5)) == [0, 1, 2, 3, 4]
    assert [i for _, i in order.items(0, 10)] == [i for _, i in DataOrder(5, 0).items(0, 10)]  # deterministic
    assert DataOrder(None, 0).items(7, 3) == [(0, 7), (0, 8), (0, 9)]  # infinite: sequential
    # data.stream_offset: the run's position p is global position offset + p, on either kind of data
    assert DataOrder(None, 0, offset=100).items(7, 3) == [(0, 107), (0, 108), (0, 109)]
    assert DataOrder(5, 0, offset=3).items(0, 7) == DataOrder(5, 0).items(3, 7)  # epochs chained the same way
    assert step_seed(0, 1) != step_seed(0, 2) and step_seed(0, 1) == step_seed(0, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_match_one(tmp_path, fsdp):
    per_image_probe = load_train_config("tiny", MICRO + ["max_steps=1"]).model_config()
    from ditscale.flops import train_flops_exact

    budget = 21 * train_flops_exact(per_image_probe, 1)  # 21 images: batches 8, 8 and an uneven 5 (3 + 2)
    overrides = MICRO + [f"flops={budget!r}", f"fsdp={str(fsdp).lower()}"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "ditscale",
        "train",
        "tiny",
        "--out",
        str(tmp_path / "two"),
        "--no-progress",
        *overrides,
    ]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train(load_train_config("tiny", overrides[:-1]), tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert len(stdout.strip().splitlines()) == 1  # only rank 0 reports
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["images"] == one["images"] == 21 and two["steps"] == 3

    final = {
        run: {
            stem: ckpt.load_tensors(tmp_path / run / "checkpoints" / "step_00000003", stem) for stem in ("model", "ema")
        }
        for run in ("one", "two")
    }
    for stem in ("model", "ema"):
        a, b = final["one"][stem], final["two"][stem]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), f"{stem}:{key}"
    # not vacuous: the raw weights moved away from the (near-initial) EMA weights by far more than 1e-6
    moved = max((final["one"]["model"][k] - final["one"]["ema"][k]).abs().max().item() for k in final["one"]["model"])
    assert moved > 1e-3
    # rank 0 alone wrote the metrics; the all-reduced losses are the global-batch means
    m1, m2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["step"] for r in m2] == [r["step"] for r in m1] == [1, 2, 3, 3]
    assert [r["train_loss"] for r in m2[:3]] == pytest.approx([r["train_loss"] for r in m1[:3]], rel=1e-6)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-6)
