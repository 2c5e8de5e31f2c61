"""Low-variance validation loss: fixed images x fixed timestep grid x fixed noise.

The training loss is a noisy estimate (random t, random noise, random images). For scaling-law
fits every run of a study is instead scored on the same held-out set: the first ``num_images``
items of the "val" split, each evaluated at every point of a fixed timestep grid with noise that
depends only on (``val.seed``, image index), so the number is a deterministic function of the
weights, independent of the evaluation batch size and of the number of processes (up to float
summation order).

Timestep grid (``num_timesteps`` = n points):

- gaussian (T = ``diffusion.num_timesteps``): the integer midpoints of n equal bins of [0, T),
  ``t_j = floor((j + 0.5) * T / n)``; for T = 1000, n = 8: 62, 187, 312, 437, 562, 687, 812, 937.
- flow: the midpoints of n equal bins of [0, 1], ``t_j = (j + 0.5) / n``.

Buckets (``val.buckets`` = B) group consecutive grid points: point j is in bucket ``j * B // n``.
Reported: ``val_loss`` (mean of the per-sample ``"loss"`` of ``diffusion.training_losses`` over
all pairs) and ``val_loss_buckets`` (the mean within each bucket, low t first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ditscale.diffusion import Diffusion
from ditscale.train.conditioning import EncodeFn, model_kwargs
from ditscale.train.config import ValConfig
from ditscale.train.distributed import DistInfo, all_reduce_sum, reshard
from ditscale.train.ema import EMA


def timestep_grid(kind: str, n: int, num_timesteps: int = 1000) -> torch.Tensor:
    """The fixed validation timesteps: long (gaussian, in [0, T)) or float (flow, in (0, 1))."""
    j = torch.arange(n, dtype=torch.float64)
    if kind == "flow":
        return ((j + 0.5) / n).float()
    return torch.floor((j + 0.5) * num_timesteps / n).long()


def bucket_of(n: int, buckets: int) -> list[int]:
    """Bucket index of each of the n grid points (consecutive, equal-sized groups)."""
    return [j * buckets // n for j in range(n)]


def noise_for_image(seed: int, index: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(n, *shape) standard-normal noise of image ``index``: a function of (seed, index) only."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0x7A1, index]).generate_state(1)[0]))
    return torch.randn((n, *shape), generator=g)


class Validator:
    """Evaluates a model on the fixed validation set of ``val`` (images loaded once).

    Args:
        dataset: the "val" split (map-style, items ``{"x", "y"[, "caption"]}``).
        diffusion: the training process (``training_losses``; its ``kind`` picks the timestep grid).
        val: :class:`ValConfig`.
        device: where the model runs.
        info: distributed placement (pairs are split over ranks, sums all-reduced).
        conditioning: "class", "text" or "none" (which model kwargs to pass).
        encode_text: ``captions -> (context, mask)`` for text conditioning; None passes
            ``captions=[...]`` to the model instead (a model that owns its text encoder).
    """

    def __init__(
        self,
        dataset,
        diffusion: Diffusion,
        val: ValConfig,
        *,
        device: torch.device,
        info: DistInfo = DistInfo(),
        conditioning: str = "class",
        encode_text: EncodeFn | None = None,
    ):
        self.diffusion, self.val, self.device, self.info = diffusion, val, device, info
        self.conditioning, self.encode_text = conditioning, encode_text
        count = min(val.num_images, len(dataset))
        items = [dataset[i] for i in range(count)]
        self.x = torch.stack([it["x"] for it in items]) if items else torch.empty(0)
        self.y = torch.stack([torch.as_tensor(it["y"]) for it in items]) if items and "y" in items[0] else None
        self.captions = [it.get("caption", "") for it in items]
        self.t = timestep_grid(diffusion.kind, val.num_timesteps, getattr(diffusion, "num_timesteps", 1000))
        self.bucket = bucket_of(val.num_timesteps, val.buckets)

    @property
    def num_pairs(self) -> int:
        return len(self.x) * len(self.t)

    def condition_kwargs(self, idx: torch.Tensor) -> dict[str, Any]:
        """The model's condition arguments for validation images ``idx`` (their labels or captions)."""
        labels = self.y[idx] if self.conditioning == "class" else None
        captions = [self.captions[i] for i in idx.tolist()] if self.conditioning == "text" else None
        return model_kwargs(
            self.conditioning, labels=labels, captions=captions, encode=self.encode_text, device=self.device
        )

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        """``{"val_loss": float, "val_loss_buckets": [float] * buckets, "val_loss_t": [float] * n}``.

        Runs ``model`` in eval mode (restored afterwards). Every rank must call this (collective).
        """
        n_t, n_pairs = len(self.t), self.num_pairs
        sums = [0.0] * n_t
        # Pairs are image-major (pair p = image p // n_t at grid point p % n_t). Every rank runs the
        # same number of batches (FSDP needs it); padded slots have weight 0.
        per_rank = -(-n_pairs // self.info.world)
        start = self.info.rank * per_rank
        batch = max(1, -(-self.val.batch_size // self.info.world))
        shape = tuple(self.x.shape[1:])
        was_training = model.training
        model.eval()
        try:
            for lo in range(start, start + per_rank, batch):
                pairs = torch.arange(lo, min(lo + batch, start + per_rank))
                valid = pairs < n_pairs
                pairs = torch.where(valid, pairs, torch.zeros_like(pairs))
                img, tj = pairs // n_t, pairs % n_t
                per_image = {i: noise_for_image(self.val.seed, i, n_t, shape) for i in set(img.tolist())}
                noise = torch.stack([per_image[i][j] for i, j in zip(img.tolist(), tj.tolist())])
                out = self.diffusion.training_losses(
                    model,
                    self.x[img].to(self.device),
                    self.t[tj].to(self.device),
                    model_kwargs=self.condition_kwargs(img),
                    noise=noise.to(self.device),
                )
                loss = out["loss"].double().cpu()
                for k in range(len(pairs)):
                    if valid[k]:
                        sums[int(tj[k])] += float(loss[k])
        finally:
            model.train(was_training)
        sums = all_reduce_sum(sums, self.info, self.device)
        per_t = [s / max(1, len(self.x)) for s in sums]
        buckets = []
        for b in range(self.val.buckets):
            vals = [per_t[j] for j in range(n_t) if self.bucket[j] == b]
            buckets.append(sum(vals) / len(vals))
        return {"val_loss": sum(per_t) / n_t, "val_loss_buckets": buckets, "val_loss_t": per_t}


def validate_raw_and_ema(
    validator: Validator, net: torch.nn.Module, model: torch.nn.Module, ema: EMA, val: ValConfig
) -> dict[str, Any]:
    """Validation with the raw weights of ``net`` and with the EMA weights swapped into ``model``
    (the module the EMA tracks; ``net`` wraps it). ``val_loss`` is the one named by ``val.weights``
    ("raw" or "ema"); the other is scored and recorded too unless ``val.both`` is false."""
    scores = {}
    if val.both or val.weights == "raw":
        scores["raw"] = validator.evaluate(net)
        reshard(net)
    if val.both or val.weights == "ema":
        with ema.applied_to(model):
            try:
                scores["ema"] = validator.evaluate(net)
            finally:
                reshard(net)
    head = scores[val.weights]
    record = {"val_loss": head["val_loss"], "val_loss_buckets": head["val_loss_buckets"], "val_weights": val.weights}
    record.update({f"val_loss_{name}": score["val_loss"] for name, score in scores.items()})
    record.update({f"val_loss_buckets_{name}": score["val_loss_buckets"] for name, score in scores.items()})
    return record
