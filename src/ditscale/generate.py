"""Generate images from a trained DiT: seeded sampling, classifier-free guidance, VAE decoding, grids.

:func:`sample_images` follows DiT's ``sample.py`` / ``sample_ddp.py``: draw Gaussian noise in the
model's input space, run the diffusion sampler (with classifier-free guidance as a doubled batch:
conditional half first, the model's null condition second, chosen by ``force_drop_ids``), decode
latents with the VAE (divided by 0.18215) and convert to uint8 as ``clamp(127.5 * x + 128, 0, 255)``
(``sample_ddp.py``, whose ``.npz`` feeds ADM's FID suite). Pixel-space models (1 or 3 input
channels) skip the VAE.

At evaluation scale (50k images), :func:`sample_npz` writes such an ``.npz`` with the labels or
captions beside the images, in chunks seeded by (seed, chunk) alone: a killed run resumes where it
stopped, and ``torchrun`` ranks split the chunks yet write the same file as one process.
:func:`save_dataset_npz` writes the matching reference batch of a dataset, converted the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ditscale.diffusion.guidance import cfg_model_fn
from ditscale.errors import ConfigError, DataError
from ditscale.io import atomic_path, atomic_write_json, atomic_write_npz
from ditscale.models.guidance import guidance_drop_ids

DEFAULT_STEPS = {"gaussian": 250, "flow": 50}  # DiT samples with 250 DDPM steps
DEFAULT_SAMPLER = {"gaussian": "ddpm", "flow": "euler"}


def _kind(diffusion: Any) -> str:
    return "flow" if hasattr(diffusion, "velocity") else "gaussian"


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


def _labels(model, labels, num_images, generator: torch.Generator) -> tuple[torch.Tensor | None, int]:
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
def _sampler_and_steps(diffusion: Any, sampler: str | None, steps: int | str | None) -> tuple[str, int | str]:
    """The sampler and step count, defaulting per process kind (DiT: 250 DDPM steps; flow: 50 Euler steps)."""
    kind = _kind(diffusion)
    return sampler or DEFAULT_SAMPLER[kind], DEFAULT_STEPS[kind] if steps is None else steps


def _check_context(cfg: Any, context: torch.Tensor | None, num_images: int | None) -> int | None:
    """The number of images, checked against the text context (one caption per image)."""
    if context is not None:
        num_images = num_images if num_images is not None else len(context)
        if len(context) != num_images:
            raise ConfigError(f"context holds {len(context)} captions but num_images={num_images}; give one per image")
    elif cfg.conditioning == "text":
        raise ConfigError("this model is text-conditional: pass context (text-token embeddings, one row per image)")
    return num_images


def _check_guidance(cfg: Any, cfg_scale: float) -> bool:
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


def _guided_channels(diffusion: Any, guided_channels: int | str | None, in_channels: int) -> int:
    """Channels guidance acts on: "auto" takes the diffusion config's (3 as DiT), None all input channels;
    never more than the input channels, so learned-variance channels stay unguided."""
    if guided_channels == "auto":
        config = getattr(diffusion, "config", None)
        guided_channels = getattr(config, "guided_channels", 3) if config is not None else 3
    return in_channels if guided_channels is None else min(guided_channels, in_channels)


def _condition_kwargs(
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


def _guidance_kwargs(kwargs: dict[str, Any], b: int, device: torch.device) -> dict[str, Any]:
    """``kwargs`` of ``b`` images doubled into a guidance batch: the same condition twice, the second
    half switched to the model's null condition by ``force_drop_ids`` (null class, or no text)."""
    doubled = {key: torch.cat([value, value]) for key, value in kwargs.items()}
    doubled["force_drop_ids"] = guidance_drop_ids(b, device)
    return doubled


@torch.no_grad()
def sample_latents(
    model: torch.nn.Module,
    diffusion: Any,
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
    sampler, steps = _sampler_and_steps(diffusion, sampler, steps)
    num_images = _check_context(cfg, context, num_images)
    labels, n = _labels(model, labels, num_images, torch.Generator().manual_seed(seed))
    guided = _check_guidance(cfg, cfg_scale)
    k = _guided_channels(diffusion, guided_channels, cfg.in_channels)
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    model_fn = cfg_model_fn(model, cfg_scale, guided_channels=k) if guided else model
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    out = []
    with _eval_mode(model):
        for lo in range(0, n, batch_size):
            b = min(batch_size, n - lo)
            noise = torch.randn((b, *shape), generator=generator, device=device)
            kwargs = _condition_kwargs(labels, context, context_mask, lo, b, device)
            if guided:
                noise, kwargs = torch.cat([noise, noise]), _guidance_kwargs(kwargs, b, device)
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
    diffusion: Any,
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
    diffusion.check_sampling(*_sampler_and_steps(diffusion, sampler, steps))
    _check_guidance(model.config, cfg_scale)
    if conditions:
        num_images = _check_context(model.config, context, num_images)
        _labels(model, labels, num_images, torch.Generator().manual_seed(0))


def _check_vae(cfg: Any, vae: Any) -> None:
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
    diffusion: Any,
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
    _check_vae(model.config, vae)
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
    from ditscale.data.vae import decode

    vae_device = next(vae.parameters()).device
    return np.concatenate(
        [to_uint8(decode(vae, x[lo : lo + batch_size].to(vae_device)).cpu()) for lo in range(0, len(x), batch_size)]
    )


# The largest grid written, in pixels (an 805 MB RGB array): image viewers and PNG encoders give up beyond.
MAX_GRID_PIXELS = 1 << 28


# Height in pixels of the caption band under each cell of a labelled grid (PIL's default bitmap font is 11 px).
CAPTION_PX = 12


def grid_shape(
    n: int, h: int, w: int, nrow: int | None = None, padding: int = 2, upscale: int = 1, caption_px: int = 0
) -> tuple[int, int]:
    """``(height, width)`` in pixels of the grid of ``n`` images of ``h x w`` (see :func:`make_grid`);
    a one-line :class:`ConfigError` when it exceeds :data:`MAX_GRID_PIXELS` (checked before any work)."""
    cols = _columns(n, nrow)
    rows = math.ceil(n / cols)
    height = rows * (h * upscale + caption_px + padding) + padding
    width = cols * (w * upscale + padding) + padding
    if height * width > MAX_GRID_PIXELS:
        raise ConfigError(
            f"a grid of {n} images of {h * upscale}x{w * upscale} px would be {width}x{height} px "
            f"({height * width * 3 / 1e9:.1f} GB); lower --upscale or the number of images"
        )
    return height, width


def _columns(n: int, nrow: int | None) -> int:
    """Images per row of a grid of ``n``: ``nrow``, by default ``ceil(sqrt(n))``, never more than ``n``."""
    return min(n, nrow or math.ceil(math.sqrt(n)))


def _cells(n: int, h: int, w: int, nrow: int | None, padding: int, caption_px: int) -> list[tuple[int, int]]:
    """``(top, left)`` of each of ``n`` cells of ``h x w`` pixels (a caption band of ``caption_px`` under each)."""
    cols = _columns(n, nrow)
    return [
        (padding + (i // cols) * (h + caption_px + padding), padding + (i % cols) * (w + padding)) for i in range(n)
    ]


def make_grid(
    images: np.ndarray, nrow: int | None = None, padding: int = 2, upscale: int = 1, caption_px: int = 0
) -> np.ndarray:
    """Tile uint8 images ``(N, H, W, 3)`` into one ``(rows*(H+c+p)+p, cols*(W+p)+p, 3)`` array.

    ``nrow`` images per row (default ``ceil(sqrt(N))``), black ``padding`` pixels between and around
    them, as ``torchvision.utils.make_grid``. ``upscale`` > 1 first enlarges every image that many
    times by pixel repetition (nearest neighbour), so tiny images stay visible (H, W are then the
    enlarged sizes; the padding is not scaled). ``caption_px`` leaves a black band of that height
    under each image for its caption (:func:`save_grid` writes it).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ConfigError(f"expected a non-empty uint8 array (N, H, W, 3), got {images.dtype} {images.shape}")
    if int(upscale) != upscale or upscale < 1:
        raise ConfigError(f"upscale must be a positive integer, got {upscale}")
    height, width = grid_shape(len(images), images.shape[1], images.shape[2], nrow, padding, upscale, caption_px)
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    n, h, w, _ = images.shape
    grid = np.zeros((height, width, 3), dtype=np.uint8)
    for img, (top, left) in zip(images, _cells(n, h, w, nrow, padding, caption_px)):
        grid[top : top + h, left : left + w] = img
    return grid


def _fit_text(draw: Any, text: str, width: int, font: Any) -> str:
    """``text``, cut with "..." until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def save_grid(
    images: np.ndarray,
    path: str | Path,
    nrow: int | None = None,
    padding: int = 2,
    upscale: int = 1,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write uint8 images ``(N, H, W, 3)`` as one image grid (see :func:`make_grid`), atomically;
    with ``captions`` (one per image: its class name or prompt) each cell is labelled underneath,
    cut to the cell's width. The format follows the suffix (PNG when unknown or missing). Returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    if captions is not None and len(captions) != len(images):
        raise ConfigError(f"{len(captions)} captions for {len(images)} images; give one per image")
    caption_px = CAPTION_PX if captions is not None else 0
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    grid = Image.fromarray(make_grid(images, nrow, padding, upscale, caption_px))
    if captions is not None:
        draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
        h, w = images.shape[1] * upscale, images.shape[2] * upscale
        for text, (top, left) in zip(captions, _cells(len(images), h, w, nrow, padding, caption_px)):
            draw.text((left + 1, top + h), _fit_text(draw, str(text), w - 2, font), fill=(255, 255, 255), font=font)
    with atomic_path(path) as tmp:
        grid.save(tmp, format=fmt)
    return path


def save_npz(images: np.ndarray, path: str | Path) -> Path:
    """Write uint8 images ``(N, H, W, 3)`` to ``.npz`` under key ``"arr_0"`` (ADM's FID suite format), atomically."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(f"expected a uint8 array (N, H, W, 3), got {images.dtype} {images.shape}")
    return atomic_write_npz(path, {"arr_0": images})


# -- sample batches at evaluation scale (DiT's sample_ddp.py): chunked, resumable, split across ranks --
SAMPLES_FORMAT = "ditscale-samples"  # the "format" of FILE.parts/plan.json


def derived_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed hashed from ``seed`` and non-negative ``keys`` (numpy's ``SeedSequence``).

    :func:`sample_npz` draws chunk ``k``'s labels from ``derived_seed(seed, k)`` and the noise of
    its batch ``b`` from ``derived_seed(seed, k, b + 1)``: pure functions of those numbers, so the
    images do not depend on which process draws which chunk, nor on how often the run was resumed.
    """
    if seed < 0 or any(k < 0 for k in keys):
        raise ConfigError(f"seeds must be non-negative, got seed={seed} and keys {keys}")
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def parts_dir(out: str | Path) -> Path:
    """The folder of finished chunks of :func:`sample_npz` writing ``out``: ``FILE.npz.parts/``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _progress(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar over images (``enabled`` False: silent)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


def _weights_digest(module: torch.nn.Module | None) -> str | None:
    """SHA-256 of a module's state (names, dtypes, shapes, bytes): a resume must use the same weights."""
    if module is None:
        return None
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass
class _Chunks:
    """How :func:`sample_npz` draws chunk ``k`` (images ``k * chunk_size`` onwards) from (seed, k) alone."""

    model: torch.nn.Module
    diffusion: Any
    num_samples: int
    chunk_size: int
    seed: int
    batch_size: int
    sampling: dict[str, Any]  # sampler, steps, cfg_scale, guided_channels, vae, device of sample_images
    captions: Sequence[str] | None = None
    encode_captions: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def count(self) -> int:
        return math.ceil(self.num_samples / self.chunk_size)

    def bounds(self, k: int) -> tuple[int, int]:
        """Images ``[lo, hi)`` of chunk ``k``."""
        return k * self.chunk_size, min(self.num_samples, (k + 1) * self.chunk_size)

    def conditions(self, k: int) -> dict[str, np.ndarray]:
        """Chunk ``k``'s ``labels`` int64 (n,) (uniform, as sample_ddp.py) or cycled ``captions`` str (n,)."""
        lo, hi = self.bounds(k)
        cfg = self.model.config
        if cfg.conditioning == "class":
            g = torch.Generator().manual_seed(derived_seed(self.seed, k))
            return {"labels": torch.randint(0, cfg.num_classes, (hi - lo,), generator=g).numpy().astype(np.int64)}
        if cfg.conditioning == "text":
            return {"captions": np.array([self.captions[i % len(self.captions)] for i in range(lo, hi)], dtype=str)}
        return {}

    def batch_kwargs(self, conditions: dict[str, np.ndarray], start: int, stop: int) -> dict[str, Any]:
        """The condition arguments of :func:`sample_images` for images ``start .. stop`` of a chunk."""
        if "labels" in conditions:
            return {"labels": torch.from_numpy(conditions["labels"][start:stop])}
        if "captions" in conditions:
            with torch.no_grad():
                context, mask = self.encode_captions([str(c) for c in conditions["captions"][start:stop]])
            return {"context": context, "context_mask": mask}
        return {"num_images": stop - start}

    def draw(self, k: int, bar: Any) -> dict[str, np.ndarray]:
        """Chunk ``k``: ``arr_0`` uint8 (n, H, W, 3) plus its labels or captions; advances ``bar`` per batch."""
        lo, hi = self.bounds(k)
        conditions, images = self.conditions(k), []
        for b, start in enumerate(range(0, hi - lo, self.batch_size)):
            stop = min(hi - lo, start + self.batch_size)
            images.append(
                sample_images(
                    self.model,
                    self.diffusion,
                    **self.batch_kwargs(conditions, start, stop),
                    **self.sampling,
                    seed=derived_seed(self.seed, k, b + 1),
                    progress=False,
                    batch_size=self.batch_size,
                )
            )
            bar.update(stop - start)
        return {"arr_0": np.concatenate(images), **conditions}


def _check_npz_args(
    model: torch.nn.Module,
    num_samples: int,
    chunk_size: int,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    captions,
    encode_captions,
    label_names,
) -> None:
    """One-line ConfigErrors for what :func:`sample_npz` cannot do, before any file is touched."""
    cfg = model.config
    if min(num_samples, chunk_size, batch_size) < 1:
        raise ConfigError(
            f"num_samples, chunk_size and batch_size must be >= 1, got {num_samples}, {chunk_size}, {batch_size}"
        )
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed}")
    if not 0 <= rank < world_size:
        raise ConfigError(
            f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size}); check RANK and WORLD_SIZE"
        )
    if cfg.conditioning == "text" and (not captions or encode_captions is None):
        raise ConfigError("this model is text-conditional: pass captions (cycled over the samples) and encode_captions")
    if cfg.conditioning != "text" and captions is not None:
        raise ConfigError(f"captions are for text-conditional models; this one has conditioning={cfg.conditioning!r}")
    if label_names is not None and cfg.conditioning == "class" and len(label_names) != cfg.num_classes:
        raise ConfigError(
            f"{len(label_names)} label names were given for a model of {cfg.num_classes} classes; "
            "give one name per class"
        )


def _npz_plan(job: _Chunks, label_names: Sequence[str] | None) -> dict[str, Any]:
    """What the chunks of one sampling run share; a resume (or another rank) must match it exactly."""
    s = job.sampling
    captions = None if job.captions is None else hashlib.sha256("\n".join(job.captions).encode()).hexdigest()
    return {
        "format": SAMPLES_FORMAT,
        "num_samples": job.num_samples,
        "chunk_size": job.chunk_size,
        "seed": job.seed,
        "batch_size": job.batch_size,
        "sampler": s["sampler"],
        "steps": s["steps"],
        "cfg_scale": float(s["cfg_scale"]),
        "guided_channels": s["guided_channels"],
        "device": torch.device(s["device"]).type,
        "model": _weights_digest(job.model),
        "vae": _weights_digest(s["vae"]),
        "captions": captions,
        "label_names": None if label_names is None else [str(n) for n in label_names],
    }


def _claim_parts(parts: Path, plan: dict[str, Any]) -> None:
    """Write ``plan.json`` into ``parts``, or check that the chunks already there belong to the same plan."""
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise ConfigError(
                f"'{parts}' holds chunks of another sampling run (it differs in {', '.join(diff)}); "
                "delete that folder or write to another .npz"
            )
    else:
        atomic_write_json(path, plan)


def _wait_for(files: list[Path], timeout_s: float, poll_s: float = 1.0) -> None:
    """Return once every file exists; a ConfigError after ``timeout_s`` seconds (other ranks unfinished)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [f for f in files if not f.is_file()]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"{len(missing)} of {len(files)} chunks (first: {missing[0].name}) are still missing in "
                f"'{missing[0].parent}' after {timeout_s:g} s; finish the other ranks, "
                "or rerun with world_size 1 to draw them"
            )
        time.sleep(poll_s)


def _barrier(world_size: int) -> None:
    """Wait for the other ranks when the caller initialised a process group (sampling needs none)."""
    import torch.distributed as dist

    if world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _assemble(out: Path, files: list[Path], job: _Chunks, label_names: Sequence[str] | None) -> Path:
    """Concatenate the chunk files into ``out`` (atomically), then delete their folder."""
    images, conditions = None, {}
    for k, f in enumerate(files):
        lo, hi = job.bounds(k)
        with np.load(f, allow_pickle=False) as part:
            if len(part["arr_0"]) != hi - lo:
                n = len(part["arr_0"])
                raise DataError(f"chunk file '{f}' holds {n} images, not {hi - lo}; delete it and rerun")
            if images is None:  # preallocated: 50k images are not held twice
                images = np.empty((job.num_samples, *part["arr_0"].shape[1:]), np.uint8)
            images[lo:hi] = part["arr_0"]
            for key in ("labels", "captions"):
                if key in part:
                    conditions.setdefault(key, []).append(part[key])
    arrays = {"arr_0": images, **{k: np.concatenate(v) for k, v in conditions.items()}}
    if label_names is not None:
        arrays["label_names"] = np.array([str(n) for n in label_names], dtype=str)
    atomic_write_npz(out, {k: arrays[k] for k in ("arr_0", "labels", "label_names", "captions") if k in arrays})
    shutil.rmtree(files[0].parent, ignore_errors=True)
    return out


def sample_npz(
    model: torch.nn.Module,
    diffusion: Any,
    out: str | Path,
    *,
    num_samples: int,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | str | None = None,
    cfg_scale: float = 1.0,
    guided_channels: int | str | None = "auto",
    captions: Sequence[str] | None = None,
    encode_captions: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    label_names: Sequence[str] | None = None,
    vae: Any = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    chunk_size: int = 1000,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    wait_timeout_s: float = 3600.0,
) -> Path | None:
    """Sample N images into an ADM-style ``.npz``, as DiT's ``sample_ddp.py``: resumable, split across ranks.

    The file holds ``arr_0`` uint8 (N, H, W, 3), and ``labels`` int64 (N,) (class models: uniform
    random classes), ``label_names`` str (num_classes,) (when given), ``captions`` str (N,) (text
    models: ``captions`` cycled, encoded per batch by ``encode_captions(list[str]) -> (context
    (n, L, D), mask (n, L))``). String arrays are unicode: ``np.load(allow_pickle=False)`` reads them.

    Work goes in chunks of ``chunk_size`` images; chunk k's labels and noise come from (seed, k)
    alone (:func:`derived_seed`), so one process and any number of ranks write the same file. Each
    finished chunk is written atomically to ``FILE.parts/chunk_000k.npz``; a rerun skips them (the
    other arguments and the weights must be the same: ``plan.json`` records them). Rank ``rank`` of
    ``world_size`` draws chunks ``k % world_size == rank``; rank 0 then waits (a barrier when a
    process group is initialised, else polling up to ``wait_timeout_s`` seconds) for every chunk,
    writes FILE atomically, removes the parts and returns FILE; the other ranks return None.
    The other arguments are those of :func:`sample_images`; ``batch_size`` must also stay the same.
    An existing FILE is replaced: this samples anew (only FILE.parts/ is resumed).
    """
    _check_npz_args(
        model, num_samples, chunk_size, batch_size, seed, rank, world_size, captions, encode_captions, label_names
    )
    label_names = label_names if model.config.conditioning == "class" else None  # names go with labels
    _check_guidance(model.config, cfg_scale)
    _check_vae(model.config, vae)
    sampler, steps = _sampler_and_steps(diffusion, sampler, steps)
    sampling = {
        "sampler": sampler,
        "steps": steps,
        "cfg_scale": cfg_scale,
        "vae": vae,
        "device": device,
        "guided_channels": _guided_channels(diffusion, guided_channels, model.config.in_channels),
    }
    job = _Chunks(
        model,
        diffusion,
        num_samples,
        chunk_size,
        seed,
        batch_size,
        sampling,
        None if captions is None else list(captions),
        encode_captions,
    )
    out, parts = Path(out), parts_dir(out)
    _claim_parts(parts, _npz_plan(job, label_names))
    files = [parts / f"chunk_{k:06d}.npz" for k in range(job.count)]
    mine = range(rank, job.count, world_size)
    size = {k: job.bounds(k)[1] - job.bounds(k)[0] for k in mine}
    done = sum(size[k] for k in mine if files[k].is_file())
    desc = "sampling" if world_size == 1 else f"sampling (rank {rank}/{world_size})"
    with _progress(sum(size.values()), done, desc, progress) as bar:
        for k in mine:
            if not files[k].is_file():
                atomic_write_npz(files[k], job.draw(k, bar))
    _barrier(world_size)
    if rank != 0:
        return None
    _wait_for(files, wait_timeout_s)
    return _assemble(out, files, job, label_names)


# -- the data side of an evaluation: reference batches and prompts --------------------------------
def dataset_captions(data_config: Any, num: int, split: str = "val") -> list[str]:
    """Captions of items ``0 .. num - 1`` of a dataset split (cycled when a finite split is shorter),
    e.g. to prompt a text model with its own data's captions. ``data_config`` is a ``DataConfig``."""
    from dataclasses import replace

    from ditscale.data.build import build_dataset

    if data_config.name == "folder":
        raise ConfigError("an ImageNet-layout folder has no captions to prompt with; pass prompts (--prompts FILE)")
    dataset = build_dataset(replace(data_config, captions=True), split)
    listed = getattr(dataset, "caption_list", None)
    if listed is not None:  # listed with the files: no image needs loading
        return [listed[i % len(listed)] for i in range(num)]
    return [dataset[i % len(dataset)]["caption"] for i in range(num)]


def _export_config(data_config: Any) -> Any:
    """``data_config`` for a reference batch: captions on where the dataset has them, flips off unless
    asked for (``random_flip=True``); a latent store is refused (its items are not images)."""
    from dataclasses import replace

    if data_config.name == "latents":
        raise ConfigError(
            "a latent store holds VAE latents, not images; export the image dataset it was extracted from"
        )
    return replace(data_config, captions=data_config.name != "folder", random_flip=bool(data_config.random_flip))


def _dataset_arrays(dataset: Any, num: int, batch_size: int, progress: bool) -> dict[str, np.ndarray]:
    """``arr_0`` uint8 (num, H, W, 3) (:func:`to_uint8`), ``labels`` int64 (num,), ``captions`` of items 0..num-1."""
    images, labels, captions = None, np.empty(num, np.int64), []
    with _progress(num, 0, "exporting", progress) as bar:
        for lo in range(0, num, batch_size):
            items = [dataset[i] for i in range(lo, min(num, lo + batch_size))]
            batch = to_uint8(torch.stack([item["x"] for item in items]))
            if images is None:  # preallocated: 50k images are not held twice
                images = np.empty((num, *batch.shape[1:]), np.uint8)
            images[lo : lo + len(items)] = batch
            labels[lo : lo + len(items)] = [int(item["y"]) for item in items]
            captions += [item["caption"] for item in items if "caption" in item]
            bar.update(len(items))
    arrays = {"arr_0": images, "labels": labels}
    if captions:
        arrays["captions"] = np.array(captions, dtype=str)
    return arrays


def save_dataset_npz(
    data_config: Any, out: str | Path, *, num: int, split: str = "val", batch_size: int = 256, progress: bool = True
) -> Path:
    """Items ``0 .. num - 1`` of a dataset split as an ADM-style reference batch ``.npz``, written atomically.

    Keys: ``arr_0`` uint8 (N, H, W, 3), converted exactly as generated samples are (:func:`to_uint8`;
    one channel -> grey RGB); ``labels`` int64 (N,) when the dataset has more than one class;
    ``label_names`` str (num_classes,) when :func:`~ditscale.data.info.class_names` knows them;
    ``captions`` str (N,) when the dataset can caption (all but ImageNet-layout folders). String
    arrays are unicode (``np.load(allow_pickle=False)`` reads them). Images are not flipped unless
    ``data_config.random_flip`` is True. ``data_config`` is a ``DataConfig`` (its seed picks the stream).
    """
    from ditscale.data.build import build_dataset
    from ditscale.data.info import class_names

    if num < 1 or batch_size < 1:
        raise ConfigError(f"the number of images and the batch size must be >= 1, got {num} and {batch_size}")
    cfg = _export_config(data_config)
    dataset = build_dataset(cfg, split)
    if not dataset.infinite and num > len(dataset):
        raise ConfigError(
            f"the {split} split of this {cfg.name} dataset has {len(dataset)} images, fewer than the "
            f"{num} asked for; export at most {len(dataset)} or use the other split"
        )
    arrays = _dataset_arrays(dataset, num, batch_size, progress)
    names = class_names(cfg) if dataset.num_classes > 1 else None
    if dataset.num_classes <= 1:
        del arrays["labels"]  # one class: no labels to speak of
    elif names is not None and len(names) == dataset.num_classes:
        arrays["label_names"] = np.array(names, dtype=str)
    return atomic_write_npz(out, {k: arrays[k] for k in ("arr_0", "labels", "label_names", "captions") if k in arrays})
