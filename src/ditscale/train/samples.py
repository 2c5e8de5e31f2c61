"""Sample grids at validation time (``val.sample_images``): what the EMA model draws, as it trains.

A handful of images drawn from the EMA weights in fp32 without guidance, conditioned on the
labels or captions of the first validation images (cycled when more images are asked for), from
initial noise seeded by ``val.seed`` alone: the same noise and conditions at every validation, so
the grids of one run (and of the runs of a study) differ only by the weights. Flow models use
Euler, gaussian ones DDIM (deterministic), with ``val.sample_steps`` steps. Every rank draws
(FSDP needs all of them in each forward pass); rank 0 logs.
"""

from __future__ import annotations

import numpy as np
import torch

from ditscale.data import dataset_info
from ditscale.diffusion import Diffusion
from ditscale.errors import ConfigError
from ditscale.generate import make_grid, to_uint8
from ditscale.train.config import TrainConfig
from ditscale.train.distributed import reshard
from ditscale.train.ema import EMA
from ditscale.train.validate import Validator

SAMPLER = {"flow": "euler", "gaussian": "ddim"}
MIN_GRID_IMAGE_SIDE = 64  # small images are enlarged (nearest neighbour) to about this side in the grid


def check_sampling(cfg: TrainConfig) -> None:
    """Sample grids need a pixel-space model (1 or 3 channels); raise :class:`ConfigError` otherwise."""
    if not cfg.val.sample_images:
        return
    in_channels = cfg.model.get("in_channels") or dataset_info(cfg.data_config()).channels
    if in_channels not in (1, 3):
        raise ConfigError(
            f"val.sample_images draws pixel-space grids, but this model works in a {in_channels}-channel "
            "latent space (no VAE while training); set val.sample_images=0"
        )


@torch.no_grad()
def draw_samples(
    validator: Validator, diffusion: Diffusion, model: torch.nn.Module, num_images: int, steps: int, seed: int
) -> np.ndarray:
    """uint8 ``(num_images, H, W, 3)`` images drawn by ``model`` (eval mode, restored afterwards)."""
    idx = torch.arange(num_images) % len(validator.x)
    shape = (num_images, *validator.x.shape[1:])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(validator.device)
    was_training = model.training
    model.eval()
    try:
        x = diffusion.sample(
            model,
            shape,
            sampler=SAMPLER[diffusion.kind],
            steps=steps,
            noise=noise,
            model_kwargs=validator.condition_kwargs(idx),
            device=validator.device,
        )
    finally:
        model.train(was_training)
    return to_uint8(x.float().clamp(-1, 1).cpu())


def ema_sample_grid(
    validator: Validator,
    diffusion: Diffusion,
    net: torch.nn.Module,
    model: torch.nn.Module,
    ema: EMA,
    num_images: int,
    steps: int,
) -> np.ndarray:
    """One uint8 ``(H, W, 3)`` grid of :func:`draw_samples` with the EMA weights swapped into ``model``
    (the module the EMA tracks; ``net`` wraps it), small images enlarged."""
    with ema.applied_to(model):
        try:
            images = draw_samples(validator, diffusion, net, num_images, steps, validator.val.seed)
        finally:
            reshard(net)
    upscale = max(1, MIN_GRID_IMAGE_SIDE // images.shape[1])
    return make_grid(images, upscale=upscale)
