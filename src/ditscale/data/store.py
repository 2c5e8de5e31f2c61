"""The latent-store format: layout, ``meta.json`` and its checks (pure Python: no torch, no numpy).

A store is a folder::

    plan.json                 what is being extracted (written first; a resume must match it)
    shard-00000.npy ...       float16/32 (n, 2, 2, C, h, w): [flip][mean | std] of the VAE posterior
    shard-00000.json ...      written last per shard: start, count, sha256, labels (and captions)
    meta.json                 written when every shard is done: plan + shard list + checksums

Index 1 of the flip axis is the encoding of the horizontally mirrored image. Items ``0 .. n_train-1``
are the source's "train" split and the next ``n_val`` its "val" split. ``meta.json`` alone
describes the store (shape, scale, counts, splits, classes, captions), so planning reads only it.
Writing: :mod:`ditscale.data.latents`; reading items: :mod:`ditscale.data.latent_dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ditscale.data.config import DataConfig, check_split
from ditscale.errors import DataError
from ditscale.io import parse_json, read_bytes, sha256_file

STORE_FORMAT = "ditscale-latents"
STORE_VERSION = 1


def shard_name(s: int) -> str:
    """File stem of shard ``s``: ``"shard-00000"``."""
    return f"shard-{s:05d}"


def read_meta(path: str | os.PathLike) -> dict:
    """The ``meta.json`` of a finished latent store, with a DataError saying what to do if absent."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"latent store '{root}' does not exist; create it with `ditscale extract-latents`")
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        hint = (
            "rerun the same `ditscale extract-latents` command to finish it"
            if (root / "plan.json").is_file()
            else ("create it with `ditscale extract-latents`")
        )
        raise DataError(f"latent store '{root}' is incomplete (no meta.json); {hint}")
    try:
        meta = parse_json(read_bytes(meta_file))
    except (OSError, ValueError) as err:
        raise DataError(
            f"{meta_file} is damaged ({type(err).__name__}); rerun `ditscale extract-latents` to rewrite it"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT or meta.get("version") != STORE_VERSION:
        raise DataError(f"'{root}' is not a version-{STORE_VERSION} ditscale latent store; re-extract it")
    for shard in meta.get("shards") or []:
        shard_path(root, shard, meta_file)
    return meta


def shard_path(root: Path, shard: dict, meta_file: Path | None = None) -> Path:
    """The ``.npy`` file of a ``meta.json`` shard entry: a plain file name inside the store ``root``.
    Anything else (an absolute path, ``..``, a sub-folder) is a one-line :class:`DataError` naming
    ``meta.json``: a store never reads outside its folder."""
    name = shard.get("file") if isinstance(shard, dict) else None
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or Path(name).name != name
        or "\\" in name
        or not name.endswith(".npy")
    ):
        where = meta_file or root / "meta.json"
        raise DataError(f"{where}: shard file {name!r} is not a .npy file name inside the store; re-extract the store")
    return root / name


def _is_int(x, low: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def check_store_items(root: Path, meta: dict) -> None:
    """Check what reading a store's items relies on in its ``meta.json`` (planning reads less; this
    is checked before any item is read): ``count`` >= 1 items split into ``splits`` train + val,
    ``shard_size`` >= 1, a ``shape`` of three positive sizes, a finite ``scale`` > 0 (0 would train on
    zeros to a loss of 0), a float16/float32 ``dtype``, and ``shards`` covering exactly the
    ``ceil(count / shard_size)`` slices ``[s * shard_size, ...)`` in order. A one-line
    :class:`DataError` naming ``meta.json`` and the field otherwise."""
    where = root / "meta.json"

    def bad(what: str) -> DataError:
        return DataError(
            f"{where}: {what}; the store is damaged or was edited: re-extract it with `ditscale extract-latents`"
        )

    count, size, splits = meta.get("count"), meta.get("shard_size"), meta.get("splits")
    if not _is_int(count, 1) or not _is_int(size, 1):
        raise bad(f"count {count!r} and shard_size {size!r} must be positive integers")
    if not isinstance(splits, dict) or not all(_is_int(splits.get(k)) for k in ("train", "val")):
        raise bad(f"splits {splits!r} must give train and val item counts")
    if splits["train"] + splits["val"] != count:
        raise bad(f"splits train {splits['train']} + val {splits['val']} is not count {count}")
    shape, scale = meta.get("shape"), meta.get("scale")
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(x, 1) for x in shape):
        raise bad(f"shape {shape!r} is not three positive sizes (C, h, w)")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        raise bad(f"scale {scale!r} is not a finite number > 0")
    if meta.get("dtype") not in ("float16", "float32"):
        raise bad(f"dtype {meta.get('dtype')!r} is not float16 or float32")
    shards = meta.get("shards")
    want = -(-count // size)
    if not isinstance(shards, list) or len(shards) != want:
        raise bad(
            f"{len(shards) if isinstance(shards, list) else 'no'} shards listed for {count} items of {size} per shard ({want})"
        )
    for s, shard in enumerate(shards):
        start = s * size
        if (
            not isinstance(shard, dict)
            or shard.get("start") != start
            or shard.get("count") != min(count, start + size) - start
        ):
            raise bad(f"shard {s} does not hold items {start} to {min(count, start + size) - 1}")


def check_store_fits(root: Path, meta: dict, cfg: DataConfig) -> tuple[int, int, int]:
    """The store's latent shape ``(C, h, w)``, after checking it and its captions against ``cfg``.

    Raises a DataError naming both shapes when they differ from ``(data.channels, data.image_size,
    data.image_size)``, and one when ``cfg.captions`` asks for captions the store does not have.
    """
    shape = tuple(meta["shape"])
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if shape != want:
        raise DataError(
            f"latent store '{root}' holds latents of shape {shape} but the config expects {want} "
            f"(data.channels, data.image_size); set data.channels={shape[0]} data.image_size={shape[1]}, "
            "or extract latents at the matching image size"
        )
    if cfg.captions and not meta["has_captions"]:
        raise DataError(f"latent store '{root}' has no captions; extract it from a captioned dataset")
    return shape


def split_range(root: Path, meta: dict, split: str) -> tuple[int, int]:
    """``(offset, length)`` of ``split`` among the store's items (train first, then val); not empty."""
    check_split(split)
    offset = 0 if split == "train" else meta["splits"]["train"]
    length = meta["splits"][split]
    if length == 0:
        raise DataError(f"latent store '{root}' has no {split} items; re-extract with a {split} split")
    return offset, length


def read_shard_records(root: Path, meta: dict) -> tuple[list[int], list[str]]:
    """``(labels, captions)`` of every item of the store, in item order, from the shards' JSON files.

    ``captions`` is empty for a store without captions. Reads one small JSON file per shard.
    """
    labels, captions = [], []
    for shard in meta["shards"]:
        path = shard_path(root, shard).with_suffix(".json")
        try:
            rec = parse_json(read_bytes(path))
        except (OSError, ValueError) as err:
            raise DataError(f"{path} is damaged or missing ({type(err).__name__}); re-extract the store") from None
        want = shard.get("count")
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("labels"), list)
            or not isinstance(rec.get("captions") or [], list)
            or (want is not None and len(rec["labels"]) != want)
        ):
            raise DataError(f"{path} does not hold the labels of its shard; re-extract the store")
        labels += rec["labels"]
        captions += rec["captions"] or []
    return labels, captions


def verify_latent_store(path: str | os.PathLike) -> list[str]:
    """Names of the shard files of a store whose SHA-256 differs from ``meta.json`` (empty = intact)."""
    root = Path(path)
    meta = read_meta(root)
    bad = []
    for shard in meta["shards"]:
        f = shard_path(root, shard)
        if not f.is_file() or sha256_file(f) != shard["sha256"]:
            bad.append(shard["file"])
    return bad
