"""The diffusion process config (pure Python; the factory is :mod:`ditscale.diffusion.create`).

The defaults are DiT's training process: a linear beta schedule over 1000 steps, epsilon
prediction, learned-range variance trained by the hybrid loss (MSE + VB).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ditscale.config import from_dict, to_dict
from ditscale.errors import ConfigError

KINDS = ("gaussian", "flow")
NOISE_SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("epsilon", "x0", "v")
TIME_SAMPLINGS = ("uniform", "logit_normal")
FLOW_PREDICTIONS = ("v", "x0")
# The most discrete timesteps a process may have: its tables (about 16 float64 arrays of T values)
# then take 13 MB. DiT and ADM use 1000 to 4000; a size from a damaged or crafted config beyond it
# is refused before anything is built (10**10 steps would need 1.3 TB of tables).
MAX_DIFFUSION_STEPS = 100_000


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"DiffusionConfig.{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class DiffusionConfig:
    """How images are noised in training and denoised in sampling.

    Attributes:
        kind: "gaussian" (DDPM/ADM, as DiT) or "flow" (rectified flow, as Liang et al.).
        noise_schedule: gaussian only; "linear" (Ho et al., betas 1e-4..0.02 scaled by
            1000 / diffusion_steps) or "cosine" (Nichol & Dhariwal, ADM's "squaredcos_cap_v2").
        diffusion_steps: gaussian only; number of discrete timesteps T of the training process.
        predict: gaussian only; what the model outputs: "epsilon" (noise, DiT), "x0" (clean
            input) or "v" (v = sqrt(abar) * eps - sqrt(1 - abar) * x0; an extension, not in DiT).
        learn_sigma: gaussian only; the model outputs 2 * C channels, the second half
            interpolating the log variance between beta_t and the clipped posterior variance,
            trained by the VB term of the hybrid loss (DiT). False: fixed variance beta_t
            ("fixed large", DiT's default without learned sigma) and plain MSE.
        timestep_respacing: gaussian only; "" trains/samples all ``diffusion_steps``; "250" keeps
            250 evenly spaced steps, "ddim50" the integer-stride DDIM spacing, "10,20,30" that many
            steps in each of three equal sections of the process. An int is read as its string.
        rescale_learned_sigmas: gaussian only; scale the VB term by T / 1000 (ADM RESCALED_MSE).
        use_kl: gaussian only; train on the VB bound alone, times T (ADM RESCALED_KL).
        time_sampling: flow only; training times t in [0, 1]: "uniform" or "logit_normal"
            (t = sigmoid(n), n ~ N(logit_mean, logit_std^2)).
        logit_mean: flow only; mean of the logit-normal.
        logit_std: flow only; standard deviation of the logit-normal.
        flow_predict: flow only; what the model outputs: "v" (the velocity noise - x_0, Liang et
            al.) or "x0" (the clean input, as JiT, Li & He 2025: the velocity used by the samplers
            is derived as (x_t - x0) / t and the loss stays the velocity MSE,
            |x0_pred - x0|^2 / t^2, with t floored at 0.05 in the weight). x0 prediction leaves
            the network a clean, low-dimensional target instead of noise it must copy through.
        guided_channels: classifier-free guidance acts on the first this many output channels
            (DiT guides 3 of the 4 latent channels); None guides all of them.
    """

    kind: str = "gaussian"
    noise_schedule: str = "linear"
    diffusion_steps: int = 1000
    predict: str = "epsilon"
    learn_sigma: bool = True
    timestep_respacing: str | int = ""
    rescale_learned_sigmas: bool = False
    use_kl: bool = False
    time_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    flow_predict: str = "v"
    guided_channels: int | None = 3

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, KINDS)
        _check_choice("noise_schedule", self.noise_schedule, NOISE_SCHEDULES)
        _check_choice("predict", self.predict, PREDICTIONS)
        _check_choice("time_sampling", self.time_sampling, TIME_SAMPLINGS)
        _check_choice("flow_predict", self.flow_predict, FLOW_PREDICTIONS)
        if not 1 <= self.diffusion_steps <= MAX_DIFFUSION_STEPS:
            raise ConfigError(
                f"DiffusionConfig.diffusion_steps must be between 1 and {MAX_DIFFUSION_STEPS:,}, "
                f"got {self.diffusion_steps}"
            )
        if self.logit_std <= 0:
            raise ConfigError(f"DiffusionConfig.logit_std must be positive, got {self.logit_std}")
        if self.guided_channels is not None and self.guided_channels < 1:
            raise ConfigError(
                f"DiffusionConfig.guided_channels must be >= 1 or null (all channels), got {self.guided_channels}"
            )
        if self.use_kl and self.rescale_learned_sigmas:
            raise ConfigError("use_kl and rescale_learned_sigmas are exclusive loss choices; set at most one")
        respacing = self.timestep_respacing
        object.__setattr__(self, "timestep_respacing", "" if respacing is None else str(respacing))

    @property
    def learns_sigma(self) -> bool:
        """True when the model must output 2 * C channels (gaussian process with learned variance)."""
        return self.kind == "gaussian" and self.learn_sigma

    def replace(self, **changes: Any) -> "DiffusionConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "DiffusionConfig":
        """Strict construction: unknown keys raise :class:`ConfigError` naming them."""
        return from_dict(cls, data, where="diffusion config")


def resolve_diffusion_config(
    cfg: "DiffusionConfig | dict[str, Any] | None" = None, **overrides: Any
) -> DiffusionConfig:
    """A validated :class:`DiffusionConfig` from a config, a dict of its fields or None (defaults)."""
    if cfg is None:
        cfg = {}
    if isinstance(cfg, DiffusionConfig):
        cfg = cfg.to_dict()
    if not isinstance(cfg, dict):
        raise ConfigError(f"diffusion config must be a DiffusionConfig or a mapping, got {type(cfg).__name__}")
    return DiffusionConfig.from_dict({**cfg, **overrides})
