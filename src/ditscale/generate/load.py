"""A model to sample from: its config, weights, diffusion process, VAE and text encoder.

What ``ditscale sample`` resolves before any image is drawn, in two steps, so that a command reports
the cheap errors (flags, metadata) before it loads weights:

1. :func:`sampler_spec`: the weights' metadata, the VAE the user named and the :class:`DiTConfig`
   (the flags win over the metadata; a file without metadata needs a model name and an image size).
2. :func:`load_sampler`: the VAE of a latent model when none was named (a diffusers folder's
   ``vae/``, else the one its run's latent store was encoded with), the weights, and the diffusion
   process checked against the model (:func:`diffusion_for`).

The result, :class:`Sampler`, loads a text model's encoder on demand (:meth:`Sampler.text_encoder`),
so that commands that never encode a caption never load one. Run folders belong to
:mod:`ditscale.train`, which this layer does not import: the caller passes what it knows about the
run (``RunDir.vae()``, ``RunDir.text_encoder()``) as plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ditscale.config import parse_override
from ditscale.data.text import TextEncoder, text_encoder_for
from ditscale.diffusion import create_diffusion
from ditscale.diffusion.config import resolve_diffusion_config
from ditscale.diffusion.protocol import Diffusion
from ditscale.errors import ConfigError
from ditscale.flops import inference_memory_bytes
from ditscale.io import check_allocation
from ditscale.models.config import DiTConfig, named_config
from ditscale.models.dit import DiT
from ditscale.models.io import describe_config, load_model, read_metadata, vae_for

PIXEL_CHANNELS = (1, 3)  # in_channels of pixel-space models; anything else works in a VAE's latent space
DEFAULT_VAE_FACTOR = 8  # the SD VAE's downsampling: an official .pt's --image-size 256 is a 32-px latent


def _load_vae(name: str, device: str) -> Any:
    from ditscale.data.vae import load_vae  # lazy: diffusers (seconds to import; pixel models never need it)

    return load_vae(name, device=device)


def _downsample(vae: Any) -> int:
    from ditscale.data.vae import downsample_factor  # lazy: diffusers, as above

    return downsample_factor(vae)


# -- 1. the config ------------------------------------------------------------------------------------
def model_config(
    meta: dict[str, Any],
    *,
    model: str | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    model_opts: Sequence[str] = (),
    vae_factor: int | None = None,
) -> DiTConfig:
    """The DiTConfig of weights whose metadata is ``meta``; the arguments, where given, win.

    ``model`` is a paper name ("DiT-XL/2"), ``model_opts`` ``KEY=VALUE`` field overrides,
    ``image_size`` the side in image pixels: a latent model's input is ``image_size // f`` for the
    downsampling ``f`` of the VAE named (``vae_factor``), else of the SD VAE (8); pixel models take
    it whole. Weights without metadata (an official ``.pt``) need ``model`` and ``image_size``.
    """
    opts = {}
    for text in model_opts:
        key, value = parse_override(text)
        opts[".".join(key)] = value
    if "model" in meta and not (model or opts or image_size or num_classes):
        return checked_size(DiTConfig.from_dict(meta["model"]))
    if model:
        base = named_config(model).to_dict()
    elif "model" in meta or opts:
        base = DiTConfig.from_dict(meta.get("model", {})).to_dict()
    else:
        raise ConfigError(
            "this weights file carries no model config (an official or plain .pt): pass --model NAME and "
            "--image-size PX, e.g. --model DiT-XL/2 --image-size 256"
        )
    if num_classes is not None:
        base["num_classes"] = num_classes
    base.update(opts)
    if image_size is not None:
        latent = base["in_channels"] not in PIXEL_CHANNELS or vae_factor is not None
        f = (vae_factor or DEFAULT_VAE_FACTOR) if latent else 1
        if image_size % f:
            raise ConfigError(f"--image-size {image_size} is not divisible by the VAE's downsampling {f}")
        base["input_size"] = image_size // f
    elif "model" not in meta and "input_size" not in opts:
        raise ConfigError("pass --image-size PX (e.g. 256 for DiT-XL-2-256x256.pt) for a file without model config")
    return checked_size(DiTConfig.from_dict(base))


def checked_size(config: DiTConfig) -> DiTConfig:
    """``config`` when the model it describes fits in the memory available
    (:func:`ditscale.flops.inference_memory_bytes`), checked before anything is built; else a one-line
    :class:`ConfigError` with both figures. Every source of a config to sample or export (the weights'
    metadata, a diffusers ``config.json``, the flags) passes here."""
    check_allocation(
        inference_memory_bytes(config),
        f"the model {describe_config(config)}",
        "its sizes are too large for this machine (or the file's config is damaged)",
    )
    return config


@dataclass(frozen=True)
class SamplerSpec:
    """What :func:`sampler_spec` read: the ``weights`` file, its metadata ``meta``, the model ``config``,
    the VAE the user named (``vae``, loaded; None) and the ``device`` it all goes to."""

    weights: Path
    meta: dict[str, Any]
    config: DiTConfig
    vae: Any
    device: str


def sampler_spec(
    weights: Path,
    *,
    model: str | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    model_opts: Sequence[str] = (),
    vae: str | None = None,
    device: str = "cpu",
) -> SamplerSpec:
    """Step 1: the metadata of ``weights``, the VAE ``vae`` (a diffusers folder or hub id) loaded on
    ``device``, and the :func:`model_config` of the other arguments. No weights are read yet."""
    meta = read_metadata(weights)
    if "diffusion" in meta:  # its sizes (diffusion_steps) are checked before anything is built
        resolve_diffusion_config(meta["diffusion"])
    loaded = _load_vae(vae, device) if vae else None
    factor = _downsample(loaded) if loaded is not None else None
    config = model_config(
        meta, model=model, image_size=image_size, num_classes=num_classes, model_opts=model_opts, vae_factor=factor
    )
    return SamplerSpec(weights, meta, config, loaded, device)


# -- 2. the weights, the VAE and the process ---------------------------------------------------------
def diffusion_for(meta: dict[str, Any], config: DiTConfig) -> Diffusion:
    """The diffusion process of weights with metadata ``meta`` (DiT's default, with the model's
    ``learn_sigma``, without it), checked to take the model's output channels."""
    diffusion = create_diffusion(meta.get("diffusion") if "diffusion" in meta else {"learn_sigma": config.learn_sigma})
    if diffusion.model_out_channels(config.in_channels) != config.out_channels:
        raise ConfigError(
            f"the model outputs {config.out_channels} channels but its {type(diffusion).__name__} needs "
            f"{diffusion.model_out_channels(config.in_channels)}; check learn_sigma of the model and diffusion configs"
        )
    return diffusion


@dataclass(frozen=True)
class Sampler:
    """A model ready to sample: its ``weights`` file, ``config``, ``model`` (eval mode, on ``device``),
    ``diffusion`` process and ``vae`` (None for pixel models), with ``notes``, one line each, on what
    was chosen for the user. A text model's encoder is loaded by :meth:`text_encoder`: ``encoder_name``
    (the user's), else the one beside the weights, else ``run_encoder`` (the run config's)."""

    weights: Path
    config: DiTConfig
    model: DiT
    diffusion: Diffusion
    vae: Any
    device: str
    notes: tuple[str, ...] = ()
    encoder_name: str | None = None
    run_encoder: str | None = None
    progress: bool = True

    @property
    def image_side(self) -> int:
        """The side of the sampled images in pixels (the latent side times the VAE's downsampling)."""
        return self.config.input_size * (_downsample(self.vae) if self.vae is not None else 1)

    def about(self, cfg_scale: float) -> str:
        """One line on what samples: ``DiT-S/2 (input_size 32) from W on cpu, cfg-scale 4.0``."""
        return f"{describe_config(self.config)} from {self.weights} on {self.device}, cfg-scale {cfg_scale}"

    def text_encoder(self) -> TextEncoder:
        """The text encoder of this text-conditional model (:func:`ditscale.data.text.text_encoder_for`)."""
        return text_encoder_for(
            self.weights,
            context_len=self.config.context_len,
            context_dim=self.config.context_dim,
            name=self.encoder_name,
            run_encoder=self.run_encoder,
            device=self.device,
            progress=self.progress,
        )


def _latent_vae(spec: SamplerSpec, run_vae: str | None) -> tuple[Any, str]:
    """The VAE of a latent model given none (:func:`ditscale.models.io.vae_for`), and the note naming it."""
    name = vae_for(spec.weights, run_vae)
    if name is None:
        raise ConfigError(
            f"this model works in VAE latent space ({spec.config.in_channels} channels): pass --vae PATH_OR_ID "
            "(a diffusers AutoencoderKL folder, or e.g. stabilityai/sd-vae-ft-ema)"
        )
    return _load_vae(name, spec.device), f"using the run's VAE {name}"


def load_sampler(
    spec: SamplerSpec,
    *,
    ema: bool = True,
    run_vae: str | None = None,
    notes: Sequence[str] = (),
    encoder_name: str | None = None,
    run_encoder: str | None = None,
    progress: bool = True,
) -> Sampler:
    """Step 2: the :class:`Sampler` of ``spec``.

    A latent model without a VAE takes its weights' (a diffusers folder's ``vae/``, else ``run_vae``,
    the VAE its run's latent store was encoded with) and says so in a note after ``notes``. ``ema``
    picks the EMA weights of a reference training checkpoint (False: the raw ones). ``encoder_name``,
    ``run_encoder`` and ``progress`` are kept for :meth:`Sampler.text_encoder`.
    """
    vae, notes = spec.vae, list(notes)
    if vae is None and spec.config.in_channels not in PIXEL_CHANNELS:
        vae, note = _latent_vae(spec, run_vae)
        notes.append(note)
    model = load_model(spec.weights, spec.config, map_location=spec.device, ema=ema)
    diffusion = diffusion_for(spec.meta, spec.config)
    return Sampler(
        spec.weights, spec.config, model, diffusion, vae, spec.device, tuple(notes), encoder_name, run_encoder, progress
    )
