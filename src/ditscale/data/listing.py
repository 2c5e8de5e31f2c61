"""Listing image folders and caption sets without reading pixels (pure Python: no torch, no PIL).

Used by the datasets (:mod:`ditscale.data.folder`) to find their files and by the torch-free
description (:func:`ditscale.data.info.dataset_info`) to count classes.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ditscale.errors import DataError
from ditscale.io import csv_errors

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image extension and is not hidden (the content is not checked)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def existing_dir(path: str | None, what: str) -> Path:
    """``path`` expanded, or a DataError telling the user to point ``data.path`` at ``what``."""
    root = Path(path or "").expanduser()
    if not root.exists():
        raise DataError(f"dataset folder '{root}' does not exist; set data.path to {what}")
    return root


# ------------------------------------------------------------------------------- ImageNet layout


def find_classes(root: str | Path) -> list[str]:
    """Sorted names of the class sub-folders of an ImageNet-layout ``root`` (hidden folders ignored)."""
    root = existing_dir(str(root), "a folder of class sub-folders (root/<class>/<image>)")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_image_folder(path: str | None) -> tuple[Path, list[str], list[Path], list[int]]:
    """``(root, class names, image files, labels)`` of ``root/<class>/**/<image>``; label = class index."""
    classes = find_classes(path)
    root = Path(path).expanduser()
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.is_file() and is_image_file(p))
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"dataset folder '{root}' has no images in class sub-folders (expected root/<class>/<image>)")
    return root, classes, files, labels


# ------------------------------------------------------------------------------ image-caption pairs


def read_caption_index(path: Path) -> list[dict]:
    """Rows ``{"image": str, "caption": str[, "label": int]}`` of a ``.csv`` or ``.parquet`` index."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq  # lazy: optional dependency pyarrow
        except ImportError:  # pragma: no cover - pyarrow is in the dev extras
            raise DataError(
                "reading a .parquet caption index needs pyarrow; pip install pyarrow or use a CSV"
            ) from None
        rows = pq.read_table(path).to_pylist()
    else:
        with open(path, newline="", encoding="utf-8") as fh, csv_errors(f"caption index '{path}'"):
            rows = list(csv.DictReader(fh))
    if not rows or not {"image", "caption"} <= set(rows[0]):
        raise DataError(f"caption index '{path}' needs columns 'image' and 'caption' and at least one row")
    return rows


def list_caption_pairs(path: str | None) -> tuple[Path, list[Path], list[str], list[int]]:
    """``(root, image files, captions, labels)`` of a caption folder or ``.csv`` / ``.parquet`` index."""
    path = existing_dir(path, "a folder of image + .txt pairs or a .csv/.parquet index")
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and is_image_file(p) and p.with_suffix(".txt").is_file()
        )
        if not files:
            raise DataError(f"dataset folder '{path}' has no image-caption pairs (expected name.png + name.txt)")
        captions = [f.with_suffix(".txt").read_text(encoding="utf-8").strip() for f in files]
        return path, files, captions, [0] * len(files)
    rows = read_caption_index(path)
    files = [path.parent / str(r["image"]) for r in rows]
    labels = [int(r["label"]) if r.get("label") not in (None, "") else 0 for r in rows]
    return path.parent, files, [str(r["caption"]) for r in rows], labels
