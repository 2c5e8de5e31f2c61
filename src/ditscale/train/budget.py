"""How long a run is: steps and images from ``max_steps`` or an exact FLOP budget (pure Python).

With ``flops`` the run trains on the most whole images whose exact training FLOPs fit in the
budget (:func:`ditscale.flops.images_in_budget`), in ``ceil(images / batch)`` steps, the last
batch smaller. With ``max_steps`` every step has the full batch. The counters a run logs (images,
tokens, exact and 6ND FLOPs) after any number of steps come from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ditscale import flops as F
from ditscale.errors import ConfigError


@dataclass(frozen=True)
class RunLength:
    """How long the run is: ``total_steps`` steps, ``total_images`` images (last batch may be smaller)."""

    total_steps: int
    total_images: int
    batch_size: int  # global batch in images
    flops_per_image: float  # exact training FLOPs per image (3 x forward MACs x 2)
    flops_6nd_per_image: float  # 6 N x tokens per image
    tokens_per_image: int
    params_total: int
    params_non_embedding: int

    def batch_at(self, step: int) -> int:
        """Global batch of 0-based ``step`` in images."""
        return min(self.batch_size, self.total_images - step * self.batch_size)

    def counters(self, steps_done: int) -> dict[str, Any]:
        """images / tokens / exact and 6ND FLOPs after ``steps_done`` steps."""
        images = min(steps_done * self.batch_size, self.total_images)
        return {
            "images": images,
            "tokens": images * self.tokens_per_image,
            "flops": images * self.flops_per_image,
            "flops_6nd": images * self.flops_6nd_per_image,
        }


def run_length(batch_size: int, model_config, *, max_steps: int | None = None, flops: float | None = None) -> RunLength:
    """Steps and images of a run of ``model_config`` from ``max_steps`` or the exact FLOP budget ``flops``."""
    per_image = float(F.train_flops_exact(model_config, 1))
    if flops is not None:
        total_images = F.images_in_budget(model_config, flops)
        if total_images <= 0:
            raise ConfigError(
                f"flops={flops:.4g} is less than one image's training cost ({per_image:.4g} FLOPs); raise the budget"
            )
        total_steps = -(-total_images // batch_size)
    else:
        total_steps, total_images = max_steps, max_steps * batch_size
    counts = F.param_counts(model_config)
    return RunLength(
        total_steps=total_steps,
        total_images=total_images,
        batch_size=batch_size,
        flops_per_image=per_image,
        flops_6nd_per_image=float(F.train_flops_6nd(model_config, 1)),
        tokens_per_image=int(F.tokens_per_image(model_config)),
        params_total=int(counts.total),
        params_non_embedding=int(counts.non_embedding),
    )
