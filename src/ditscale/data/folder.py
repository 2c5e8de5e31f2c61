"""Image folders: ImageNet layout (``root/<class>/<image>``) and image-caption pairs.

Preprocessing is ADM's / DiT's ``center_crop_arr``: halve the image with a BOX filter while its short
side is at least twice the target, BICUBIC-resize so the short side equals the target, then crop the
centre. Horizontal flips are drawn per (seed, epoch, index).

Unreadable images. At index time each file's header is opened with PIL (``Image.open`` reads only
the header, so this is cheap): files that are not images are skipped and counted
(``dataset.skipped``, one warning with the count) with ``on_bad_image="skip"``, or raise a DataError
naming the file with ``"fail"``. A file whose header is fine but whose pixels cannot be decoded
(truncated) is found only when loaded: "fail" raises, "skip" deterministically returns the next
item that loads instead (index + 1, + 2, ... modulo the length) and warns once.

The "val" split is a fixed held-out fraction ranked by the hash of each file's relative path
(:func:`ditscale.data.base.heldout_mask`), so it does not depend on the seed or listing order.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ditscale.data.base import EpochDataset, heldout_mask, to_minus1_1
from ditscale.data.config import DataConfig, check_split
from ditscale.data.listing import (  # noqa: F401  (find_classes & co. are re-exported: their old home)
    IMAGE_EXTENSIONS,
    find_classes,
    list_caption_pairs,
    list_image_folder,
    read_caption_index,
)
from ditscale.errors import ConfigError, DataError
from ditscale.io import shown_path


def center_crop_arr(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM centre crop: uint8 array ``(image_size, image_size[, C])`` from a PIL image of any size.

    While ``min(w, h) >= 2 * image_size`` the image is halved (integer division) with ``Image.BOX``;
    then it is resized with ``Image.BICUBIC`` so the short side is ``image_size`` (long side
    ``round(long * scale)``), and the centre square is cut (offset ``(side - image_size) // 2``).
    """
    while min(image.size) >= 2 * image_size:
        image = image.resize((image.size[0] // 2, image.size[1] // 2), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def _header_ok(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return im.size[0] > 0 and im.size[1] > 0
    except Exception:  # PIL raises many types for bad files
        return False


def _readable_headers(files: list[Path], on_bad_image: str) -> tuple[list[int], list[Path]]:
    """``(indices of files whose header PIL reads, unreadable files)``; DataError on one with "fail"."""
    good, skipped = [], []
    for i, f in enumerate(files):
        if _header_ok(f):
            good.append(i)
        elif on_bad_image == "fail":
            raise DataError(f"cannot read image '{f}'; remove or fix it, or set data.on_bad_image=skip")
        else:
            skipped.append(f)
    return good, skipped


class _ImageFiles(EpochDataset):
    """Shared loading: a list of files, their labels / captions, the split, flips and bad-image policy."""

    def _setup(
        self, cfg: DataConfig, split: str, root: Path, files: list[Path], labels: list[int], captions: list[str] | None
    ) -> None:
        check_split(split)
        if split == "val" and cfg.val_fraction == 0:
            raise ConfigError("data.val_fraction is 0, so there is no val split; set it to e.g. 0.1")
        self.on_bad_image, self.root = cfg.on_bad_image, root
        good, self.skipped = _readable_headers(files, cfg.on_bad_image)
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image(s) under '{shown_path(root)}' "
                f"(first: '{shown_path(self.skipped[0])}'); "
                "set data.on_bad_image=fail to stop on them instead",
                stacklevel=3,
            )
        if not good:
            raise DataError(f"dataset folder '{root}' has no readable images; check data.path")
        keys = [Path(os.path.relpath(files[i], root)).as_posix() for i in good]
        val = heldout_mask(keys, cfg.val_fraction)
        keep = [g for g, v in zip(good, val) if v == (split == "val")]
        self.files = [files[i] for i in keep]
        self.labels = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
        self.caption_list = [captions[i] for i in keep] if captions is not None else None
        self.seed, self.image_size, self.channels = cfg.seed, cfg.image_size, cfg.channels
        self.random_flip = True if cfg.random_flip is None else cfg.random_flip
        self.load_failures: list[Path] = []

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> torch.Tensor:
        """Float32 ``(C, S, S)`` in [-1, 1] of file ``index`` after the ADM centre crop (no flip)."""
        with Image.open(self.files[index]) as im:
            im = im.convert("RGB" if self.channels == 3 else "L")
        return to_minus1_1(center_crop_arr(im, self.image_size))

    def _load_or_next(self, index: int) -> tuple[int, torch.Tensor]:
        for k in range(len(self.files)):
            j = (index + k) % len(self.files)
            try:
                return j, self.load_image(j)
            except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
                if self.on_bad_image == "fail":
                    raise DataError(
                        f"cannot decode image '{self.files[j]}' ({type(err).__name__}); "
                        "remove or fix it, or set data.on_bad_image=skip"
                    ) from None
                if not self.load_failures:
                    warnings.warn(f"cannot decode image '{self.files[j]}'; using the next image instead", stacklevel=3)
                if self.files[j] not in self.load_failures:
                    self.load_failures.append(self.files[j])
        raise DataError(f"no image under '{self.root}' can be decoded; check data.path")

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.files):
            raise IndexError(index)
        j, x = self._load_or_next(index)
        if self.flip_for(index):
            x = x.flip(-1)
        item = {"x": x, "y": self.labels[j].clone()}
        if self.caption_list is not None:
            item["caption"] = self.caption_list[j]
        return item


class ImageFolderDataset(_ImageFiles):
    """ImageNet layout: ``root/<class_name>/**/<image>``; label = index of the class in sorted names.

    Items: ``{"x": (C, S, S) float32 in [-1, 1], "y": int64 class}``.
    """

    def __init__(self, cfg: DataConfig, split: str = "train"):
        root, self.classes, files, labels = list_image_folder(cfg.path)
        self._setup(cfg, split, root, files, labels, None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class CaptionDataset(_ImageFiles):
    """Image-caption pairs: a folder of ``name.<ext>`` + ``name.txt``, or a CSV / Parquet index.

    The index has columns ``image`` (path relative to the index file's folder), ``caption`` and
    optionally ``label`` (int; otherwise every label is 0). In a folder, images without a ``.txt``
    are ignored. Items: ``{"x": (C, S, S), "y": int64, "caption": str}``.
    """

    def __init__(self, cfg: DataConfig, split: str = "train"):
        root, files, captions, labels = list_caption_pairs(cfg.path)
        self.num_classes = max(labels) + 1
        self._setup(cfg, split, root, files, labels, captions)
