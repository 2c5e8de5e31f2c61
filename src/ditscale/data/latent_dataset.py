"""``LatentDataset``: train on a latent store (see :mod:`ditscale.data.store` for its layout).

The shards are memory-mapped and, per item, a flip is picked and ``z = (mean + std * eps) * scale``
drawn from ``item_rng(seed, RNG_LATENT, epoch, index)``: a fresh flip and posterior sample every
epoch (fast-DiT freezes one of each per image), identical on resume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ditscale.data.base import RNG_LATENT, EpochDataset, item_rng
from ditscale.data.config import DataConfig, check_split
from ditscale.data.store import check_store_fits, check_store_items, read_meta, read_shard_records, split_range
from ditscale.errors import DataError


class LatentDataset(EpochDataset):
    """Memory-mapped latent store; items ``{"x": (C, h, w) float32 scaled latent, "y": int64[, "caption"]}``.

    ``x = (mean + std * eps) * scale`` of the image or (``random_flip``, default on) its mirror,
    both drawn from ``item_rng(seed, RNG_LATENT, epoch, index)``.
    """

    def __init__(self, cfg: DataConfig, split: str = "train"):
        check_split(split)
        self.root = Path(cfg.path).expanduser()
        meta = read_meta(self.root)
        check_store_items(self.root, meta)
        shape = check_store_fits(self.root, meta, cfg)
        self.meta, self.shape, self.scale = meta, shape, float(meta["scale"])
        self.offset, self.length = split_range(self.root, meta, split)
        labels, captions = read_shard_records(self.root, meta)
        self.labels = torch.tensor(labels[self.offset : self.offset + self.length], dtype=torch.int64)
        self.caption_list = captions[self.offset : self.offset + self.length] if cfg.captions else None
        self.num_classes = int(meta["num_classes"])
        self.seed = cfg.seed
        self.random_flip = True if cfg.random_flip is None else cfg.random_flip
        self._maps: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:  # DataLoader workers open their own memory maps
        return dict(self.__dict__, _maps={})

    def __len__(self) -> int:
        return self.length

    def _shard(self, s: int) -> np.ndarray:
        if s not in self._maps:
            shard = self.meta["shards"][s]
            try:
                arr = np.load(self.root / shard["file"], mmap_mode="r")
            except (OSError, ValueError) as err:
                raise DataError(f"cannot read '{self.root / shard['file']}' ({err}); re-extract this store") from None
            if arr.shape != (shard["count"], 2, 2, *self.shape):
                raise DataError(f"'{self.root / shard['file']}' has shape {arr.shape}, not as in meta.json; re-extract")
            self._maps[s] = arr
        return self._maps[s]

    def moments(self, index: int) -> np.ndarray:
        """Stored ``(2 flips, 2 [mean, std], C, h, w)`` of item ``index`` (unscaled, store dtype)."""
        s, r = divmod(self.offset + index, self.meta["shard_size"])
        return self._shard(s)[r]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        m = self.moments(index)
        rng = item_rng(self.seed, RNG_LATENT, self.epoch, index)
        flip = int(rng.integers(2)) if self.random_flip else 0
        eps = rng.standard_normal(self.shape, dtype=np.float32)
        z = (m[flip, 0].astype(np.float32) + m[flip, 1].astype(np.float32) * eps) * np.float32(self.scale)
        item = {"x": torch.from_numpy(z), "y": self.labels[index].clone()}
        if self.caption_list is not None:
            item["caption"] = self.caption_list[index]
        return item
