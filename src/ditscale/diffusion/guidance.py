"""Classifier-free guidance (Ho & Salimans) for any model_fn, batched exactly as DiT's ``forward_with_cfg``.

The combination itself lives in :func:`ditscale.models.guidance.apply_guidance` (shared with
``DiT.forward_with_cfg``); this module wraps a model_fn for the samplers.
"""

from __future__ import annotations

from typing import Any

import torch

from ditscale.diffusion.common import split_model_output
from ditscale.diffusion.protocol import ModelFn
from ditscale.errors import ConfigError
from ditscale.models.guidance import apply_guidance


def cfg_model_fn(model_fn: ModelFn, cfg_scale: float, guided_channels: int | None = 3) -> ModelFn:
    """A model_fn applying classifier-free guidance to a doubled batch; works for eps and velocity models.

    The batch ``x`` (2B samples) holds the conditional half first and the unconditional half
    second; the caller sets the conditioning accordingly (e.g. ``y = cat([labels, null_labels])``
    as DiT's ``sample.py``, or ``force_drop_ids = guidance_drop_ids(B)`` for a DiT). As DiT, only
    ``x[:B]`` is used: the model runs on ``cat([x[:B], x[:B]])``, then on the first
    ``guided_channels`` output channels ``out = uncond + cfg_scale * (cond - uncond)`` for both
    halves, while the remaining channels (DiT: the 4th latent channel and the variance channels)
    are the model's own outputs for the whole batch. ``guided_channels=None`` guides all channels.
    ``cfg_scale = 1`` returns the conditional prediction.
    """
    if guided_channels is not None and guided_channels < 1:
        raise ConfigError(f"guided_channels must be >= 1 or None (all channels), got {guided_channels}")

    def guided(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any):
        if len(x) % 2:
            raise ConfigError(
                f"classifier-free guidance needs an even batch (conditional + unconditional halves), got {len(x)}"
            )
        half = x[: len(x) // 2]
        out, extra = split_model_output(model_fn(torch.cat([half, half], dim=0), t, **model_kwargs))
        out = apply_guidance(out, cfg_scale, guided_channels)
        return out if extra is None else (out, extra)

    guided.model = model_fn  # lets samplers find the model's device
    return guided
