"""Sample and reference batches: ADM-format ``.npz`` files and folders of images.

An ``.npz`` batch holds ``arr_0`` uint8 ``(N, H, W, 3)`` and optionally ``labels`` int ``(N,)``,
``label_names`` str ``(num_classes,)`` and ``captions`` str ``(N,)`` (what the shapes evaluator's
accuracy needs). A reference batch may instead, or also, carry precomputed Inception statistics ``mu``
``(2048,)``, ``sigma`` ``(2048, 2048)``, ``mu_s`` ``(2023,)``, ``sigma_s`` ``(2023, 2023)``, as ADM's
reference batches do (a pytorch-fid statistics file has only ``mu`` and ``sigma``). Files are read with
``allow_pickle=False``, so strings must be stored as unicode arrays (``np.array(list_of_str)``).
A folder batch is its png/jpg/jpeg/webp/bmp images sorted by name, all of one size.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ditscale.errors import DataError
from ditscale.io import atomic_write_npz, check_allocation, check_npz

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Statistics pairs (mean key, covariance key): pool features (FID) and spatial features (sFID).
STAT_PAIRS = (("mu", "sigma"), ("mu_s", "sigma_s"))
STAT_KEYS = tuple(key for pair in STAT_PAIRS for key in pair)


@dataclass
class ImageBatch:
    """A batch of images and what goes with them.

    Attributes:
        images: uint8 (N, H, W, 3), or None for a statistics-only reference.
        labels: int64 (N,) class labels, or None.
        label_names: the name of each class (index = label), or None.
        captions: one caption per image, or None.
        stats: precomputed Inception statistics {"mu", "sigma"[, "mu_s", "sigma_s"]} float64, or None.
        path: the file or folder it was read from, or None.
    """

    images: np.ndarray | None
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] | None = None
    captions: tuple[str, ...] | None = None
    stats: dict[str, np.ndarray] | None = None
    path: Path | None = None

    @property
    def num_images(self) -> int:
        """N, the number of images (0 for a statistics-only reference)."""
        return 0 if self.images is None else len(self.images)


def size_mismatch(samples: ImageBatch, ref: ImageBatch) -> str | None:
    """A warning when the samples' images and the reference's differ in size (e.g. 1x1 samples against
    16x16 reference images: both are resized to the evaluator's input, so the score measures the
    resize as much as the model), else None; a statistics-only reference is not compared. The
    metrics still accept such batches (resizing is their design); ``ditscale eval`` prints this."""
    if samples.images is None or ref.images is None:
        return None
    (h, w), (rh, rw) = samples.images.shape[1:3], ref.images.shape[1:3]
    if (h, w) == (rh, rw):
        return None
    return (
        f"the samples are {h}x{w} images but the reference's are {rh}x{rw}: both are resized to the evaluator's "
        "input, so the scores compare the resize as much as the model; draw the samples at the reference's size"
    )


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    """``images`` if it is uint8 (N, H, W, 3) with N >= 1, else a one-line DataError saying what was found."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        hint = " (grayscale? convert to RGB)" if images.ndim == 3 or images.shape[-1:] == (1,) else ""
        raise DataError(
            f"{where}: arr_0 must be uint8 images (N, H, W, 3) with N >= 1, got {images.dtype} "
            f"{images.shape}{hint}; save RGB uint8 images in NHWC order"
        )
    return images


def _strings(array: np.ndarray, key: str, where: str) -> tuple[str, ...]:
    """A 1-D unicode (or bytes) array as a tuple of str."""
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise DataError(
            f"{where}: {key} must be a 1-D string array, got {array.dtype} {array.shape}; "
            "store it as np.array(list_of_str)"
        )
    return tuple(s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in array.tolist())


def _check_annotations(n: int, labels, label_names, captions, where: str) -> None:
    """labels and captions have one row per image; labels index label_names."""
    for key, rows in (("labels", labels), ("captions", captions)):
        if rows is not None and len(rows) != n:
            raise DataError(f"{where}: {key} has {len(rows)} rows but there are {n} images; give one per image")
    if labels is not None and len(labels) and (labels.min() < 0 or (label_names and labels.max() >= len(label_names))):
        top = f"{len(label_names) - 1}" if label_names else "inf"
        raise DataError(
            f"{where}: labels must lie in [0, {top}], got {labels.min()}..{labels.max()}; fix the labels or label_names"
        )


def _labels(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be a 1-D integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def _stats(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray] | None:
    """The statistics pairs present in ``arrays``: mu (D,) with sigma (D, D), mu_s with sigma_s."""
    stats = {}
    for mu_key, sigma_key in STAT_PAIRS:
        if mu_key not in arrays and sigma_key not in arrays:
            continue
        if mu_key not in arrays or sigma_key not in arrays:
            raise DataError(
                f"{where}: has {mu_key if mu_key in arrays else sigma_key} without its pair; "
                f"store {mu_key} and {sigma_key} together"
            )
        mu, sigma = arrays[mu_key], arrays[sigma_key]
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)) or mu.dtype.kind != "f" or sigma.dtype.kind != "f":
            raise DataError(
                f"{where}: {mu_key} {mu.dtype} {mu.shape} and {sigma_key} {sigma.dtype} {sigma.shape} "
                "must be float (D,) and (D, D)"
            )
        stats[mu_key], stats[sigma_key] = mu.astype(np.float64), sigma.astype(np.float64)
    if "mu_s" in stats and "mu" not in stats:
        raise DataError(f"{where}: has mu_s/sigma_s but no mu/sigma; store the pool statistics too")
    return stats or None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, without unpickling anything."""
    try:
        if zipfile.is_zipfile(path):  # every header's shape and dtype checked before an array is read
            check_npz(path)
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cannot read '{path}' as an .npz ({type(err).__name__}: {_one_line(err)}); "
            "pass an .npz written by np.savez or a folder of images"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"'{path}' is a single .npy array, not an .npz; save it with np.savez(path, arr_0=...)")
    with npz:
        return {key: _read_key(npz, key, path) for key in npz.files}


def _read_key(npz, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as err:  # allow_pickle=False refuses object arrays
        what = "holds Python objects" if "allow_pickle" in str(err) else f"cannot be read ({_one_line(err)})"
        raise DataError(
            f"'{path}': array '{key}' {what}; store strings as a unicode array "
            "(np.array(list_of_str)) and numbers as numeric arrays"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"'{path}': array '{key}' is truncated or corrupt ({_one_line(err)}); write the file again"
        ) from None


def _npz_batch(path: Path) -> ImageBatch:
    arrays = _read_npz(path)
    where = f"'{path}'"
    stats = _stats(arrays, where)
    if "arr_0" not in arrays and stats is None:
        raise DataError(
            f"{where} has neither images (arr_0) nor statistics (mu, sigma, mu_s, sigma_s); "
            f"it holds {sorted(arrays) or 'nothing'}"
        )
    images = _check_images(arrays["arr_0"], where) if "arr_0" in arrays else None
    labels = _labels(arrays["labels"], where) if "labels" in arrays else None
    label_names = _strings(arrays["label_names"], "label_names", where) if "label_names" in arrays else None
    captions = _strings(arrays["captions"], "captions", where) if "captions" in arrays else None
    if images is None and (labels is not None or captions is not None):
        raise DataError(f"{where} has labels or captions but no images (arr_0); add the images")
    if images is not None:
        _check_annotations(len(images), labels, label_names, captions, where)
    return ImageBatch(images, labels, label_names, captions, stats, path)


def _folder_batch(path: Path) -> ImageBatch:
    from PIL import Image, UnidentifiedImageError  # lazy: start-up time (cli/ imports this module for .npz)

    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"folder '{path}' has no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images; "
            "pass a folder of images or an .npz"
        )
    images = None
    for i, file in enumerate(files):
        try:
            with Image.open(file) as im:
                pixels = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot decode image '{file}' ({_one_line(err)}); remove or replace it") from None
        if images is None:  # allocate once: N copies of the first image's size
            check_allocation(
                len(files) * pixels.nbytes,
                f"folder '{path}' ({len(files):,} images of {pixels.shape})",
                "pass fewer or smaller images",
                DataError,
            )
            images = np.empty((len(files), *pixels.shape), dtype=np.uint8)
        elif pixels.shape != images.shape[1:]:
            raise DataError(
                f"image '{file}' is {pixels.shape[1]}x{pixels.shape[0]} but '{files[0].name}' is "
                f"{images.shape[2]}x{images.shape[1]}; resize all images to one size"
            )
        images[i] = pixels
    return ImageBatch(images, path=path)


def load_batch(path: str | Path) -> ImageBatch:
    """Read a batch: an ``.npz`` (ADM format: ``arr_0`` uint8 (N, H, W, 3), optional ``labels``, ``label_names``,
    ``captions``, ``mu``/``sigma``/``mu_s``/``sigma_s``) or a folder of images (sorted by name, as RGB)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"batch '{path}' does not exist; pass an .npz (key arr_0) or a folder of images")
    return _folder_batch(p) if p.is_dir() else _npz_batch(p)


def npz_keys(path: str | Path) -> list[str]:
    """The array names of an ``.npz`` (``arr_0``, ``labels`` ...), listed without reading the arrays."""
    with np.load(path, allow_pickle=False) as npz:
        return list(npz.files)


def first_images(path: str | Path, n: int) -> np.ndarray:
    """The first ``n`` images of an ``.npz``'s ``arr_0``, uint8 (<= n, H, W, 3), read without loading
    the rest (a grid of a large sample batch)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version not in readers:  # a header format np.savez does not write for uint8 images
            with np.load(path, allow_pickle=False) as data:
                return data["arr_0"][:n]
        shape, _, dtype = readers[version](fh)
        count = min(n, shape[0])
        raw = fh.read(count * int(np.prod(shape[1:])) * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(count, *shape[1:])


def save_batch(
    path: str | Path,
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write uint8 ``images`` (N, H, W, 3) with optional ``labels`` (N,), ``label_names`` (num_classes,) and
    ``captions`` (N,) to an ADM-format ``.npz`` (strings as unicode arrays), atomically. Returns the path."""
    where = f"batch for '{path}'"
    arrays = {"arr_0": _check_images(np.asarray(images), where)}
    if labels is not None:
        arrays["labels"] = _labels(np.asarray(labels), where)
    if label_names is not None:
        arrays["label_names"] = np.array([str(s) for s in label_names], dtype=str)
    if captions is not None:
        arrays["captions"] = np.array([str(s) for s in captions], dtype=str)
    names = tuple(arrays["label_names"].tolist()) if label_names is not None else None
    _check_annotations(len(arrays["arr_0"]), arrays.get("labels"), names, arrays.get("captions"), where)
    return atomic_write_npz(path, arrays)


def save_reference_stats(path: str | Path, stats: dict[str, np.ndarray]) -> Path:
    """Write Inception statistics ``mu`` (D,), ``sigma`` (D, D) and, if given, ``mu_s``, ``sigma_s`` (float64)
    to an ``.npz`` that :func:`load_batch` reads as a reference (ADM's reference-batch keys), atomically."""
    arrays = {key: np.asarray(value) for key, value in stats.items() if key in STAT_KEYS}
    checked = _stats(arrays, f"statistics for '{path}'")
    if checked is None:
        raise DataError(f"no statistics to write to '{path}': give mu and sigma (and mu_s, sigma_s)")
    return atomic_write_npz(path, checked)
