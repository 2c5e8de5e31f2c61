"""Diffusion processes, samplers and guidance.

- :func:`create_diffusion` builds a :class:`GaussianDiffusion` (DiT's DDPM/ADM process) or a
  :class:`RectifiedFlow` (Liang et al.) from a :class:`DiffusionConfig`.
- Both keep the :class:`Diffusion` protocol (:mod:`ditscale.diffusion.protocol`): ``kind``,
  ``sample_t``, ``training_losses``, ``model_time``, ``model_out_channels``, ``check_sampling`` and
  ``sample``.
- :func:`cfg_model_fn` wraps a model for classifier-free guidance (DiT's ``forward_with_cfg``).

The config (:mod:`ditscale.diffusion.config`) and the protocol are pure Python and imported eagerly;
everything else needs torch and is imported on first use, so reading a run's diffusion config stays
torch-free.
"""

from ditscale.diffusion.config import DiffusionConfig as DiffusionConfig
from ditscale.diffusion.config import resolve_diffusion_config as resolve_diffusion_config
from ditscale.diffusion.protocol import Diffusion as Diffusion

# public name -> the submodule that defines it (imported lazily: torch)
_LAZY = {
    "GaussianDiffusion": "gaussian",
    "named_betas": "gaussian",
    "RectifiedFlow": "flow",
    "time_grid": "flow",
    "cfg_model_fn": "guidance",
    "create_diffusion": "create",
    "mean_flat": "common",
    "space_timesteps": "respace",
}

__all__ = sorted(["Diffusion", "DiffusionConfig", "resolve_diffusion_config", *_LAZY])


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ditscale.diffusion' has no attribute {name!r}")
    from ditscale.diffusion import common, create, flow, gaussian, guidance, respace  # lazy: torch

    modules = {
        "common": common,
        "create": create,
        "flow": flow,
        "gaussian": gaussian,
        "guidance": guidance,
        "respace": respace,
    }
    return getattr(modules[_LAZY[name]], name)
