"""The diffusion factory: a Gaussian process or a rectified flow from a :class:`DiffusionConfig`.

It lives apart from :mod:`ditscale.diffusion.config` so the config stays a leaf that both processes
import, and only this module knows both processes.
"""

from __future__ import annotations

from typing import Any

from ditscale.diffusion.config import DiffusionConfig, resolve_diffusion_config
from ditscale.diffusion.flow import RectifiedFlow
from ditscale.diffusion.gaussian import GaussianDiffusion
from ditscale.diffusion.protocol import Diffusion


def create_diffusion(cfg: DiffusionConfig | dict[str, Any] | None = None, **overrides: Any) -> Diffusion:
    """Build the process described by ``cfg`` (with field ``overrides``): a :class:`Diffusion` of ``cfg.kind``.

    ``create_diffusion()`` with no arguments gives DiT's training process: a linear beta schedule
    over 1000 steps, epsilon prediction, learned-range variance trained by the hybrid loss (MSE + VB),
    equal to DiT's ``create_diffusion(timestep_respacing="")``. ``create_diffusion(kind="flow")``
    gives the rectified flow of Liang et al. (velocity prediction).

    Example: ``create_diffusion(timestep_respacing="250")`` is DiT's 250-step sampling process.
    """
    cfg = resolve_diffusion_config(cfg, **overrides)
    if cfg.kind == "flow":
        return RectifiedFlow.from_config(cfg)
    return GaussianDiffusion.from_config(cfg)
