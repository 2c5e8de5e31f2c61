"""Seeded sampling from a trained DiT: conditions, classifier-free guidance, VAE decoding, uint8 images.

:func:`sample_images` follows DiT's ``sample.py`` / ``sample_ddp.py``: draw Gaussian noise in the
model's input space, run the diffusion sampler (with classifier-free guidance as a doubled batch:
conditional half first, the model's null condition second, chosen by ``force_drop_ids``), decode
latents with the VAE (divided by 0.18215) and convert to uint8 as ``clamp(127.5 * x + 128, 0, 255)``
(``sample_ddp.py``, whose ``.npz`` feeds ADM's FID suite). Pixel-space models (1 or 3 input
channels) skip the VAE. The checks (:func:`check_request`, :func:`check_guidance`, :func:`check_vae`)
are public so that a command, or :mod:`ditscale.generate.npz`, refuses bad input before any work.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch

from ditscale.diffusion.guidance import cfg_model_fn
from ditscale.diffusion.protocol import Diffusion
from ditscale.errors import ConfigError
from ditscale.models.config import DiTConfig
from ditscale.models.guidance import guidance_drop_ids


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images ``(N, C, H, W)`` in [-1, 1] -> uint8 ``(N, H, W, 3)``, as DiT's ``sample_ddp.py``.

    Each value becomes ``clamp(127.5 * x + 128, 0, 255)`` truncated to an integer (-1 -> 0, 0 -> 128,
    1 -> 255); one-channel images are repeated to grey RGB.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    out = torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8)
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    return out.permute(0, 2, 3, 1).cpu().numpy()


def _labels(
    model: torch.nn.Module,
    labels: Sequence[int] | torch.Tensor | None,
    num_images: int | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor | None, int]:
    """Validated class labels (long, CPU) and the number of images."""
    cfg = model.config
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if num_images is not None and num_images != len(labels):
            raise ConfigError(f"{len(labels)} labels were given but num_images={num_images}; give one label per image")
        num_images = len(labels)
    if num_images is None or num_images < 1:
        raise ConfigError("nothing to sample: pass class labels or num_images >= 1")
    if cfg.conditioning != "class":
        if labels is not None:
            raise ConfigError(f"this model has conditioning={cfg.conditioning!r} and takes no class labels; drop them")
        return None, num_images
    if labels is None:  # random classes, as sample_ddp.py
        labels = torch.randint(0, cfg.num_classes, (num_images,), generator=generator)
    bad = labels[(labels < 0) | (labels >= cfg.num_classes)]
    if len(bad):
        raise ConfigError(
            f"class label {int(bad[0])} is out of range: this model has {cfg.num_classes} classes (0..{cfg.num_classes - 1})"
        )
    return labels, num_images


def draw_labels(model: torch.nn.Module, num_images: int, seed: int) -> torch.Tensor:
    """The ``num_images`` random class labels :func:`sample_latents` draws from ``seed`` when given none
    (so a caller can name them; passing them back gives the same samples)."""
    labels, _ = _labels(model, None, num_images, torch.Generator().manual_seed(seed))
    return labels


# -- the steps of sample_latents ----------------------------------------------------------------------
def sampler_and_steps(diffusion: Diffusion, sampler: str | None, steps: int | str | None) -> tuple[str, int | str]:
    """The sampler and step count, defaulting to the process's own (DiT: 250 DDPM steps; flow: 50 Euler steps)."""
    return sampler or diffusion.default_sampler, diffusion.default_steps if steps is None else steps


def _check_context(cfg: DiTConfig, context: torch.Tensor | None, num_images: int | None) -> int | None:
    """The number of images, checked against the text context (one caption per image)."""
    if context is not None:
        num_images = num_images if num_images is not None else len(context)
        if len(context) != num_images:
            raise ConfigError(f"context holds {len(context)} captions but num_images={num_images}; give one per image")
    elif cfg.conditioning == "text":
        raise ConfigError("this model is text-conditional: pass context (text-token embeddings, one row per image)")
    return num_images


def check_guidance(cfg: DiTConfig, cfg_scale: float) -> bool:
    """Whether sampling is guided (``cfg_scale != 1``); raise if the model has no null condition to guide with."""
    guided = cfg_scale != 1.0
    if guided and cfg.conditioning == "none":
        raise ConfigError(
            "classifier-free guidance needs a conditional model; this one is unconditional: use cfg_scale 1"
        )
    if guided and cfg.conditioning == "class" and cfg.class_dropout_prob <= 0:
        raise ConfigError(
            "this model was trained without label dropout, so it has no null class for guidance: use cfg_scale 1"
        )
    return guided


def resolve_guided_channels(diffusion: Diffusion, guided_channels: int | str | None, in_channels: int) -> int:
    """Channels guidance acts on: "auto" takes the diffusion config's (3 as DiT), None all input channels;
    never more than the input channels, so learned-variance channels stay unguided."""
    if guided_channels == "auto":
        guided_channels = 3 if diffusion.config is None else diffusion.config.guided_channels
    return in_channels if guided_channels is None else min(guided_channels, in_channels)


def condition_kwargs(
    labels: torch.Tensor | None,
    context: torch.Tensor | None,
    context_mask: torch.Tensor | None,
    lo: int,
    b: int,
    device: torch.device,
) -> dict[str, Any]:
    """Model kwargs of images ``lo .. lo + b``: class labels ``y``, or text ``context`` and its keep-mask."""
    kwargs: dict[str, Any] = {}
    if labels is not None:
        kwargs["y"] = labels[lo : lo + b].to(device)
    if context is not None:
        ctx = context[lo : lo + b].to(device)
        keep = (
            torch.ones(ctx.shape[:2], dtype=torch.bool, device=device)
            if context_mask is None
            else context_mask[lo : lo + b].to(device=device, dtype=torch.bool)
        )
        kwargs["context"], kwargs["context_mask"] = ctx, keep
    return kwargs


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """Run ``model`` in eval mode, restoring its training mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def guidance_kwargs(kwargs: dict[str, Any], b: int, device: torch.device) -> dict[str, Any]:
    """``kwargs`` of ``b`` images doubled into a guidance batch: the same condition twice, the second
    half switched to the model's null condition by ``force_drop_ids`` (null class, or no text)."""
    doubled = {key: torch.cat([value, value]) for key, value in kwargs.items()}
    doubled["force_drop_ids"] = guidance_drop_ids(b, device)
    return doubled


@torch.no_grad()
def sample_latents(
    model: torch.nn.Module,
    diffusion: Diffusion,
    *,
    labels: Sequence[int] | torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    context_mask: torch.Tensor | None = None,
    num_images: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | str | None = None,
    cfg_scale: float = 1.0,
    guided_channels: int | str | None = "auto",
    device: str | torch.device = "cpu",
    progress: bool = True,
    batch_size: int = 32,
) -> torch.Tensor:
    """Samples in the model's input space (VAE latents or pixels in [-1, 1]), float32 ``(N, C, H, W)`` on CPU.

    Args:
        model: a :class:`~ditscale.models.dit.DiT` (run in eval mode; its mode is restored after).
        diffusion: the process it was trained with (``create_diffusion(config)``).
        labels: class labels ``(N,)`` for class-conditional models; None draws N uniformly random
            classes from ``seed`` (as ``sample_ddp.py``).
        context, context_mask: text-token embeddings ``(N, L, context_dim)`` and keep-mask ``(N, L)``
            for text-conditional models.
        num_images: N, when no labels / context give it.
        seed: seeds the labels, the initial noise and the sampler's per-step noise; equal
            (seed, batch_size) give identical samples.
        sampler, steps: "ddpm" (default) / "ddim" with ``steps`` respaced steps (default 250, as DiT)
            for a gaussian process; "euler" (default) / "heun" with ``steps`` (default 50) for a flow.
        cfg_scale: classifier-free guidance scale; 1 samples the conditional model without guidance.
        guided_channels: output channels that guidance acts on; "auto" takes the diffusion config's
            (default 3, as DiT, which guides 3 of the 4 latent channels); None guides all input
            channels. Never more than the input channels, so learned-variance channels stay unguided.
        device: where the model runs.
        batch_size: images per sampler call (a guided call runs 2 x batch_size through the model).
    """
    cfg = model.config
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    sampler, steps = sampler_and_steps(diffusion, sampler, steps)
    num_images = _check_context(cfg, context, num_images)
    labels, n = _labels(model, labels, num_images, torch.Generator().manual_seed(seed))
    guided = check_guidance(cfg, cfg_scale)
    k = resolve_guided_channels(diffusion, guided_channels, cfg.in_channels)
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    model_fn = cfg_model_fn(model, cfg_scale, guided_channels=k) if guided else model
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    out = []
    with _eval_mode(model):
        for lo in range(0, n, batch_size):
            b = min(batch_size, n - lo)
            noise = torch.randn((b, *shape), generator=generator, device=device)
            kwargs = condition_kwargs(labels, context, context_mask, lo, b, device)
            if guided:
                noise, kwargs = torch.cat([noise, noise]), guidance_kwargs(kwargs, b, device)
            x = diffusion.sample(
                model_fn,
                tuple(noise.shape),
                sampler=sampler,
                steps=steps,
                noise=noise,
                model_kwargs=kwargs,
                generator=generator,
                progress=progress,
                device=device,
            )
            out.append(x[:b].float().cpu())
    return torch.cat(out)


def check_request(
    model: torch.nn.Module,
    diffusion: Diffusion,
    *,
    sampler: str | None = None,
    steps: int | str | None = None,
    cfg_scale: float = 1.0,
    labels: Sequence[int] | torch.Tensor | None = None,
    num_images: int | None = None,
    context: torch.Tensor | None = None,
    conditions: bool = True,
) -> None:
    """Raise now the one-line :class:`ConfigError` that :func:`sample_latents` would raise for these
    arguments (sampler, steps, guidance and, with ``conditions``, the labels or captions), so a
    command can refuse bad input before it reports anything or draws a sample."""
    diffusion.check_sampling(*sampler_and_steps(diffusion, sampler, steps))
    check_guidance(model.config, cfg_scale)
    if conditions:
        num_images = _check_context(model.config, context, num_images)
        _labels(model, labels, num_images, torch.Generator().manual_seed(0))


def check_vae(cfg: DiTConfig, vae: Any) -> None:
    """Latent models need a VAE whose latent channels are the model's input channels; pixel models none."""
    if vae is None and cfg.in_channels not in (1, 3):
        raise ConfigError(
            f"this model works in VAE latent space ({cfg.in_channels} channels): pass --vae PATH_OR_ID "
            "(a diffusers AutoencoderKL folder, e.g. the one the latents were extracted with)"
        )
    if vae is not None and int(vae.config.latent_channels) != cfg.in_channels:
        raise ConfigError(
            f"the VAE has {vae.config.latent_channels} latent channels but the model takes {cfg.in_channels}; "
            "pass the VAE the model was trained with"
        )


@torch.no_grad()
def sample_images(
    model: torch.nn.Module,
    diffusion: Diffusion,
    *,
    labels: Sequence[int] | torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    context_mask: torch.Tensor | None = None,
    num_images: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | str | None = None,
    cfg_scale: float = 1.0,
    guided_channels: int | str | None = "auto",
    vae: Any = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    batch_size: int = 32,
) -> np.ndarray:
    """Generate N images as a uint8 array ``(N, H, W, 3)`` (H, W in image pixels).

    Latent models are decoded by ``vae`` (a diffusers ``AutoencoderKL``, e.g. from
    :func:`ditscale.data.vae.load_vae`; its latent channels must equal the model's input channels);
    pixel-space models (1 or 3 input channels, no ``vae``) are converted directly, one channel as
    grey RGB. The other arguments are those of :func:`sample_latents`; same seed, same images.
    """
    check_vae(model.config, vae)
    x = sample_latents(
        model,
        diffusion,
        labels=labels,
        context=context,
        context_mask=context_mask,
        num_images=num_images,
        seed=seed,
        sampler=sampler,
        steps=steps,
        cfg_scale=cfg_scale,
        guided_channels=guided_channels,
        device=device,
        progress=progress,
        batch_size=batch_size,
    )
    if vae is None:
        return to_uint8(x.clamp(-1, 1))
    from ditscale.data.vae import decode  # lazy: diffusers (seconds to import; pixel models never need it)

    vae_device = next(vae.parameters()).device
    return np.concatenate(
        [to_uint8(decode(vae, x[lo : lo + batch_size].to(vae_device)).cpu()) for lo in range(0, len(x), batch_size)]
    )
