"""``DataConfig`` (which dataset, how to load it) and ``DataInfo`` (what the model must know about it).

Pure Python: planning (``ditscale study plan``, ``ditscale flops``) reads these without torch. The
helpers every torch dataset shares (``item_rng``, ``EpochDataset``, ...) live in
:mod:`ditscale.data.base`; they stay importable from here for old code (loaded on first use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ditscale.data.shapes_grammar import MAX_OBJECTS
from ditscale.errors import ConfigError

DATASET_NAMES = ("shapes", "digits", "folder", "captions", "latents")
INFINITE_DATASETS = ("shapes",)  # procedural: items are generated on demand, there are no epochs
SPLITS = ("train", "val")
# The largest data.stream_offset + 1: half of the shapes stream's 2**31 items, so a run that starts
# anywhere below it can still read 2**30 images.
MAX_STREAM_OFFSET = 2**30


# ---------------------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    """Which dataset to train on and how to load it.

    Attributes:
        name: "shapes" (procedural, infinite), "digits" (scikit-learn 8x8 digits), "folder"
            (ImageNet layout ``root/<class>/<image>``), "captions" (image-caption pairs) or
            "latents" (a store written by ``ditscale extract-latents``).
        path: the image folder, caption folder / index file (``.csv`` / ``.parquet``) or latent store.
        image_size: side of the returned square images in pixels; for "latents" the latent side
            (32 for 256 px images through the SD VAE).
        channels: 3 (RGB) or 1 (grey; digits and folders only); for "latents" the latent channels (4).
        seed: seeds the procedural data ("shapes") and every per-item random choice.
        captions: also return a ``"caption"`` string per item ("captions" always does).
        on_bad_image: "skip" unreadable images (counted, one warning) or "fail" with a DataError.
        num_workers: DataLoader worker processes the trainer should use.
        random_flip: random horizontal flips; None = the dataset's default: on for "folder",
            "captions" and "latents" (as DiT), off for "digits" (a mirrored digit is another
            glyph) and "shapes" (infinite data; when on, "left"/"right" in the caption are swapped).
        val_fraction: fraction of a finite dataset held out as the fixed "val" split.
        shapes_label: class label of "shapes": "kind" (6 classes) or "kind_color" (6 x 8 = 48).
        shapes_objects: most objects in one "shapes" image; each image has 1..shapes_objects of
            them (uniform), on distinct cells of the 3x3 grid. 1 (the default) is the original
            single-object data, item for item.
        stream_offset: where a training run starts reading its train split, in images: step 0's first
            image is global position ``stream_offset`` of the order :mod:`ditscale.train.data_order`
            defines (for "shapes", item ``stream_offset`` of the infinite stream; for a finite dataset,
            that many images into its seeded epochs). The val split is untouched, so runs that read
            different train images are still scored on the same validation images (``seed`` changes
            both). 0 is every earlier run's stream; a study's ``streams: per_trunk`` sets it per trunk.
    """

    name: str = "shapes"
    path: Optional[str] = None
    image_size: int = 32
    channels: int = 3
    seed: int = 0
    captions: bool = False
    on_bad_image: str = "skip"
    num_workers: int = 0
    random_flip: Optional[bool] = None
    val_fraction: float = 0.1
    shapes_label: str = "kind"
    shapes_objects: int = 1
    stream_offset: int = 0

    def __post_init__(self) -> None:
        if self.name not in DATASET_NAMES:
            raise ConfigError(f"data.name must be one of {', '.join(DATASET_NAMES)}, got {self.name!r}")
        if self.image_size <= 0:
            raise ConfigError(f"data.image_size must be positive, got {self.image_size}")
        if self.name != "latents" and self.channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 or 3 for image datasets, got {self.channels}")
        if self.on_bad_image not in ("skip", "fail"):
            raise ConfigError(f"data.on_bad_image must be 'skip' or 'fail', got {self.on_bad_image!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shapes_label not in ("kind", "kind_color"):
            raise ConfigError(f"data.shapes_label must be 'kind' or 'kind_color', got {self.shapes_label!r}")
        if not 1 <= self.shapes_objects <= MAX_OBJECTS:
            raise ConfigError(f"data.shapes_objects must be in 1..{MAX_OBJECTS}, got {self.shapes_objects}")
        if self.num_workers < 0 or self.seed < 0:
            raise ConfigError("data.num_workers and data.seed must be non-negative")
        if not 0 <= self.stream_offset < MAX_STREAM_OFFSET:
            raise ConfigError(
                f"data.stream_offset must be in [0, 2**30), got {self.stream_offset}: it is the train stream's "
                "first image position"
            )
        if self.name == "shapes" and self.channels != 3:
            raise ConfigError(f"the shapes dataset is RGB; set data.channels=3 (got {self.channels})")
        if self.name == "folder" and self.captions:
            raise ConfigError(
                "an ImageNet-layout folder has no captions; use data.name=captions for image-caption pairs"
            )
        if self.name in ("folder", "captions", "latents") and not self.path:
            raise ConfigError(f"data.path is required for the {self.name!r} dataset; set data.path=DIR")


def check_split(split: str) -> None:
    """Raise a ConfigError unless ``split`` is "train" or "val"."""
    if split not in SPLITS:
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")


# ------------------------------------------------------------------------------------ description


@dataclass(frozen=True)
class DataInfo:
    """What the model (and the planner) needs to know about a dataset; see ``dataset_info``.

    ``channels`` and ``image_size`` describe the items' ``x`` (latent channels and side for latent
    stores); ``num_classes`` is the number of labels ``y`` takes (the model adds the null class).
    ``infinite`` is True for procedural data (generated on demand: read sequentially, no epochs).
    It is left out of ``==``: two descriptions are equal when a model configured for one fits the
    other, and the data order is not the model's concern.
    """

    num_classes: int
    channels: int
    image_size: int
    is_latent: bool
    has_captions: bool
    infinite: bool = field(default=False, compare=False)


# -------------------------------------------------------------- old home of the dataset helpers

_MOVED_TO_BASE = ("item_rng", "RNG_SHAPES", "RNG_FLIP", "RNG_LATENT", "heldout_mask", "EpochDataset", "to_minus1_1")


def __getattr__(name: str):
    """``from ditscale.data.config import item_rng`` (and the other shared helpers) keeps working."""
    if name in _MOVED_TO_BASE:
        from ditscale.data import base  # lazy: torch (data.base); data.config is torch-free

        return getattr(base, name)
    raise AttributeError(f"module 'ditscale.data.config' has no attribute {name!r}")
