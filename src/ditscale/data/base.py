"""What every ditscale dataset shares: the determinism contract, the fixed val split, the base class.

Determinism contract: an item is a pure function of (dataset seed, split, index, epoch). Every
random choice made while loading an item (a flip, a latent posterior sample) comes from
:func:`item_rng`, a generator seeded by those numbers, never from global RNG state, so a resumed
training run sees exactly the same data.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ditscale.data.split import heldout_count

# Purpose tags for item_rng, so that (seed, epoch, index) streams for different uses never coincide.
RNG_SHAPES, RNG_FLIP, RNG_LATENT = 1, 2, 3


def item_rng(*keys: int) -> np.random.Generator:
    """A numpy generator seeded by non-negative integers, e.g. ``(seed, purpose, epoch, index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def heldout_mask(keys: list[str], fraction: float) -> np.ndarray:
    """Bool mask of the fixed held-out ("val") items among ``keys`` (stable ids, e.g. relative paths).

    Items are ranked by the SHA-1 of their key and the first ``round(fraction * n)`` (at least one
    when ``fraction > 0`` and n >= 2) are held out: independent of the seed and of the listing
    order; adding or removing items only moves items near the cut.
    """
    n = len(keys)
    n_val = heldout_count(n, fraction)
    order = sorted(range(n), key=lambda i: hashlib.sha1(keys[i].encode("utf-8")).digest())
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_val]] = True
    return mask


class EpochDataset(torch.utils.data.Dataset):
    """Base of all ditscale datasets: an ``epoch`` that per-item randomness depends on.

    ``infinite`` (class attribute) is True for procedural datasets whose items are generated on
    demand (``shapes``): their ``len`` is only a large bound (2**31) for DataLoader compatibility,
    so read their indices sequentially instead of permuting them; there are no epochs.
    """

    infinite: bool = False
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
