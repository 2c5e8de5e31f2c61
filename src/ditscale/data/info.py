"""``dataset_info``: a torch-free description of a dataset, for model set-up and study planning.

Pure Python (no torch, no numpy, no dataset module): shapes and digits are described by
constants, folders and caption sets by listing their files, latent stores by their ``meta.json``
alone (one file, not every shard's JSON).
"""

from __future__ import annotations

from pathlib import Path

from ditscale.data.config import INFINITE_DATASETS, DataConfig, DataInfo
from ditscale.data.listing import find_classes, list_caption_pairs
from ditscale.data.shapes_grammar import shapes_num_classes
from ditscale.data.store import check_store_fits, read_meta, split_range

NUM_DIGIT_CLASSES = 10


def dataset_info(cfg: DataConfig) -> DataInfo:
    """Classes, channels, side and kind of the items of ``cfg`` (cheap: lists folders, reads meta.json).

    For a latent store the checks of ``LatentDataset`` apply: a missing or unfinished store, a
    latent shape other than ``(data.channels, data.image_size, data.image_size)``, captions asked
    of a store without them, and an empty train split raise the same DataError.
    """
    if cfg.name == "latents":
        return _latent_store_info(cfg)
    return DataInfo(
        _num_classes(cfg),
        cfg.channels,
        cfg.image_size,
        False,
        cfg.captions or cfg.name == "captions",
        infinite=cfg.name in INFINITE_DATASETS,
    )


def _num_classes(cfg: DataConfig) -> int:
    if cfg.name == "shapes":
        return shapes_num_classes(cfg.shapes_label)
    if cfg.name == "digits":
        return NUM_DIGIT_CLASSES
    if cfg.name == "folder":
        return len(find_classes(cfg.path))
    return max(list_caption_pairs(cfg.path)[3]) + 1


def _latent_store_info(cfg: DataConfig) -> DataInfo:
    root = Path(cfg.path).expanduser()
    meta = read_meta(root)
    channels, side, _ = check_store_fits(root, meta, cfg)
    split_range(root, meta, "train")  # an empty train split is an error, as for the dataset
    return DataInfo(int(meta["num_classes"]), channels, side, True, cfg.captions)
