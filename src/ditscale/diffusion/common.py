"""Small helpers shared by the Gaussian and flow processes."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ditscale.diffusion.protocol import ModelFn
from ditscale.errors import ConfigError


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch dimensions: ``(N, ...) -> (N,)``."""
    return x.mean(dim=list(range(1, x.ndim)))


def check_sampler(sampler: str, valid: Sequence[str], kind: str) -> None:
    """Raise :class:`ConfigError` unless ``sampler`` is one of ``valid``."""
    if sampler not in valid:
        raise ConfigError(f"unknown sampler {sampler!r} for a {kind} process; choose one of {', '.join(valid)}")


def infer_device(model_fn: ModelFn, noise: torch.Tensor | None, device: Any) -> torch.device:
    """The sampling device: ``device`` if given, else the noise's, else the model's parameters', else CPU."""
    if device is not None:
        return torch.device(device)
    if noise is not None:
        return noise.device
    # a module, a bound method of one (model.forward_with_cfg) or a wrapper with .model (cfg_model_fn)
    for owner in (model_fn, getattr(model_fn, "__self__", None), getattr(model_fn, "model", None)):
        params = getattr(owner, "parameters", None)
        if callable(params):
            try:
                return next(iter(params())).device
            except (StopIteration, TypeError):
                pass
    return torch.device("cpu")


def initial_noise(
    shape: Sequence[int], noise: torch.Tensor | None, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """``noise`` (checked against ``shape``) or a fresh standard normal draw of ``shape``."""
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ConfigError(
                f"noise has shape {tuple(noise.shape)} but samples of shape {tuple(shape)} were asked for; "
                "pass noise of the sample shape"
            )
        return noise
    return torch.randn(*shape, generator=generator, device=device)


def split_model_output(out: Any) -> tuple[torch.Tensor, Any]:
    """``(output, extra)`` from a model that returns a tensor or a ``(tensor, extra)`` tuple."""
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None
