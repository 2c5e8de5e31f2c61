"""Reference batches: the real images (and prompts) an evaluation compares samples with.

:func:`save_dataset_npz` writes items of a dataset split as an ADM-style ``.npz``
(:mod:`ditscale.generate.npz`), converted to uint8 exactly as samples are (:func:`to_uint8`);
:func:`dataset_captions` gives a text model its own data's captions as prompts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditscale.data.build import build_dataset
from ditscale.data.config import DataConfig
from ditscale.data.info import class_names
from ditscale.errors import ConfigError
from ditscale.generate.npz import image_progress, write_batch
from ditscale.generate.sample import to_uint8


def dataset_captions(data_config: DataConfig, num: int, split: str = "val") -> list[str]:
    """Captions of items ``0 .. num - 1`` of a dataset split (cycled when a finite split is shorter),
    e.g. to prompt a text model with its own data's captions."""
    if data_config.name == "folder":
        raise ConfigError("an ImageNet-layout folder has no captions to prompt with; pass prompts (--prompts FILE)")
    dataset = build_dataset(replace(data_config, captions=True), split)
    listed = getattr(dataset, "caption_list", None)
    if listed is not None:  # listed with the files: no image needs loading
        return [listed[i % len(listed)] for i in range(num)]
    return [dataset[i % len(dataset)]["caption"] for i in range(num)]


def _export_config(data_config: DataConfig) -> DataConfig:
    """``data_config`` for a reference batch: captions on where the dataset has them, flips off unless
    asked for (``random_flip=True``); a latent store is refused (its items are not images)."""
    if data_config.name == "latents":
        raise ConfigError(
            "a latent store holds VAE latents, not images; export the image dataset it was extracted from"
        )
    return replace(data_config, captions=data_config.name != "folder", random_flip=bool(data_config.random_flip))


def _dataset_arrays(dataset: Any, num: int, batch_size: int, progress: bool) -> dict[str, np.ndarray]:
    """``arr_0`` uint8 (num, H, W, 3) (:func:`to_uint8`), ``labels`` int64 (num,), ``captions`` of items 0..num-1."""
    images, labels, captions = None, np.empty(num, np.int64), []
    with image_progress(num, 0, "exporting", progress) as bar:
        for lo in range(0, num, batch_size):
            items = [dataset[i] for i in range(lo, min(num, lo + batch_size))]
            batch = to_uint8(torch.stack([item["x"] for item in items]))
            if images is None:  # preallocated: 50k images are not held twice
                images = np.empty((num, *batch.shape[1:]), np.uint8)
            images[lo : lo + len(items)] = batch
            labels[lo : lo + len(items)] = [int(item["y"]) for item in items]
            captions += [item["caption"] for item in items if "caption" in item]
            bar.update(len(items))
    arrays = {"arr_0": images, "labels": labels}
    if captions:
        arrays["captions"] = np.array(captions, dtype=str)
    return arrays


def save_dataset_npz(
    data_config: DataConfig,
    out: str | Path,
    *,
    num: int,
    split: str = "val",
    batch_size: int = 256,
    progress: bool = True,
) -> Path:
    """Items ``0 .. num - 1`` of a dataset split as an ADM-style reference batch ``.npz``, written atomically.

    Keys: ``arr_0`` uint8 (N, H, W, 3), converted exactly as generated samples are (:func:`to_uint8`;
    one channel -> grey RGB); ``labels`` int64 (N,) when the dataset has more than one class;
    ``label_names`` str (num_classes,) when :func:`~ditscale.data.info.class_names` knows them;
    ``captions`` str (N,) when the dataset can caption (all but ImageNet-layout folders). String
    arrays are unicode (``np.load(allow_pickle=False)`` reads them). Images are not flipped unless
    ``data_config.random_flip`` is True. ``data_config``'s seed picks the stream.
    """
    if num < 1 or batch_size < 1:
        raise ConfigError(f"the number of images and the batch size must be >= 1, got {num} and {batch_size}")
    cfg = _export_config(data_config)
    dataset = build_dataset(cfg, split)
    if not dataset.infinite and num > len(dataset):
        raise ConfigError(
            f"the {split} split of this {cfg.name} dataset has {len(dataset)} images, fewer than the "
            f"{num} asked for; export at most {len(dataset)} or use the other split"
        )
    arrays = _dataset_arrays(dataset, num, batch_size, progress)
    names = class_names(cfg) if dataset.num_classes > 1 else None
    if dataset.num_classes <= 1:
        del arrays["labels"]  # one class: no labels to speak of
    elif names is not None and len(names) == dataset.num_classes:
        arrays["label_names"] = np.array(names, dtype=str)
    return write_batch(out, arrays)
