"""Datasets for DiT training: procedural shapes, digits, image folders, captions, latent stores.

``build_dataset(cfg, split)`` returns a map-style dataset of dicts ``{"x", "y"[, "caption"]}``;
``dataset_info(cfg)`` says what the model must be configured for. See ``docs/data.md``.

``from ditscale.data import DataConfig, DataInfo, dataset_info`` does not import torch (planning
works without it); ``build_dataset`` and ``collate`` import torch on first use. The VAE
(``ditscale.data.vae``) and text encoders (``ditscale.data.text``) are imported on demand.
"""

from ditscale.data.config import DataConfig, DataInfo
from ditscale.data.info import dataset_info

__all__ = ["DataConfig", "DataInfo", "build_dataset", "collate", "dataset_info"]

_TORCH_NAMES = ("build_dataset", "collate")


def __getattr__(name):  # lazy torch import
    if name in _TORCH_NAMES:
        from ditscale.data import build  # lazy: torch; planning imports ditscale.data

        return getattr(build, name)
    raise AttributeError(f"module 'ditscale.data' has no attribute {name!r}")
