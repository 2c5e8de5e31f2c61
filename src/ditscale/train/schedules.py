"""Learning-rate schedules (pure math, no torch).

``lr_at(step, total_steps, optim)`` is the learning rate used for optimizer step ``step``
(0-based) of a run of ``total_steps`` steps. All schedules start with a linear warmup
``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then:

- "constant": ``lr`` (the DiT recipe).
- "cosine": ``lr * (m + (1 - m) * (1 + cos(pi * p)) / 2)`` with ``p`` going linearly from 0 at the
  first step after warmup to 1 at the last step, ``m = min_lr_ratio``.
- "wsd" (warmup-stable-decay): ``lr`` until the cooldown, which covers the last
  ``round(cooldown_frac * total_steps)`` steps and decays linearly (or as ``1 - sqrt(p)``,
  ``cooldown_shape: 1-sqrt``) so the last step uses ``lr * m``.

Shared trunks (:mod:`ditscale.train.trunk`) rest on :data:`SHAREABLE_SCHEDULES`: before
:func:`cooldown_start` their lr does not depend on the run's length, so runs of one model that
differ only in length (and in :data:`COOLDOWN_KEYS`) take the same first steps.
"""

from __future__ import annotations

import dataclasses
import math

from ditscale.train.config import OptimConfig

# Schedules whose lr before the cooldown does not depend on the run's length: the stable lr of
# "constant", and of "wsd" until its cooldown starts ("cosine" decays from the first step after warmup).
SHAREABLE_SCHEDULES = ("constant", "wsd")
# The OptimConfig keys that shape only the cooldown: runs sharing a trunk may differ in them.
COOLDOWN_KEYS = ("schedule", "cooldown_frac", "cooldown_shape", "min_lr_ratio")


def width_scaled_lr(lr: float, hidden_size: int, rule: str = "none", base_width: int | None = None) -> float:
    """Peak lr after the width rule: "none" -> lr, "inverse" -> lr * base / width (muP for Adam),
    "inverse_sqrt" -> lr * sqrt(base / width)."""
    if rule == "none":
        return lr
    ratio = base_width / hidden_size
    if rule == "inverse":
        return lr * ratio
    if rule == "inverse_sqrt":
        return lr * math.sqrt(ratio)
    raise ValueError(f"unknown width rule {rule!r}")


def lr_factor(step: int, total_steps: int, optim: OptimConfig) -> float:
    """Multiplier of the peak lr at 0-based optimizer ``step`` of ``total_steps`` (dimensionless)."""
    warm = optim.warmup_steps
    if step < warm:
        return (step + 1) / warm
    m = optim.min_lr_ratio
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "cosine":
        span = total_steps - 1 - warm
        p = 1.0 if span <= 0 else min(1.0, (step - warm) / span)
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))
    if optim.schedule == "wsd":
        start = cooldown_start(total_steps, optim)
        if step < start:
            return 1.0
        # step start -> p = 1 / cool, ..., last step (total - 1) -> p = 1 (the lr reaches m x peak)
        p = min(1.0, (step - start + 1) / (total_steps - start))
        if optim.cooldown_shape == "1-sqrt":
            return m + (1.0 - m) * (1.0 - math.sqrt(p))
        return 1.0 - (1.0 - m) * p
    raise ValueError(f"unknown schedule {optim.schedule!r}")


def is_shareable(optim: OptimConfig) -> bool:
    """Whether runs with this schedule can share a trunk (:data:`SHAREABLE_SCHEDULES`)."""
    return optim.schedule in SHAREABLE_SCHEDULES


def stable_phase(optim: OptimConfig) -> OptimConfig:
    """The schedule of the steps before every cooldown: ``optim`` with a constant lr (a trunk's)."""
    return dataclasses.replace(optim, schedule="constant")


def cooldown_start(total_steps: int, optim: OptimConfig) -> int:
    """First step of the "wsd" cooldown (``total_steps`` when there is none): every earlier step
    uses the stable lr, whatever the run's length, so runs of one trunk share them."""
    if optim.schedule != "wsd":
        return total_steps
    return total_steps - max(0, round(optim.cooldown_frac * total_steps))


def peak_lr(optim: OptimConfig, hidden_size: int) -> float:
    """The peak lr of a model ``hidden_size`` wide: ``optim.lr`` after its width rule."""
    return width_scaled_lr(optim.lr, hidden_size, optim.width_rule, optim.base_width)


def lr_at(step: int, total_steps: int, optim: OptimConfig, hidden_size: int | None = None) -> float:
    """Learning rate of 0-based optimizer ``step``: width-scaled peak lr x :func:`lr_factor`."""
    peak = optim.lr if hidden_size is None else peak_lr(optim, hidden_size)
    return peak * lr_factor(step, total_steps, optim)
