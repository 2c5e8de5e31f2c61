"""The training loop: metrics, compute-budget stop, NaN stop, config checks, CLI errors."""

import json

import pytest
import torch
from conftest import MICRO_MODEL

from ditscale import flops as F
from ditscale.cli import main
from ditscale.errors import ConfigError, TrainingError
from ditscale.models import create_model
from ditscale.train import checkpoint as ckpt
from ditscale.train.config import load_train_config
from ditscale.train.loop import train
from ditscale.train.metrics import read_metrics
from ditscale.train.schedules import lr_at

# The micro DiT (conftest.MICRO_MODEL: 8x8 shapes, 4 tokens per image, batch 8) with this file's other settings.
MICRO = [
    *MICRO_MODEL,
    "val.num_images=4",
    "val.num_timesteps=4",
    "val.buckets=2",
    "val.every=0",
    "optim.warmup_steps=4",
    "log_every=2",
    "ckpt_every=0",
    # pinned here so that tuning the tiny preset does not change these tests
    "optim.lr=1e-3",
    "optim.schedule=constant",
    "optim.grad_clip=1.0",
    "diffusion.kind=gaussian",
    "ema_decay=0.999",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def micro(*extra):
    return load_train_config("tiny", MICRO + list(extra))


def test_metrics_and_result(tmp_path):
    cfg = micro("max_steps=6", "log_every=1")
    result = train(cfg, tmp_path, progress=False)
    mcfg = cfg.model_config()
    per_image = F.train_flops_exact(mcfg, 1)
    n_nonemb = create_model(mcfg).num_params(non_embedding=True)
    records = read_metrics(tmp_path)
    train_recs = [r for r in records if "train_loss" in r]
    assert [r["step"] for r in train_recs] == [1, 2, 3, 4, 5, 6]
    for r in train_recs:
        assert r["images"] == 8 * r["step"] and r["tokens"] == 4 * r["images"]
        assert r["flops"] == r["images"] * per_image
        assert r["flops_6nd"] == 6 * n_nonemb * r["tokens"]  # 6 N D, N = non-embedding params
        assert r["lr"] == lr_at(r["step"] - 1, 6, cfg.optim)
        assert 0 < r["train_loss"] < 10 and r["images_per_s"] > 0 and 0 < r["mfu"] < 1
    assert [r["lr"] for r in train_recs] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])  # warmup 4
    val = records[-1]
    assert val["step"] == 6 and len(val["val_loss_buckets"]) == 2 and val["val_weights"] == "raw"
    assert val["val_loss"] == val["val_loss_raw"] != val["val_loss_ema"]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["status"] == "done" and saved["steps"] == 6 and saved["images"] == 48 and saved["tokens"] == 192
    assert saved["flops_exact"] == 48 * per_image and saved["flops_6nd"] == 6 * n_nonemb * 192
    assert saved["params"] == create_model(mcfg).num_params() and saved["params_non_embedding"] == n_nonemb
    assert saved["val_loss"] == val["val_loss"] and saved["config"]["max_steps"] == 6
    assert saved["train_loss"] == train_recs[-1]["train_loss"]  # last 10% of 6 steps = the last step
    # the final checkpoint holds loadable weights with their configs in the metadata
    from ditscale.models.io import load_model, read_metadata

    meta = read_metadata(tmp_path / "checkpoints" / "step_00000006" / "ema.safetensors")
    assert meta["model"] == mcfg.to_dict() and meta["diffusion"]["kind"] == "gaussian" and meta["weights"] == "ema"
    assert load_model(tmp_path / "checkpoints" / "step_00000006" / "model.safetensors").config == mcfg
    # re-running the finished run is a no-op returning the saved result
    assert train(cfg, tmp_path, progress=False) == saved


def test_val_both_false_scores_only_the_headline(tmp_path):
    """``val.both: false`` skips the other weights' pass: the headline is bit-identical, the other is absent."""
    both = train(micro("max_steps=3", "val.weights=ema"), tmp_path / "both", progress=False)
    one = train(micro("max_steps=3", "val.weights=ema", "val.both=false"), tmp_path / "one", progress=False)
    assert one["val_loss"] == one["val_loss_ema"] == both["val_loss_ema"] != both["val_loss_raw"]
    assert one["val_loss_buckets_ema"] == both["val_loss_buckets_ema"]
    assert "val_loss_raw" not in one and "val_loss_buckets_raw" not in one and "val_loss_raw" in both


def test_flops_budget_stops_within_one_image(tmp_path):
    probe = micro("max_steps=1").model_config()
    per_image = F.train_flops_exact(probe, 1)
    budget = 21.5 * per_image  # 21 images: batches 8, 8, 5
    result = train(micro(f"flops={budget!r}", "max_steps=null"), tmp_path, progress=False)
    assert result["images"] == 21 and result["steps"] == 3
    assert result["flops_exact"] == 21 * per_image <= budget
    assert budget - result["flops_exact"] < per_image
    n_nonemb = create_model(probe).num_params(non_embedding=True)
    assert result["flops_6nd"] == 6 * n_nonemb * 4 * 21  # tokens per image = (8 / 4)^2 = 4
    assert [r["images"] for r in read_metrics(tmp_path) if "train_loss" in r] == [16, 21]
    with pytest.raises(ConfigError, match="less than one image"):
        train(micro(f"flops={0.5 * per_image!r}", "max_steps=null"), tmp_path / "small", progress=False)


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tmp_path, monkeypatch):
    from ditscale.diffusion.gaussian import GaussianDiffusion

    real, calls = GaussianDiffusion.training_losses, []

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 6:  # the step with index 5
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(GaussianDiffusion, "training_losses", poisoned)
    with pytest.raises(TrainingError) as err:
        train(micro("max_steps=10", "ckpt_every=2"), tmp_path, progress=False)
    good = tmp_path / "checkpoints" / "step_00000004"
    assert str(err.value) == (
        f"loss became nan at step 5; last good checkpoint: {good} (lower the learning rate or enable grad_clip)"
    )
    assert [p.name for _, p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000004", "step_00000002"]
    assert ckpt.verify_checkpoint(good)["step"] == 4
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["train", "tiny", "--out", str(tmp_path / "a"), "--max-steps", "1", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ditscale: error: unknown key 'lrr' in train config.optim (did you mean 'lr'?)")
    assert err.count("\n") == 1
    assert main(["train", "tiny", "--out", str(tmp_path / "a"), "model.widht=64"]) == 2
    assert "unknown key 'widht' in model" in capsys.readouterr().err
    assert main(["train", "no-such-preset", "--out", str(tmp_path / "a")]) == 2
    assert "presets: dit-s2, dit-xl2, tiny, tiny-text" in capsys.readouterr().err


def test_same_out_with_another_config_is_refused(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["train", "tiny", "--out", out, "--no-progress", "--max-steps", "2", *MICRO]) == 0
    capsys.readouterr()
    assert main(["train", "tiny", "--out", out, "--no-progress", "--max-steps", "2", *MICRO, "optim.lr=3e-4"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with a different config (optim.lr: 0.001 -> 0.0003)" in err and "--force" in err
    # resume-safe keys (logging, checkpoint cadence) may change
    assert main(["train", "tiny", "--out", out, "--no-progress", "--max-steps", "2", *MICRO, "log_every=1"]) == 0
    # --force continues the run with the new config: 2 more steps from the step-2 checkpoint
    assert main(["train", "tiny", "--out", out, "--no-progress", "--max-steps", "4", *MICRO, "--force"]) == 0
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 4
    assert [r["step"] for r in read_metrics(tmp_path) if "train_loss" in r] == [2, 4]


def test_text_conditioned_run_saves_and_resumes_its_word_encoder(tmp_path):
    cfg = load_train_config("tiny-text", MICRO + ["max_steps=4", "ckpt_every=2"])
    train(cfg, tmp_path / "ref", progress=False)
    train(cfg, tmp_path / "run", progress=False)
    final = tmp_path / "run" / "checkpoints" / "step_00000004"
    import shutil

    shutil.rmtree(final)
    (tmp_path / "run" / "result.json").unlink()
    train(cfg, tmp_path / "run", progress=False)  # resumes from step 2
    from ditscale.models.io import read_metadata

    meta = read_metadata(final / "text_encoder.safetensors")
    assert meta["text_encoder"] == "word" and meta["max_length"] == 16 and "circle" in meta["vocab"]
    assert read_metadata(final / "model.safetensors")["model"]["conditioning"] == "text"
    raw, averaged = (ckpt.load_tensors(final, s) for s in ("text_encoder", "text_encoder_ema"))
    assert raw.keys() == averaged.keys() and not all(torch.equal(raw[k], averaged[k]) for k in raw)  # the EMA moves too
    for stem in ("model", "ema", "text_encoder", "text_encoder_ema"):
        a = ckpt.load_tensors(tmp_path / "ref" / "checkpoints" / "step_00000004", stem)
        b = ckpt.load_tensors(final, stem)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_word_encoder_takes_the_models_caption_length_and_width(tmp_path):
    """Two-object shapes captions run to 24 words: a model declaring context_len 24 (and context_dim 32)
    gets a word encoder of that length and width, saved so sampling rebuilds it (not the fixed 16 x 64)."""
    extra = ["max_steps=2", "data.shapes_objects=2", "model.context_len=24", "model.context_dim=32"]
    result = train(load_train_config("tiny-text", MICRO + extra), tmp_path, progress=False)
    assert result["steps"] == 2
    from ditscale.data.text import load_word_encoder
    from ditscale.models.io import read_metadata

    final = tmp_path / "checkpoints" / "step_00000002"
    encoder = load_word_encoder(final / "text_encoder_ema.safetensors")
    assert (encoder.max_length, encoder.context_dim) == (24, 32) and "and" in encoder.tokenizer.vocab
    model = read_metadata(final / "model.safetensors")["model"]
    assert (model["context_len"], model["context_dim"]) == (24, 32)


def test_word_encoder_vocabulary_comes_from_the_dataset(tmp_path):
    """Captioned digits (no data.path) get the digit vocabulary, not a caption-folder scan."""
    cfg = load_train_config("tiny-text", MICRO + ["max_steps=2", "data.name=digits", "data.image_size=8"])
    result = train(cfg, tmp_path, progress=False)
    assert result["steps"] == 2
    from ditscale.models.io import read_metadata

    vocab = read_metadata(tmp_path / "checkpoints" / "step_00000002" / "text_encoder.safetensors")["vocab"]
    assert "digit" in vocab and "circle" not in vocab


def test_a_fresh_matmul_peak_reading_is_not_the_cached_one(monkeypatch):
    """study run reads the machine's peak before and after training and keeps the higher: the
    second reading must be measured, not the first one returned from the cache."""
    from ditscale.train import metrics

    monkeypatch.setitem(metrics._MEASURED_PEAK, "cpu:64", 1.0)
    assert metrics.measure_matmul_peak(64, 0.01) == 1.0  # cached
    fresh = metrics.measure_matmul_peak(64, 0.01, cached=False)
    assert fresh > 1e6 and metrics.measure_matmul_peak(64, 0.01) == fresh
