"""Distributed training helpers (``torchrun``; NCCL on CUDA, gloo on CPU).

- The device comes from ``LOCAL_RANK`` (the GPU on this node); the data shard from the global
  ``RANK`` (the reference uses ``rank % num_gpus`` for both, which breaks across nodes).
- The global batch of every step is drawn identically on every rank; rank ``r`` of ``W`` takes
  rows :func:`shard_bounds` and its loss is weighted so the averaged gradient equals the gradient
  of the global-batch mean (also for a smaller, uneven last batch).
- Only rank 0 writes files; :func:`barrier` keeps the others in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ditscale.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # init_distributed created the process group (so shutdown destroys it)

    @property
    def is_main(self) -> bool:
        """True on the process that writes metrics, checkpoints and results (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """The torch device for ``requested`` ("auto" | "cpu" | "cuda"); CUDA index = LOCAL_RANK."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; use device=cpu or device=auto")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", _gpu_index(info.local_rank))


def _gpu_index(local_rank: int) -> int:
    """The GPU of a process: its LOCAL_RANK, which must name a visible GPU (NCCL refuses two ranks on one)."""
    count = torch.cuda.device_count()
    if count == 1:  # one visible GPU per process (Slurm's per-task binding): it is this process's
        return 0
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} but only {count} GPU(s) are visible; launch at most {count} "
            "process(es) per node (torchrun --nproc_per_node)"
        )
    return local_rank


def init_distributed(device_kind: str = "auto") -> DistInfo:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Uses NCCL when the run is on CUDA, else gloo. A no-op returning rank 0 of 1 otherwise, or
    when a process group is already initialised (then its rank/world are returned).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_kind != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(_gpu_index(local_rank))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank, owns_group=True)


def shutdown_distributed(info: DistInfo, *, failed: bool = False) -> None:
    """Destroy the process group if :func:`init_distributed` made it (a group the caller made stays).

    After a failure (``failed``) there is no final barrier: the other ranks may never reach it.
    """
    if not (info.owns_group and dist.is_initialized()):
        return
    try:
        if not failed:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard_bounds(n: int, info: DistInfo) -> tuple[int, int]:
    """Rows [start, stop) of a global batch of ``n`` handled by this rank (contiguous, sizes differ by <= 1)."""
    base, extra = divmod(n, info.world)
    start = info.rank * base + min(info.rank, extra)
    return start, start + base + (1 if info.rank < extra else 0)


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64), as Python floats."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj, info: DistInfo):
    """``obj`` from rank 0 on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, *, fsdp: bool) -> nn.Module:
    """DDP (or FSDP2 ``fully_shard`` per DiT block and the root when ``fsdp``) when distributed."""
    if not info.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard  # lazy: takes ~0.7 s to import; FSDP runs only

        inner = getattr(model, "dit", model)  # a DiT, or a DiT + text encoder pair
        for block in getattr(inner, "blocks", []):
            fully_shard(block)
        fully_shard(model)
        return model
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def reshard(model: nn.Module) -> None:
    """Return FSDP2 parameters to their sharded form (the root stays unsharded after a forward
    without backward, e.g. validation); a no-op for unsharded models."""
    for module in model.modules():
        if callable(getattr(module, "reshard", None)) and type(module).__name__.startswith("FSDP"):
            module.reshard()
