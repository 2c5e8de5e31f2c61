"""Optional Weights & Biases logging (``wandb:`` in the config; ``pip install 'ditscale[wandb]'``).

:func:`check_wandb` runs before training starts, so a run that asks for W&B without the package
fails at once with a one-line error instead of after its first checkpoint. :func:`start_wandb`
opens the W&B run on rank 0: the resolved config as its ``config``, files under ``$WANDB_DIR``
(else ``OUT``), and the run id kept in ``OUT/wandb_run_id`` so that a resumed training run
continues the same W&B run (W&B drops lines whose step is below the last one it holds, so the
steps repeated after a resume keep their first values there; ``metrics.jsonl`` is exact).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from typing import Any

from ditscale.errors import ConfigError
from ditscale.io import atomic_write_text
from ditscale.train.config import WandbConfig
from ditscale.train.rundir import RunDir

RUN_ID_FILE = "wandb_run_id"  # in the run folder: the W&B run this training run logs to


def check_wandb(cfg: WandbConfig) -> None:
    """Raise :class:`ConfigError` when W&B logging is asked for but ``wandb`` is not installed."""
    if cfg.enabled and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            f"wandb.project={cfg.project!r} asks for Weights & Biases logging but wandb is not "
            "installed; pip install 'ditscale[wandb]', or remove wandb.project"
        )


def _run_id(out: RunDir) -> str:
    """The W&B run id of this run folder, created (and saved) on first use."""
    path = out.root / RUN_ID_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    run_id = secrets.token_hex(6)  # 12 lowercase hex digits: a valid W&B run id
    atomic_write_text(path, run_id + "\n")
    return run_id


def start_wandb(cfg: WandbConfig, out: RunDir, config: dict[str, Any]) -> Any | None:
    """The W&B run of this training run (``wandb.init``), or None when W&B logging is off."""
    if not cfg.enabled:
        return None
    check_wandb(cfg)
    import wandb  # lazy: optional dependency wandb

    return wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        name=cfg.name or out.root.resolve().name,
        mode=cfg.mode,
        dir=os.environ.get("WANDB_DIR") or str(out.root),
        config=config,
        id=_run_id(out),
        resume="allow",
    )


def wandb_image(grid: Any, caption: str | None = None) -> Any:
    """A ``wandb.Image`` of a uint8 ``(H, W, 3)`` array."""
    import wandb  # lazy: optional dependency wandb

    return wandb.Image(grid, caption=caption)
