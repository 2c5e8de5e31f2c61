"""Model weights I/O: safetensors round trip with config, safe .pt loading, strict key/shape errors."""

import argparse
import json

import pytest
import torch

from ditscale.errors import CheckpointError, ConfigError
from ditscale.models import DiTConfig, create_model, named_config
from ditscale.models.io import (
    describe_config,
    load_model,
    load_state_dict_file,
    load_state_dict_strict,
    read_metadata,
    resolve_weights,
    save_model,
    text_encoder_beside,
    vae_for,
    write_plain_folder,
)
from ditscale.train.rundir import RunDir

TINY = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)


def random_model(config: DiTConfig = TINY, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p))
    return model


def test_safetensors_round_trip_is_bit_exact_with_config(tmp_path):
    config = TINY.replace(block="cross_attn", learn_sigma=False)
    model = random_model(config)
    path = save_model(
        model, tmp_path / "run" / "model.safetensors", metadata={"diffusion": {"kind": "flow"}, "step": 7}
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp file left behind
    assert read_metadata(path) == {"model": config.to_dict(), "diffusion": {"kind": "flow"}, "step": 7}

    loaded = load_model(path)
    assert loaded.config == config and not loaded.training
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not loaded.pos_embed.requires_grad
    assert load_model(path, gradient_checkpointing=True).config == config.replace(gradient_checkpointing=True)


def test_plain_pt_state_dict_loads_with_weights_only(tmp_path):
    model = random_model()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    sd = load_state_dict_file(path)
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items()) and len(sd) == len(model.state_dict())
    assert read_metadata(path) == {}
    with pytest.raises(CheckpointError, match="carries no model config"):
        load_model(path)
    loaded = load_model(path, TINY.to_dict())
    assert torch.equal(loaded.final_layer.linear.weight, model.final_layer.linear.weight)
    ddp = tmp_path / "ddp.pth"  # DDP-wrapped keys "module.*"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, ddp)
    assert list(load_state_dict_file(ddp)) == list(model.state_dict())


def test_reference_training_checkpoint_takes_ema(tmp_path):
    model, ema = random_model(seed=1), random_model(seed=2)
    # the layout of AdamW.state_dict() (building a real AdamW imports torch._dynamo: seconds)
    opt = {
        "state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.ones(3), "exp_avg_sq": torch.ones(3)}},
        "param_groups": [
            {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0]}
        ],
    }
    args = argparse.Namespace(model="DiT-XL/2", image_size=256, num_classes=1000, global_batch_size=256, vae="ema")
    path = tmp_path / "0050000.pt"
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt, "args": args}, path)

    sd = load_state_dict_file(path)
    assert all(torch.equal(sd[k], v) for k, v in ema.state_dict().items())
    sd_model = load_state_dict_file(path, key="model")
    assert torch.equal(sd_model["blocks.0.attn.qkv.weight"], model.blocks[0].attn.qkv.weight)
    with pytest.raises(
        CheckpointError, match=r"has no 'state_dict' entry \(it has 'model', 'ema', 'opt' \(\+1 more\)\)"
    ):
        load_state_dict_file(path, key="state_dict")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict_file(path, key="args")
    loaded = load_model(path, "DiT-S/2", input_size=8, depth=2, hidden_size=32, num_heads=4, num_classes=10)
    assert torch.equal(loaded.y_embedder.embedding_table.weight, ema.y_embedder.embedding_table.weight)
    raw = load_model(path, TINY, ema=False)  # the raw weights, as `ditscale sample --no-ema`
    assert torch.equal(raw.y_embedder.embedding_table.weight, model.y_embedder.embedding_table.weight)
    plain = tmp_path / "plain.pt"  # one set of weights: ema=False has nothing to choose
    torch.save(ema.state_dict(), plain)
    assert torch.equal(load_model(plain, TINY, ema=False).pos_embed, ema.pos_embed)


def test_resolve_weights_of_files_checkpoints_and_run_folders(tmp_path):
    run = tmp_path / "run"
    (run / "config.yaml").parent.mkdir()
    (run / "config.yaml").write_text("text_encoder: word\n")
    old, new = run / "checkpoints" / "step_00000005", run / "checkpoints" / "step_00000010"
    for folder in (old, new):
        save_model(random_model(), folder / "model.safetensors")
    save_model(random_model(), old / "ema.safetensors")
    checkpoints = lambda folder: RunDir(folder).checkpoint_folders()  # noqa: E731  (as the CLI passes it)

    assert resolve_weights(old / "ema.safetensors").path == old / "ema.safetensors"  # a file: itself
    assert resolve_weights(old) == resolve_weights(old, run_checkpoints=checkpoints)  # a checkpoint folder
    assert resolve_weights(old).path == old / "ema.safetensors" and resolve_weights(old).notes == ()
    assert resolve_weights(old, ema=False).path == old / "model.safetensors"
    got = resolve_weights(run, run_checkpoints=checkpoints)  # the newest checkpoint, raw weights: two notes
    assert got.path == new / "model.safetensors"
    assert got.notes == (f"newest checkpoint: {new}", f"ema.safetensors not found in {new}; using model.safetensors")
    with pytest.raises(CheckpointError, match="is a folder without ema.safetensors"):
        resolve_weights(run)  # without run_checkpoints a run folder is just a folder
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_weights(tmp_path / "none")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no checkpoint with weights yet"):
        resolve_weights(tmp_path / "empty", run_checkpoints=checkpoints)

    assert RunDir(run).checkpoint_folders() == [new, old] and RunDir(tmp_path).checkpoint_folders() is None
    assert RunDir.containing(got.path).text_encoder() == "word" and RunDir(run).vae() is None
    assert text_encoder_beside(got.path) is None
    (new / "text_encoder.safetensors").write_bytes(b"")
    assert text_encoder_beside(got.path) == new / "text_encoder.safetensors"


EXECUTED = []


def _payload():
    EXECUTED.append("ran")
    return {}


class Malicious:
    def __reduce__(self):
        return (_payload, ())


def test_arbitrary_pickle_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": random_model().state_dict(), "extra": Malicious()}, path)
    with pytest.raises(
        CheckpointError, match=r"refusing to load .*evil\.pt: it pickles \S*_payload, not just tensors"
    ) as err:
        load_state_dict_file(path)
    assert EXECUTED == [] and "\n" not in str(err.value)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(CheckpointError, match="holds a list that is not a state dict"):
        load_state_dict_file(listing)


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    path = save_model(random_model(), tmp_path / "model.safetensors")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_state_dict_file(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 4)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict_file(garbage)
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown weights suffix '.npz'"):
        load_state_dict_file(odd)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    path = save_model(random_model(TINY.replace(input_size=16)), tmp_path / "big.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_model(path, TINY)
    assert str(err.value) == (
        "checkpoint does not match DiT(depth=2, hidden_size=32, patch_size=2) (input_size 8): "
        "shape mismatch at pos_embed: checkpoint (1, 64, 32) vs model (1, 16, 32) — pass the right --model/--image-size"
    )
    assert describe_config(named_config("DiT-S/2")) == "DiT-S/2 (input_size 32)"
    assert describe_config(named_config("DiT-XL/2", block="in_context")) == "DiT-XL/2 (input_size 32, block in_context)"


def test_missing_and_unexpected_keys_named():
    model = random_model()
    before = model.blocks[0].attn.qkv.weight.clone()
    sd = dict(random_model(seed=1).state_dict())
    for k in ["final_layer.linear.bias", "blocks.1.mlp.fc2.weight"]:
        del sd[k]
    sd["blocks.2.attn.qkv.weight"] = torch.zeros(96, 32)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, sd)
    assert str(err.value) == (
        "checkpoint does not match DiT(depth=2, hidden_size=32, patch_size=2) (input_size 8): "
        "missing keys blocks.1.mlp.fc2.weight, final_layer.linear.bias; unexpected keys blocks.2.attn.qkv.weight"
        " — pass the right --model/--image-size"
    )
    assert torch.equal(model.blocks[0].attn.qkv.weight, before)  # nothing was loaded


def test_metadata_with_bad_config_is_rejected(tmp_path):
    path = save_model(random_model(), tmp_path / "m.safetensors", metadata={"model": {**TINY.to_dict(), "widht": 3}})
    assert json.loads(json.dumps(read_metadata(path)))["model"]["widht"] == 3
    with pytest.raises(ConfigError, match="unknown key 'widht'"):
        load_model(path)


def test_vae_for_and_the_plain_export_folder(tmp_path):
    (tmp_path / "pipe" / "vae").mkdir(parents=True)
    (tmp_path / "pipe" / "vae" / "config.json").write_text("{}")
    assert vae_for(tmp_path / "pipe", "run-vae") == str(tmp_path / "pipe" / "vae")  # a diffusers folder's own
    assert vae_for(tmp_path / "m.safetensors", "run-vae") == "run-vae" and vae_for(tmp_path / "m.safetensors") is None
    model, ckpt, out = random_model(), tmp_path / "ckpt", tmp_path / "out"
    save_model(model, ckpt / "ema.safetensors")
    (ckpt / "text_encoder_ema.safetensors").write_bytes(b"ema encoder")
    out.mkdir()
    info = {"source": "s", "model": model.config.to_dict(), "diffusion": {"kind": "gaussian"}}
    what = write_plain_folder(model, info, ckpt / "ema.safetensors", out)
    assert what == "model.safetensors, text_encoder.safetensors and config.json (ditscale format)"
    assert json.loads((out / "config.json").read_text()) == {"format": "ditscale", **info}
    assert read_metadata(out / "model.safetensors") == {
        "model": model.config.to_dict(),
        "diffusion": {"kind": "gaussian"},
    }
    assert (out / "text_encoder.safetensors").read_bytes() == b"ema encoder"
    (tmp_path / "bare").mkdir()
    assert write_plain_folder(model, info, tmp_path / "m.safetensors", tmp_path / "bare").startswith(
        "model.safetensors and"
    )
