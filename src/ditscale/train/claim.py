"""Before a training run touches its folder: accept the whole config, then take the folder's lock.

Pure Python (no torch). :func:`check_run` runs every check that needs no model or data, so a
config that would fail later (a width not divisible by the heads, a FLOP budget below one image)
is refused before anything is written: not ``config.yaml``, not even the folder. Then
:func:`claim_run_folder` takes ``OUT/run.lock`` (:class:`ditscale.train.locks.RunLock`), so two
``ditscale train`` processes on one ``--out`` cannot both train; the second is refused with a
one-line error naming the holder. A study worker holds the same lock for the run it executes, and
the training it starts in its own process takes that lock over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

from ditscale.data.info import check_items_readable
from ditscale.errors import ConfigError, TrainingError
from ditscale.flops import train_memory_bytes
from ditscale.train.budget import RunLength, run_length
from ditscale.train.config import TrainConfig, check_config
from ditscale.train.locks import RunLock, held_here
from ditscale.train.rundir import RunDir

# Stand-in text encoder for checking a text model's config: the smallest context (1 token of width
# 1). It only lowers the FLOPs per image, so a budget it refuses the real encoder refuses too.
_SMALLEST_TEXT = SimpleNamespace(context_dim=1, max_length=1)


def check_run(cfg: TrainConfig) -> RunLength:
    """Validate ``cfg`` completely without building anything: its sections, the resolved model
    config and the run length (raises :class:`~ditscale.errors.ConfigError`). Returns the length
    (of the stand-in context for text models)."""
    check_config(cfg)
    check_items_readable(cfg.data_config())  # a damaged latent store: refused before the folder is made
    model = cfg.model_config(text=_SMALLEST_TEXT if cfg.text_encoder else None)
    return run_length(cfg.batch_size, model, max_steps=cfg.max_steps, flops=cfg.flops)


def check_memory(cfg: TrainConfig, available_bytes: float | None, where: str, world: int = 1) -> None:
    """Refuse a run whose training step cannot fit in ``available_bytes`` (of ``where``, e.g. "RAM"):
    :func:`ditscale.flops.train_memory_bytes` of one rank's batch is a lower bound. None: not known."""
    model = cfg.model_config(text=_SMALLEST_TEXT if cfg.text_encoder else None)
    per_rank = max(1, cfg.batch_size // max(1, world))
    need = train_memory_bytes(model, per_rank, bytes_per_value=2 if cfg.precision == "bf16" else 4)
    if available_bytes is not None and need > available_bytes:
        raise ConfigError(
            f"a training step of {per_rank:,} images needs at least {need / 2**30:,.1f} GiB but "
            f"{where} has {available_bytes / 2**30:,.1f} GiB available; lower batch_size "
            "(or spread it over more GPUs)"
        )


@contextlib.contextmanager
def claim_run_folder(root: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold ``root/run.lock`` for the block (``enabled`` False: other ranks of a job, no lock).

    Raises :class:`TrainingError` naming the holder when another live process holds it; a lock
    left by a dead process is broken. A lock this process already holds (a study worker's) is kept.
    """
    path = RunDir(root).lock
    if not enabled or held_here(path):
        yield
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    lock = RunLock(path)
    if not lock.acquire():
        raise TrainingError(
            f"{Path(root)} is being trained by another process ({lock.holder()}, {path}); "
            "wait for it to finish, or use another --out"
        )
    try:
        yield
    finally:
        lock.release()
