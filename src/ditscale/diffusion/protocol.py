"""The contract of a diffusion process: :class:`Diffusion`, kept by :class:`GaussianDiffusion` and :class:`RectifiedFlow`.

Pure typing (torch is named only for type checkers), so code that merely passes a process around
(the trainer, the sampler, the quality study) can name its type without knowing which process it is,
and asks ``diffusion.kind`` rather than probing for methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # type names only: importing this module stays torch-free
    import torch

    from ditscale.diffusion.config import DiffusionConfig

Kind = Literal["gaussian", "flow"]  # DiffusionConfig.kind
ModelFn = Callable[..., Any]  # model_fn(x, t_model, **model_kwargs) -> tensor (or (tensor, extra))


@runtime_checkable
class Diffusion(Protocol):
    """A diffusion process as the trainer and the sampler use it.

    Attributes:
        kind: "gaussian" (DDPM/ADM: integer timesteps, ddpm/ddim samplers) or "flow" (rectified flow:
            times in [0, 1], euler/heun samplers).
        default_sampler, default_steps: what :mod:`ditscale.generate` samples with when not told
            (DiT: 250 DDPM steps; flow: 50 Euler steps); :meth:`sample`'s own defaults may differ.
        config: the :class:`DiffusionConfig` the process was built from (None when built by hand).
    """

    @property
    def kind(self) -> Kind: ...

    @property
    def default_sampler(self) -> str: ...

    @property
    def default_steps(self) -> int: ...

    @property
    def config(self) -> DiffusionConfig | None: ...

    def model_out_channels(self, in_channels: int) -> int:
        """Output channels the model must have for ``in_channels`` inputs (learned sigma doubles them)."""
        ...

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep input the model receives for process times ``t``."""
        ...

    def sample_t(self, n: int, device: Any = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training times (long indices for gaussian, float in [0, 1] for flow)."""
        ...

    def training_losses(
        self,
        model_fn: ModelFn,
        x_start: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses at times ``t``: at least ``"loss"`` and ``"mse"``, each ``(N,)``."""
        ...

    def check_sampling(self, sampler: str, steps: int | str | None, eta: float = 0.0) -> object:
        """A one-line :class:`~ditscale.errors.ConfigError` for a sampler, steps or eta that :meth:`sample`
        refuses (checkable before any work); what it returns is the process's own business."""
        ...

    def sample(
        self,
        model_fn: ModelFn,
        shape: Sequence[int],
        *,
        sampler: str = ...,
        steps: int | str | None = ...,
        noise: torch.Tensor | None = None,
        model_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        device: Any = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """Samples x_0 of ``shape`` drawn from ``noise`` (or ``generator``) by ``sampler`` in ``steps``."""
        ...
