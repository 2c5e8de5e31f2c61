"""``DitscalePipeline``: a ditscale DiT sampled through diffusers (its loader, its schedulers, its outputs).

The classes a ``DitscalePipeline`` folder names (the layout, and why it loads with
``DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)``, are
:mod:`ditscale.models.diffusers_custom`'s):

- :class:`DitscaleTransformer`: our :class:`~ditscale.models.dit.DiT` (any block design and
  conditioning) as a diffusers ``ModelMixin``; its config holds our model and diffusion configs.
- :class:`DitscaleTextEncoder`: the word encoder trained with a text model, as a ``ModelMixin``
  (the trainer's weights file, keys unchanged; the vocabulary in its config).
- :class:`DitscalePipeline`: class labels or prompts -> images. A flow model steps diffusers'
  ``FlowMatchEulerDiscreteScheduler`` on ditscale's own time grid
  (:func:`ditscale.diffusion.flow.time_grid`, uniform from 1 to 0) passed as ``sigmas``: the
  scheduler's default grid runs from 1 to its ``sigma_min`` 1/1000 instead, so that ``ditscale sample``
  (Euler) and this pipeline give the same images from the same noise. A Gaussian model steps the
  folder's ``DDIMScheduler``. The velocity of an x0-predicting flow, the learned-variance split and the
  guidance are ditscale's own functions; guidance defaults as ``ditscale sample`` (4.0 for a model
  trained with a null condition, else 1) on the channels its diffusion config names, with the model's
  own null condition (its null class row, or no text tokens).

This module imports diffusers at import time: it is loaded by an exported folder's pipeline file,
never by ditscale's commands.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from diffusers import ConfigMixin, DiffusionPipeline, ImagePipelineOutput, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils.torch_utils import randn_tensor

from ditscale.data.text import WordTextEncoder, WordTokenizer
from ditscale.diffusion import create_diffusion
from ditscale.diffusion.flow import time_grid
from ditscale.diffusion.guidance import cfg_model_fn
from ditscale.errors import ConfigError
from ditscale.generate.load import PIXEL_CHANNELS
from ditscale.generate.request import sampling_settings
from ditscale.generate.sample import check_request, condition_kwargs, guidance_kwargs, resolve_guided_channels
from ditscale.models.config import DiTConfig
from ditscale.models.dit import DiT

__all__ = ["DitscalePipeline", "DitscaleTextEncoder", "DitscaleTransformer", "ModelMixin"]


class DitscaleTransformer(ModelMixin, ConfigMixin):
    """Our DiT (``.dit``) as a diffusers model; ``model`` and ``diffusion`` are our config dicts."""

    @register_to_config
    def __init__(self, model: dict[str, Any], diffusion: dict[str, Any]):
        super().__init__()
        self.dit = DiT(DiTConfig.from_dict(dict(model)))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, **conditions: Any) -> torch.Tensor:
        """``DiT.forward`` (conditions ``y`` or ``context``/``context_mask``, ``force_drop_ids``)."""
        return self.dit(sample, timestep, **conditions)


class DitscaleTextEncoder(WordTextEncoder, ModelMixin, ConfigMixin):
    """The trained word encoder as a diffusers model: same parameters and keys as ``WordTextEncoder``."""

    @register_to_config
    def __init__(self, vocab: list[str], context_dim: int, max_length: int, num_layers: int, num_heads: int):
        WordTextEncoder.__init__(
            self, WordTokenizer.from_vocab(list(vocab)), context_dim, max_length, num_layers, num_heads
        )


class DitscalePipeline(DiffusionPipeline):
    """Images from a ditscale DiT: ``pipe(class_labels=[0, 1])``, ``pipe(prompt=["a red circle"])`` or,
    for an unconditional model, ``pipe(batch_size=2)``. ``id2label`` names the classes, as DiTPipeline."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["vae", "text_encoder"]

    def __init__(self, transformer, scheduler, vae=None, text_encoder=None, id2label: dict | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder)
        self.labels = {name.strip(): int(k) for k, v in (id2label or {}).items() for name in v.split(",")}

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of label names (the run's class names)."""
        names = [label] if isinstance(label, str) else list(label)
        missing = [n for n in names if n not in self.labels]
        if missing:
            raise ValueError(f"{missing[0]!r} is not a class of this model; choose from {', '.join(self.labels)}")
        return [self.labels[n] for n in names]

    def _conditions(self, class_labels, prompt, batch_size: int) -> tuple[int, dict[str, Any]]:
        """The number of images and the model's condition kwargs (labels ``y``, or text ``context``)."""
        dit, device = self.transformer.dit, self._execution_device
        labels = None if class_labels is None else torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        context = mask = None
        if prompt is not None:
            if self.text_encoder is None:
                raise ConfigError("this model takes no prompt (it has no text encoder); pass class_labels or nothing")
            context, mask = self.text_encoder.encode([prompt] if isinstance(prompt, str) else list(prompt))
        n = len(labels) if labels is not None else len(context) if context is not None else batch_size
        check_request(
            dit, create_diffusion(self.transformer.config.diffusion), labels=labels, num_images=n, context=context
        )
        return n, condition_kwargs(labels, context, mask, 0, n, device)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Sequence[int] | None = None,
        prompt: str | Sequence[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        batch_size: int = 1,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Sample one image per class label (or prompt; ``batch_size`` for an unconditional model).

        ``guidance_scale`` None is ``ditscale sample``'s default; ``latents`` the initial noise (else
        drawn from ``generator``); ``output_type`` "pil", "np" (N, H, W, C) or "pt" (N, C, H, W) in [0, 1],
        or "latent" (the model's output space)."""
        dit = self.transformer.dit
        process = create_diffusion(self.transformer.config.diffusion)
        n, kwargs = self._conditions(class_labels, prompt, batch_size)
        scale = sampling_settings(dit.config, cfg_scale=guidance_scale).cfg_scale
        check_request(dit, process, cfg_scale=scale, conditions=False)
        shape = (n, dit.config.in_channels, dit.config.input_size, dit.config.input_size)
        x = latents if latents is not None else randn_tensor(shape, generator=generator, device=self._execution_device)
        x = x.to(device=self._execution_device, dtype=self.transformer.dtype)
        guided = scale != 1.0
        model_fn = self.transformer
        if guided:
            k = resolve_guided_channels(process, "auto", dit.config.in_channels)
            model_fn, kwargs = (
                cfg_model_fn(self.transformer, scale, guided_channels=k),
                guidance_kwargs(kwargs, n, x.device),
            )
        x = self._denoise(process, model_fn, x, kwargs, num_inference_steps, guided)
        return self._output(x, output_type, return_dict)

    def _denoise(self, process, model_fn, x, kwargs, steps: int, guided: bool) -> torch.Tensor:
        """The scheduler loop: flow velocities (ditscale's) or Gaussian model outputs, stepped by the scheduler."""
        n, channels, flow = len(x), x.shape[1], process.kind == "flow"
        if flow:
            self.scheduler.set_timesteps(sigmas=time_grid(steps)[:-1].tolist(), device=x.device)
        else:
            self.scheduler.set_timesteps(steps, device=x.device)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            both = torch.cat([x, x]) if guided else x
            if flow:
                time = self.scheduler.sigmas[i].to(x.device, x.dtype).expand(len(both))
                out = process.velocity(model_fn, both, time, kwargs)
            else:
                both = self.scheduler.scale_model_input(both, t)
                out = model_fn(both, t.to(x.device).expand(len(both)), **kwargs)[:, :channels]
            x = self.scheduler.step(out[:n], t, x).prev_sample
        return x

    def _output(self, x: torch.Tensor, output_type: str, return_dict: bool):
        """Decoded images in [0, 1] (pixel models: the samples themselves) in ``output_type``."""
        if output_type != "latent":
            if x.shape[1] not in PIXEL_CHANNELS:
                if self.vae is None:
                    raise ConfigError(
                        "this latent model's folder has no VAE: pass vae=AutoencoderKL.from_pretrained(...) "
                        "to from_pretrained, or output_type='latent'"
                    )
                from ditscale.data.vae import decode  # lazy: only latent models decode

                x = decode(self.vae, x, scale=self.vae.config.scaling_factor)
            x = (x.float().clamp(-1, 1) + 1) / 2
        images: Any = x
        if output_type in ("np", "pil"):
            images = x.cpu().permute(0, 2, 3, 1).numpy()
            images = self.numpy_to_pil(images) if output_type == "pil" else np.ascontiguousarray(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
