"""One training run's folder: which file lives where, and when a folder may be reused.

Pure Python (no torch), so studies, sampling and the CLI can read run folders without importing
the trainer. Layout of ``OUT/``::

    config.yaml            the resolved TrainConfig, written before training starts
    metrics.jsonl          one JSON record per log interval / validation
    checkpoints/step_XXXXXXXX/   crash-safe checkpoints (:mod:`ditscale.train.checkpoint`)
    result.json            the final summary (``status: done``), or ``status: failed`` with the error
    run.lock               held while a process trains the run (:mod:`ditscale.train.claim`)
    tb/                    TensorBoard scalars (``tensorboard: true``)
    text_cache/            cached embeddings of a frozen Hugging Face text encoder

A folder is reused only by the same run: :func:`config_changes` lists the dotted keys whose
values differ, ignoring :data:`RESUME_SAFE_KEYS` (logging, checkpoint cadence, workers).

What a sampler or exporter needs from the run its weights came from is read here too
(:meth:`RunDir.read_config`, :meth:`RunDir.data_config`, :meth:`RunDir.class_names`,
:meth:`RunDir.text_encoder`, :meth:`RunDir.vae`): each is None (or ``{}``) when the file is missing
or unreadable, since a model file outside its run still samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditscale.config import flatten_dotted, from_dict, load_yaml
from ditscale.data.config import DataConfig
from ditscale.data.info import class_names
from ditscale.errors import ConfigError, DitscaleError
from ditscale.io import parse_json, read_bytes
from ditscale.models.config import DiTConfig

# Keys that may change between runs in the same OUT without changing the trained weights.
RESUME_SAFE_KEYS = (
    "log_every",
    "ckpt_every",
    "keep_checkpoints",
    "tensorboard",
    "val.every",
    "val.both",
    "data.num_workers",
    "val.sample_images",
    "val.sample_steps",
    "wandb.project",
    "wandb.entity",
    "wandb.name",
    "wandb.mode",
)


# Keys added to TrainConfig after run folders were first written, with the value an older
# config.yaml (which lacks them) means. At that value they are left out of comparisons and hashes,
# so runs and studies written before the key existed still resume.
LATER_KEYS = {"ema_start": 0, "optim.cooldown_shape": "linear", "cpu_bf16": False, "data.stream_offset": 0}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    flat = flatten_dotted(config)
    for key, implied in LATER_KEYS.items():
        if flat.get(key, implied) == implied:
            flat.pop(key, None)
    return flat


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two TrainConfig dicts, excluding :data:`RESUME_SAFE_KEYS`."""
    a, b = _comparable(old), _comparable(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUME_SAFE_KEYS)


def weight_relevant(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened TrainConfig dict without :data:`RESUME_SAFE_KEYS`: what decides the trained weights."""
    return {k: v for k, v in _comparable(config).items() if k not in RESUME_SAFE_KEYS}


@dataclass(frozen=True)
class RunDir:
    """The paths of a training run folder ``root`` (nothing is created until a writer needs it)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def text_cache(self) -> Path:
        return self.root / "text_cache"

    @property
    def lock(self) -> Path:
        """``run.lock``: held by the process training the run (:mod:`ditscale.train.claim`)."""
        return self.root / "run.lock"

    def read_result(self) -> dict[str, Any] | None:
        """The parsed ``result.json`` (any status), or None when it is missing or unreadable."""
        try:
            data = parse_json(read_bytes(self.result))  # nested too deeply: a ValueError
        except (OSError, ValueError, DitscaleError):  # missing, damaged, or not a regular file (a FIFO)
            return None
        return data if isinstance(data, dict) else None

    def checkpoint_folders(self) -> list[Path] | None:
        """The run's checkpoint folders ``checkpoints/step_*``, newest first (not verified); None when
        there is no ``checkpoints/`` (not a run folder)."""
        if not self.checkpoints.is_dir():
            return None
        from ditscale.train.checkpoint import list_checkpoints  # lazy: torch (train.checkpoint); RunDir is torch-free

        return [path for _, path in list_checkpoints(self.checkpoints)]

    def read_config(self) -> dict[str, Any]:
        """The parsed ``config.yaml`` (the resolved TrainConfig as a dict), or {} when missing or unreadable."""
        try:
            data = load_yaml(self.config)
        except (ConfigError, OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def data_config(self) -> DataConfig | None:
        """The run's :class:`DataConfig`, or None (no config, or no valid ``data:`` section)."""
        data = self.read_config().get("data")
        try:
            return from_dict(DataConfig, data, where="data") if isinstance(data, dict) else None
        except ConfigError:
            return None

    def class_names(self, model: DiTConfig) -> list[str] | None:
        """The names of the run's classes (shapes kinds, folder classes ...) when ``model`` is
        class-conditional with as many classes; else None."""
        data_config = self.data_config()
        if model.conditioning != "class" or data_config is None:
            return None
        try:
            names = class_names(data_config)
        except DitscaleError:  # e.g. the run's image folder has moved: the labels still go out, unnamed
            return None
        return list(names) if names is not None and len(names) == model.num_classes else None

    def text_encoder(self) -> Any:
        """The run config's ``text_encoder`` (a Hugging Face folder or hub id, or ``"word"``), or None."""
        return self.read_config().get("text_encoder")

    def vae(self) -> str | None:
        """The VAE the run's latent store was extracted with (``data.name: latents``), or None."""
        data = self.read_config().get("data") or {}
        if not (isinstance(data, dict) and data.get("name") == "latents" and data.get("path")):
            return None
        from ditscale.data.latents import store_vae  # lazy: torch (data.latents); RunDir is torch-free

        return store_vae(Path(data["path"]))

    @classmethod
    def containing(cls, path: str | os.PathLike) -> "RunDir | None":
        """The run folder that holds ``path``: a run folder itself, a file in one, a checkpoint
        folder ``OUT/checkpoints/step_*`` or a file in one; recognised by its ``config.yaml``.
        None outside a run folder."""
        path = Path(path)
        candidates = [path, path.parent]
        for p in (path, path.parent):
            if p.parent.name == "checkpoints":
                candidates.append(p.parent.parent)
        for candidate in candidates:
            if (candidate / "config.yaml").is_file():
                return cls(candidate)
        return None
