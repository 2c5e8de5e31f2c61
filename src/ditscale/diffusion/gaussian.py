"""Gaussian diffusion as trained and sampled by DiT (Ho et al. DDPM; Nichol & Dhariwal improved DDPM / ADM).

Numerically this matches the reference ``gaussian_diffusion.py`` + ``respace.py`` that DiT ships:
schedules in float64 numpy, coefficients gathered per timestep and cast to float32, the hybrid
loss ``mse + vb`` with a learned-range variance, DDPM ancestral and DDIM sampling, and timestep
respacing in which the model always sees the *original* timestep index (never rescaled).

Timesteps ``t`` are integer indices ``0 .. num_timesteps - 1`` (``0`` = one step of noise). A
process built with a respacing keeps ``num_timesteps`` of the ``original_num_steps`` steps;
``model_time(t)`` maps its indices back to the original ones, which the model receives.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ditscale.diffusion.common import (
    check_sampler,
    infer_device,
    initial_noise,
    mean_flat,
    split_model_output,
)
from ditscale.diffusion.config import DiffusionConfig
from ditscale.diffusion.protocol import Kind, ModelFn
from ditscale.diffusion.respace import space_timesteps
from ditscale.errors import ConfigError

SAMPLERS = ("ddpm", "ddim")
LOSS_TYPES = ("mse", "rescaled_mse", "kl", "rescaled_kl")


# Beta schedules -----------------------------------------------------------------------------------
def linear_betas(num_steps: int) -> np.ndarray:
    """Ho et al.'s linear schedule, 1e-4 .. 0.02 for 1000 steps, both ends scaled by 1000 / num_steps (float64)."""
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def betas_for_alpha_bar(num_steps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    """Betas whose cumulative product of ``1 - beta`` follows ``alpha_bar(t)`` on t in [0, 1], each capped at ``max_beta``."""
    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return np.array(betas, dtype=np.float64)


def cosine_betas(num_steps: int) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, beta <= 0.999."""
    return betas_for_alpha_bar(num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)


def named_betas(schedule: str, num_steps: int) -> np.ndarray:
    """The betas of ``schedule`` ("linear" or "cosine") for ``num_steps`` steps."""
    if schedule == "linear":
        return linear_betas(num_steps)
    if schedule in ("cosine", "squaredcos_cap_v2"):
        return cosine_betas(num_steps)
    raise ConfigError(f"unknown noise schedule {schedule!r}; choose linear or cosine")


# Likelihood terms (nats unless said otherwise) ----------------------------------------------------
def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (broadcasts)."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + ((mean1 - mean2) ** 2) * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF used by ADM."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, *, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Log-probability (nats, elementwise) of ``x`` in [-1, 1] discretised to 256 bins under N(means, exp(log_scales)^2).

    The edge bins extend to -inf / +inf, as in ADM's decoder term.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


# The process --------------------------------------------------------------------------------------
class GaussianDiffusion:
    """A discrete Gaussian diffusion process, optionally respaced to a subset of its timesteps.

    Args:
        betas: the float64 betas of the *original* process (length T).
        predict: model output: "epsilon", "x0" or "v".
        learn_sigma: the model outputs ``2 * C`` channels, the second half ``v`` in [-1, 1] giving
            the log variance ``(v+1)/2 * log(beta_t) + (1-(v+1)/2) * log(posterior variance, clipped)``;
            otherwise the variance is fixed to beta_t (ADM "fixed large").
        loss_type: "mse" (with the VB term for learned sigma: the hybrid loss), "rescaled_mse"
            (VB term times T/1000), "kl" (VB bound only) or "rescaled_kl" (VB bound times T).
        use_timesteps: the original timesteps to keep (default: all). The betas are recomputed
            from the kept cumulative alphas, as ADM's ``SpacedDiffusion`` does (also for all steps).
        config: the :class:`DiffusionConfig` this process was built from (kept for checkpoints).

    A :class:`~ditscale.diffusion.protocol.Diffusion` of kind "gaussian"; sampled by default (by
    :mod:`ditscale.generate`) with 250 DDPM steps, as DiT.
    """

    kind: Kind = "gaussian"
    default_sampler = "ddpm"
    default_steps = 250

    def __init__(
        self,
        betas: Sequence[float] | np.ndarray,
        *,
        predict: str = "epsilon",
        learn_sigma: bool = True,
        loss_type: str = "mse",
        use_timesteps: Sequence[int] | None = None,
        config: DiffusionConfig | None = None,
    ) -> None:
        if predict not in ("epsilon", "x0", "v"):
            raise ConfigError(f"unknown prediction target {predict!r}; choose epsilon, x0 or v")
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown loss type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
        base_betas = np.asarray(betas, dtype=np.float64)
        if base_betas.ndim != 1 or not ((base_betas > 0).all() and (base_betas <= 1).all()):
            raise ConfigError("betas must be a 1-D array of values in (0, 1]")
        self.predict = predict
        self.learn_sigma = learn_sigma
        self.loss_type = loss_type
        self.base_betas = base_betas
        self.original_num_steps = len(base_betas)
        self.config = config
        self._respaced: dict[tuple[int, ...], GaussianDiffusion] = {}

        keep, kept_betas = self._respace(use_timesteps)
        self.timestep_map = np.array(keep, dtype=np.int64)
        self._timestep_map = torch.from_numpy(self.timestep_map)
        self._set_schedule(np.array(kept_betas, dtype=np.float64))

    def _respace(self, use_timesteps: Sequence[int] | None) -> tuple[list[int], list[float]]:
        """The kept original steps and their betas, ``beta'_k = 1 - abar(kept_k) / abar(kept_{k-1})``."""
        base_alphas_cumprod = np.cumprod(1.0 - self.base_betas)
        keep = sorted(set(range(self.original_num_steps) if use_timesteps is None else (int(i) for i in use_timesteps)))
        if not keep or keep[0] < 0 or keep[-1] >= self.original_num_steps:
            raise ConfigError(
                f"use_timesteps must be within [0, {self.original_num_steps}), got {keep[:1]}..{keep[-1:]}"
            )
        last, kept_betas = 1.0, []
        for i in keep:
            kept_betas.append(1 - base_alphas_cumprod[i] / last)
            last = base_alphas_cumprod[i]
        return keep, kept_betas

    def _set_schedule(self, b: np.ndarray) -> None:
        """The float64 per-step coefficients of the process with betas ``b`` (reference names)."""
        self.betas = b
        self.num_timesteps = len(b)
        alphas = 1.0 - b
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # Posterior q(x_{t-1} | x_t, x_0); its variance is 0 at t = 0, so the log uses t = 1's value there.
        self.posterior_variance = b * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        if self.num_timesteps > 1:
            self.posterior_log_variance_clipped = np.log(
                np.append(self.posterior_variance[1], self.posterior_variance[1:])
            )
            self.fixed_large_variance = np.append(self.posterior_variance[1], b[1:])
        else:  # a one-step process: no posterior step exists; use beta (DDPM's sigma^2 = beta choice)
            self.posterior_log_variance_clipped = np.log(b)
            self.fixed_large_variance = b.copy()
        self.log_fixed_large_variance = np.log(self.fixed_large_variance)
        self.log_betas = np.log(b)
        self.posterior_mean_coef1 = b * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "GaussianDiffusion":
        """The process of a ``kind="gaussian"`` config (schedule, target, variance, loss, respacing)."""
        loss_type = "rescaled_kl" if cfg.use_kl else "rescaled_mse" if cfg.rescale_learned_sigmas else "mse"
        return cls(
            named_betas(cfg.noise_schedule, cfg.diffusion_steps),
            predict=cfg.predict,
            learn_sigma=cfg.learn_sigma,
            loss_type=loss_type,
            use_timesteps=space_timesteps(cfg.diffusion_steps, cfg.timestep_respacing),
            config=cfg,
        )

    def __repr__(self) -> str:
        return (
            f"GaussianDiffusion(steps={self.num_timesteps} of {self.original_num_steps}, predict={self.predict!r}, "
            f"learn_sigma={self.learn_sigma}, loss_type={self.loss_type!r})"
        )

    # Helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _gather(arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """``arr[t]`` as float32 (as the reference), shaped ``(N, 1, ..., 1)`` to broadcast over ``ndim`` dims."""
        values = torch.from_numpy(arr).to(device=t.device)[t].float()
        return values.view(-1, *([1] * (ndim - 1)))

    def model_out_channels(self, in_channels: int) -> int:
        """Output channels the model needs: ``2 * in_channels`` with learned sigma, else ``in_channels``."""
        return 2 * in_channels if self.learn_sigma else in_channels

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the model receives for indices ``t``: the original-process step (not rescaled), dtype of ``t``."""
        return self._timestep_map.to(device=t.device, dtype=t.dtype)[t]

    def sample_t(self, n: int, device: Any = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training timesteps drawn uniformly from ``0 .. num_timesteps - 1`` (long), as DiT's train.py."""
        return torch.randint(0, self.num_timesteps, (n,), device=device, generator=generator)

    def _run_model(self, model_fn: ModelFn, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None):
        return split_model_output(model_fn(x, self.model_time(t), **(model_kwargs or {})))

    # Forward process ----------------------------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * noise (a draw from q(x_t | x_0))."""
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ConfigError(f"noise shape {tuple(noise.shape)} differs from x_start shape {tuple(x_start.shape)}")
        n = x_start.ndim
        return (
            self._gather(self.sqrt_alphas_cumprod, t, n) * x_start
            + self._gather(self.sqrt_one_minus_alphas_cumprod, t, n) * noise
        )

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log variance of the posterior q(x_{t-1} | x_t, x_0)."""
        n = x_t.ndim
        mean = (
            self._gather(self.posterior_mean_coef1, t, n) * x_start
            + self._gather(self.posterior_mean_coef2, t, n) * x_t
        )
        variance = self._gather(self.posterior_variance, t, n).expand_as(x_t)
        log_variance = self._gather(self.posterior_log_variance_clipped, t, n).expand_as(x_t)
        return mean, variance, log_variance

    # Reverse process ----------------------------------------------------------------------------
    def _predict_xstart(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        n = x_t.ndim
        if self.predict == "epsilon":
            return (
                self._gather(self.sqrt_recip_alphas_cumprod, t, n) * x_t
                - self._gather(self.sqrt_recipm1_alphas_cumprod, t, n) * out
            )
        if self.predict == "v":  # x0 = sqrt(abar) x_t - sqrt(1 - abar) v
            return (
                self._gather(self.sqrt_alphas_cumprod, t, n) * x_t
                - self._gather(self.sqrt_one_minus_alphas_cumprod, t, n) * out
            )
        return out

    def _predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        n = x_t.ndim
        numerator = self._gather(self.sqrt_recip_alphas_cumprod, t, n) * x_t - x_start
        return numerator / self._gather(self.sqrt_recipm1_alphas_cumprod, t, n)

    def _split_output(self, output: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        channels = x.shape[1]
        expected = self.model_out_channels(channels)
        if output.shape[1] != expected or output.shape[2:] != x.shape[2:]:
            raise ConfigError(
                f"model output has shape {tuple(output.shape)} but this process expects {expected} channels for "
                f"{channels}-channel inputs; build the model with learn_sigma={self.learn_sigma}"
            )
        if self.learn_sigma:
            return output[:, :channels], output[:, channels:]
        return output, None

    def p_mean_variance_from_output(
        self,
        output: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from a model output already computed: dict of mean, variance, log_variance, pred_xstart."""
        n = x.ndim
        mean_out, var_values = self._split_output(output, x)
        if var_values is not None:
            frac = (var_values + 1) / 2  # [-1, 1] -> [posterior variance, beta]
            min_log = self._gather(self.posterior_log_variance_clipped, t, n)
            max_log = self._gather(self.log_betas, t, n)
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            variance = self._gather(self.fixed_large_variance, t, n).expand_as(x)
            log_variance = self._gather(self.log_fixed_large_variance, t, n).expand_as(x)
        pred_xstart = self._predict_xstart(x, t, mean_out)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def p_mean_variance(
        self,
        model_fn: ModelFn,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        model_kwargs: dict | None = None,
    ) -> dict[str, Any]:
        """Run the model and return p(x_{t-1} | x_t): mean, variance, log_variance, pred_xstart, extra."""
        output, extra = self._run_model(model_fn, x, t, model_kwargs)
        out = self.p_mean_variance_from_output(output, x, t, clip_denoised, denoised_fn)
        out["extra"] = extra
        return out

    # Losses -------------------------------------------------------------------------------------
    def _vb_terms_bpd(self, output, x_start, x_t, t, clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """One term of the variational bound, in bits per dimension, shape (N,).

        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0; the discretised decoder NLL at t == 0.
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(output, x_t, t, clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return {"output": torch.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(
        self,
        model_fn: ModelFn,
        x_start: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample training losses at timestep indices ``t`` (long, shape (N,)); all values shape (N,).

        Keys: ``"loss"`` (what to minimise), ``"mse"`` (mean squared error of the model's
        prediction target, per element) and ``"vb"`` (variational-bound term in bits/dim, which
        trains only the variance: the mean is detached) when the variance is learned. With
        ``loss_type`` "kl"/"rescaled_kl": ``"loss"`` is the VB term (times T when rescaled) and
        ``"vb"`` the unscaled term. Given ``t`` and ``noise`` the result is deterministic.
        """
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        output, _ = self._run_model(model_fn, x_t, t, model_kwargs)

        if self.loss_type in ("kl", "rescaled_kl"):
            vb = self._vb_terms_bpd(output, x_start, x_t, t)["output"]
            return {"loss": vb * self.num_timesteps if self.loss_type == "rescaled_kl" else vb, "vb": vb}

        mean_out, var_values = self._split_output(output, x_t)
        terms: dict[str, torch.Tensor] = {}
        if var_values is not None:
            frozen = torch.cat([mean_out.detach(), var_values], dim=1)  # the VB term must not move the mean
            terms["vb"] = self._vb_terms_bpd(frozen, x_start, x_t, t)["output"]
            if self.loss_type == "rescaled_mse":
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)
        if self.predict == "epsilon":
            target = noise
        elif self.predict == "x0":
            target = x_start
        else:  # v = sqrt(abar) * eps - sqrt(1 - abar) * x0
            n = x_start.ndim
            target = (
                self._gather(self.sqrt_alphas_cumprod, t, n) * noise
                - self._gather(self.sqrt_one_minus_alphas_cumprod, t, n) * x_start
            )
        terms["mse"] = mean_flat((target - mean_out) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    # Sampling -----------------------------------------------------------------------------------
    def _noise_like(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    @staticmethod
    def _nonzero_mask(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (t != 0).float().view(-1, *([1] * (x.ndim - 1)))  # no noise is added at the last step

    def p_sample(self, model_fn, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, generator=None):
        """One ancestral (DDPM) step x_t -> x_{t-1}: dict of sample and pred_xstart."""
        out = self.p_mean_variance(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs)
        noise = self._noise_like(x, generator)
        sample = out["mean"] + self._nonzero_mask(t, x) * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(
        self, model_fn, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, eta=0.0, generator=None
    ):
        """One DDIM step x_t -> x_{t-1} (Song et al. eq. 12; ``eta=0`` deterministic, ``eta=1`` DDPM-like)."""
        out = self.p_mean_variance(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = self._gather(self.alphas_cumprod, t, x.ndim)
        abar_prev = self._gather(self.alphas_cumprod_prev, t, x.ndim)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        sample = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
        if eta != 0:
            sample = sample + self._nonzero_mask(t, x) * sigma * self._noise_like(x, generator)
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(self, model_fn, x, t, clip_denoised=False, denoised_fn=None, model_kwargs=None):
        """One deterministic DDIM inversion step x_t -> x_{t+1} (the ODE run forwards)."""
        out = self.p_mean_variance(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar_next = self._gather(self.alphas_cumprod_next, t, x.ndim)
        sample = out["pred_xstart"] * torch.sqrt(abar_next) + torch.sqrt(1 - abar_next) * eps
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    @staticmethod
    def _loop(step, x: torch.Tensor, indices, progress: bool) -> torch.Tensor:
        """Apply ``x = step(x, t)["sample"]`` for each index in ``indices`` (no gradients)."""
        if progress:
            indices = tqdm(indices, desc="sampling", leave=False)
        with torch.no_grad():
            for i in indices:
                x = step(x, torch.full((x.shape[0],), i, device=x.device, dtype=torch.long))["sample"]
        return x

    def p_sample_loop(
        self,
        model_fn,
        shape,
        noise=None,
        clip_denoised=True,
        denoised_fn=None,
        model_kwargs=None,
        device=None,
        progress=False,
        generator=None,
    ) -> torch.Tensor:
        """DDPM ancestral sampling over all ``num_timesteps`` steps from ``noise`` (or a fresh draw); returns x_0.

        Per-step noise comes from ``generator`` (or the global RNG), one ``randn`` of ``shape`` per
        step, so a seeded run reproduces the reference exactly.
        """
        x = initial_noise(shape, noise, infer_device(model_fn, noise, device), generator)

        def step(x, t):
            return self.p_sample(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs, generator)

        return self._loop(step, x, range(self.num_timesteps - 1, -1, -1), progress)

    def ddim_sample_loop(
        self,
        model_fn,
        shape,
        noise=None,
        clip_denoised=True,
        denoised_fn=None,
        model_kwargs=None,
        device=None,
        progress=False,
        eta=0.0,
        generator=None,
    ) -> torch.Tensor:
        """DDIM sampling over all ``num_timesteps`` steps from ``noise`` (or a fresh draw); returns x_0."""
        x = initial_noise(shape, noise, infer_device(model_fn, noise, device), generator)

        def step(x, t):
            return self.ddim_sample(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs, eta, generator)

        return self._loop(step, x, range(self.num_timesteps - 1, -1, -1), progress)

    def ddim_reverse_sample_loop(
        self, model_fn, x_start, clip_denoised=False, model_kwargs=None, progress=False
    ) -> torch.Tensor:
        """Encode ``x_start`` to the final noise latent x_T by running the DDIM ODE forwards (eta = 0)."""

        def step(x, t):
            return self.ddim_reverse_sample(model_fn, x, t, clip_denoised, None, model_kwargs)

        return self._loop(step, x_start, range(self.num_timesteps), progress)

    def respaced(self, steps: int | str | None) -> "GaussianDiffusion":
        """This process restricted to ``steps`` of the original ones (cached).

        ``steps`` is a respacing as in :func:`space_timesteps`: an int N or ``"N"`` (evenly spaced,
        as DiT's ``sample.py``), ``"ddimN"`` or ``"a,b,c"``; None or ``""`` keeps this process.
        """
        if steps is None or steps == "":
            return self
        keep = tuple(space_timesteps(self.original_num_steps, steps))
        if keep == tuple(self.timestep_map):
            return self
        if keep not in self._respaced:
            config = self.config.replace(timestep_respacing=str(steps)) if self.config is not None else None
            self._respaced[keep] = GaussianDiffusion(
                self.base_betas,
                predict=self.predict,
                learn_sigma=self.learn_sigma,
                loss_type=self.loss_type,
                use_timesteps=keep,
                config=config,
            )
        return self._respaced[keep]

    def check_sampling(self, sampler: str, steps: int | str | None, eta: float = 0.0) -> "GaussianDiffusion":
        """The respaced process :meth:`sample` would use; a one-line :class:`ConfigError` for an
        unknown sampler, ``eta`` without DDIM or a bad respacing (so callers can check before any work)."""
        check_sampler(sampler, SAMPLERS, "gaussian")
        if sampler == "ddpm" and eta != 0:
            raise ConfigError("eta applies only to the ddim sampler; use sampler='ddim' or eta=0")
        return self.respaced(steps)

    def sample(
        self,
        model_fn: ModelFn,
        shape: Sequence[int],
        *,
        sampler: str = "ddpm",
        steps: int | str | None = None,
        noise: torch.Tensor | None = None,
        model_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        device: Any = None,
        eta: float = 0.0,
        clip_denoised: bool = False,
    ) -> torch.Tensor:
        """Draw samples x_0 of ``shape`` (images in the model's input space, e.g. VAE latents).

        Args:
            sampler: "ddpm" (ancestral) or "ddim" (``eta`` = 0: deterministic ODE).
            steps: number of sampling steps (respacing of the original process, see :meth:`respaced`;
                DiT samples with 250); None uses this process's own steps.
            noise: the starting x_T; otherwise drawn from ``generator``.
            clip_denoised: clip predicted x_0 to [-1, 1] (False for latents, as DiT's sample.py).
        """
        process = self.check_sampling(sampler, steps, eta)
        kwargs = dict(
            noise=noise,
            clip_denoised=clip_denoised,
            model_kwargs=model_kwargs,
            device=device,
            progress=progress,
            generator=generator,
        )
        if sampler == "ddim":
            return process.ddim_sample_loop(model_fn, tuple(shape), eta=eta, **kwargs)
        return process.p_sample_loop(model_fn, tuple(shape), **kwargs)
