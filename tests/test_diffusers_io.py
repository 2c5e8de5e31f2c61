"""Diffusers interop: the key mapping against diffusers' own DiTTransformer2DModel, round trips, the exported
DiTPipeline folder, strict loading of diffusers folders and the ``ditscale export`` command (all offline)."""

import json
import warnings

import numpy as np
import pytest
import torch

from ditscale.cli import main
from ditscale.data.vae import VAE_SCALE, make_tiny_vae
from ditscale.diffusion.gaussian import named_betas
from ditscale.errors import CheckpointError
from ditscale.models import create_model
from ditscale.models.diffusers_io import (
    diffusion_from_scheduler,
    from_diffusers,
    key_rules,
    pipeline_index,
    pipeline_notes,
    save_transformer,
    scheduler_config,
    to_diffusers,
    transformer_config,
)
from ditscale.models.io import load_model, read_metadata, save_model

diffusers = pytest.importorskip("diffusers")
warnings.filterwarnings("ignore", category=FutureWarning)

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)
DIFFUSION = {
    "kind": "gaussian",
    "noise_schedule": "linear",
    "diffusion_steps": 1000,
    "predict": "epsilon",
    "learn_sigma": True,
}


def tiny_dit(seed=0, **overrides):
    """A tiny DiT, seeded, with every trainable tensor perturbed (adaLN-Zero and final zeros too), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model({**TINY, **overrides})
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def diffusers_twin(model, freq_shift=None):
    """The DiTTransformer2DModel holding ``model``'s weights (strict load); ``freq_shift`` sets its timestep
    features' ``downscale_freq_shift`` (diffusers' DiT uses 1, the reference 0)."""
    config = {k: v for k, v in transformer_config(model.config).items() if not k.startswith("_")}
    twin = diffusers.DiTTransformer2DModel(**config).eval()
    twin.load_state_dict(to_diffusers(model.state_dict(), model.config), strict=True)
    if freq_shift is not None:
        for block in twin.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = freq_shift
    return twin


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# 1. The mapping computes the same function as diffusers' module -------------------------------------
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_diffusers_transformer_equals_our_dit(learn_sigma):
    model = tiny_dit(learn_sigma=learn_sigma)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    y = torch.tensor([1, 5, 9, 10])  # 10: the null (CFG) class, the last row in both tables
    with torch.no_grad():
        ours = model(x, t, y)
        exact = diffusers_twin(model, freq_shift=0)(x, timestep=t, class_labels=y).sample
        stock = diffusers_twin(model)(x, timestep=t, class_labels=y).sample
    assert ours.shape == exact.shape == (4, 8 if learn_sigma else 4, 8, 8) and ours.abs().max() > 0.5
    torch.testing.assert_close(exact, ours, atol=1e-5, rtol=1e-5)
    # stock diffusers embeds timesteps with frequencies 10000^(-i/127): a real, documented difference
    assert (stock - ours).abs().max() > 1e-3
    with torch.no_grad():  # at t = 0 the features agree, so the stock module is exact there
        torch.testing.assert_close(
            diffusers_twin(model)(x[:1], timestep=t[:1], class_labels=y[:1]).sample, ours[:1], atol=1e-5, rtol=1e-5
        )


def test_key_table_covers_both_state_dicts_once():
    model = tiny_dit(depth=3)
    twin = diffusers_twin(model)
    rules = key_rules(3)
    ours = [r.ours for r in rules]
    theirs = [k for r in rules for k in r.theirs + r.copies]
    assert sorted(ours + ["pos_embed"]) == sorted(model.state_dict())
    assert sorted(theirs) == sorted(twin.state_dict()) and len(set(theirs)) == len(theirs)
    qkv = next(r for r in rules if r.ours == "blocks.2.attn.qkv.weight")
    assert qkv.theirs == tuple(f"transformer_blocks.2.attn1.to_{n}.weight" for n in "qkv")
    table = next(r for r in rules if r.ours.startswith("y_embedder"))
    assert table.copies == tuple(
        f"transformer_blocks.{i}.norm1.emb.class_embedder.embedding_table.weight" for i in (1, 2)
    )


# 2. Round trips ---------------------------------------------------------------------------------------
def test_round_trip_through_a_diffusers_folder(tmp_path):
    model = tiny_dit()
    save_transformer(model.state_dict(), model.config, tmp_path / "dit" / "transformer")
    back = load_model(tmp_path / "dit")
    assert back.config == model.config
    assert back.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    # diffusers reads our files; its own .bin save (the lone transformer folder layout) reads back too
    theirs = diffusers.DiTTransformer2DModel.from_pretrained(tmp_path / "dit" / "transformer")
    expected = to_diffusers(model.state_dict(), model.config)
    assert all(torch.equal(theirs.state_dict()[k], v) for k, v in expected.items())
    theirs.save_pretrained(tmp_path / "bin", safe_serialization=False)
    theirs.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert (tmp_path / "bin" / "diffusion_pytorch_model.bin").is_file()
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) > 1
    for layout in ("bin", "shards"):
        again = load_model(tmp_path / layout)
        assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_label_table_without_null_row_gets_a_zero_row():
    model = tiny_dit(class_dropout_prob=0.0)
    table = to_diffusers(model.state_dict(), model.config)[
        "transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"
    ]
    # the null row (zeros: no label dropout) at DiTPipeline's label 1000, and in the rows between
    assert table.shape == (1001, 32) and torch.equal(table[:10], model.y_embedder.embedding_table.weight)
    assert not table[10:].any()


def test_a_padded_label_table_puts_the_null_row_at_1000_and_reads_back():
    model = tiny_dit()  # 10 classes and a trained null row (row 10)
    ours = model.y_embedder.embedding_table.weight
    theirs = to_diffusers(model.state_dict(), model.config)
    table = theirs["transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"]
    assert table.shape == (1001, 32) and torch.equal(table[:10], ours[:10])
    assert all(torch.equal(row, ours[10]) for row in table[10:])
    config = transformer_config(model.config)
    assert config["num_embeds_ada_norm"] == 1000 and config["_ditscale_num_classes"] == 10
    assert torch.equal(from_diffusers(theirs, model.config)["y_embedder.embedding_table.weight"], ours)
    twin = diffusers.DiTTransformer2DModel.from_config(config)
    assert twin.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight.shape == (1001, 32)


@pytest.mark.parametrize(
    "diffusion",
    [
        DIFFUSION,
        {**DIFFUSION, "noise_schedule": "cosine", "predict": "v", "learn_sigma": False},
        {**DIFFUSION, "diffusion_steps": 250, "predict": "x0"},
    ],
)
def test_scheduler_config_has_the_runs_betas_and_reads_back(diffusion):
    config = scheduler_config(diffusion)
    scheduler = diffusers.DDIMScheduler.from_config(config)
    expected = named_betas(diffusion["noise_schedule"], diffusion["diffusion_steps"])
    assert np.allclose(scheduler.betas.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert diffusion_from_scheduler(config, diffusion["learn_sigma"]) == diffusion
    with pytest.raises(CheckpointError, match="neither DiT's linear"):
        diffusion_from_scheduler({**config, "beta_schedule": "scaled_linear"}, True)


# 3. An exported run samples through diffusers' own DiTPipeline ----------------------------------------
def _latent_run(tmp_path, classes=None, **overrides):
    """A run folder as `ditscale train` writes it: a latent-store config (its VAE, and its class names
    when given) and one checkpoint."""
    from ditscale.data.store import STORE_FORMAT, STORE_VERSION

    make_tiny_vae().save_pretrained(tmp_path / "vae")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "plan.json").write_text(json.dumps({"vae": str(tmp_path / "vae"), "scale": VAE_SCALE}))
    if classes:
        meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "classes": classes, "shards": []}
        (tmp_path / "store" / "meta.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_00000002"
    ema = tiny_dit(seed=1, **{"input_size": 4, "num_classes": 1000, **overrides})
    save_model(
        tiny_dit(seed=2, **{"input_size": 4, "num_classes": 1000, **overrides}),
        ckpt / "model.safetensors",
        {"diffusion": DIFFUSION},
    )
    save_model(ema, ckpt / "ema.safetensors", {"diffusion": DIFFUSION})
    (run / "config.yaml").write_text(f"data:\n  name: latents\n  path: {tmp_path / 'store'}\n")
    return run, ema


def test_exported_pipeline_samples_end_to_end(tmp_path, capsys):
    run, ema = _latent_run(tmp_path)
    out = tmp_path / "exports" / "dit"
    code, stdout, err = _cli(capsys, "export", str(run), "--format", "diffusers", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "ditscale.json",
        "model_index.json",
        "scheduler",
        "transformer",
        "vae",
    ]
    assert [p.name for p in out.parent.iterdir()] == ["dit"]  # no staging folder left behind
    assert "DiTPipeline" in stdout and "10000^(-i/127)" in err
    pipe = diffusers.DiTPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, diffusers.DDIMScheduler) and pipe.vae.config.scaling_factor == VAE_SCALE
    expected = to_diffusers(ema.state_dict(), ema.config)  # the EMA weights, not the raw ones
    assert all(torch.equal(pipe.transformer.state_dict()[k], v) for k, v in expected.items())
    images = pipe(
        class_labels=[1, 2], num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0
    info = json.loads((out / "ditscale.json").read_text())
    assert info["vae"] == str(tmp_path / "vae") and info["source"].endswith("ema.safetensors")


def test_pipeline_index_and_notes():
    config = tiny_dit().config  # 10 classes, label dropout 0.1
    index = pipeline_index(config)
    assert index["_class_name"] == "DiTPipeline" and "id2label" not in index
    assert [index[k] for k in ("scheduler", "transformer", "vae")] == [
        ["diffusers", "DDIMScheduler"],
        ["diffusers", "DiTTransformer2DModel"],
        ["diffusers", "AutoencoderKL"],
    ]
    assert index["_diffusers_version"] == transformer_config(config)["_diffusers_version"]
    assert pipeline_index(config, ["a", "b"])["id2label"] == {"0": "a", "1": "b"}
    null_class, embedding = pipeline_notes(config)
    assert null_class.startswith("this model has 10 classes (labels 0..9); its null class is stored at label 1000")
    assert "10000^(-i/127)" in embedding
    assert pipeline_notes(config.replace(num_classes=1000)) == [embedding]  # DiTPipeline's own null class
    assert pipeline_notes(config.replace(class_dropout_prob=0.0))[0].startswith("the model was trained without label")


# 4. Strict loading and unsupported models --------------------------------------------------------------
def _one_line(err):
    text = str(err.value)
    assert "\n" not in text
    return text


def test_strict_load_names_the_offending_key(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_dit()
    folder = save_transformer(model.state_dict(), model.config, tmp_path / "t")
    weights = folder / "diffusion_pytorch_model.safetensors"
    good = load_file(weights)
    cases = {
        "missing transformer_blocks.1.attn1.to_k.bias": {
            k: v for k, v in good.items() if k != "transformer_blocks.1.attn1.to_k.bias"
        },
        "unexpected extra.weight": {**good, "extra.weight": torch.zeros(1)},
        "transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias differs": {
            **good,
            "transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias": torch.zeros(32),
        },
        "transformer_blocks.0.ff.net.2.weight has shape (32, 64)": {
            **good,
            "transformer_blocks.0.ff.net.2.weight": torch.zeros(32, 64),
        },
    }
    for message, tensors in cases.items():
        save_file(tensors, str(weights))
        with pytest.raises(CheckpointError) as err:
            load_model(folder)
        assert message in _one_line(err)
    with pytest.raises(CheckpointError, match="not a class-conditional adaLN-Zero DiT"):
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "norm_type": "ada_norm_single"}))
        read_metadata(folder)
    with pytest.raises(CheckpointError, match="not a diffusers DiT folder"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "overrides, diffusion, why",
    [
        ({"block": "in_context"}, DIFFUSION, "only adaLN-Zero blocks"),
        ({"learn_sigma": False}, {"kind": "flow"}, "rectified-flow model"),
        ({"class_dropout_prob": 0.0}, DIFFUSION, "this model has no null class"),
        ({"out_conv": 4}, DIFFUSION, "this model has an output conv head"),
    ],
)
def test_models_dit_pipeline_cannot_sample_export_a_ditscale_pipeline(tmp_path, capsys, overrides, diffusion, why):
    model = tiny_dit(**overrides)
    save_model(model, tmp_path / "m.safetensors", {"diffusion": diffusion})
    make_tiny_vae().save_pretrained(tmp_path / "vae")
    argv = ["export", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "out"), "--vae", str(tmp_path / "vae")]
    code, stdout, err = _cli(capsys, *argv)
    assert code == 0, err
    notices = [line for line in err.splitlines() if "exported as a DitscalePipeline" in line]
    assert len(notices) == 1 and why in notices[0] and "trust_remote_code=True" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ditscale.json",
        "model_index.json",
        "pipeline_ditscale.py",
        "scheduler",
        "transformer",
        "vae",
    ]
    back = load_model(tmp_path / "out")  # ditscale reads the folder back, as it reads a DiTPipeline folder
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert read_metadata(tmp_path / "out")["diffusion"]["kind"] == diffusion.get("kind", "gaussian")
    pipe = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "out", trust_remote_code=True)
    images = pipe(class_labels=[1, 2], num_inference_steps=2, output_type="np").images  # a latent model: VAE-decoded
    assert images.shape == (2, 64, 64, 3) and np.isfinite(images).all() and images.std() > 0
    if model.config.block != "adaln_zero":  # the flow model's transformer maps; its process does not
        with pytest.raises(CheckpointError, match="safetensors format instead"):
            transformer_config(model.config)


# 5. The command line ----------------------------------------------------------------------------------
def test_cli_sample_of_an_exported_folder_equals_the_run(tmp_path, capsys):
    names = [f"class{i}" for i in range(10)]
    run, _ = _latent_run(tmp_path, classes=names, num_classes=10)
    out = tmp_path / "dit"
    code, _, err = _cli(capsys, "export", str(run), "--out", str(out))
    assert code == 0, err
    assert "its null class is stored at label 1000" in err
    assert json.loads((out / "model_index.json").read_text())["id2label"] == {str(i): n for i, n in enumerate(names)}
    common = ["--classes", "1,2", "--steps", "2", "--cfg-scale", "2", "--quiet"]
    for source, name in ((out, "a"), (run, "b")):
        code, _, err = _cli(
            capsys,
            "sample",
            str(source),
            *common,
            "--out",
            str(tmp_path / f"{name}.png"),
            "--npz",
            str(tmp_path / f"{name}.npz"),
        )
        assert code == 0, err
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a["arr_0"].shape == (2, 32, 32, 3) and np.array_equal(a["arr_0"], b["arr_0"])
    code, _, err = _cli(capsys, "export", str(run), "--out", str(out))
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "already exists" in err
    code, _, err = _cli(
        capsys, "export", str(run), "--out", str(out), "--overwrite", "--weights", "model", "--format", "safetensors"
    )
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and not (out / "transformer").exists()


def test_cli_pixel_model_exports_a_pipeline_without_vae(tmp_path, capsys):
    model = tiny_dit(in_channels=3, patch_size=4)
    save_model(model, tmp_path / "m.safetensors", {"diffusion": DIFFUSION})
    code, _, err = _cli(capsys, "export", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "dit"))
    assert code == 0, err
    assert "pixel-space model: exported as a DitscalePipeline" in err
    assert sorted(p.name for p in (tmp_path / "dit").iterdir()) == [
        "ditscale.json",
        "model_index.json",
        "pipeline_ditscale.py",
        "scheduler",
        "transformer",
    ]
    pipe = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "dit", trust_remote_code=True)
    assert isinstance(pipe.scheduler, diffusers.DDIMScheduler) and pipe.vae is None
    images = pipe(class_labels=[3], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 8, 8, 3) and np.isfinite(images).all() and images.std() > 0
    assert read_metadata(tmp_path / "dit")["diffusion"].items() >= DIFFUSION.items()  # the whole resolved config
    code, _, err = _cli(
        capsys,
        "sample",
        str(tmp_path / "dit"),
        "--classes",
        "3",
        "--steps",
        "2",
        "--quiet",
        "--out",
        str(tmp_path / "g.png"),
    )
    assert code == 0, err
    assert (tmp_path / "g.png").is_file()
    assert (
        from_diffusers(to_diffusers(model.state_dict(), model.config), model.config).keys() == model.state_dict().keys()
    )


def test_hub_layout_with_the_older_class_name_loads_and_converts(tmp_path, capsys):
    """facebook/DiT-XL-2-256's layout: model_index.json, transformer/ with a ``Transformer2DModel`` config
    (its older keys, no norm_eps), scheduler/ with a DDIM config; converts to the ditscale format."""
    model = tiny_dit(seed=3)
    hub = tmp_path / "DiT-XL-2-256"
    save_transformer(model.state_dict(), model.config, hub / "transformer")
    config = json.loads((hub / "transformer" / "config.json").read_text())
    legacy = {k: v for k, v in config.items() if k not in ("norm_eps", "_class_name")}
    legacy.update(
        {
            "_class_name": "Transformer2DModel",
            "cross_attention_dim": None,
            "num_vector_embeds": None,
            "only_cross_attention": False,
            "use_linear_projection": False,
            "double_self_attention": False,
        }
    )
    (hub / "transformer" / "config.json").write_text(json.dumps(legacy))
    (hub / "scheduler").mkdir()
    (hub / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "DDIMScheduler",
                "beta_schedule": "linear",
                "beta_start": 0.0001,
                "beta_end": 0.02,
                "num_train_timesteps": 1000,
                "clip_sample": False,
            }
        )
    )
    (hub / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    assert read_metadata(hub) == {"model": model.config.to_dict(), "diffusion": DIFFUSION}
    code, _, err = _cli(capsys, "export", str(hub), "--format", "safetensors", "--out", str(tmp_path / "plain"))
    assert code == 0, err
    back = load_model(tmp_path / "plain" / "model.safetensors")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_plain_export_of_a_text_run_keeps_its_trained_word_encoder(tmp_path, capsys):
    model = tiny_dit(conditioning="text", context_dim=8, context_len=4)
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000001"
    save_model(model, ckpt / "ema.safetensors", {"diffusion": DIFFUSION})
    (ckpt / "text_encoder_ema.safetensors").write_bytes(b"ema encoder")
    (ckpt / "text_encoder.safetensors").write_bytes(b"raw encoder")
    code, _, err = _cli(capsys, "export", str(ckpt), "--format", "safetensors", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "text_encoder.safetensors").read_bytes() == b"ema encoder"
