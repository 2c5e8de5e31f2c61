"""Image generation (seeded sampling, guidance, VAE decoding, grids, resumable .npz batches split across
ranks) and the ``ditscale sample`` command."""

import argparse
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from ditscale.cli import main
from ditscale.data.vae import decode, make_tiny_vae
from ditscale.diffusion import create_diffusion
from ditscale.errors import ConfigError
from ditscale.io import atomic_write_npz
from ditscale.data.shapes_grammar import KINDS
from ditscale.generate import (
    CAPTION_PX,
    derived_seed,
    draw_labels,
    make_grid,
    parts_dir,
    sample_images,
    sample_latents,
    sample_npz,
    save_grid,
    save_npz,
    to_uint8,
)
from ditscale.models import create_model
from ditscale.models.io import save_model

PIXEL = dict(input_size=8, patch_size=4, in_channels=3, hidden_size=32, depth=1, num_heads=2, num_classes=5)
LATENT = dict(PIXEL, input_size=4, patch_size=2, in_channels=4)
STEPS = 4


def tiny_model(seed=0, **overrides):
    """A tiny DiT whose zero-initialised layers are perturbed, so outputs depend on inputs and labels."""
    model = create_model({**PIXEL, **overrides})
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def diffusion():
    return create_diffusion()


# uint8 conversion and grids -------------------------------------------------------------------
def test_to_uint8_matches_dit_sample_ddp():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]).view(1, 1, 1, 7)
    out = to_uint8(x)  # clamp(127.5 x + 128, 0, 255), truncated; grey -> RGB
    assert out.shape == (1, 1, 7, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 64, 128, 191, 255, 255]
    assert (out[..., 0] == out[..., 2]).all()
    rgb = to_uint8(torch.zeros(2, 3, 4, 5))
    assert rgb.shape == (2, 4, 5, 3) and (rgb == 128).all()


def test_make_grid_layout():
    imgs = np.stack([np.full((4, 6, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = make_grid(imgs)  # ceil(sqrt(5)) = 3 per row -> 2 rows, 2 px padding
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3)
    assert (grid[2:6, 2:8] == 10).all() and (grid[2:6, 10:16] == 20).all()
    assert (grid[8:12, 10:16] == 50).all()  # 5th image: row 1, column 1
    assert (grid[8:12, 18:24] == 0).all()  # empty slot
    assert grid[:2].sum() == 0 and grid[:, :2].sum() == 0 and grid[6:8].sum() == 0
    assert make_grid(imgs, nrow=5).shape == (8, 42, 3)
    with pytest.raises(ConfigError):
        make_grid(imgs.astype(np.float32))


def test_save_grid_and_npz(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    save_grid(imgs, tmp_path / "g.png", nrow=3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), make_grid(imgs, 3))
    save_grid(imgs, tmp_path / "big.png", nrow=3, upscale=3)
    big = np.asarray(Image.open(tmp_path / "big.png"))
    assert big.shape == (2 + 15 + 2, 3 * (15 + 2) + 2, 3)
    for i, j, a, b in ((0, 0, 0, 0), (4, 1, 2, 1), (2, 3, 1, 2)):  # every 3x3 block is one source pixel
        assert (big[2 + 3 * i + a, 2 + 3 * j + b] == imgs[0, i, j]).all()
        assert (big[2 + 3 * i + a, 2 + 17 + 3 * j + b] == imgs[1, i, j]).all()
    with pytest.raises(ConfigError, match="upscale must be a positive integer"):
        make_grid(imgs, upscale=0)
    save_npz(imgs, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as data:
        assert list(data.keys()) == ["arr_0"] and np.array_equal(data["arr_0"], imgs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "g.png", "s.npz"]  # no temp files left


def test_save_grid_labels_each_cell(tmp_path):
    imgs = np.zeros((3, 8, 8, 3), np.uint8)
    save_grid(imgs, tmp_path / "g.png", nrow=3, upscale=4, captions=["0 circle", "1 ring", "a caption far too long"])
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (2 + 32 + CAPTION_PX + 2, 3 * (32 + 2) + 2, 3)
    band = grid[2 + 32 : 2 + 32 + CAPTION_PX]
    for col in range(3):  # white text under every image, inside its own column
        cell = band[:, 2 + col * 34 : 2 + col * 34 + 32]
        assert (cell > 128).all(axis=-1).sum() > 10
    assert grid[: 2 + 32].max() == 0 and band[:, 34:36].max() == 0  # images untouched, padding kept clear
    with pytest.raises(ConfigError, match="2 captions for 3 images"):
        save_grid(imgs, tmp_path / "x.png", captions=["a", "b"])


def test_random_classes_are_drawn_once_and_named(model, diffusion, tmp_path, capsys):
    labels = draw_labels(model, 5, seed=7)
    assert labels.tolist() == torch.randint(0, 5, (5,), generator=torch.Generator().manual_seed(7)).tolist()
    a = sample_images(model, diffusion, num_images=5, seed=7, steps=STEPS, progress=False)
    b = sample_images(model, diffusion, labels=labels, seed=7, steps=STEPS, progress=False)
    assert np.array_equal(a, b)  # naming the classes does not change the samples
    save_model(model, tmp_path / "m.safetensors")
    code, out, err = _cli(
        capsys,
        str(tmp_path / "m.safetensors"),
        "--num-images",
        "5",
        "--seed",
        "7",
        "--cfg-scale",
        "1",
        "--out",
        str(tmp_path / "g.png"),
    )
    assert code == 0, err
    assert f"cells, row by row: {'; '.join(map(str, labels.tolist()))}" in out  # no class names without a run


# sample_images --------------------------------------------------------------------------------
def test_sampling_is_seeded(model, diffusion):
    a = sample_images(model, diffusion, labels=[0, 1, 4], steps=STEPS, progress=False)
    b = sample_images(model, diffusion, labels=[0, 1, 4], steps=STEPS, progress=False)
    c = sample_images(model, diffusion, labels=[0, 1, 4], steps=STEPS, progress=False, seed=1)
    assert a.shape == (3, 8, 8, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unguided_equals_direct_sampler_call(model, diffusion):
    labels = torch.tensor([3, 1])
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(2, 3, 8, 8, generator=g)
    x = diffusion.sample(model, noise.shape, steps=STEPS, noise=noise, model_kwargs={"y": labels}, generator=g)
    got = sample_images(model, diffusion, labels=labels, seed=7, steps=STEPS, progress=False)
    assert np.array_equal(got, to_uint8(x.clamp(-1, 1)))


def test_random_labels_and_batches(model, diffusion):
    n = 3
    labels = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(2))  # as sample_ddp.py
    by_count = sample_images(model, diffusion, num_images=n, seed=2, steps=STEPS, progress=False)
    assert np.array_equal(by_count, sample_images(model, diffusion, labels=labels, seed=2, steps=STEPS, progress=False))
    batched = sample_latents(model, diffusion, labels=labels, seed=2, steps=STEPS, progress=False, batch_size=2)
    first = sample_latents(model, diffusion, labels=labels[:2], seed=2, steps=STEPS, progress=False, batch_size=2)
    assert batched.shape == (3, 3, 8, 8) and torch.equal(batched[:2], first)


def test_cfg_matches_reference_forward_with_cfg(model, diffusion):
    labels = torch.tensor([0, 2])
    null = torch.full_like(labels, 5)  # the null class is num_classes

    def reference(scale, sampler):  # DiT sample.py: z doubled, y = [labels, null], model.forward_with_cfg
        g = torch.Generator().manual_seed(0)
        z = torch.randn(2, 3, 8, 8, generator=g)
        z = torch.cat([z, z])
        fn = lambda x, t, y: model.forward_with_cfg(x, t, y, scale, guided_channels=3)  # noqa: E731
        out = diffusion.sample(
            fn,
            z.shape,
            sampler=sampler,
            steps=STEPS,
            noise=z,
            model_kwargs={"y": torch.cat([labels, null])},
            generator=g,
        )
        return out[:2]

    guided = sample_latents(model, diffusion, labels=labels, cfg_scale=4.0, steps=STEPS, progress=False)
    assert torch.equal(guided, reference(4.0, "ddpm"))
    plain = sample_latents(model, diffusion, labels=labels, cfg_scale=1.0, steps=STEPS, progress=False)
    assert (guided - plain).abs().max() > 0.05  # guidance changes the samples
    # With scale 1 the guided (doubled-batch) path is the conditional model: same DDIM samples.
    plain_ddim = sample_latents(
        model, diffusion, labels=labels, cfg_scale=1.0, sampler="ddim", steps=STEPS, progress=False
    )
    ref = reference(1.0, "ddim")
    assert (ref - plain_ddim).abs().max() <= 1e-5 * plain_ddim.abs().max()  # float rounding only


def test_text_guidance_uses_an_all_masked_null_context(diffusion):
    model = tiny_model(conditioning="text", context_dim=8, context_len=4)
    ctx = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    got = sample_latents(model, diffusion, context=ctx, context_mask=mask, cfg_scale=3.0, steps=STEPS, progress=False)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 8, 8, generator=g)
    fn = lambda x, t, **kw: model.forward_with_cfg(x, t, None, 3.0, guided_channels=3, **kw)  # noqa: E731
    ref = diffusion.sample(
        fn,
        (4, 3, 8, 8),
        steps=STEPS,
        noise=torch.cat([z, z]),
        generator=g,
        model_kwargs={"context": torch.cat([ctx, ctx]), "context_mask": torch.cat([mask, mask])},
    )
    assert torch.equal(got, ref[:2])
    with pytest.raises(ConfigError, match="text-conditional: pass context"):
        sample_latents(model, diffusion, num_images=1, progress=False)


def test_latent_model_decodes_with_vae(diffusion):
    model, vae = tiny_model(**LATENT), make_tiny_vae()
    images = sample_images(model, diffusion, labels=[1, 2], steps=STEPS, vae=vae, progress=False)
    assert images.shape == (2, 32, 32, 3)
    latents = sample_latents(model, diffusion, labels=[1, 2], steps=STEPS, progress=False)
    assert latents.shape == (2, 4, 4, 4)
    assert np.array_equal(images, to_uint8(decode(vae, latents)))
    with pytest.raises(ConfigError, match="VAE latent space"):
        sample_images(model, diffusion, labels=[1], steps=STEPS, progress=False)
    with pytest.raises(ConfigError, match="3 latent channels"):
        sample_images(model, diffusion, labels=[1], vae=make_tiny_vae(latent_channels=3), progress=False)


def test_grey_and_flow_models():
    flow = create_diffusion(kind="flow")
    grey = tiny_model(in_channels=1, learn_sigma=False, conditioning="none")
    out = sample_images(grey, flow, num_images=2, steps=3, progress=False)
    assert out.shape == (2, 8, 8, 3) and (out[..., 0] == out[..., 1]).all()
    g = torch.Generator().manual_seed(0)
    x = flow.sample(grey, (2, 1, 8, 8), sampler="euler", steps=3, noise=torch.randn(2, 1, 8, 8, generator=g))
    assert np.array_equal(out, to_uint8(x.clamp(-1, 1)))


def test_user_errors(model, diffusion):
    with pytest.raises(ConfigError, match="out of range: this model has 5 classes"):
        sample_images(model, diffusion, labels=[5], progress=False)
    with pytest.raises(ConfigError, match="2 labels were given but num_images=3"):
        sample_images(model, diffusion, labels=[0, 1], num_images=3, progress=False)
    no_null = tiny_model(class_dropout_prob=0.0)
    with pytest.raises(ConfigError, match="no null class"):
        sample_images(no_null, diffusion, labels=[0], cfg_scale=2.0, progress=False)


# ditscale sample ------------------------------------------------------------------------------
TINY_OPTS = [
    "--model-opt",
    "in_channels=3",
    "--model-opt",
    "patch_size=4",
    "--model-opt",
    "hidden_size=32",
    "--model-opt",
    "depth=1",
    "--model-opt",
    "num_heads=2",
    "--num-classes",
    "5",
    "--image-size",
    "8",
]


def _cli(capsys, *argv):
    code = main(["sample", *argv, "--quiet", "--steps", str(STEPS)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reference_pt(model, diffusion, tmp_path, capsys):
    torch.save(model.state_dict(), tmp_path / "ref.pt")
    out_png, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    code, out, err = _cli(
        capsys,
        str(tmp_path / "ref.pt"),
        *TINY_OPTS,
        "--classes",
        "0,1,2,3",
        "--cfg-scale",
        "1.5",
        "--out",
        str(out_png),
        "--npz",
        str(npz),
    )
    assert code == 0, err
    assert f"(8x8 px, shown 8x) to {out_png}" in out
    expected = sample_images(model, diffusion, labels=[0, 1, 2, 3], cfg_scale=1.5, steps=STEPS, progress=False)
    with np.load(npz) as data:
        assert np.array_equal(data["arr_0"], expected)  # the .npz keeps the sampled pixels
    # 4 images of 8 px, 2 per row, enlarged to 64 px by pixel repetition, each labelled with its class
    assert "cells, row by row: 0; 1; 2; 3" in out
    grid = np.asarray(Image.open(out_png))
    cells = make_grid(expected.repeat(8, 1).repeat(8, 2), 2, caption_px=CAPTION_PX)
    assert grid.shape == cells.shape
    for top in (2, 2 + 64 + CAPTION_PX + 2):  # the images are untouched; the caption bands hold the text
        assert np.array_equal(grid[top : top + 64], cells[top : top + 64])
    code, out, err = _cli(
        capsys,
        str(tmp_path / "ref.pt"),
        *TINY_OPTS,
        "--classes",
        "0,1,2,3",
        "--cfg-scale",
        "1.5",
        "--out",
        str(out_png),
        "--upscale",
        "1",
    )
    assert code == 0 and "(8x8 px) to" in out
    assert Image.open(out_png).size == (2 * 10 + 2, 2 * (10 + CAPTION_PX) + 2)

    # A reference training checkpoint {"model", "ema", "opt", "args"}: EMA by default, raw with --no-ema.
    raw = tiny_model(seed=5)
    torch.save(
        {"model": raw.state_dict(), "ema": model.state_dict(), "opt": {}, "args": argparse.Namespace(lr=1e-4)},
        tmp_path / "train.pt",
    )
    for extra, weights in (([], model), (["--no-ema"], raw)):
        code, out, err = _cli(
            capsys,
            str(tmp_path / "train.pt"),
            *TINY_OPTS,
            "--classes",
            "1,2",
            "--cfg-scale",
            "1",
            "--out",
            str(out_png),
            "--npz",
            str(npz),
            *extra,
        )
        assert code == 0, err
        with np.load(npz) as data:
            assert np.array_equal(
                data["arr_0"], sample_images(weights, diffusion, labels=[1, 2], steps=STEPS, progress=False)
            )


def test_cli_named_config_latent_pt(tmp_path, capsys):
    net = create_model("DiT-S/8", depth=1, input_size=8, num_classes=1000)  # official-style, 64 px through the VAE
    torch.save(net.state_dict(), tmp_path / "official.pt")
    make_tiny_vae().save_pretrained(tmp_path / "vae")
    code, out, err = _cli(
        capsys,
        str(tmp_path / "official.pt"),
        "--model",
        "DiT-S/8",
        "--model-opt",
        "depth=1",
        "--image-size",
        "64",
        "--vae",
        str(tmp_path / "vae"),
        "--num-images",
        "3",
        "--nrow",
        "3",
        "--out",
        str(tmp_path / "g.png"),
    )
    assert code == 0, err
    assert Image.open(tmp_path / "g.png").size == (3 * 66 + 2, 66 + CAPTION_PX + 2)


def test_cli_safetensors_and_training_folders(model, tmp_path, capsys):
    flow_cfg = {"kind": "flow"}
    flow_model = tiny_model(seed=1, learn_sigma=False)
    ema_model = tiny_model(seed=2, learn_sigma=False)
    save_model(flow_model, tmp_path / "m.safetensors", {"diffusion": flow_cfg})
    code, out, err = _cli(
        capsys,
        str(tmp_path / "m.safetensors"),
        "--num-images",
        "2",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "a.png"),
        "--npz",
        str(tmp_path / "a.npz"),
    )
    assert code == 0, err
    flow = create_diffusion(flow_cfg)
    with np.load(tmp_path / "a.npz") as data:
        assert np.array_equal(
            data["arr_0"],
            sample_images(flow_model, flow, num_images=2, seed=3, cfg_scale=4.0, steps=STEPS, progress=False),
        )

    run = tmp_path / "run"
    for step, ema in ((5, model), (10, ema_model)):  # the older checkpoint holds other weights
        ckpt = run / "checkpoints" / f"step_{step:08d}"
        save_model(flow_model if step == 10 else model, ckpt / "model.safetensors", {"diffusion": flow_cfg})
        save_model(ema, ckpt / "ema.safetensors", {"diffusion": flow_cfg})
    newest = run / "checkpoints" / "step_00000010"
    for target, weights, extra in ((run, ema_model, []), (newest, flow_model, ["--no-ema"])):
        code, out, err = _cli(
            capsys,
            str(target),
            "--classes",
            "4",
            "--cfg-scale",
            "1",
            "--out",
            str(tmp_path / "b.png"),
            "--npz",
            str(tmp_path / "b.npz"),
            *extra,
        )
        assert code == 0, err
        assert (f"newest checkpoint: {newest}" in err) == (target == run)
        expected = sample_images(weights, flow, labels=[4], steps=STEPS, progress=False)
        with np.load(tmp_path / "b.npz") as data:
            assert np.array_equal(data["arr_0"], expected)


def test_cli_takes_the_vae_of_the_runs_latent_store(tmp_path, capsys):
    make_tiny_vae().save_pretrained(tmp_path / "vae")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "plan.json").write_text(json.dumps({"vae": str(tmp_path / "vae")}))
    run = tmp_path / "run"
    save_model(tiny_model(**LATENT), run / "checkpoints" / "step_00000001" / "ema.safetensors")
    (run / "config.yaml").write_text(f"data:\n  name: latents\n  path: {tmp_path / 'store'}\n")
    code, out, err = _cli(capsys, str(run), "--classes", "0", "--out", str(tmp_path / "g.png"))
    assert code == 0, err
    assert f"using the run's VAE {tmp_path / 'vae'}" in err
    assert Image.open(tmp_path / "g.png").size == (
        68,
        68 + CAPTION_PX,
    )  # one 32 px image (4 latent px x 8) shown 2x + 2 px padding, labelled


def _error_line(code, out, err):
    assert code == 2
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ditscale: error: ")
    return lines[0]


def test_cli_errors(model, tmp_path, capsys):
    torch.save(model.state_dict(), tmp_path / "ref.pt")
    line = _error_line(*_cli(capsys, str(tmp_path / "missing.pt")))
    assert "does not exist" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "ref.pt"), "--model", "DiT-XXL/2", "--image-size", "8"))
    assert "unknown model 'DiT-XXL/2'" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "ref.pt"), *TINY_OPTS[:-2], "--image-size", "16"))
    assert "pos_embed" in line and "(1, 4, 32)" in line and "(1, 16, 32)" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "ref.pt")))
    assert "--model" in line and "--image-size" in line
    torch.save(model, tmp_path / "whole.pt")  # a pickled module, not a state dict
    line = _error_line(*_cli(capsys, str(tmp_path / "whole.pt"), *TINY_OPTS))
    assert "refusing to load" in line
    save_model(tiny_model(**LATENT), tmp_path / "latent.safetensors")
    line = _error_line(*_cli(capsys, str(tmp_path / "latent.safetensors")))
    assert "this model works in VAE latent space" in line and "--vae" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "latent.safetensors"), "--vae", str(tmp_path / "novae")))
    assert "VAE folder" in line
    (tmp_path / "empty").mkdir()
    line = _error_line(*_cli(capsys, str(tmp_path / "empty")))
    assert "without ema.safetensors/model.safetensors" in line
    save_model(tiny_model(conditioning="text", context_dim=8, context_len=4), tmp_path / "text.safetensors")
    line = _error_line(*_cli(capsys, str(tmp_path / "text.safetensors")))
    assert "text-conditional: pass --prompt TEXT (repeatable) or --prompts FILE" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "text.safetensors"), "--prompt", "a red circle"))
    assert "no text encoder was found next to its weights" in line and "--text-encoder" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "text.safetensors"), "--prompts", str(tmp_path / "none.txt")))
    assert "--prompts file" in line and "does not exist" in line
    save_model(model, tmp_path / "m.safetensors", {"diffusion": {"kind": "flow"}})  # 6 output channels, flow needs 3
    line = _error_line(*_cli(capsys, str(tmp_path / "m.safetensors")))
    assert "outputs 6 channels but its RectifiedFlow needs 3" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "ref.pt"), *TINY_OPTS, "--classes", "1,x"))
    assert "--classes must be comma-separated integers" in line
    line = _error_line(*_cli(capsys, str(tmp_path / "ref.pt"), *TINY_OPTS, "--prompt", "a red circle"))
    assert "--prompt/--prompts are for text-conditional models" in line


# Text-conditional models --------------------------------------------------------------------------
PROMPTS = [
    "a large red circle at the center on a blue background",
    "a small white cross at the top on a black background",
]


def test_cli_samples_a_text_run_with_its_trained_word_encoder(tmp_path, capsys):
    from ditscale.data.text import load_word_encoder
    from ditscale.models.io import load_state_dict_file, read_metadata
    from ditscale.train.config import load_train_config
    from ditscale.train.loop import train

    micro = [
        "model.hidden_size=32",
        "model.depth=1",
        "model.num_heads=2",
        "model.patch_size=4",
        "data.image_size=8",
        "batch_size=8",
        "max_steps=3",
        "val.every=0",
        "ckpt_every=0",
        "optim.warmup_steps=1",
    ]
    train(load_train_config("tiny-text", micro), tmp_path / "run", progress=False)
    final = tmp_path / "run" / "checkpoints" / "step_00000003"
    (tmp_path / "p.txt").write_text(PROMPTS[0] + "\n\n" + PROMPTS[1] + "\n")
    for how in (["--prompt", PROMPTS[0], "--prompt", PROMPTS[1]], ["--prompts", str(tmp_path / "p.txt")]):
        code, out, err = _cli(
            capsys, str(tmp_path / "run"), *how, "--out", str(tmp_path / "g.png"), "--npz", str(tmp_path / "t.npz")
        )
        assert code == 0, err
        assert "cfg-scale 4.0" in err  # trained with caption dropout: guided by default, as class models
        with np.load(tmp_path / "t.npz") as data:
            images = data["arr_0"]

        # the same through the library: the EMA DiT and the EMA of the trained encoder, newest checkpoint
        encoder = load_word_encoder(final / "text_encoder_ema.safetensors")
        trained = load_state_dict_file(final / "text_encoder_ema.safetensors")
        assert all(torch.equal(encoder.state_dict()[k], v) for k, v in trained.items())
        meta = read_metadata(final / "ema.safetensors")
        net = create_model(meta["model"])
        net.load_state_dict(load_state_dict_file(final / "ema.safetensors"))
        context, mask = encoder.encode(PROMPTS)
        expected = sample_images(
            net,
            create_diffusion(meta["diffusion"]),
            context=context,
            context_mask=mask,
            cfg_scale=4.0,
            steps=STEPS,
            progress=False,
        )
        assert images.shape == (2, 8, 8, 3) and np.array_equal(images, expected)
    # the prompt reaches the model (after 3 steps the two images may still round to the same pixels)
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 8, 8), torch.full((2,), 500.0), context=context, context_mask=mask)
    assert not torch.equal(out[0], out[1])


def test_cli_text_model_with_a_hugging_face_encoder(tiny_clip, diffusion, tmp_path, capsys):
    from ditscale.data.text import HFTextEncoder

    net = tiny_model(conditioning="text", context_dim=32, context_len=6, block="cross_attn")
    save_model(net, tmp_path / "t.safetensors")
    prompts = ["a small red circle", "a large blue square at the top left"]
    code, out, err = _cli(
        capsys,
        str(tmp_path / "t.safetensors"),
        "--prompt",
        prompts[0],
        "--prompt",
        prompts[1],
        "--text-encoder",
        str(tiny_clip),
        "--cfg-scale",
        "2",
        "--out",
        str(tmp_path / "g.png"),
        "--npz",
        str(tmp_path / "t.npz"),
    )
    assert code == 0, err
    context, mask = HFTextEncoder(tiny_clip, max_length=6).encode(prompts)
    expected = sample_images(
        net, diffusion, context=context, context_mask=mask, cfg_scale=2.0, steps=STEPS, progress=False
    )
    with np.load(tmp_path / "t.npz") as data:
        assert np.array_equal(data["arr_0"], expected)
    # a run folder: the frozen encoder is the one its config names
    run = tmp_path / "run"
    save_model(net, run / "checkpoints" / "step_00000001" / "ema.safetensors")
    (run / "config.yaml").write_text(f"text_encoder: {tiny_clip}\n")
    code, out, err = _cli(
        capsys,
        str(run),
        "--prompt",
        prompts[0],
        "--prompt",
        prompts[1],
        "--cfg-scale",
        "2",
        "--out",
        str(tmp_path / "g.png"),
        "--npz",
        str(tmp_path / "r.npz"),
    )
    assert code == 0, err
    with np.load(tmp_path / "r.npz") as data:
        assert np.array_equal(data["arr_0"], expected)
    wide = tiny_model(conditioning="text", context_dim=16, context_len=6)
    save_model(wide, tmp_path / "w.safetensors")
    line = _error_line(
        *_cli(capsys, str(tmp_path / "w.safetensors"), "--prompt", "a red circle", "--text-encoder", str(tiny_clip))
    )
    assert "gives 32-wide embeddings but the model takes 16" in line


# sample_npz: evaluation-scale batches, resumable and split across ranks ----------------------------
NAMES = ["circle", "square", "triangle", "diamond", "cross"]  # one per class of the 5-class tiny model
NPZ_OPTS = dict(num_samples=7, chunk_size=3, batch_size=2, steps=2, label_names=NAMES, progress=False)  # chunks 3+3+1


def _npz_arrays(path):
    with np.load(path, allow_pickle=False) as data:  # string arrays must be unicode, not pickled objects
        return {key: data[key] for key in data.files}


def test_sample_npz_sets_the_allocator_on_cpu(model, diffusion, tmp_path, monkeypatch):
    from ditscale.models import kernels

    calls = []
    monkeypatch.setattr(kernels, "retain_freed_memory", lambda: calls.append(1) or True)
    sample_npz(model, diffusion, tmp_path / "a.npz", **{**NPZ_OPTS, "num_samples": 1})
    assert calls == [1]  # once per call: large batches reuse freed memory (docs/benchmarks.md)


@pytest.fixture(scope="module")
def reference_npz(model, diffusion, tmp_path_factory):
    """The 7-image batch written in one uninterrupted call by one process."""
    out = tmp_path_factory.mktemp("ref") / "ref.npz"
    assert sample_npz(model, diffusion, out, **NPZ_OPTS) == out
    assert not parts_dir(out).exists()  # the chunks are removed once the file is assembled
    return _npz_arrays(out)


def test_sample_npz_contents(model, diffusion, reference_npz):
    ref = reference_npz
    assert list(ref) == ["arr_0", "labels", "label_names"]  # no captions for a class model
    assert ref["arr_0"].shape == (7, 8, 8, 3) and ref["arr_0"].dtype == np.uint8
    assert ref["labels"].dtype == np.int64 and ref["labels"].shape == (7,)
    assert ref["labels"].min() >= 0 and ref["labels"].max() <= 4 and len(set(ref["labels"].tolist())) > 1
    assert ref["label_names"].dtype.kind == "U" and ref["label_names"].tolist() == NAMES
    # chunk k draws its labels from derived_seed(seed, k) and the noise of its batch b from derived_seed(seed, k, b + 1)
    for k, lo, hi in ((0, 0, 3), (1, 3, 6), (2, 6, 7)):
        labels = torch.randint(0, 5, (hi - lo,), generator=torch.Generator().manual_seed(derived_seed(0, k)))
        assert ref["labels"][lo:hi].tolist() == labels.tolist()
    second_batch = sample_images(
        model, diffusion, labels=ref["labels"][5:6], seed=derived_seed(0, 1, 2), steps=2, progress=False
    )
    assert np.array_equal(ref["arr_0"][5:6], second_batch)
    assert len({derived_seed(0, 0), derived_seed(0, 1), derived_seed(1, 0), derived_seed(0, 0, 1)}) == 4


def test_sample_npz_resumes_after_an_interruption(model, diffusion, reference_npz, tmp_path, monkeypatch):
    import ditscale.generate.npz as G

    real, calls = G.sample_images, []

    def dies_on_the_fourth_batch(*args, **kwargs):  # chunk 0 (2 batches) is done, chunk 1 dies in its 2nd batch
        calls.append(kwargs["seed"])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "s.npz"
    monkeypatch.setattr(G, "sample_images", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        sample_npz(model, diffusion, out, **NPZ_OPTS)
    assert not out.exists()
    assert sorted(p.name for p in parts_dir(out).iterdir()) == ["chunk_000000.npz", "plan.json"]  # no temp file left
    calls.clear()
    monkeypatch.setattr(G, "sample_images", lambda *a, **kw: calls.append(kw["seed"]) or real(*a, **kw))
    assert sample_npz(model, diffusion, out, **NPZ_OPTS) == out
    assert calls == [derived_seed(0, 1, 1), derived_seed(0, 1, 2), derived_seed(0, 2, 1)]  # chunk 0 was not redrawn
    got = _npz_arrays(out)
    assert list(got) == list(reference_npz)
    assert all(np.array_equal(got[key], reference_npz[key]) for key in got)
    assert not parts_dir(out).exists()


def test_sample_npz_split_across_two_ranks(model, diffusion, reference_npz, tmp_path):
    out = tmp_path / "s.npz"
    with pytest.raises(ConfigError, match=r"1 of 3 chunks \(first: chunk_000001.npz\) are still missing"):
        sample_npz(model, diffusion, out, **NPZ_OPTS, rank=0, world_size=2, wait_timeout_s=0)  # draws chunks 0 and 2
    assert sorted(p.name for p in parts_dir(out).glob("chunk_*")) == ["chunk_000000.npz", "chunk_000002.npz"]
    with pytest.raises(ConfigError, match="holds chunks of another sampling run .*differs in steps"):
        sample_npz(model, diffusion, out, **{**NPZ_OPTS, "steps": 3}, rank=1, world_size=2)
    assert (
        sample_npz(model, diffusion, out, **NPZ_OPTS, rank=1, world_size=2) is None
    )  # draws chunk 1, assembles nothing
    assert not out.exists()
    assert sample_npz(model, diffusion, out, **NPZ_OPTS, rank=0, world_size=2, wait_timeout_s=0) == out  # assembles
    got = _npz_arrays(out)
    assert all(np.array_equal(got[key], reference_npz[key]) for key in reference_npz)
    assert not parts_dir(out).exists()


def _encode_lengths(captions):
    """A stand-in text encoder: each caption becomes 4 tokens of 8 features set by its length and first letter."""
    rows = [torch.tensor([len(c) / 20.0, (ord(c[0]) - 100) / 10.0] * 4).repeat(4, 1) for c in captions]
    return torch.stack(rows), torch.ones(len(captions), 4, dtype=torch.bool)


def test_sample_npz_text_model_cycles_its_captions(diffusion, tmp_path):
    net = tiny_model(conditioning="text", context_dim=8, context_len=4)
    prompts = ["a red circle", "the large blue square", "one"]
    out = sample_npz(
        net,
        diffusion,
        tmp_path / "t.npz",
        num_samples=5,
        chunk_size=4,
        batch_size=4,
        steps=2,
        cfg_scale=2.0,
        captions=prompts,
        encode_captions=_encode_lengths,
        progress=False,
    )
    got = _npz_arrays(out)
    assert list(got) == ["arr_0", "captions"]  # no labels for a text model
    assert got["captions"].dtype.kind == "U" and got["captions"].tolist() == prompts + prompts[:2]
    context, mask = _encode_lengths(prompts + prompts[:1])
    first = sample_images(
        net,
        diffusion,
        context=context,
        context_mask=mask,
        seed=derived_seed(0, 0, 1),
        steps=2,
        cfg_scale=2.0,
        progress=False,
    )
    assert np.array_equal(got["arr_0"][:4], first)
    assert not np.array_equal(got["arr_0"][0], got["arr_0"][1])  # the caption reaches the model


def test_sample_npz_user_errors(model, diffusion, tmp_path):
    text = tiny_model(conditioning="text", context_dim=8, context_len=4)
    out = tmp_path / "e.npz"
    with pytest.raises(ConfigError, match="text-conditional: pass captions"):
        sample_npz(text, diffusion, out, num_samples=2, progress=False)
    with pytest.raises(ConfigError, match="captions are for text-conditional models"):
        sample_npz(model, diffusion, out, num_samples=2, captions=["a"], progress=False)
    with pytest.raises(ConfigError, match="2 label names were given for a model of 5 classes"):
        sample_npz(model, diffusion, out, num_samples=2, label_names=["a", "b"], progress=False)
    with pytest.raises(ConfigError, match="rank 2 is not in 0..1"):
        sample_npz(model, diffusion, out, num_samples=2, rank=2, world_size=2, progress=False)
    with pytest.raises(ConfigError, match="must be >= 1"):
        sample_npz(model, diffusion, out, num_samples=0, progress=False)
    assert not parts_dir(out).exists()  # nothing was started


def test_cli_num_samples(model, diffusion, tmp_path, capsys):
    net = tiny_model(num_classes=6)  # the six kinds of the run's shapes data: its label names are saved
    run = tmp_path / "run"
    save_model(net, run / "checkpoints" / "step_00000001" / "ema.safetensors")
    (run / "config.yaml").write_text("data:\n  name: shapes\n  image_size: 8\n")
    npz, grid = tmp_path / "s.npz", tmp_path / "g.png"
    code, out, err = _cli(
        capsys,
        str(run),
        "--num-samples",
        "70",
        "--chunk-size",
        "40",
        "--npz",
        str(npz),
        "--out",
        str(grid),
        "--cfg-scale",
        "1.5",
    )
    assert code == 0, err
    assert f"wrote 70 images to {npz} (keys arr_0, labels, label_names)" in out
    expected = sample_npz(
        net,
        diffusion,
        tmp_path / "lib.npz",
        num_samples=70,
        chunk_size=40,
        cfg_scale=1.5,
        steps=STEPS,
        progress=False,
        label_names=KINDS,
    )
    got, want = _npz_arrays(npz), _npz_arrays(expected)
    assert list(got) == list(want) and all(np.array_equal(got[k], want[k]) for k in got)
    assert got["label_names"].tolist() == list(KINDS)
    # the grid shows the first 64 images only (8 x 8 of 8 px, enlarged 8x)
    assert np.array_equal(np.asarray(Image.open(grid)), make_grid(got["arr_0"][:64].repeat(8, 1).repeat(8, 2)))
    assert "wrote a grid of 64 images" in out


def test_cli_num_samples_of_a_text_run_prompts_with_its_val_captions(tiny_clip, diffusion, tmp_path, capsys):
    from ditscale.data import DataConfig, build_dataset
    from ditscale.data.text import HFTextEncoder

    net = tiny_model(conditioning="text", context_dim=32, context_len=6, block="cross_attn")
    run = tmp_path / "run"
    save_model(net, run / "checkpoints" / "step_00000001" / "ema.safetensors")
    (run / "config.yaml").write_text(f"text_encoder: {tiny_clip}\ndata:\n  name: shapes\n  image_size: 8\n")
    code, out, err = _cli(
        capsys,
        str(run),
        "--num-samples",
        "3",
        "--npz",
        str(tmp_path / "t.npz"),
        "--out",
        str(tmp_path / "g.png"),
        "--cfg-scale",
        "2",
    )
    assert code == 0, err
    assert "prompting with the captions of items 0..2 of the run's shapes val split" in err
    val = build_dataset(DataConfig(image_size=8, captions=True), "val")
    captions = [val[i]["caption"] for i in range(3)]
    got = _npz_arrays(tmp_path / "t.npz")
    assert got["captions"].tolist() == captions
    expected = sample_npz(
        net,
        diffusion,
        tmp_path / "lib.npz",
        num_samples=3,
        cfg_scale=2.0,
        steps=STEPS,
        captions=captions,
        encode_captions=HFTextEncoder(tiny_clip, max_length=6).encode,
        progress=False,
    )
    assert np.array_equal(got["arr_0"], _npz_arrays(expected)["arr_0"])


def test_cli_num_samples_errors(model, tmp_path, capsys):
    save_model(model, tmp_path / "m.safetensors")
    line = _error_line(*_cli(capsys, str(tmp_path / "m.safetensors"), "--num-samples", "10"))
    assert "--num-samples needs --npz FILE" in line
    line = _error_line(
        *_cli(
            capsys,
            str(tmp_path / "m.safetensors"),
            "--num-samples",
            "10",
            "--npz",
            str(tmp_path / "s.npz"),
            "--classes",
            "1,2",
        )
    )
    assert "drop --classes/--num-images" in line
    text = tiny_model(conditioning="text", context_dim=8, context_len=4)
    save_model(text, tmp_path / "t.safetensors")
    line = _error_line(
        *_cli(capsys, str(tmp_path / "t.safetensors"), "--num-samples", "4", "--npz", str(tmp_path / "t.npz"))
    )
    assert "no run config to take captions from; pass --prompts FILE" in line
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "t.npz").exists()


# under torchrun: 2 CPU processes write the file 1 process writes -----------------------------------
def _torchrun(*args, cwd):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        str(port),
        *args,
    ]
    proc = subprocess.run(
        cmd, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_cli_num_samples_under_torchrun(model, reference_npz, tmp_path):
    save_model(model, tmp_path / "m.safetensors")
    stdout = _torchrun(
        "-m",
        "ditscale",
        "sample",
        "m.safetensors",
        "--num-samples",
        "7",
        "--chunk-size",
        "3",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--cfg-scale",
        "1",
        "--npz",
        "two.npz",
        "--quiet",
        cwd=tmp_path,
    )
    assert stdout.count("wrote 7 images to two.npz") == 1  # rank 0 alone assembles and reports
    got = _npz_arrays(tmp_path / "two.npz")
    assert np.array_equal(got["arr_0"], reference_npz["arr_0"]) and np.array_equal(
        got["labels"], reference_npz["labels"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.safetensors",
        "two.npz",
    ]  # parts removed, no grid asked for


BARRIER_SCRIPT = """
import sys, time
import torch
import torch.distributed as dist
from ditscale.diffusion import create_diffusion
from ditscale.generate import sample_npz
from ditscale.models import create_model

dist.init_process_group("gloo")
rank = dist.get_rank()
net = create_model({pixel!r})
net.load_state_dict(torch.load("m.pt"))  # the test's model (a fresh one has other random weights)
if rank == 1:
    time.sleep(1.0)  # rank 0 finishes first: without the barrier it would find chunk 1 missing (no waiting allowed)
out = sample_npz(net.eval(), create_diffusion(), "b.npz", **{opts!r}, rank=rank, world_size=2, wait_timeout_s=0)
print(f"rank {{rank}} returned {{out}}")
dist.destroy_process_group()
"""


def test_sample_npz_uses_the_barrier_of_a_process_group(model, reference_npz, tmp_path):
    torch.save(model.state_dict(), tmp_path / "m.pt")
    (tmp_path / "script.py").write_text(BARRIER_SCRIPT.format(pixel=PIXEL, opts=NPZ_OPTS))
    stdout = _torchrun("script.py", cwd=tmp_path)
    assert sorted(stdout.split("\n")[:2]) == ["rank 0 returned b.npz", "rank 1 returned None"]
    got = _npz_arrays(tmp_path / "b.npz")
    assert all(np.array_equal(got[key], reference_npz[key]) for key in reference_npz)


def test_sample_npz_refuses_a_second_process_on_the_same_file(model, diffusion, tmp_path):
    """Issue 24 item 2: while one process samples FILE (it holds FILE.parts/rank_00000.lock), a second one
    on FILE is refused with one line, instead of redrawing its chunks and then waiting for the ones it deleted."""
    import fcntl

    out = tmp_path / "s.npz"
    lock = parts_dir(out) / "rank_00000.lock"
    lock.parent.mkdir()
    with open(lock, "w") as held:  # the first process's lock, as sample_npz takes it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        with pytest.raises(ConfigError, match=rf"'{out}' is in use: another process \(pid 4242\)") as err:
            sample_npz(model, diffusion, out, **NPZ_OPTS, wait_timeout_s=0)
        assert "\n" not in str(err.value)
        assert sorted(p.name for p in lock.parent.iterdir()) == ["rank_00000.lock"]  # nothing drawn, no plan
    assert sample_npz(model, diffusion, out, **NPZ_OPTS) == out  # once the holder is gone, it samples
    assert not lock.parent.exists()


def test_sample_npz_discards_chunks_another_plan_made(model, diffusion, reference_npz, tmp_path):
    """Issue 24 item 2: a chunk left without plan.json (or with another plan's digest, or cut short) is
    redrawn, never adopted: images of another draw do not end up in this one."""
    out, parts = tmp_path / "s.npz", parts_dir(tmp_path / "s.npz")
    parts.mkdir()
    other = {"arr_0": 255 - reference_npz["arr_0"][6:7], "labels": reference_npz["labels"][6:7]}
    atomic_write_npz(parts / "chunk_000002.npz", other)  # a lone chunk of another draw, as a lost race leaves it
    (parts / "chunk_000001.npz").write_bytes(b"PK\x03\x04 cut short")  # a chunk cut short
    (parts / "plan.json").write_text("{not json")  # a plan.json that is not JSON
    assert sample_npz(model, diffusion, out, **NPZ_OPTS) == out
    got = _npz_arrays(out)
    assert all(np.array_equal(got[key], reference_npz[key]) for key in reference_npz)
    assert not parts.exists()
