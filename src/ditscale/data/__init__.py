"""Datasets for DiT training: procedural shapes, digits, image folders, captions, latent stores.

``build_dataset(cfg, split)`` returns a map-style dataset of dicts ``{"x", "y"[, "caption"]}``;
``dataset_info(cfg)`` says what the model must be configured for. See ``docs/data.md``.
The VAE (``ditscale.data.vae``) and text encoders (``ditscale.data.text``) are imported on demand.
"""

from ditscale.data.build import build_dataset, collate, dataset_info
from ditscale.data.config import DataConfig, DataInfo

__all__ = ["DataConfig", "DataInfo", "build_dataset", "collate", "dataset_info"]
