"""Generate images from a trained DiT: seeded sampling, classifier-free guidance, VAE decoding, grids, .npz batches.

One job per module:

- :mod:`~ditscale.generate.sample`: sampling (:func:`sample_latents`, :func:`sample_images`, as DiT's
  ``sample.py`` / ``sample_ddp.py``), the labels and conditions it draws with, and the checks a command
  runs before any work (:func:`check_request`); :func:`to_uint8` converts images as ``sample_ddp.py``.
- :mod:`~ditscale.generate.grid`: image grids and their captions (:func:`make_grid`, :func:`save_grid`;
  numpy and PIL only).
- :mod:`~ditscale.generate.npz`: ADM-style ``.npz`` batches: :func:`save_npz`, and :func:`sample_npz`,
  which writes one at evaluation scale in chunks seeded by (seed, chunk) alone, so that a killed run
  resumes and ``torchrun`` ranks split the work yet write the same file as one process.
- :mod:`~ditscale.generate.reference`: the matching reference batch of a dataset
  (:func:`save_dataset_npz`, converted as samples are) and its captions as prompts.
- :mod:`~ditscale.generate.load`: a checkpoint made ready to sample (:func:`~ditscale.generate.load.load_sampler`:
  config, weights, diffusion process, VAE, text encoder), what ``ditscale sample`` resolves first.
- :mod:`~ditscale.generate.request`: what a sampling command asks for (settings, prompts, the
  conditions of a grid or an ``.npz``), checked before any output.
- :mod:`~ditscale.generate.export`: a trained model as a diffusers DiTPipeline folder or plain
  safetensors (``ditscale export``).

The last three are imported from their modules (``from ditscale.generate.load import load_sampler``).

The diffusion process is any :class:`~ditscale.diffusion.protocol.Diffusion`; its defaults
(``default_sampler``, ``default_steps``) pick the sampler, never a probe of its methods.

The grid functions are imported eagerly (numpy and PIL only: a grid needs no torch); everything else
needs torch and is imported on first use, as in :mod:`ditscale.diffusion`.
"""

from ditscale.generate.grid import CAPTION_PX as CAPTION_PX
from ditscale.generate.grid import MAX_GRID_PIXELS as MAX_GRID_PIXELS
from ditscale.generate.grid import grid_shape as grid_shape
from ditscale.generate.grid import make_grid as make_grid
from ditscale.generate.grid import save_grid as save_grid

# public name -> the submodule that defines it (imported on first use: torch)
_LAZY = {
    "check_request": "sample",
    "draw_labels": "sample",
    "sample_images": "sample",
    "sample_latents": "sample",
    "to_uint8": "sample",
    "SAMPLES_FORMAT": "npz",
    "derived_seed": "npz",
    "parts_dir": "npz",
    "sample_npz": "npz",
    "save_npz": "npz",
    "dataset_captions": "reference",
    "save_dataset_npz": "reference",
}

__all__ = sorted(["CAPTION_PX", "MAX_GRID_PIXELS", "grid_shape", "make_grid", "save_grid", *_LAZY])


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ditscale.generate' has no attribute {name!r}")
    from ditscale.generate import npz, reference, sample  # lazy: torch

    modules = {"npz": npz, "reference": reference, "sample": sample}
    return getattr(modules[_LAZY[name]], name)
