"""Exponential moving average of model weights, as in DiT's ``update_ema``.

After every optimizer step: ``ema = decay * ema + (1 - decay) * param`` for every parameter;
buffers are copied. The EMA starts as an exact copy of the initial weights.
Works on plain, DDP-wrapped and FSDP2-sharded models (the EMA of a sharded parameter is sharded
the same way; :meth:`EMA.state_dict` gathers full tensors).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ditscale.models.io import unwrap


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor of the full value (gathers an FSDP2 DTensor; a no-op otherwise)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    """EMA of the parameters of ``model`` with ``decay`` (per optimizer step)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        model = unwrap(model)
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

    @torch.no_grad()
    def update(self, model: nn.Module, *, copy: bool = False) -> None:
        """One EMA step towards the current weights of ``model`` (``copy``: take them as they are,
        before the run's ``ema_start``)."""
        model = unwrap(model)
        names = list(self.params)
        cur = dict(model.named_parameters())
        ema = [self.params[n] for n in names]
        new = [cur[n].detach() for n in names]
        if copy:
            torch._foreach_copy_(ema, new)
        else:
            torch._foreach_mul_(ema, self.decay)
            torch._foreach_add_(ema, new, alpha=1.0 - self.decay)
        for n, b in model.named_buffers():
            self.buffers[n].copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (gathered) EMA weights with the model's state_dict keys."""
        out = {n: full_tensor(t) for n, t in self.params.items()}
        out.update({n: full_tensor(t) for n, t in self.buffers.items()})
        return out

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Restore EMA weights saved by :meth:`state_dict` (keys and shapes must match)."""
        for store in (self.params, self.buffers):
            for n, t in store.items():
                src = sd[n].to(dtype=t.dtype)
                if hasattr(t, "full_tensor"):  # sharded: copy this rank's shard
                    from torch.distributed.tensor import distribute_tensor  # lazy: ~0.5 s to import; FSDP only

                    src = distribute_tensor(src.to(t.device), t.device_mesh, t.placements)
                    t.to_local().copy_(src.to_local())
                else:
                    t.copy_(src)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the EMA weights into ``model`` (same structure and sharding)."""
        model = unwrap(model)
        for n, p in model.named_parameters():
            p.copy_(self.params[n])
        for n, b in model.named_buffers():
            b.copy_(self.buffers[n])

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[None]:
        """Inside the block ``model`` holds the EMA weights; its parameters are restored after."""
        backup = [p.detach().clone() for p in unwrap(model).parameters()]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(unwrap(model).parameters(), backup):
                    p.copy_(b)
