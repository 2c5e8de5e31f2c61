"""Rectified flow (the formulation of Liang et al., "Scaling Laws for Diffusion Transformers").

Continuous time t in [0, 1]: ``x_t = (1 - t) * x_0 + t * noise`` (t = 0 is data, t = 1 pure noise).
The model predicts the velocity ``v = dx_t/dt = noise - x_0`` and is trained with
``mean_flat((v_pred - v)^2)``. It receives ``1000 * t`` as its timestep, so the same DiT timestep
embedding serves Gaussian (integer steps 0..999) and flow models.

With ``predict="x0"`` (JiT, Li & He 2025) the model outputs the clean input instead; the velocity
is derived as ``(x_t - x0_pred) / t`` and the loss is still the velocity MSE,
``mean_flat((x0_pred - x_0)^2) / t^2``, its weight capped at ``1 / 0.05^2`` for t < 0.05.

Sampling integrates dx/dt = v(x, t) from t = 1 to t = 0 on the grid of :func:`time_grid` with
Euler (1 model call per step) or Heun (2 calls per step, second order).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ditscale.diffusion.common import (
    check_sampler,
    infer_device,
    initial_noise,
    mean_flat,
    split_model_output,
)
from ditscale.diffusion.config import FLOW_PREDICTIONS, DiffusionConfig
from ditscale.diffusion.protocol import Kind, ModelFn
from ditscale.errors import ConfigError

SAMPLERS = ("euler", "heun")
TIME_SCALE = 1000.0  # the model sees TIME_SCALE * t
X0_WEIGHT_T_MIN = 0.05  # x0 prediction: the loss weight 1 / t^2 is capped at 1 / 0.05^2


def time_grid(steps: int, shift: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The ``steps + 1`` times a sampler visits, from 1 down to 0.

    Uniform ``u_i = 1 - i / steps``, then warped by ``t = shift * u / (1 + (shift - 1) * u)``
    (SD3's time shift; ``shift = 1`` keeps the uniform grid, ``shift > 1`` spends more steps at
    high noise). The end points 1 and 0 are kept exactly.
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ConfigError(f"shift must be positive, got {shift}")
    u = 1.0 - torch.arange(steps + 1, dtype=torch.float64) / steps
    t = shift * u / (1.0 + (shift - 1.0) * u)
    return t.to(dtype)


class RectifiedFlow:
    """The rectified-flow process: interpolation, velocity loss, training-time sampling, ODE samplers.

    Args:
        time_sampling: "uniform" (t ~ U[0, 1]) or "logit_normal" (t = sigmoid(n), n ~ N(mean, std^2)).
        logit_mean: mean of the logit-normal.
        logit_std: standard deviation of the logit-normal.
        predict: "v" (the model outputs the velocity) or "x0" (it outputs the clean input).
        config: the :class:`DiffusionConfig` this process was built from (kept for checkpoints).

    A :class:`~ditscale.diffusion.protocol.Diffusion` of kind "flow"; sampled by default (by
    :mod:`ditscale.generate`) with 50 Euler steps.
    """

    kind: Kind = "flow"
    default_sampler = "euler"
    default_steps = 50
    learn_sigma = False  # the velocity has the input's channels (see model_out_channels)

    def __init__(
        self,
        time_sampling: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        predict: str = "v",
        config: DiffusionConfig | None = None,
    ) -> None:
        if time_sampling not in ("uniform", "logit_normal"):
            raise ConfigError(f"unknown time sampling {time_sampling!r}; choose uniform or logit_normal")
        if predict not in FLOW_PREDICTIONS:
            raise ConfigError(f"unknown flow prediction {predict!r}; choose v or x0")
        self.predict = predict
        self.time_sampling = time_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.config = config

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "RectifiedFlow":
        """The process of a ``kind="flow"`` config."""
        return cls(cfg.time_sampling, cfg.logit_mean, cfg.logit_std, cfg.flow_predict, config=cfg)

    def __repr__(self) -> str:
        return (
            f"RectifiedFlow(time_sampling={self.time_sampling!r}, logit_mean={self.logit_mean}, "
            f"logit_std={self.logit_std}, predict={self.predict!r})"
        )

    def model_out_channels(self, in_channels: int) -> int:
        """Output channels the model needs: the velocity has as many channels as the input."""
        return in_channels

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the model receives: ``1000 * t`` (float)."""
        return t * TIME_SCALE

    def sample_t(self, n: int, device: Any = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training times in [0, 1] (float32), uniform or logit-normal as configured."""
        if self.time_sampling == "uniform":
            return torch.rand(n, device=device, generator=generator)
        normal = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(self.logit_mean + self.logit_std * normal)

    @staticmethod
    def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = (1 - t) * x_0 + t * noise, for times ``t`` of shape (N,)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        t = self._expand(t, x_start)
        return (1 - t) * x_start + t * noise

    def _model_output(
        self, model_fn: ModelFn, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None
    ) -> torch.Tensor:
        out, _ = split_model_output(model_fn(x, self.model_time(t), **(model_kwargs or {})))
        if out.shape != x.shape:
            raise ConfigError(
                f"flow model output has shape {tuple(out.shape)} but the input has {tuple(x.shape)}; "
                "a flow model predicts a velocity or x0 with the input's channels: build it with learn_sigma=False"
            )
        return out

    def velocity(
        self, model_fn: ModelFn, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None
    ) -> torch.Tensor:
        """The model's velocity prediction at ``x`` and times ``t`` (shape (N,), in [0, 1]).

        For an x0-predicting model this is ``(x - x0_pred) / t``; ``t`` must then be > 0.
        """
        out = self._model_output(model_fn, x, t, model_kwargs)
        if self.predict == "v":
            return out
        if bool((t <= 0).any()):
            raise ConfigError("the velocity of an x0-predicting flow model is undefined at t = 0; evaluate it at t > 0")
        return (x - out) / self._expand(t, x)

    def predict_x0(
        self, model_fn: ModelFn, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None
    ) -> torch.Tensor:
        """The model's estimate of the clean input at ``x`` and times ``t``: ``x - t * v`` (or the output of an x0 model)."""
        out = self._model_output(model_fn, x, t, model_kwargs)
        return out if self.predict == "x0" else x - self._expand(t, x) * out

    def training_losses(
        self,
        model_fn: ModelFn,
        x_start: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample velocity MSE at times ``t`` (float, shape (N,)): dict with ``"loss"`` and ``"mse"``, each (N,).

        ``loss = mean_flat((v_pred - (noise - x_0))^2)`` (mean over elements). For an x0 model this
        is ``mean_flat((x0_pred - x_0)^2) / max(t, 0.05)^2``: exactly the velocity MSE of the
        derived velocity for t >= 0.05. Deterministic given ``t`` and ``noise``.
        """
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)
        out = self._model_output(model_fn, x_t, t, model_kwargs)
        if self.predict == "v":
            mse = mean_flat((out - (noise - x_start)) ** 2)
        else:
            mse = mean_flat((out - x_start) ** 2) / t.to(out.dtype).clamp_min(X0_WEIGHT_T_MIN) ** 2
        return {"loss": mse, "mse": mse}

    def check_sampling(self, sampler: str, steps: int | str | None, eta: float = 0.0) -> None:
        """A one-line :class:`ConfigError` for arguments :meth:`sample` refuses: an unknown sampler,
        ``eta`` other than 0, or ``steps`` that is not an integer >= 1 (checkable before any work)."""
        check_sampler(sampler, SAMPLERS, "flow")
        if eta != 0:
            raise ConfigError("eta applies only to the ddim sampler of a gaussian process; use eta=0 for flow samplers")
        if isinstance(steps, str) or steps is None or isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ConfigError(f"flow samplers take an integer number of steps >= 1, got {steps!r}")

    def sample(
        self,
        model_fn: ModelFn,
        shape: Sequence[int],
        *,
        sampler: str = "euler",
        steps: int | str | None = 50,
        noise: torch.Tensor | None = None,
        model_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        device: Any = None,
        eta: float = 0.0,
        shift: float = 1.0,
    ) -> torch.Tensor:
        """Integrate the flow ODE from noise (t = 1) to data (t = 0); returns x_0 of ``shape``.

        Args:
            sampler: "euler" (``steps`` model calls) or "heun" (``2 * steps`` calls; trapezoidal
                corrector on every step, the last one included since v is finite at t = 0; an
                x0-predicting model takes a plain Euler last step, to x0_pred, as EDM's sampler).
            steps: intervals of :func:`time_grid` (``steps`` >= 1).
            noise: the starting x_1; otherwise drawn from ``generator``. The ODE itself is
                deterministic, so equal noise gives equal samples.
            eta: must be 0 (the flow samplers are deterministic).
            shift: time shift of the grid (1 = uniform).
        """
        self.check_sampling(sampler, steps, eta)
        device = infer_device(model_fn, noise, device)
        x = initial_noise(shape, noise, device, generator)
        grid = time_grid(int(steps), shift).tolist()
        pairs = list(zip(grid[:-1], grid[1:]))
        if progress:
            pairs = tqdm(pairs, desc="sampling", leave=False)
        n = x.shape[0]
        with torch.no_grad():
            for t_cur, t_next in pairs:
                dt = t_next - t_cur  # negative
                v = self.velocity(model_fn, x, torch.full((n,), t_cur, device=device, dtype=x.dtype), model_kwargs)
                x_euler = x + dt * v
                if sampler == "euler" or (t_next <= 0 and self.predict == "x0"):
                    x = x_euler
                    continue
                v_next = self.velocity(
                    model_fn, x_euler, torch.full((n,), t_next, device=device, dtype=x.dtype), model_kwargs
                )
                x = x + dt * 0.5 * (v + v_next)
        return x
