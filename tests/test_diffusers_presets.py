"""Every train preset's model, exported with ``ditscale export --format diffusers``, loads in one
``DiffusionPipeline.from_pretrained`` call and samples at the pipeline's default arguments (issue 23,
item 1); the flow pipelines give ``ditscale sample``'s images from the same noise.

Each model has its preset's real layout (block design, conditioning, process, channels), shrunk to
width 32 and depth 2; its weights are perturbed so the zero-initialised layers give a non-constant output.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ditscale.data.config import DataInfo
from ditscale.data.text import WordTextEncoder, WordTokenizer, load_word_encoder
from ditscale.data.vae import make_tiny_vae
from ditscale.diffusion import create_diffusion
from ditscale.generate.export import CUSTOM_LOAD, export_model, load_export_source
from ditscale.generate.sample import sample_latents
from ditscale.models.dit import DiT
from ditscale.models.io import METADATA_KEY, load_model, save_model
from ditscale.train.conditioning import word_encoder_spec
from ditscale.train.config import WORD_ENCODER, load_train_config, preset_names

diffusers = pytest.importorskip("diffusers")

SHRINK = ["model.hidden_size=32", "model.depth=2", "model.num_heads=2"]
LATENT_INFO = DataInfo(num_classes=10, channels=4, image_size=4, is_latent=True, has_captions=False)
PROMPTS = ["a red circle", "a small blue square at the top left"]


def _checkpoint(name, tmp_path):
    """A checkpoint folder of preset ``name``'s layout (EMA weights, with a trained word encoder for a
    text preset) and its model, diffusion config and word encoder file."""
    overrides = SHRINK + (["data.path=unused"] if name.startswith("dit-") else [])
    cfg = load_train_config(name, overrides)
    text = None
    if cfg.text_encoder:
        torch.manual_seed(1)
        text = WordTextEncoder(WordTokenizer.for_dataset(cfg.data_config()), **WORD_ENCODER)
    info = LATENT_INFO if name.startswith("dit-") else None
    torch.manual_seed(0)
    model = DiT(cfg.model_config(text=text, info=info))
    g = torch.Generator().manual_seed(0)
    for p in [*model.parameters(), *(text.parameters() if text else [])]:
        if p.requires_grad:
            p.data.add_(0.05 * torch.randn(p.shape, generator=g))
    ckpt = tmp_path / name / "checkpoints" / "step_00000001"
    diffusion = cfg.diffusion_config().to_dict()
    weights = save_model(model.eval(), ckpt / "ema.safetensors", {"diffusion": diffusion})
    encoder = None
    if text is not None:  # as the trainer writes it: the encoder's weights, its sizes and vocabulary as metadata
        encoder = ckpt / "text_encoder_ema.safetensors"
        save_file(text.state_dict(), str(encoder), metadata={METADATA_KEY: json.dumps(word_encoder_spec(text))})
    return weights, model, diffusion, encoder


@pytest.mark.parametrize("name", preset_names())
def test_every_presets_export_loads_and_samples_at_the_defaults(name, tmp_path):
    weights, model, diffusion, encoder = _checkpoint(name, tmp_path)
    make_tiny_vae().save_pretrained(tmp_path / "vae")
    out = tmp_path / "export"
    export_model(load_export_source(weights), out, run_vae=str(tmp_path / "vae"))
    stock = json.loads((out / "model_index.json").read_text())["_class_name"] == "DiTPipeline"
    assert stock == (diffusion["kind"] == "gaussian")  # the Gaussian adaLN-Zero latent presets stay stock
    pipe = diffusers.DiffusionPipeline.from_pretrained(out, **({} if stock else {"trust_remote_code": True}))
    text = model.config.conditioning == "text"
    condition = {"prompt": PROMPTS} if text else {"class_labels": [0, 1]}
    images = pipe(**condition, num_inference_steps=4).images  # every other argument at its default (guided)
    side = 32 if model.config.in_channels == 4 else model.config.input_size  # the tiny VAE upsamples 8x
    assert len(images) == 2 and all(im.size == (side, side) for im in images)
    arrays = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    assert np.isfinite(arrays).all() and arrays.std() > 1 and not np.array_equal(arrays[0], arrays[1])
    if stock:  # DiTPipeline guides with label 1000: our null row is there, whatever the class count
        table = pipe.transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
        ours = model.y_embedder.embedding_table.weight
        assert torch.equal(table[1000], ours[model.config.num_classes]) and torch.equal(table[:10], ours[:10])
        return
    assert isinstance(pipe.scheduler, diffusers.FlowMatchEulerDiscreteScheduler) and pipe.vae is None
    # faithful: ditscale's own Euler sampler, same noise (seed 0), same default guidance 4.0
    got = pipe(**condition, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt")
    kwargs = {"labels": [0, 1]}
    if text:
        context, mask = load_word_encoder(encoder).encode(PROMPTS)
        kwargs = {"context": context, "context_mask": mask}
    ours = sample_latents(model, create_diffusion(diffusion), **kwargs, steps=4, cfg_scale=4.0, progress=False)
    torch.testing.assert_close(got.images, (ours.clamp(-1, 1) + 1) / 2, atol=2e-5, rtol=0)
    assert (ours.clamp(-1, 1) + 1).std() > 0.05  # the comparison is of real images, not of constants
    back = load_model(out)  # ditscale reads the pipeline folder back: the same model
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_the_custom_pipeline_needs_exactly_trust_remote_code(tmp_path):
    """Without it diffusers refuses the folder's pipeline file (its own rule for any code file)."""
    weights, *_ = _checkpoint("tiny", tmp_path)
    export_model(load_export_source(weights), tmp_path / "export")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        diffusers.DiffusionPipeline.from_pretrained(tmp_path / "export")
    assert CUSTOM_LOAD == "trust_remote_code=True"
