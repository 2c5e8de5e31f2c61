"""Diffusion processes, samplers and guidance.

- :func:`create_diffusion` builds a :class:`GaussianDiffusion` (DiT's DDPM/ADM process) or a
  :class:`RectifiedFlow` (Liang et al.) from a :class:`DiffusionConfig`.
- Both offer ``sample_t``, ``training_losses``, ``model_time`` and ``sample``.
- :func:`cfg_model_fn` wraps a model for classifier-free guidance (DiT's ``forward_with_cfg``).
"""

from ditscale.diffusion.common import mean_flat
from ditscale.diffusion.config import DiffusionConfig, create_diffusion, resolve_diffusion_config
from ditscale.diffusion.flow import RectifiedFlow, time_grid
from ditscale.diffusion.gaussian import GaussianDiffusion, named_betas
from ditscale.diffusion.guidance import cfg_model_fn
from ditscale.diffusion.respace import space_timesteps

__all__ = [
    "DiffusionConfig",
    "GaussianDiffusion",
    "RectifiedFlow",
    "cfg_model_fn",
    "create_diffusion",
    "mean_flat",
    "named_betas",
    "resolve_diffusion_config",
    "space_timesteps",
    "time_grid",
]
