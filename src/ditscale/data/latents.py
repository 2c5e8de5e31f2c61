"""Latent stores: encode a dataset once with a VAE (:func:`extract_latents`), then train on them.

The store layout and ``meta.json`` are described in :mod:`ditscale.data.store` (pure Python); the
dataset that reads a store is :class:`ditscale.data.latent_dataset.LatentDataset`. Both are
re-exported here (``read_meta``, ``verify_latent_store``, ``LatentDataset``), their old home.

Extraction writes each shard to a temp file and renames it (atomic), so an interrupted extraction
resumes by skipping finished shards; workers each take whole shards, so the bytes do not depend on
the number of workers.
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
from ditscale.data.build import build_dataset
from ditscale.data.config import INFINITE_DATASETS, DataConfig
from ditscale.data.latent_dataset import LatentDataset  # noqa: F401  (re-exported)
from ditscale.data.store import (  # noqa: F401  (read_meta, verify_latent_store re-exported)
    STORE_FORMAT,
    STORE_VERSION,
    read_meta,
    shard_name,
    verify_latent_store,
)
from ditscale.errors import ConfigError, DataError
from ditscale.io import atomic_path, atomic_write_json, sha256_file


# ------------------------------------------------------------------------------------------- sources


def _sources(cfg: DataConfig, count: int | None, val_count: int | None) -> tuple[dict, int, int]:
    """The source datasets (no random flips) and how many train / val items to encode."""
    has_val = cfg.name in INFINITE_DATASETS or cfg.val_fraction > 0
    datasets = {s: build_dataset(cfg, s) for s in (("train", "val") if has_val else ("train",))}
    n_train, n_val = len(datasets["train"]), len(datasets["val"]) if has_val else 0
    if datasets["train"].infinite:
        if count is None:
            raise ConfigError(f"the {cfg.name} dataset is infinite; give --count N (train images to encode)")
        n_train, n_val = count, count // 10 if val_count is None else val_count
    else:
        n_train = n_train if count is None else min(count, n_train)
        n_val = n_val if val_count is None else min(val_count, n_val)
    return datasets, n_train, n_val


def _check_options(cfg: DataConfig, dtype: str, batch_size: int, workers: int, shard_size: int) -> None:
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"latent dtype must be 'float16' or 'float32', got {dtype!r}")
    if batch_size < 1 or workers < 1 or shard_size < 1:
        raise ConfigError("batch size, workers and shard size must be positive integers")
    if cfg.name == "latents":
        raise ConfigError("the source of extract-latents must be an image dataset, not a latent store")


# -------------------------------------------------------------------------------------------- plan


def _make_plan(
    src: DataConfig, vae: str, datasets: dict, n_train: int, n_val: int, dtype: str, shard_size: int
) -> dict:
    """The ``plan.json`` of an extraction: what ``meta.json`` will hold, less the shard list."""
    from ditscale.data.vae import VAE_SCALE, downsample_factor, load_vae  # lazy: diffusers takes ~4 s to import

    probe = load_vae(vae, device="cpu")
    f, channels = downsample_factor(probe), int(probe.config.latent_channels)
    del probe
    if src.image_size % f:
        raise ConfigError(
            f"image_size {src.image_size} is not divisible by the VAE's downsampling {f}; change data.image_size"
        )
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
    return plan


def read_plan(store: str | Path) -> dict:
    """The parsed ``plan.json`` of a latent store (written first by :func:`extract_latents`, so an
    unfinished store has one too); raises OSError or ValueError when it is missing or not JSON."""
    return json.loads((Path(store) / "plan.json").read_text())


def store_vae(store: str | Path) -> str | None:
    """The VAE (folder or hub id) the latent store ``store`` was extracted with, or None when its
    ``plan.json`` is missing or unreadable."""
    try:
        return read_plan(store).get("vae")
    except (OSError, ValueError, AttributeError):
        return None


def _claim_store(out: Path, plan: dict) -> None:
    """Write ``plan.json`` into ``out``, or check that an unfinished store there has the same plan."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "plan.json").is_file():
        old = read_plan(out)
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise DataError(f"'{out}' holds a different extraction (differs in {', '.join(diff)}); use another --out")
    else:
        atomic_write_json(out / "plan.json", plan)
    for stale in out.glob(".shard-*.tmp"):  # left by a killed run; finished shards were renamed
        stale.unlink()


# ------------------------------------------------------------------------------------------ encoding


class _Extractor:
    """Encodes whole shards of a plan; one per process (the VAE and source datasets are built once)."""

    def __init__(self, out: str, plan: dict, datasets: dict, device: str, batch_size: int):
        from ditscale.data.vae import load_vae  # lazy: diffusers takes ~4 s to import

        self.out, self.plan, self.datasets = Path(out), plan, datasets
        self.device, self.batch_size = device, batch_size
        self.vae = load_vae(plan["vae"], device=device)

    def item(self, g: int) -> dict:
        n_train = self.plan["splits"]["train"]
        return self.datasets["train"][g] if g < n_train else self.datasets["val"][g - n_train]

    def write_shard(self, s: int, progress=None) -> dict:
        from ditscale.data.vae import encode_moments  # lazy: diffusers takes ~4 s to import

        p, name = self.plan, shard_name(s)
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
    return (out / f"{shard_name(s)}.json").is_file() and (out / f"{shard_name(s)}.npy").is_file()


def _encode_shards(
    out: Path, plan: dict, datasets: dict, todo: list[int], device: str, batch_size: int, workers: int, progress: bool
) -> None:
    """Write shards ``todo`` of ``plan``, in this process or in ``workers`` processes of whole shards."""
    shard_size = plan["shard_size"]
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


def _write_meta(out: Path, plan: dict, num_shards: int) -> dict:
    """Write ``meta.json`` (the plan plus every shard's file, start, count and SHA-256) and return it."""
    shards = []
    for s in range(num_shards):
        rec = json.loads((out / f"{shard_name(s)}.json").read_text())
        shards.append({k: rec[k] for k in ("file", "start", "count", "sha256")})
    meta = dict(plan, shards=shards)
    atomic_write_json(out / "meta.json", meta)
    return meta


# ------------------------------------------------------------------------------------- entry point


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
    _check_options(cfg, dtype, batch_size, workers, shard_size)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out).expanduser()
    src = dataclasses.replace(cfg, random_flip=False, captions=cfg.captions or cfg.name == "captions")
    datasets, n_train, n_val = _sources(src, count, val_count)
    plan = _make_plan(src, vae, datasets, n_train, n_val, dtype, shard_size)
    _claim_store(out, plan)
    num_shards = math.ceil(plan["count"] / shard_size)
    todo = [s for s in range(num_shards) if not _finished(out, s)]
    _encode_shards(out, plan, datasets, todo, device, batch_size, workers, progress)
    meta = _write_meta(out, plan, num_shards)
    return dict(meta, shards_written=len(todo), shards_skipped=num_shards - len(todo))
