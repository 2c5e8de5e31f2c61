"""``dataset_info`` and ``class_names``: a torch-free description of a dataset, for model set-up,
study planning and labelled sample batches.

Pure Python (no torch, no numpy, no dataset module): shapes and digits are described by
constants, folders and caption sets by listing their files, latent stores by their ``meta.json``
alone (one file, not every shard's JSON).
"""

from __future__ import annotations

from pathlib import Path

from ditscale.data.config import INFINITE_DATASETS, DataConfig, DataInfo
from ditscale.data.listing import find_classes, list_caption_pairs, list_image_folder
from ditscale.data.shapes_grammar import COLOR_NAMES, KINDS, shapes_num_classes
from ditscale.data.split import train_count
from ditscale.data.store import check_store_fits, check_store_items, read_meta, split_range
from ditscale.errors import DitscaleError

NUM_DIGIT_CLASSES = 10
NUM_DIGIT_IMAGES = 1797  # scikit-learn's 8x8 digits


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


def check_items_readable(cfg: DataConfig) -> None:
    """Before a run is started on ``cfg``: a latent store's ``meta.json`` describes items that can be read
    (:func:`~ditscale.data.store.check_store_items`: counts, shards, scale), a one-line DataError
    otherwise; nothing to check for other datasets (they are read as they are listed)."""
    if cfg.name == "latents":
        root = Path(cfg.path).expanduser()
        check_store_items(root, read_meta(root))


def declared_info(cfg: DataConfig) -> tuple[DataInfo, str | None]:
    """``(dataset_info(cfg), None)``, or, for a dataset that cannot be read yet (a latent store not
    extracted), the shape the config declares (``data.channels``, ``data.image_size``; classes
    unknown, 0) and a note saying why: enough to count FLOPs and plan, never to train."""
    try:
        return dataset_info(cfg), None
    except DitscaleError as err:
        info = DataInfo(0, cfg.channels, cfg.image_size, cfg.name == "latents", bool(cfg.captions))
        return info, f"{err} (planned from the declared data.channels and data.image_size)"


def train_images(cfg: DataConfig) -> int | None:
    """Images in the train split of a finite dataset (None for procedural data, which has no epochs).

    Counted from the listing (folders, caption sets), ``meta.json`` (latent stores) or the constant
    (digits), less the held-out val split; a folder's unreadable images, dropped when training starts,
    are still counted. Raises the dataset's DataError when it cannot be read."""
    if cfg.name in INFINITE_DATASETS:
        return None
    if cfg.name == "latents":
        return int(read_meta(Path(cfg.path).expanduser())["splits"]["train"])
    if cfg.name == "digits":
        n = NUM_DIGIT_IMAGES
    elif cfg.name == "folder":
        n = len(list_image_folder(cfg.path)[2])
    else:
        n = len(list_caption_pairs(cfg.path)[1])
    return train_count(n, cfg.val_fraction)


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


DIGIT_NAMES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)  # class names and caption words


def class_names(cfg: DataConfig) -> tuple[str, ...] | None:
    """Names of the labels ``0 .. num_classes - 1`` of ``cfg``'s items, or None when it does not name them.

    shapes: the kinds (``"circle"``, ...), or with ``shapes_label="kind_color"`` ``"red circle"`` ...
    at label ``kind * 8 + colour``; digits: ``"zero"`` .. ``"nine"``; folder: the sorted class
    sub-folder names; latents: the classes the store recorded, else its source dataset's; a caption
    set: None (its labels are bare numbers). Cheap and torch-free, like :func:`dataset_info`.
    """
    if cfg.name == "shapes":
        if cfg.shapes_label == "kind_color":
            return tuple(f"{color} {kind}" for kind in KINDS for color in COLOR_NAMES)
        return KINDS
    if cfg.name == "digits":
        return DIGIT_NAMES
    if cfg.name == "folder":
        return tuple(find_classes(cfg.path))
    if cfg.name == "latents":
        return _latent_class_names(read_meta(Path(cfg.path).expanduser()))
    return None


def _latent_class_names(meta: dict) -> tuple[str, ...] | None:
    """The classes a latent store's ``meta.json`` recorded (folder sources), else those of its source config."""
    if meta.get("classes"):
        return tuple(str(c) for c in meta["classes"])
    source = meta.get("source")
    if not isinstance(source, dict) or source.get("name") not in ("shapes", "digits"):
        return None  # a folder's names are recorded above; a caption set has none
    from ditscale.config import from_dict  # lazy: `import ditscale.data` stays free of YAML

    return class_names(from_dict(DataConfig, source, where="latent store source"))
