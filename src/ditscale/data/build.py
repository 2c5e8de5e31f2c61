"""``build_dataset`` and ``dataset_info``: the two functions the trainer calls."""

from __future__ import annotations

import torch

from ditscale.data.config import DataConfig, DataInfo, check_split


def build_dataset(cfg: DataConfig, split: str = "train") -> torch.utils.data.Dataset:
    """The map-style dataset ``cfg`` describes, for split "train" or the fixed held-out "val".

    Items are dicts ``{"x": float32 (C, H, W), "y": int64 label[, "caption": str]}``: images in
    [-1, 1], or latents already multiplied by the VAE scale. Every dataset has ``set_epoch(epoch)``;
    an item is a pure function of (cfg.seed, split, index, epoch).
    """
    check_split(split)
    if cfg.name == "shapes":
        from ditscale.data.shapes import ShapesDataset

        return ShapesDataset(cfg, split)
    if cfg.name == "digits":
        from ditscale.data.digits import DigitsDataset

        return DigitsDataset(cfg, split)
    if cfg.name == "folder":
        from ditscale.data.folder import ImageFolderDataset

        return ImageFolderDataset(cfg, split)
    if cfg.name == "captions":
        from ditscale.data.folder import CaptionDataset

        return CaptionDataset(cfg, split)
    from ditscale.data.latents import LatentDataset

    return LatentDataset(cfg, split)


def dataset_info(cfg: DataConfig) -> DataInfo:
    """Classes, channels, side and kind of the items of ``cfg`` (cheap: lists folders, reads meta.json)."""
    if cfg.name == "latents":
        from ditscale.data.latents import LatentDataset

        ds = LatentDataset(cfg, "train")  # validates the shape against cfg
        return DataInfo(ds.num_classes, ds.shape[0], ds.shape[1], True, cfg.captions)
    if cfg.name == "shapes":
        from ditscale.data.shapes import COLORS, KINDS

        num_classes = len(KINDS) * (len(COLORS) if cfg.shapes_label == "kind_color" else 1)
    elif cfg.name == "digits":
        num_classes = 10
    elif cfg.name == "folder":
        from ditscale.data.folder import find_classes

        num_classes = len(find_classes(cfg.path))
    else:
        from ditscale.data.folder import list_caption_pairs

        num_classes = max(list_caption_pairs(cfg.path)[3]) + 1
    return DataInfo(num_classes, cfg.channels, cfg.image_size, False, cfg.captions or cfg.name == "captions")


def collate(items: list[dict]) -> dict:
    """Batch items: ``{"x": (N, C, H, W), "y": (N,) int64[, "caption": list of N str]}``."""
    batch = {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items])}
    if "caption" in items[0]:
        batch["caption"] = [it["caption"] for it in items]
    return batch
