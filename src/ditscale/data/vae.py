"""The image autoencoder of latent DiTs: load, encode, decode (diffusers ``AutoencoderKL``).

DiT trains in the latent space of the Stable Diffusion VAE ("stabilityai/sd-vae-ft-ema" or
"-mse"): a 256x256x3 image becomes a 32x32x4 latent (downsampling by 8), multiplied by
``VAE_SCALE = 0.18215`` so latents have roughly unit variance. Units: images are float tensors
``(N, 3, H, W)`` in [-1, 1]; latents are ``(N, C, H / f, W / f)`` for the VAE's downsampling factor f.

Nothing downloads at run time unless asked: :func:`load_vae` reads a local diffusers folder or the
local Hugging Face cache, and only goes to the network when ``DITSCALE_ALLOW_DOWNLOAD=1``.
:func:`save_vae_folder` writes one into an exported pipeline, scaled as ditscale's latents.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.utils import logging as diffusers_logging

from ditscale.errors import CheckpointError, ConfigError
from ditscale.io import pickled_global

VAE_SCALE = 0.18215  # SD-VAE latent scale, as in DiT's train.py / sample.py


def _download_allowed() -> bool:
    return os.environ.get("DITSCALE_ALLOW_DOWNLOAD", "").strip().lower() in {"1", "true", "yes"}


def load_vae(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
) -> AutoencoderKL:
    """Load a diffusers ``AutoencoderKL`` from a local folder or a hub id, in eval mode.

    Args:
        name_or_path: a folder written by ``AutoencoderKL.save_pretrained`` (``config.json`` +
            weights), or a hub id such as ``"stabilityai/sd-vae-ft-ema"``.
        device, dtype: where and in which precision the weights live.
        local_files_only: never touch the network. Defaults to True unless the environment variable
            ``DITSCALE_ALLOW_DOWNLOAD=1`` is set.

    Raises:
        CheckpointError: the folder or id is not available locally (or cannot be loaded).
    """
    if local_files_only is None:
        local_files_only = not _download_allowed()
    name = str(name_or_path)
    hint = "pass --vae PATH to a diffusers AutoencoderKL folder, or set DITSCALE_ALLOW_DOWNLOAD=1"
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1
    if looks_local and not (path / "config.json").is_file():
        what = "has no config.json" if path.is_dir() else "does not exist"
        raise CheckpointError(f"VAE folder '{name}' {what}: {hint}")
    verbosity = diffusers_logging.get_verbosity()
    try:
        # its fallback notes ("an error occurred ...", "defaulting to unsafe serialization") leak as extra lines;
        # what went wrong is ours to say, in one
        diffusers_logging.set_verbosity(logging.CRITICAL)
        with warnings.catch_warnings():  # hub-client deprecation chatter, not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            vae = AutoencoderKL.from_pretrained(
                str(path) if looks_local else name,
                local_files_only=local_files_only,
                low_cpu_mem_usage=False,
                torch_dtype=dtype,
            )
    except (OSError, ValueError) as err:  # huggingface_hub errors subclass OSError / ValueError
        if local_files_only and not looks_local:
            raise CheckpointError(f"VAE '{name}' not found locally: {hint}") from None
        for weights in sorted(path.glob("*.bin")) if looks_local else ():
            found = pickled_global(weights)
            if found:
                raise CheckpointError(
                    f"refusing to load VAE '{name}': {weights.name} pickles {found}, not just tensors (unsafe to "
                    "unpickle); use a folder with safetensors weights"
                ) from None
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointError(f"VAE '{name}' could not be loaded ({reason}): {hint}") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    if not isinstance(vae, AutoencoderKL):  # pragma: no cover - from_pretrained returns cls
        raise CheckpointError(f"'{name}' is not a diffusers AutoencoderKL: {hint}")
    return vae.to(device=device).eval().requires_grad_(False)


def save_vae_folder(name: str, latent_channels: int, folder: Path) -> None:
    """Load the VAE ``name`` (offline, as :func:`load_vae`) and save it under ``folder`` for a pipeline
    whose model takes ``latent_channels``; its ``scaling_factor`` becomes :data:`VAE_SCALE`, the
    scale of ditscale's latents."""
    vae = load_vae(name)
    if int(vae.config.latent_channels) != latent_channels:
        raise ConfigError(
            f"VAE {name} has {vae.config.latent_channels} latent channels but the model takes "
            f"{latent_channels}; pass the --vae the run's latents were encoded with"
        )
    if vae.config.scaling_factor != VAE_SCALE:
        vae.register_to_config(scaling_factor=VAE_SCALE)  # ditscale latents are always scaled by VAE_SCALE
    vae.save_pretrained(str(folder), safe_serialization=True)


def make_tiny_vae(
    latent_channels: int = 4,
    *,
    downsample: int = 8,
    width: int = 8,
    layers_per_block: int = 1,
    seed: int = 0,
) -> AutoencoderKL:
    """A randomly initialised, tiny but real ``AutoencoderKL`` for tests and demos (no download).

    Same architecture family as the SD VAE (which is ``block_out_channels=(128, 256, 512, 512)``,
    ``layers_per_block=2``, downsample 8), with ``log2(downsample) + 1`` blocks of ``width``
    channels each, so images of side S encode to latents of side ``S // downsample``.
    ``scaling_factor`` in its config is :data:`VAE_SCALE`. Deterministic given ``seed``.
    """
    if downsample < 1 or downsample & (downsample - 1):
        raise ValueError(f"downsample must be a power of two, got {downsample}")
    blocks = downsample.bit_length()  # 1 -> 1 block, 2 -> 2, 8 -> 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=(width,) * blocks,
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=min(4, width),
            sample_size=32 * downsample // 8,
            scaling_factor=VAE_SCALE,
        )
    return vae.eval().requires_grad_(False)


def downsample_factor(vae: AutoencoderKL) -> int:
    """Spatial downsampling of ``vae`` (image pixels per latent pixel per side): 8 for the SD VAE."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def encode_moments(vae: AutoencoderKL, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior ``(mean, std)`` of images ``(N, 3, H, W)`` in [-1, 1], both ``(N, C, H/f, W/f)``.

    Unscaled (not multiplied by :data:`VAE_SCALE`), float32 on the input's device. A latent store
    keeps these so training can draw a fresh posterior sample each epoch, as DiT does.
    """
    param = next(vae.parameters())
    posterior = vae.encode(images.to(device=param.device, dtype=param.dtype)).latent_dist
    return posterior.mean.float().to(images.device), posterior.std.float().to(images.device)


@torch.no_grad()
def encode(
    vae: AutoencoderKL,
    images: torch.Tensor,
    *,
    sample: bool = True,
    generator: torch.Generator | None = None,
    scale: float = VAE_SCALE,
) -> torch.Tensor:
    """Scaled latents of images ``(N, 3, H, W)`` in [-1, 1]: ``scale * z``, ``(N, C, H/f, W/f)`` float32.

    ``z`` is a posterior sample ``mean + std * eps`` (``eps`` drawn from ``generator``) when
    ``sample`` is True, as DiT's ``train.py`` does, else the posterior mean.
    """
    mean, std = encode_moments(vae, images)
    if not sample:
        return mean * scale
    gen_device = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=gen_device).to(mean.device)
    return (mean + std * eps) * scale


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor, *, scale: float = VAE_SCALE) -> torch.Tensor:
    """Images ``(N, 3, H*f, W*f)`` float32 in [-1, 1] (clamped) from scaled latents ``(N, C, H, W)``.

    Divides by ``scale`` before the decoder, as DiT's ``sample.py`` does.
    """
    param = next(vae.parameters())
    images = vae.decode(latents.to(device=param.device, dtype=param.dtype) / scale).sample
    return images.float().clamp(-1.0, 1.0).to(latents.device)
