"""Checkpoint files: atomic layout, checksums, corrupt-checkpoint skipping, optimizer/RNG round trips."""

import json
import random

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

from ditscale.errors import CheckpointError
from ditscale.io import sha256_file
from ditscale.train import checkpoint as ckpt


def _write(root, step, value=1.0, keep=None):
    weights = {"model": ({"w": torch.full((3,), value)}, {"ditscale": "{}"})}
    return ckpt.write_checkpoint(root, step, weights, {"data_position": step * 8}, keep=keep)


def test_layout_checksums_and_pruning(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        path = _write(root, step, keep=2)
    assert path.name == "step_00000030"
    assert [p.name for _, p in ckpt.list_checkpoints(root)] == ["step_00000030", "step_00000020"]  # newest 2 kept
    state = json.loads((path / "state.json").read_text())
    assert state["step"] == 30 and state["data_position"] == 240
    assert state["files"] == {"model.safetensors": sha256_file(path / "model.safetensors")}
    assert not list(root.glob(".tmp_*"))
    assert torch.equal(ckpt.load_tensors(path, "model")["w"], torch.ones(3))


def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path):
    root = tmp_path / "checkpoints"
    _write(root, 10, value=1.0)
    newest = _write(root, 20, value=2.0)
    f = newest / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-5])  # truncate
    with pytest.raises(CheckpointError, match="model.safetensors does not match its SHA-256"):
        ckpt.verify_checkpoint(newest)
    with pytest.warns(UserWarning, match="step_00000020"):
        path, state = ckpt.latest_checkpoint(root)
    assert path.name == "step_00000010" and state["step"] == 10
    (path / "state.json").write_text("{not json")
    with pytest.warns(UserWarning):
        assert ckpt.latest_checkpoint(root) is None
    assert ckpt.latest_checkpoint(tmp_path / "nothing") is None


def test_optimizer_state_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    x = torch.randn(5, 4)
    for _ in range(3):
        model(x).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, meta = ckpt.flatten_optimizer_state(get_optimizer_state_dict(model, opt))
    assert set(tensors) >= {"0.weight::exp_avg", "0.weight::exp_avg_sq", "0.weight::step"}
    meta = json.loads(json.dumps(meta))  # must survive JSON
    clone = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(clone.parameters(), lr=1.0)
    set_optimizer_state_dict(clone, opt2, ckpt.unflatten_optimizer_state(tensors, meta))
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.95)
    for m, o in ((model, opt), (clone, opt2)):
        m(x).pow(2).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters()))


def test_rng_state_round_trip():
    state = json.loads(json.dumps(ckpt.rng_state()))
    first = (torch.rand(3), np.random.rand(2), random.random())
    ckpt.set_rng_state(state)
    again = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
