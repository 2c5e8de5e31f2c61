"""``build_dataset`` and ``collate``: the torch side of the two functions the trainer calls.

``dataset_info`` (the torch-free description) lives in :mod:`ditscale.data.info`; it is
re-exported here, its old home.
"""

from __future__ import annotations

import torch

from ditscale.data.config import DataConfig, check_split
from ditscale.data.digits import DigitsDataset
from ditscale.data.folder import CaptionDataset, ImageFolderDataset
from ditscale.data.info import dataset_info  # noqa: F401  (re-exported)
from ditscale.data.latent_dataset import LatentDataset
from ditscale.data.shapes import ShapesDataset


def build_dataset(cfg: DataConfig, split: str = "train") -> torch.utils.data.Dataset:
    """The map-style dataset ``cfg`` describes, for split "train" or the fixed held-out "val".

    Items are dicts ``{"x": float32 (C, H, W), "y": int64 label[, "caption": str]}``: images in
    [-1, 1], or latents already multiplied by the VAE scale. Every dataset has ``set_epoch(epoch)``;
    an item is a pure function of (cfg.seed, split, index, epoch). Every dataset has ``num_classes``
    and the class attribute ``infinite``: True only for procedural data ("shapes"), whose ``len``
    (2**31) is just a bound for DataLoader compatibility; read such a dataset sequentially (no
    permutation, no epochs). Decide on ``dataset.infinite``, never on the length.
    """
    check_split(split)
    if cfg.name == "shapes":
        return ShapesDataset(cfg, split)
    if cfg.name == "digits":
        return DigitsDataset(cfg, split)
    if cfg.name == "folder":
        return ImageFolderDataset(cfg, split)
    if cfg.name == "captions":
        return CaptionDataset(cfg, split)
    return LatentDataset(cfg, split)


def collate(items: list[dict]) -> dict:
    """Batch items: ``{"x": (N, C, H, W), "y": (N,) int64[, "caption": list of N str]}``."""
    batch = {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items])}
    if "caption" in items[0]:
        batch["caption"] = [it["caption"] for it in items]
    return batch
