"""Classifier-free guidance (Ho & Salimans): the guided combination and the guidance batch's drop ids.

One home for the guidance math, used by ``DiT.forward_with_cfg`` (the reference API) and by
``ditscale.diffusion.guidance.cfg_model_fn`` (any model_fn). The null condition itself is the
model's: ``force_drop_ids == 1`` swaps a sample's condition for the null class ``num_classes``
(``LabelEmbedder.token_drop``) or, for text, masks out every token (``DiT._embed_context``).

A guidance batch holds 2B samples: the conditional half first, the unconditional (null) half second.
"""

from __future__ import annotations

from typing import Any

import torch


def guidance_drop_ids(half: int, device: Any = None) -> torch.Tensor:
    """``force_drop_ids`` (2 * half,) long of a guidance batch: 0 for the conditional first half,
    1 (use the null condition) for the second half."""
    zeros = torch.zeros(half, dtype=torch.long, device=device)
    return torch.cat([zeros, torch.ones_like(zeros)])


def apply_guidance(out: torch.Tensor, cfg_scale: float, guided_channels: int | None = 3) -> torch.Tensor:
    """Guided output from a model output ``out`` (2B, C, ...) on a guidance batch.

    On the first ``guided_channels`` channels both halves become ``uncond + cfg_scale * (cond - uncond)``;
    the other channels (DiT: the 4th latent channel and the variance channels) stay the model's own
    outputs, conditional in the first half and unconditional in the second. ``guided_channels=None``
    guides every channel. ``cfg_scale = 1`` gives the conditional prediction on the guided channels.
    """
    k = out.shape[1] if guided_channels is None else guided_channels
    eps, rest = out[:, :k], out[:, k:]
    cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond + cfg_scale * (cond - uncond)
    return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)
