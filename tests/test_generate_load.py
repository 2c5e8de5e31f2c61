"""The library under ``ditscale sample`` and ``ditscale export``: loading a sampler (generate.load), checking
what a command asks for (generate.request), exporting (generate.export), a model's text encoder (data.text).

The commands end to end are tested in tests/test_sample.py and tests/test_diffusers_io.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_sample import LATENT, PIXEL, tiny_model

from ditscale.data import DataConfig
from ditscale.data.text import HFTextEncoder, WordTextEncoder, WordTokenizer, text_encoder_for
from ditscale.data.vae import make_tiny_vae
from ditscale.diffusion import Diffusion, create_diffusion, resolve_diffusion_config
from ditscale.errors import CheckpointError, ConfigError
from ditscale.generate import dataset_captions, draw_labels
from ditscale.generate.export import Exported, export_model, load_export_source, write_diffusers_folder
from ditscale.generate.grid import grid_upscale
from ditscale.generate.load import Sampler, diffusion_for, load_sampler, model_config, sampler_spec
from ditscale.generate.npz import torchrun_ranks
from ditscale.generate.request import (
    DIT_DEMO_CLASSES,
    Conditions,
    NpzPlan,
    SamplingSettings,
    check_grid,
    check_npz_request,
    check_prompts,
    grid_captions,
    parse_classes,
    plan_grid,
    plan_npz,
    read_prompts,
    sampling_settings,
)
from ditscale.io import check_new_dir, host_tag, staged_folder
from ditscale.models import DiTConfig
from ditscale.models.diffusers_io import pipeline_notes
from ditscale.models.io import save_model

TEXT = {**PIXEL, "conditioning": "text", "context_dim": 8, "context_len": 4}


def sampler_of(model, **fields) -> Sampler:
    return Sampler(Path("m.safetensors"), model.config, model, create_diffusion(), None, "cpu", **fields)


def word_encoder(path: Path, seed: int = 0, context_dim: int = 8) -> WordTextEncoder:
    """A word encoder saved as the trainer saves one (sizes and vocabulary in the "ditscale" metadata)."""
    torch.manual_seed(seed)
    tokenizer = WordTokenizer(["a", "red", "circle"])
    encoder = WordTextEncoder(tokenizer, context_dim=context_dim, max_length=4, num_layers=1, num_heads=2)
    spec = {"text_encoder": "word", "context_dim": context_dim, "max_length": 4, "num_layers": 1, "num_heads": 2}
    spec["vocab"] = tokenizer.vocab
    tensors = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    save_file(tensors, str(path), metadata={"ditscale": json.dumps(spec)})
    return encoder


# generate.load --------------------------------------------------------------------------------------
def test_model_config_flags_win_over_metadata():
    meta = {"model": DiTConfig(**PIXEL).to_dict()}
    assert model_config(meta) == DiTConfig(**PIXEL)
    assert model_config(meta, num_classes=7).num_classes == 7
    assert model_config(meta, model_opts=["depth=2"]).depth == 2
    official = model_config({}, model="DiT-S/8", image_size=64)  # a latent .pt: 64 px / the SD VAE's 8
    assert (official.hidden_size, official.patch_size, official.in_channels, official.input_size) == (384, 8, 4, 8)
    assert model_config({}, model="DiT-S/8", image_size=64, vae_factor=4).input_size == 16
    assert model_config({}, model="DiT-S/8", image_size=64, model_opts=["in_channels=3"]).input_size == 64
    with pytest.raises(ConfigError, match="carries no model config .*--model NAME and --image-size PX"):
        model_config({})
    with pytest.raises(ConfigError, match="pass --image-size PX"):
        model_config({}, model="DiT-S/8")
    with pytest.raises(ConfigError, match="--image-size 36 is not divisible by the VAE's downsampling 8"):
        model_config({}, model="DiT-S/8", image_size=36)


def test_diffusion_for_is_checked_against_the_model():
    config = DiTConfig(**PIXEL)
    gaussian = diffusion_for({}, config)  # DiT's default process, learned sigma as the model
    assert isinstance(gaussian, Diffusion) and gaussian.kind == "gaussian" and gaussian.model_out_channels(3) == 6
    flow = diffusion_for({"diffusion": {"kind": "flow"}}, config.replace(learn_sigma=False))
    assert flow.kind == "flow" and flow.default_steps == 50
    with pytest.raises(ConfigError, match="outputs 6 channels but its RectifiedFlow needs 3"):
        diffusion_for({"diffusion": {"kind": "flow"}}, config)


def test_load_sampler_of_a_latent_model_takes_its_runs_vae(tmp_path):
    make_tiny_vae().save_pretrained(tmp_path / "vae")
    model = tiny_model(**LATENT)
    weights = save_model(model, tmp_path / "m.safetensors")
    spec = sampler_spec(weights)
    assert spec.config == model.config and spec.vae is None and spec.meta == {"model": model.config.to_dict()}
    with pytest.raises(ConfigError, match=r"works in VAE latent space \(4 channels\): pass --vae"):
        load_sampler(spec)
    sampler = load_sampler(spec, run_vae=str(tmp_path / "vae"), notes=("newest checkpoint: X",))
    assert sampler.notes == ("newest checkpoint: X", f"using the run's VAE {tmp_path / 'vae'}")
    assert sampler.image_side == 32  # 4 latent pixels x the VAE's 8
    assert all(torch.equal(sampler.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert sampler.diffusion.kind == "gaussian" and not sampler.model.training
    assert sampler.about(4.0) == (
        f"DiT(depth=1, hidden_size=32, patch_size=2) (input_size 4) from {weights} on cpu, cfg-scale 4.0"
    )
    named = sampler_spec(weights, image_size=64, vae=str(tmp_path / "vae"))  # the named VAE sets the latent side
    assert named.config.input_size == 8 and named.vae.config.latent_channels == 4


def test_sampler_loads_its_text_encoder_on_demand(tmp_path, tiny_clip):
    ema = word_encoder(tmp_path / "text_encoder_ema.safetensors", seed=1)
    model = tiny_model(**TEXT)
    sampler = sampler_of(model, encoder_name=str(tmp_path / "text_encoder_ema.safetensors"))
    assert torch.equal(sampler.text_encoder().tok_emb.weight, ema.tok_emb.weight)
    hf = sampler_of(
        tiny_model(**{**TEXT, "context_dim": 32, "context_len": 6}), run_encoder=str(tiny_clip), progress=False
    )
    encoder = hf.text_encoder()
    assert isinstance(encoder, HFTextEncoder) and encoder.max_length == 6 and encoder.context_dim == 32


# data.text: a model's encoder -----------------------------------------------------------------------
def test_text_encoder_for_takes_the_named_the_trained_or_the_runs_encoder(tmp_path, tiny_clip):
    ckpt = tmp_path / "step"
    ckpt.mkdir()
    ema_weights, raw_weights = ckpt / "ema.safetensors", ckpt / "model.safetensors"
    with pytest.raises(ConfigError, match="no text encoder was found next to its weights: pass --text-encoder"):
        text_encoder_for(ema_weights, context_len=4, context_dim=8)
    with pytest.raises(ConfigError, match=r"trained a word encoder but .*step/text_encoder.safetensors is missing"):
        text_encoder_for(ema_weights, context_len=4, context_dim=8, run_encoder="word")
    raw = word_encoder(ckpt / "text_encoder.safetensors", seed=0)
    ema = word_encoder(ckpt / "text_encoder_ema.safetensors", seed=1)
    beside_ema = text_encoder_for(ema_weights, context_len=4, context_dim=8, run_encoder=str(tiny_clip))
    assert torch.equal(beside_ema.tok_emb.weight, ema.tok_emb.weight)  # the EMA encoder beside EMA weights
    beside_raw = text_encoder_for(raw_weights, context_len=4, context_dim=8)
    assert torch.equal(beside_raw.tok_emb.weight, raw.tok_emb.weight)
    named = text_encoder_for(ema_weights, context_len=6, context_dim=32, name=str(tiny_clip))  # the name wins
    assert isinstance(named, HFTextEncoder) and named.max_length == 6
    run = text_encoder_for(tmp_path / "m.safetensors", context_len=6, context_dim=32, run_encoder=str(tiny_clip))
    assert isinstance(run, HFTextEncoder) and run.context_dim == 32
    with pytest.raises(ConfigError, match="gives 8-wide embeddings but the model takes 16"):
        text_encoder_for(raw_weights, context_len=4, context_dim=16)


# generate.request -----------------------------------------------------------------------------------
def test_sampling_settings_fill_dits_defaults():
    config = DiTConfig(**PIXEL)  # trained with label dropout 0.1: guided by default, as DiT's sample.py
    assert sampling_settings(config) == SamplingSettings(0, None, None, 4.0, "auto")
    assert sampling_settings(config.replace(class_dropout_prob=0.0)).cfg_scale == 1.0
    assert sampling_settings(config.replace(conditioning="none")).cfg_scale == 1.0
    settings = sampling_settings(config, 3, "ddim", "25", 1.5, 2)
    assert settings.kwargs() == {"seed": 3, "sampler": "ddim", "steps": 25, "cfg_scale": 1.5, "guided_channels": 2}
    assert settings.request() == {"sampler": "ddim", "steps": 25, "cfg_scale": 1.5}
    assert sampling_settings(config, steps="ddim25").steps == "ddim25"


def test_prompts_are_read_and_go_with_text_models_only(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\n\n  a blue square \n")
    assert read_prompts(None, str(tmp_path / "p.txt")) == ["a red circle", "a blue square"]
    assert read_prompts(("x", "y")) == ["x", "y"] and read_prompts() is None
    with pytest.raises(ConfigError, match="--prompts file '.*none.txt' does not exist"):
        read_prompts(None, str(tmp_path / "none.txt"))
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ConfigError, match="holds no captions"):
        read_prompts(None, str(tmp_path / "blank.txt"))
    text, classes = DiTConfig(**TEXT), DiTConfig(**PIXEL)
    check_prompts(text, ["a"])
    check_prompts(text, None, optional=True)
    check_prompts(classes, None)
    with pytest.raises(ConfigError, match="text-conditional: pass --prompt TEXT"):
        check_prompts(text, None)
    with pytest.raises(ConfigError, match="are for text-conditional models; this one has conditioning='class'"):
        check_prompts(classes, ["a"])


def test_plan_grid_names_its_classes_and_checks_the_request():
    model = tiny_model()
    sampler, settings = sampler_of(model), sampling_settings(model.config, seed=3)
    given = plan_grid(sampler, settings, classes="1, 2,4")
    assert (given.labels, given.num_images, given.count) == ([1, 2, 4], None, 3)
    drawn = plan_grid(sampler, settings, num_images=3)
    assert drawn.labels == draw_labels(model, 3, 3).tolist()  # the random classes, named
    assert plan_grid(sampler, settings).count == 8  # DiT's 8 demo images: random classes of a 5-class model
    demo = tiny_model(num_classes=1000)
    assert plan_grid(sampler_of(demo), sampling_settings(demo.config)).labels == list(DIT_DEMO_CLASSES)
    assert grid_captions(given) == ["1", "2", "4"]
    assert grid_captions(Conditions(labels=[1, 0]), ["ring", "dot"]) == ["1 dot", "0 ring"]
    with pytest.raises(ConfigError, match="out of range: this model has 5 classes"):
        plan_grid(sampler, settings, classes="0,99")
    with pytest.raises(ConfigError, match="lower --upscale or the number of images"):
        plan_grid(sampler, settings, num_images=4096, upscale=64)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'"):
        plan_grid(sampler, SamplingSettings(sampler="euler"), classes="1")
    free = tiny_model(conditioning="none")
    unconditional = plan_grid(sampler_of(free), sampling_settings(free.config), num_images=2)
    assert (unconditional.labels, unconditional.num_images, grid_captions(unconditional)) == (None, 2, None)
    with pytest.raises(ConfigError, match="this model is unconditional and takes no --classes"):
        plan_grid(sampler_of(free), sampling_settings(free.config), classes="1")


def test_plan_grid_encodes_prompts(tmp_path):
    encoder = word_encoder(tmp_path / "text_encoder.safetensors")
    model = tiny_model(**TEXT)
    sampler = sampler_of(model, encoder_name=str(tmp_path / "text_encoder.safetensors"))
    conditions = plan_grid(sampler, sampling_settings(model.config), prompts=["a red circle", "a circle"])
    context, mask = encoder.encode(["a red circle", "a circle"])
    assert conditions.num_images == 2 and conditions.labels is None
    assert torch.allclose(conditions.context, context) and torch.equal(conditions.context_mask, mask)
    assert grid_captions(conditions) == ["a red circle", "a circle"]
    assert set(conditions.kwargs()) == {"labels", "num_images", "context", "context_mask"}


def test_plan_npz_takes_the_prompts_or_the_runs_val_captions(tmp_path):
    model = tiny_model()
    assert plan_npz(sampler_of(model), sampling_settings(model.config), num_samples=5) == NpzPlan()
    encoder = word_encoder(tmp_path / "text_encoder.safetensors")
    text = tiny_model(**TEXT)
    sampler, settings = sampler_of(text, encoder_name=str(tmp_path / "text_encoder.safetensors")), SamplingSettings()
    with pytest.raises(ConfigError, match="no run config to take captions from; pass --prompts FILE"):
        plan_npz(sampler, settings, num_samples=3)
    shapes = DataConfig(name="shapes", image_size=8)
    plan = plan_npz(sampler, settings, num_samples=3, data_config=shapes)
    assert plan.captions == dataset_captions(shapes, 3)
    assert plan.notes == ("prompting with the captions of items 0..2 of the run's shapes val split",)
    assert torch.allclose(plan.encode_captions(["a circle"])[0], encoder.encode(["a circle"])[0])
    given = plan_npz(sampler, settings, num_samples=3, prompts=["a red circle"], data_config=shapes)
    assert (given.captions, given.notes) == (["a red circle"], ())


def test_small_request_checks():
    assert parse_classes("207, 360,") == [207, 360]
    with pytest.raises(ConfigError, match="--classes must be comma-separated integers, got '1,x'"):
        parse_classes("1,x")
    check_npz_request(None, None, classes="1")  # no .npz asked for: nothing to check
    check_npz_request(10, "s.npz")
    with pytest.raises(ConfigError, match="--num-samples needs --npz FILE"):
        check_npz_request(10, None)
    with pytest.raises(ConfigError, match="drop --classes/--num-images"):
        check_npz_request(10, "s.npz", num_images=3)
    shown = [grid_upscale(None, 16, 16), grid_upscale(None, 8, 32), grid_upscale(None, 256, 256), grid_upscale(3, 8, 8)]
    assert shown == [4, 8, 1, 3]  # at least 64 px wide, unless told
    check_grid(512, 64, upscale=1)
    with pytest.raises(ConfigError, match="a grid of 4096 images of 512x512 px"):
        check_grid(8, 4096, upscale=64)


def test_torchrun_ranks_come_from_the_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_ranks() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_ranks() == (3, 4, 1)
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(ConfigError, match="must be integers"):
        torchrun_ranks()


# generate.export ------------------------------------------------------------------------------------
def test_export_model_writes_a_pipeline_its_parts_or_the_plain_format(tmp_path):
    make_tiny_vae().save_pretrained(tmp_path / "vae")
    model = tiny_model(**LATENT)
    weights = save_model(model, tmp_path / "m.safetensors")
    source = load_export_source(weights)
    diffusion = resolve_diffusion_config({"learn_sigma": True}).to_dict()  # DiT's process: none in the metadata
    assert source.info == {"source": str(weights), "model": model.config.to_dict(), "diffusion": diffusion}
    out = tmp_path / "dit"
    names = [f"class{i}" for i in range(5)]
    done = export_model(source, out, run_vae=str(tmp_path / "vae"), class_names=names)
    assert done == Exported(
        "a DiTPipeline (transformer/, scheduler/, vae/, model_index.json)", tuple(pipeline_notes(model.config))
    )
    assert {p.name for p in out.iterdir()} == {"ditscale.json", "model_index.json", "scheduler", "transformer", "vae"}
    assert json.loads((out / "model_index.json").read_text())["id2label"]["4"] == "class4"
    assert json.loads((out / "ditscale.json").read_text()) == {**source.info, "vae": str(tmp_path / "vae")}
    with pytest.raises(ConfigError, match="already exists; pick a new folder or pass --overwrite"):
        export_model(source, out)
    plain = export_model(source, out, format="safetensors", overwrite=True)
    assert plain == Exported("model.safetensors and config.json (ditscale format)")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    (tmp_path / "parts").mkdir()
    parts = write_diffusers_folder(source, tmp_path / "parts")  # a latent model whose VAE is unknown
    assert parts.what == "transformer/ and scheduler/"
    assert parts.notes[0].startswith("a latent model whose VAE is unknown (pass --vae PATH_OR_ID): wrote transformer/")
    assert json.loads((tmp_path / "parts" / "ditscale.json").read_text())["vae"] is None


def test_export_model_of_pixel_and_unsupported_models(tmp_path):
    pixel = export_model(load_export_source(save_model(tiny_model(), tmp_path / "p.safetensors")), tmp_path / "p")
    what = "a DitscalePipeline (transformer/, scheduler/, model_index.json, pipeline_ditscale.py)"
    load = "load it with DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True) (ditscale installed)"
    assert pixel.what == what and pixel.notes[0].endswith("a pixel-space model: exported as a DitscalePipeline")
    assert json.loads((tmp_path / "p" / "ditscale.json").read_text())["vae"] == "pixel-space"
    flow = save_model(tiny_model(learn_sigma=False), tmp_path / "f.safetensors", {"diffusion": {"kind": "flow"}})
    done = export_model(load_export_source(flow), tmp_path / "f")
    notice = (
        "diffusers' DiTPipeline and its schedulers run Gaussian diffusion; this is a rectified-flow model: "
        "exported as a DitscalePipeline"
    )
    assert done == Exported(what, (notice, load))
    index = json.loads((tmp_path / "f" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"] and index["vae"] == [None, None]
    text = save_model(tiny_model(**TEXT), tmp_path / "t.safetensors")  # no trained word encoder beside it
    plain = export_model(load_export_source(text), tmp_path / "t")
    assert plain.what == "model.safetensors and config.json (ditscale format)"
    assert plain.notes[0].startswith("no trained word encoder beside its weights")
    torch.save(tiny_model().state_dict(), tmp_path / "ref.pt")
    with pytest.raises(CheckpointError, match="carries no model config .*save it with ditscale first"):
        load_export_source(tmp_path / "ref.pt")


# ditscale.io: a folder written whole -----------------------------------------------------------------
def test_staged_folder_replaces_the_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "sub" / "out"
    assert check_new_dir(out, "--out") == out
    with staged_folder(out, overwrite=False) as folder:
        (folder / "a.txt").write_text("new")
        assert not out.exists() and folder.name == f".out.export-{host_tag()}-{os.getpid()}.tmp"
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with pytest.raises(ConfigError, match="--out .*out already exists; pick a new folder or pass --overwrite"):
        check_new_dir(out, "--out")
    with pytest.raises(RuntimeError), staged_folder(out, overwrite=True) as folder:
        (folder / "b.txt").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in out.iterdir()] == ["a.txt"] and sorted(p.name for p in out.parent.iterdir()) == ["out"]
    with staged_folder(out, overwrite=True) as folder:
        (folder / "b.txt").write_text("whole")
    assert [p.name for p in out.iterdir()] == ["b.txt"] and sorted(p.name for p in out.parent.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_new_dir(tmp_path / "file", "--out", overwrite=True)
