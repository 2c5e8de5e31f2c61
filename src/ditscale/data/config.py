"""``DataConfig`` and ``DataInfo``, plus the few helpers every dataset shares.

Determinism contract: an item is a pure function of (dataset seed, split, index, epoch). Every
random choice made while loading an item (a flip, a latent posterior sample) comes from
:func:`item_rng`, a generator seeded by those numbers, never from global RNG state, so a resumed
training run sees exactly the same data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ditscale.errors import ConfigError

DATASET_NAMES = ("shapes", "digits", "folder", "captions", "latents")
SPLITS = ("train", "val")


@dataclass
class DataConfig:
    """Which dataset to train on and how to load it.

    Attributes:
        name: "shapes" (procedural, infinite), "digits" (scikit-learn 8x8 digits), "folder"
            (ImageNet layout ``root/<class>/<image>``), "captions" (image-caption pairs) or
            "latents" (a store written by ``ditscale extract-latents``).
        path: the image folder, caption folder / index file (``.csv`` / ``.parquet``) or latent store.
        image_size: side of the returned square images in pixels; for "latents" the latent side
            (32 for 256 px images through the SD VAE).
        channels: 3 (RGB) or 1 (grey; digits and folders only); for "latents" the latent channels (4).
        seed: seeds the procedural data ("shapes") and every per-item random choice.
        captions: also return a ``"caption"`` string per item ("captions" always does).
        on_bad_image: "skip" unreadable images (counted, one warning) or "fail" with a DataError.
        num_workers: DataLoader worker processes the trainer should use.
        random_flip: random horizontal flips; None = the dataset's default: on for "folder",
            "captions" and "latents" (as DiT), off for "digits" (a mirrored digit is another
            glyph) and "shapes" (infinite data; when on, "left"/"right" in the caption are swapped).
        val_fraction: fraction of a finite dataset held out as the fixed "val" split.
        shapes_label: class label of "shapes": "kind" (6 classes) or "kind_color" (6 x 8 = 48).
    """

    name: str = "shapes"
    path: Optional[str] = None
    image_size: int = 32
    channels: int = 3
    seed: int = 0
    captions: bool = False
    on_bad_image: str = "skip"
    num_workers: int = 0
    random_flip: Optional[bool] = None
    val_fraction: float = 0.1
    shapes_label: str = "kind"

    def __post_init__(self) -> None:
        if self.name not in DATASET_NAMES:
            raise ConfigError(f"data.name must be one of {', '.join(DATASET_NAMES)}, got {self.name!r}")
        if self.image_size <= 0:
            raise ConfigError(f"data.image_size must be positive, got {self.image_size}")
        if self.name != "latents" and self.channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 or 3 for image datasets, got {self.channels}")
        if self.on_bad_image not in ("skip", "fail"):
            raise ConfigError(f"data.on_bad_image must be 'skip' or 'fail', got {self.on_bad_image!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shapes_label not in ("kind", "kind_color"):
            raise ConfigError(f"data.shapes_label must be 'kind' or 'kind_color', got {self.shapes_label!r}")
        if self.num_workers < 0 or self.seed < 0:
            raise ConfigError("data.num_workers and data.seed must be non-negative")
        if self.name == "shapes" and self.channels != 3:
            raise ConfigError(f"the shapes dataset is RGB; set data.channels=3 (got {self.channels})")
        if self.name == "folder" and self.captions:
            raise ConfigError("an ImageNet-layout folder has no captions; use data.name=captions for image-caption pairs")
        if self.name in ("folder", "captions", "latents") and not self.path:
            raise ConfigError(f"data.path is required for the {self.name!r} dataset; set data.path=DIR")


@dataclass(frozen=True)
class DataInfo:
    """What the model needs to know about a dataset.

    ``channels`` and ``image_size`` describe the items' ``x`` (latent channels and side for latent
    stores); ``num_classes`` is the number of labels ``y`` takes (the model adds the null class).
    """

    num_classes: int
    channels: int
    image_size: int
    is_latent: bool
    has_captions: bool


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")


def item_rng(*keys: int) -> np.random.Generator:
    """A numpy generator seeded by non-negative integers, e.g. ``(seed, purpose, epoch, index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


# Purpose tags for item_rng, so that (seed, epoch, index) streams for different uses never coincide.
RNG_SHAPES, RNG_FLIP, RNG_LATENT = 1, 2, 3


def heldout_mask(keys: list[str], fraction: float) -> np.ndarray:
    """Bool mask of the fixed held-out ("val") items among ``keys`` (stable ids, e.g. relative paths).

    Items are ranked by the SHA-1 of their key and the first ``round(fraction * n)`` (at least one
    when ``fraction > 0`` and n >= 2) are held out: independent of the seed and of the listing
    order; adding or removing items only moves items near the cut.
    """
    n = len(keys)
    n_val = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = sorted(range(n), key=lambda i: hashlib.sha1(keys[i].encode("utf-8")).digest())
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_val]] = True
    return mask


class EpochDataset(torch.utils.data.Dataset):
    """Base of all ditscale datasets: an ``epoch`` that per-item randomness depends on."""

    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose flips / latent samples ``__getitem__`` returns (call before each epoch)."""
        self.epoch = int(epoch)

    def flip_for(self, index: int) -> bool:
        """Whether item ``index`` is mirrored this epoch: a fair coin from (seed, epoch, index)."""
        if not self.random_flip:
            return False
        return bool(item_rng(self.seed, RNG_FLIP, self.epoch, index).integers(2))


def to_minus1_1(arr: np.ndarray) -> torch.Tensor:
    """uint8 image ``(H, W)`` or ``(H, W, C)`` -> float32 tensor ``(C, H, W)`` in [-1, 1]."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()
    return x / 127.5 - 1.0
