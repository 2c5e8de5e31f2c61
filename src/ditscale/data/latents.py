"""Latent stores: encode a dataset once with a VAE, then train on memory-mapped posteriors.

A store is a folder::

    plan.json                 what is being extracted (written first; a resume must match it)
    shard-00000.npy ...       float16/32 (n, 2, 2, C, h, w): [flip][mean | std] of the VAE posterior
    shard-00000.json ...      written last per shard: start, count, sha256, labels (and captions)
    meta.json                 written when every shard is done: plan + shard list + checksums

Index 1 of the flip axis is the encoding of the horizontally mirrored image. Items ``0 .. n_train-1``
are the source's "train" split and the next ``n_val`` its "val" split. Each shard is written to a
temp file and renamed (atomic), so an interrupted extraction resumes by skipping finished shards;
workers each take whole shards, so the bytes do not depend on the number of workers.

:class:`LatentDataset` memory-maps the shards and, per item, picks a flip and draws
``z = (mean + std * eps) * scale`` from ``item_rng(seed, RNG_LATENT, epoch, index)``: a fresh flip
and posterior sample every epoch (fast-DiT freezes one of each per image), identical on resume.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ditscale.config import to_dict
from ditscale.data.config import RNG_LATENT, DataConfig, EpochDataset, check_split, item_rng
from ditscale.errors import ConfigError, DataError
from ditscale.io import atomic_path, atomic_write_json, sha256_file

STORE_FORMAT = "ditscale-latents"
STORE_VERSION = 1


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}"


def read_meta(path: str | os.PathLike) -> dict:
    """The ``meta.json`` of a finished latent store, with a DataError saying what to do if absent."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"latent store '{root}' does not exist; create it with `ditscale extract-latents`")
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        hint = "rerun the same `ditscale extract-latents` command to finish it" if (root / "plan.json").is_file() else (
            "create it with `ditscale extract-latents`"
        )
        raise DataError(f"latent store '{root}' is incomplete (no meta.json); {hint}")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != STORE_FORMAT or meta.get("version") != STORE_VERSION:
        raise DataError(f"'{root}' is not a version-{STORE_VERSION} ditscale latent store; re-extract it")
    return meta


def verify_latent_store(path: str | os.PathLike) -> list[str]:
    """Names of the shard files of a store whose SHA-256 differs from ``meta.json`` (empty = intact)."""
    root = Path(path)
    meta = read_meta(root)
    bad = []
    for shard in meta["shards"]:
        f = root / shard["file"]
        if not f.is_file() or sha256_file(f) != shard["sha256"]:
            bad.append(shard["file"])
    return bad


# ----------------------------------------------------------------------------------------- extraction


def _sources(cfg: DataConfig, count: int | None, val_count: int | None) -> tuple[dict, int, int]:
    """The source datasets (no random flips) and how many train / val items to encode."""
    from ditscale.data.build import build_dataset

    has_val = cfg.name == "shapes" or cfg.val_fraction > 0
    datasets = {s: build_dataset(cfg, s) for s in (("train", "val") if has_val else ("train",))}
    n_train, n_val = len(datasets["train"]), len(datasets["val"]) if has_val else 0
    if cfg.name == "shapes":  # infinite
        if count is None:
            raise ConfigError("the shapes dataset is infinite; give --count N (train images to encode)")
        n_train, n_val = count, count // 10 if val_count is None else val_count
    else:
        n_train = n_train if count is None else min(count, n_train)
        n_val = n_val if val_count is None else min(val_count, n_val)
    return datasets, n_train, n_val


class _Extractor:
    """Encodes whole shards of a plan; one per process (the VAE and source datasets are built once)."""

    def __init__(self, out: str, plan: dict, datasets: dict, device: str, batch_size: int):
        from ditscale.data.vae import load_vae

        self.out, self.plan, self.datasets = Path(out), plan, datasets
        self.device, self.batch_size = device, batch_size
        self.vae = load_vae(plan["vae"], device=device)

    def item(self, g: int) -> dict:
        n_train = self.plan["splits"]["train"]
        return self.datasets["train"][g] if g < n_train else self.datasets["val"][g - n_train]

    def write_shard(self, s: int, progress=None) -> dict:
        from ditscale.data.vae import encode_moments

        p, name = self.plan, _shard_name(s)
        start, end = s * p["shard_size"], min(p["count"], (s + 1) * p["shard_size"])
        labels, captions = [], []
        with atomic_path(self.out / f"{name}.npy") as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=p["dtype"], shape=(end - start, 2, 2, *p["shape"]))
            for b in range(start, end, self.batch_size):
                items = [self.item(g) for g in range(b, min(end, b + self.batch_size))]
                x = torch.stack([it["x"] for it in items])
                x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grey -> RGB for the VAE
                mean, std = encode_moments(self.vae, torch.cat([x, x.flip(-1)]).to(self.device))
                k, rows = len(items), slice(b - start, b - start + len(items))
                arr[rows, 0, 0], arr[rows, 0, 1] = mean[:k].cpu().numpy(), std[:k].cpu().numpy()
                arr[rows, 1, 0], arr[rows, 1, 1] = mean[k:].cpu().numpy(), std[k:].cpu().numpy()
                labels += [int(it["y"]) for it in items]
                captions += [it["caption"] for it in items if "caption" in it]
                if progress is not None:
                    progress.update(k)
            arr.flush()
            del arr
        record = {
            "file": f"{name}.npy",
            "start": start,
            "count": end - start,
            "sha256": sha256_file(self.out / f"{name}.npy"),
            "labels": labels,
            "captions": captions if p["has_captions"] else None,
        }
        atomic_write_json(self.out / f"{name}.json", record, indent=None)
        return record


_WORKER: _Extractor | None = None


def _init_worker(out: str, plan: dict, datasets: dict, device: str, batch_size: int, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = _Extractor(out, plan, datasets, device, batch_size)


def _worker_shard(s: int) -> int:
    assert _WORKER is not None
    return _WORKER.write_shard(s)["count"]


def _finished(out: Path, s: int) -> bool:
    return (out / f"{_shard_name(s)}.json").is_file() and (out / f"{_shard_name(s)}.npy").is_file()


def extract_latents(
    cfg: DataConfig,
    vae: str,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    workers: int = 1,
    shard_size: int = 4096,
    dtype: str = "float16",
    count: int | None = None,
    val_count: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Encode the train and val splits of dataset ``cfg`` with VAE ``vae`` into a latent store ``out``.

    Args:
        cfg: the source image dataset (its ``random_flip`` is ignored: both flips are stored).
        vae: a diffusers ``AutoencoderKL`` folder or hub id (see :func:`ditscale.data.vae.load_vae`).
        out: the store folder; an existing unfinished store with the same plan is resumed.
        batch_size: images per VAE call (each call encodes the batch and its mirror: 2x images).
        workers: processes, each encoding whole shards (results are identical for any number).
        shard_size: images per shard file.
        dtype: "float16" or "float32" storage of the posterior mean and std.
        count, val_count: encode at most this many train / val images (``count`` is required for
            the infinite "shapes" dataset, whose val count defaults to ``count // 10``).
        device: where the VAE runs (default: "cuda" if available, else "cpu").

    Returns:
        the ``meta.json`` contents, plus ``"shards_written"`` and ``"shards_skipped"`` of this call.
    """
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"latent dtype must be 'float16' or 'float32', got {dtype!r}")
    if batch_size < 1 or workers < 1 or shard_size < 1:
        raise ConfigError("batch size, workers and shard size must be positive integers")
    if cfg.name == "latents":
        raise ConfigError("the source of extract-latents must be an image dataset, not a latent store")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out).expanduser()
    src = dataclasses.replace(cfg, random_flip=False, captions=cfg.captions or cfg.name == "captions")
    datasets, n_train, n_val = _sources(src, count, val_count)
    from ditscale.data.vae import VAE_SCALE, downsample_factor, load_vae

    probe = load_vae(vae, device="cpu")
    f, channels = downsample_factor(probe), int(probe.config.latent_channels)
    del probe
    if src.image_size % f:
        raise ConfigError(f"image_size {src.image_size} is not divisible by the VAE's downsampling {f}; change data.image_size")
    plan = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "vae": str(vae),
        "scale": VAE_SCALE,
        "dtype": dtype,
        "shape": [channels, src.image_size // f, src.image_size // f],
        "image_size": src.image_size,
        "count": n_train + n_val,
        "splits": {"train": n_train, "val": n_val},
        "shard_size": shard_size,
        "num_classes": int(datasets["train"].num_classes),
        "has_captions": src.captions,
        "source": to_dict(src),
    }
    if getattr(datasets["train"], "classes", None):
        plan["classes"] = list(datasets["train"].classes)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "plan.json").is_file():
        old = json.loads((out / "plan.json").read_text())
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise DataError(f"'{out}' holds a different extraction (differs in {', '.join(diff)}); use another --out")
    else:
        atomic_write_json(out / "plan.json", plan)

    for stale in out.glob(".shard-*.tmp"):  # left by a killed run; finished shards were renamed
        stale.unlink()
    num_shards = math.ceil(plan["count"] / shard_size)
    todo = [s for s in range(num_shards) if not _finished(out, s)]
    todo_images = sum(min(plan["count"], (s + 1) * shard_size) - s * shard_size for s in todo)
    bar = tqdm(total=todo_images, unit="img", desc="extract-latents", disable=not progress or not todo)
    # On CPU every worker encodes with one thread: float sums then do not depend on the number of
    # workers, so a store is byte-identical however it was extracted (use --workers for more cores).
    on_cpu = torch.device(device).type == "cpu"
    threads = 1 if on_cpu else max(1, (os.cpu_count() or 1) // workers)
    saved_threads = torch.get_num_threads()
    try:
        if workers == 1 or len(todo) <= 1:
            torch.set_num_threads(threads)
            extractor = _Extractor(str(out), plan, datasets, device, batch_size) if todo else None
            for s in todo:
                extractor.write_shard(s, bar)
        else:
            # fork (CPU) shares the parent's imports; CUDA cannot be forked, so GPUs spawn fresh processes.
            fork = on_cpu and "fork" in multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if fork else "spawn")
            init = (str(out), plan, datasets, device, batch_size, threads)
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)), ctx, _init_worker, init) as pool:
                for n in pool.map(_worker_shard, todo):
                    bar.update(n)
    finally:
        torch.set_num_threads(saved_threads)
        bar.close()

    shards = []
    for s in range(num_shards):
        rec = json.loads((out / f"{_shard_name(s)}.json").read_text())
        shards.append({k: rec[k] for k in ("file", "start", "count", "sha256")})
    meta = dict(plan, shards=shards)
    atomic_write_json(out / "meta.json", meta)
    return dict(meta, shards_written=len(todo), shards_skipped=num_shards - len(todo))


# ------------------------------------------------------------------------------------------- dataset


class LatentDataset(EpochDataset):
    """Memory-mapped latent store; items ``{"x": (C, h, w) float32 scaled latent, "y": int64[, "caption"]}``.

    ``x = (mean + std * eps) * scale`` of the image or (``random_flip``, default on) its mirror,
    both drawn from ``item_rng(seed, RNG_LATENT, epoch, index)``.
    """

    def __init__(self, cfg: DataConfig, split: str = "train"):
        check_split(split)
        self.root = Path(cfg.path).expanduser()
        meta = read_meta(self.root)
        shape = tuple(meta["shape"])
        want = (cfg.channels, cfg.image_size, cfg.image_size)
        if shape != want:
            raise DataError(
                f"latent store '{self.root}' holds latents of shape {shape} but the config expects {want} "
                f"(data.channels, data.image_size); set data.channels={shape[0]} data.image_size={shape[1]}, "
                "or extract latents at the matching image size"
            )
        if cfg.captions and not meta["has_captions"]:
            raise DataError(f"latent store '{self.root}' has no captions; extract it from a captioned dataset")
        self.meta, self.shape, self.scale = meta, shape, float(meta["scale"])
        self.offset = 0 if split == "train" else meta["splits"]["train"]
        self.length = meta["splits"][split]
        if self.length == 0:
            raise DataError(f"latent store '{self.root}' has no {split} items; re-extract with a {split} split")
        labels, captions = [], []
        for shard in meta["shards"]:
            rec = json.loads((self.root / shard["file"]).with_suffix(".json").read_text())
            labels += rec["labels"]
            captions += rec["captions"] or []
        self.labels = torch.tensor(labels[self.offset : self.offset + self.length], dtype=torch.int64)
        self.caption_list = captions[self.offset : self.offset + self.length] if cfg.captions else None
        self.num_classes = int(meta["num_classes"])
        self.seed = cfg.seed
        self.random_flip = True if cfg.random_flip is None else cfg.random_flip
        self._maps: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:  # DataLoader workers open their own memory maps
        return dict(self.__dict__, _maps={})

    def __len__(self) -> int:
        return self.length

    def _shard(self, s: int) -> np.ndarray:
        if s not in self._maps:
            shard = self.meta["shards"][s]
            try:
                arr = np.load(self.root / shard["file"], mmap_mode="r")
            except (OSError, ValueError) as err:
                raise DataError(f"cannot read '{self.root / shard['file']}' ({err}); re-extract this store") from None
            if arr.shape != (shard["count"], 2, 2, *self.shape):
                raise DataError(f"'{self.root / shard['file']}' has shape {arr.shape}, not as in meta.json; re-extract")
            self._maps[s] = arr
        return self._maps[s]

    def moments(self, index: int) -> np.ndarray:
        """Stored ``(2 flips, 2 [mean, std], C, h, w)`` of item ``index`` (unscaled, store dtype)."""
        s, r = divmod(self.offset + index, self.meta["shard_size"])
        return self._shard(s)[r]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        m = self.moments(index)
        rng = item_rng(self.seed, RNG_LATENT, self.epoch, index)
        flip = int(rng.integers(2)) if self.random_flip else 0
        eps = rng.standard_normal(self.shape, dtype=np.float32)
        z = (m[flip, 0].astype(np.float32) + m[flip, 1].astype(np.float32) * eps) * np.float32(self.scale)
        item = {"x": torch.from_numpy(z), "y": self.labels[index].clone()}
        if self.caption_list is not None:
            item["caption"] = self.caption_list[index]
        return item
