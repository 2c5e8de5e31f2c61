"""The ``DitscalePipeline`` folder: any ditscale DiT as a diffusers pipeline (the files; no diffusers import).

``ditscale export --format diffusers`` writes this layout for every model the stock ``DiTPipeline``
cannot sample at its defaults (rectified flow, pixel space, text or no conditioning, in-context,
cross-attention or adaLN blocks, no null class; :func:`ditscale.models.diffusers_io.unsupported_reason`)::

    DIR/model_index.json      _class_name ["pipeline_ditscale", "DitscalePipeline"], the components, id2label
    DIR/pipeline_ditscale.py  imports ditscale's pipeline classes (ditscale.generate.diffusers_pipeline)
    DIR/transformer/          DitscaleTransformer: config.json {"model", "diffusion"}, our weights under "dit."
    DIR/scheduler/            FlowMatchEulerDiscreteScheduler (flow) or DDIMScheduler on the run's betas
    DIR/text_encoder/         text models: DitscaleTextEncoder, the word encoder trained with the model
    DIR/vae/                  latent models: the AutoencoderKL of the run (pixel models have none)
    DIR/ditscale.json         where it came from

and it loads with ``DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)``, offline. Why
that one extra argument, from how diffusers 0.42 resolves ``model_index.json``:

- No stock pipeline can hold these models. ``DiTPipeline`` always decodes through ``vae`` (no
  pixel models), feeds ``DiTTransformer2DModel`` (adaLN-Zero blocks, class labels only) and steps a
  scheduler on its first output channels as epsilon; its text-to-image pipelines take
  ``transformers`` text encoders and their own transformer classes.
- A string ``_class_name`` is looked up in the diffusers package itself (``getattr(diffusers,
  name)``), so no ditscale class can be named that way. A list ``[module, Class]`` with
  ``DIR/module.py`` present makes that file the pipeline (``_resolve_custom_pipeline_and_cls``), and
  diffusers refuses to run any code file, a local one included, without ``trust_remote_code=True``
  (``get_cached_module_file``). No argument short of it loads a non-diffusers pipeline class.
- A component ``[library, Class]`` is imported only for diffusers, transformers or a diffusers
  pipeline module; any other library is taken from ``sys.modules`` (``_get_library_or_raise``), and
  its class must subclass one of diffusers' loadable bases (``ModelMixin`` here). The pipeline file
  imports :mod:`ditscale.generate.diffusers_pipeline` before the components load, so they are named
  by that module path, as diffusers' own ``save_pretrained`` records a component of another library.

The code is ditscale's own (one home for the model and sampling math): the pipeline file only
imports it, so the environment that loads the folder needs ``ditscale`` installed (diffusers checks
the file's imports and names the missing package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file

from ditscale.io import atomic_path, atomic_write_json, atomic_write_text
from ditscale.models.diffusers_io import (
    DITSCALE_PREFIX,
    DITSCALE_TRANSFORMER,
    WEIGHT_NAMES,
    diffusers_version,
    scheduler_config,
)

CUSTOM_PIPELINE = "DitscalePipeline"
PIPELINE_MODULE = "pipeline_ditscale"  # DIR/pipeline_ditscale.py; model_index's _class_name[0]
COMPONENT_MODULE = "ditscale.generate.diffusers_pipeline"  # where the pipeline and component classes live
TEXT_ENCODER = "DitscaleTextEncoder"
FLOW_TRAIN_TIMESTEPS = 1000  # FlowMatchEulerDiscreteScheduler timesteps = 1000 * sigma: the time our flow DiT sees
PIPELINE_CODE = f'''"""The diffusers pipeline of a model trained with ditscale (`ditscale export --format diffusers`).

Load this folder with DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True): diffusers
runs a folder's own code only when asked. The code is ditscale's (pip install ditscale); this file
imports it, which also makes the transformer and text encoder classes of model_index.json known.
"""

from {COMPONENT_MODULE} import {CUSTOM_PIPELINE}, {TEXT_ENCODER}, {DITSCALE_TRANSFORMER}

__all__ = ["{CUSTOM_PIPELINE}", "{TEXT_ENCODER}", "{DITSCALE_TRANSFORMER}"]
'''


def custom_pipeline_index(
    diffusion: dict[str, Any], *, vae: bool, text_encoder: bool, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``model_index.json`` of a DitscalePipeline folder; absent components are ``[null, null]``
    (a latent model whose VAE is unknown takes ``vae=`` in ``from_pretrained``)."""
    index: dict[str, Any] = {
        "_class_name": [PIPELINE_MODULE, CUSTOM_PIPELINE],
        "_diffusers_version": diffusers_version(),
        "scheduler": ["diffusers", scheduler_class(diffusion)],
        "text_encoder": [COMPONENT_MODULE, TEXT_ENCODER] if text_encoder else [None, None],
        "transformer": [COMPONENT_MODULE, DITSCALE_TRANSFORMER],
        "vae": ["diffusers", "AutoencoderKL"] if vae else [None, None],
    }
    if class_names:
        index["id2label"] = {str(i): name for i, name in enumerate(class_names)}
    return index


def scheduler_class(diffusion: dict[str, Any]) -> str:
    """The diffusers scheduler of a process: Euler on the flow ODE, DDIM on a Gaussian process's betas."""
    return "FlowMatchEulerDiscreteScheduler" if diffusion["kind"] == "flow" else "DDIMScheduler"


def custom_scheduler_config(diffusion: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config of a full ``DiffusionConfig`` dict. A flow's scheduler has no shift: the
    pipeline passes ditscale's own time grid (:func:`ditscale.diffusion.flow.time_grid`) as sigmas."""
    if diffusion["kind"] != "flow":
        return scheduler_config(diffusion)
    return {
        "_class_name": scheduler_class(diffusion),
        "_diffusers_version": diffusers_version(),
        "num_train_timesteps": FLOW_TRAIN_TIMESTEPS,
        "shift": 1.0,
        "use_dynamic_shifting": False,
    }


def save_custom_transformer(state_dict: dict[str, torch.Tensor], info: dict[str, Any], folder: Path) -> Path:
    """``folder/config.json`` (``model`` and ``diffusion`` of ``info``) and the weights, our keys under
    ``"dit."``: what ``DitscaleTransformer.from_pretrained`` and ditscale's own loader read."""
    config = {
        "_class_name": DITSCALE_TRANSFORMER,
        "_diffusers_version": diffusers_version(),
        "model": info["model"],
        "diffusion": info["diffusion"],
    }
    tensors = {DITSCALE_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write_json(folder / "config.json", config)
    with atomic_path(folder / WEIGHT_NAMES[0]) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return folder


def text_encoder_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a ``DitscaleTextEncoder`` from a trained word encoder's metadata (its
    vocabulary and sizes); the weights file is the encoder's own, keys unchanged."""
    sizes = {k: int(spec[k]) for k in ("context_dim", "max_length", "num_layers", "num_heads")}
    return {
        "_class_name": TEXT_ENCODER,
        "_diffusers_version": diffusers_version(),
        "vocab": list(spec["vocab"]),
        **sizes,
    }


def write_pipeline_code(folder: Path) -> None:
    """``folder/pipeline_ditscale.py``, the file ``model_index.json``'s ``_class_name`` names."""
    atomic_write_text(folder / f"{PIPELINE_MODULE}.py", PIPELINE_CODE)
