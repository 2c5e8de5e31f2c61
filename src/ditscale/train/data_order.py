"""Which images a training step sees, and the seeded draws of every step.

Step ``step`` (0-based) of a run with global batch ``B`` reads the global image positions
``offset + [step * B, step * B + b)`` (``b`` = that step's batch, the last one may be smaller;
``offset`` = ``data.stream_offset``, 0 unless a run starts elsewhere in the stream). A position
maps to ``(epoch, dataset index)``: through a fresh permutation per (seed, epoch) for a finite
dataset, or directly ``(0, position)`` for an infinite one (``dataset.infinite``, procedural data).
Rank r of W reads the rows :func:`~ditscale.train.distributed.shard_bounds` of each global batch.

Every random draw of a step (timesteps, noise, label drop) comes from :func:`step_generator`,
seeded by (run seed, step) and drawn for the whole global batch. Nothing depends on global RNG
state or on the number of processes, so a resumed run is bit-identical to an uninterrupted one
and W processes compute the update one process would.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from ditscale.train.distributed import DistInfo, shard_bounds


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """64-bit seed of the per-step generator for (run seed, step, stream)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, np.uint64)[0] >> 1)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """CPU generator of step ``step``: its draws are identical on every rank, device and resume."""
    return torch.Generator().manual_seed(step_seed(seed, step, stream))


class DataOrder:
    """Maps a run's image position to ``(epoch, index)``: position ``p`` is global position
    ``offset + p``, which a finite dataset of ``length`` items reads through a fresh permutation per
    (seed, epoch), and an infinite one (``length`` None) as ``(0, offset + p)``."""

    def __init__(self, length: int | None, seed: int, offset: int = 0):
        self.length, self.seed, self.offset = length, seed, offset
        self._perm: tuple[int, torch.Tensor] | None = None

    @classmethod
    def for_dataset(cls, dataset, seed: int, offset: int = 0) -> "DataOrder":
        """The order of ``dataset`` from global position ``offset``: sequential when it declares itself
        ``infinite``."""
        return cls(None if dataset.infinite else len(dataset), seed, offset)

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.length, generator=step_generator(self.seed, epoch, stream=1)))
        return self._perm[1]

    def items(self, start: int, count: int) -> list[tuple[int, int]]:
        """(epoch, dataset index) of the run's positions ``[start, start + count)``."""
        first = self.offset + start
        if self.length is None:
            return [(0, p) for p in range(first, first + count)]
        out = []
        for p in range(first, first + count):
            epoch, i = divmod(p, self.length)
            out.append((epoch, int(self.permutation(epoch)[i])))
        return out


class EpochIndexed(torch.utils.data.Dataset):
    """``ds[(epoch, index)]`` = item ``index`` of ``dataset`` at ``epoch`` (works in DataLoader workers)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def rank_batches(
    dataset,
    order: DataOrder,
    batch_at: Callable[[int], int],
    batch_size: int,
    steps: range,
    info: DistInfo,
    workers: int,
) -> Iterator[dict]:
    """This rank's collated batch of every step in ``steps`` (through a DataLoader when ``workers`` > 0).

    ``batch_at(step)`` is the global batch of a step in images; ``batch_size`` the full global batch
    (the stride between steps' positions).
    """

    def keys():
        for step in steps:
            lo, hi = shard_bounds(batch_at(step), info)
            yield order.items(step * batch_size + lo, hi - lo)

    ds, collate = EpochIndexed(dataset), torch.utils.data.default_collate
    if workers == 0:
        for k in keys():
            yield collate([ds[key] for key in k])
        return
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=_Reiterable(keys),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        prefetch_factor=2,
    )
    yield from loader


class _Reiterable:
    """A re-iterable wrapper of a generator function (a DataLoader batch_sampler without a length)."""

    def __init__(self, fn):
        self.fn = fn

    def __iter__(self):
        return self.fn()
