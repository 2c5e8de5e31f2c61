"""``digits``: scikit-learn's bundled handwritten digits (no download), resized to any resolution.

1797 greyscale 8x8 images with 17 ink levels (0..16) and labels 0-9. Item ``x`` is the image
bilinearly resized to ``image_size`` (``torch.nn.functional.interpolate``, ``align_corners=False``),
mapped so that ink 0 (background) is -1 and ink 16 is +1, with 1 or 3 (repeated) channels.
A fixed 10% (``val_fraction``) is held out as "val" (see :func:`ditscale.data.base.heldout_mask`).
Random flips are off by default: a mirrored digit is a different glyph.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ditscale.data.base import EpochDataset, heldout_mask
from ditscale.data.config import DataConfig, check_split
from ditscale.data.info import DIGIT_NAMES
from ditscale.errors import ConfigError


def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (1797, 8, 8) with values 0..16, labels int64 (1797,))`` from scikit-learn."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn takes ~1 s to import; only digits need it

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)


class DigitsDataset(EpochDataset):
    """Items: ``{"x": (C, S, S) float32 in [-1, 1], "y": int64 digit[, "caption": "the digit seven"]}``."""

    num_classes = 10

    def __init__(self, cfg: DataConfig, split: str = "train"):
        check_split(split)
        if split == "val" and cfg.val_fraction == 0:
            raise ConfigError("data.val_fraction is 0, so there is no val split; set it to e.g. 0.1")
        images, labels = load_digit_arrays()
        val = heldout_mask([str(i) for i in range(len(images))], cfg.val_fraction)
        keep = np.flatnonzero(val if split == "val" else ~val)
        self.images = torch.from_numpy(images[keep]).float()  # (n, 8, 8), 0..16
        self.labels = torch.from_numpy(labels[keep])
        self.source_index = keep  # position in sklearn's array
        self.seed, self.image_size, self.channels = cfg.seed, cfg.image_size, cfg.channels
        self.captions = cfg.captions
        self.random_flip = bool(cfg.random_flip)  # default off

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        img = self.images[index][None, None] / 8.0 - 1.0  # (1, 1, 8, 8) in [-1, 1]
        if self.image_size != 8:
            img = F.interpolate(img, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        x = img[0].expand(self.channels, -1, -1).contiguous()
        if self.flip_for(index):
            x = x.flip(-1)
        item = {"x": x, "y": self.labels[index].clone()}
        if self.captions:
            item["caption"] = f"the digit {DIGIT_NAMES[int(self.labels[index])]}"
        return item
