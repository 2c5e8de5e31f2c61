"""ADM-style ``.npz`` sample batches (DiT's ``sample_ddp.py``): the file, and the resumable writer split across ranks.

A batch holds ``arr_0`` uint8 (N, H, W, 3) (the key ADM's FID suite reads) and, where known,
``labels`` int64 (N,), ``label_names`` str (num_classes,) and ``captions`` str (N,), in that order
(:data:`BATCH_KEYS`); string arrays are unicode, so ``np.load(allow_pickle=False)`` reads them.
:func:`write_batch` is the one writer of that layout (reference batches use it too).

At evaluation scale (50k images), :func:`sample_npz` writes such a file in chunks seeded by
(seed, chunk) alone (:func:`derived_seed`): a killed run resumes where it stopped, and ``torchrun``
ranks split the chunks yet write the same file as one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ditscale.diffusion.protocol import Diffusion
from ditscale.errors import ConfigError, DataError
from ditscale.generate.sample import (
    check_guidance,
    check_vae,
    resolve_guided_channels,
    sample_images,
    sampler_and_steps,
)
from ditscale.io import atomic_write_json, atomic_write_npz
from ditscale.models.kernels import retain_freed_memory_on

BATCH_KEYS = ("arr_0", "labels", "label_names", "captions")  # the arrays of a batch file, in file order
SAMPLES_FORMAT = "ditscale-samples"  # the "format" of FILE.parts/plan.json
# a text encoder: captions -> (context (n, L, D), mask (n, L))
EncodeCaptions = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]


def save_npz(images: np.ndarray, path: str | Path) -> Path:
    """Write uint8 images ``(N, H, W, 3)`` to ``.npz`` under key ``"arr_0"`` (ADM's FID suite format), atomically."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(f"expected a uint8 array (N, H, W, 3), got {images.dtype} {images.shape}")
    return atomic_write_npz(path, {"arr_0": images})


def write_batch(out: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays of a batch (those of :data:`BATCH_KEYS` present) to ``out`` in file order, atomically."""
    return atomic_write_npz(out, {k: arrays[k] for k in BATCH_KEYS if k in arrays})


def image_progress(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar over images (``enabled`` False: silent)."""
    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


# -- sample batches at evaluation scale (DiT's sample_ddp.py): chunked, resumable, split across ranks --
def derived_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed hashed from ``seed`` and non-negative ``keys`` (numpy's ``SeedSequence``).

    :func:`sample_npz` draws chunk ``k``'s labels from ``derived_seed(seed, k)`` and the noise of
    its batch ``b`` from ``derived_seed(seed, k, b + 1)``: pure functions of those numbers, so the
    images do not depend on which process draws which chunk, nor on how often the run was resumed.
    """
    if seed < 0 or any(k < 0 for k in keys):
        raise ConfigError(f"seeds must be non-negative, got seed={seed} and keys {keys}")
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def torchrun_ranks() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` of a ``torchrun`` launch (its environment), (0, 1, 0) otherwise:
    the ``rank`` and ``world_size`` that :func:`sample_npz` splits chunks by."""
    try:
        return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def parts_dir(out: str | Path) -> Path:
    """The folder of finished chunks of :func:`sample_npz` writing ``out``: ``FILE.npz.parts/``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _weights_digest(module: torch.nn.Module | None) -> str | None:
    """SHA-256 of a module's state (names, dtypes, shapes, bytes): a resume must use the same weights."""
    if module is None:
        return None
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass
class _Chunks:
    """How :func:`sample_npz` draws chunk ``k`` (images ``k * chunk_size`` onwards) from (seed, k) alone."""

    model: torch.nn.Module
    diffusion: Diffusion
    num_samples: int
    chunk_size: int
    seed: int
    batch_size: int
    sampling: dict[str, Any]  # sampler, steps, cfg_scale, guided_channels, vae, device of sample_images
    captions: Sequence[str] | None = None
    encode_captions: EncodeCaptions | None = None

    @property
    def count(self) -> int:
        return math.ceil(self.num_samples / self.chunk_size)

    def bounds(self, k: int) -> tuple[int, int]:
        """Images ``[lo, hi)`` of chunk ``k``."""
        return k * self.chunk_size, min(self.num_samples, (k + 1) * self.chunk_size)

    def conditions(self, k: int) -> dict[str, np.ndarray]:
        """Chunk ``k``'s ``labels`` int64 (n,) (uniform, as sample_ddp.py) or cycled ``captions`` str (n,)."""
        lo, hi = self.bounds(k)
        cfg = self.model.config
        if cfg.conditioning == "class":
            g = torch.Generator().manual_seed(derived_seed(self.seed, k))
            return {"labels": torch.randint(0, cfg.num_classes, (hi - lo,), generator=g).numpy().astype(np.int64)}
        if cfg.conditioning == "text":
            return {"captions": np.array([self.captions[i % len(self.captions)] for i in range(lo, hi)], dtype=str)}
        return {}

    def batch_kwargs(self, conditions: dict[str, np.ndarray], start: int, stop: int) -> dict[str, Any]:
        """The condition arguments of :func:`sample_images` for images ``start .. stop`` of a chunk."""
        if "labels" in conditions:
            return {"labels": torch.from_numpy(conditions["labels"][start:stop])}
        if "captions" in conditions:
            with torch.no_grad():
                context, mask = self.encode_captions([str(c) for c in conditions["captions"][start:stop]])
            return {"context": context, "context_mask": mask}
        return {"num_images": stop - start}

    def draw(self, k: int, bar: tqdm) -> dict[str, np.ndarray]:
        """Chunk ``k``: ``arr_0`` uint8 (n, H, W, 3) plus its labels or captions; advances ``bar`` per batch."""
        lo, hi = self.bounds(k)
        conditions, images = self.conditions(k), []
        for b, start in enumerate(range(0, hi - lo, self.batch_size)):
            stop = min(hi - lo, start + self.batch_size)
            images.append(
                sample_images(
                    self.model,
                    self.diffusion,
                    **self.batch_kwargs(conditions, start, stop),
                    **self.sampling,
                    seed=derived_seed(self.seed, k, b + 1),
                    progress=False,
                    batch_size=self.batch_size,
                )
            )
            bar.update(stop - start)
        return {"arr_0": np.concatenate(images), **conditions}


def _check_npz_args(
    model: torch.nn.Module,
    num_samples: int,
    chunk_size: int,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    captions: Sequence[str] | None,
    encode_captions: EncodeCaptions | None,
    label_names: Sequence[str] | None,
) -> None:
    """One-line ConfigErrors for what :func:`sample_npz` cannot do, before any file is touched."""
    cfg = model.config
    if min(num_samples, chunk_size, batch_size) < 1:
        raise ConfigError(
            f"num_samples, chunk_size and batch_size must be >= 1, got {num_samples}, {chunk_size}, {batch_size}"
        )
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed}")
    if not 0 <= rank < world_size:
        raise ConfigError(
            f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size}); check RANK and WORLD_SIZE"
        )
    if cfg.conditioning == "text" and (not captions or encode_captions is None):
        raise ConfigError("this model is text-conditional: pass captions (cycled over the samples) and encode_captions")
    if cfg.conditioning != "text" and captions is not None:
        raise ConfigError(f"captions are for text-conditional models; this one has conditioning={cfg.conditioning!r}")
    if label_names is not None and cfg.conditioning == "class" and len(label_names) != cfg.num_classes:
        raise ConfigError(
            f"{len(label_names)} label names were given for a model of {cfg.num_classes} classes; "
            "give one name per class"
        )


def _npz_plan(job: _Chunks, label_names: Sequence[str] | None) -> dict[str, Any]:
    """What the chunks of one sampling run share; a resume (or another rank) must match it exactly."""
    s = job.sampling
    captions = None if job.captions is None else hashlib.sha256("\n".join(job.captions).encode()).hexdigest()
    return {
        "format": SAMPLES_FORMAT,
        "num_samples": job.num_samples,
        "chunk_size": job.chunk_size,
        "seed": job.seed,
        "batch_size": job.batch_size,
        "sampler": s["sampler"],
        "steps": s["steps"],
        "cfg_scale": float(s["cfg_scale"]),
        "guided_channels": s["guided_channels"],
        "device": torch.device(s["device"]).type,
        "model": _weights_digest(job.model),
        "vae": _weights_digest(s["vae"]),
        "captions": captions,
        "label_names": None if label_names is None else [str(n) for n in label_names],
    }


def _plan_digest(plan: dict[str, Any]) -> str:
    """SHA-256 of a sampling plan (its JSON, keys sorted): stored as ``plan`` in each chunk it made."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def _read_plan(path: Path) -> dict[str, Any] | None:
    """``plan.json`` as a dict; None when absent, or not a JSON object (damaged: the chunks are then
    checked one by one against the new plan, by the digest each one holds)."""
    try:
        old = json.loads(path.read_bytes())
    except (OSError, ValueError):  # absent, or not JSON
        return None
    return old if isinstance(old, dict) else None


def _chunk_digest(path: Path) -> str | None:
    """The plan digest a chunk file holds; None when it holds none or cannot be read (cut short)."""
    try:
        with np.load(path, allow_pickle=False) as part:
            digest = part["plan"] if "plan" in part.files else None
            return str(digest) if digest is not None and digest.shape == () and digest.dtype.kind == "U" else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def _claim_parts(parts: Path, plan: dict[str, Any]) -> None:
    """Write ``plan.json`` into ``parts``, or check that the chunks already there belong to the same plan;
    then discard every chunk file not made by this plan (a stale chunk, one cut short, one of an older version)."""
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / "plan.json"
    old = _read_plan(path)
    if old is not None and old != plan:
        diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        raise ConfigError(
            f"'{parts}' holds chunks of another sampling run (it differs in {', '.join(diff)}); "
            "delete that folder or write to another .npz"
        )
    if old is None:
        atomic_write_json(path, plan)
    digest = _plan_digest(plan)
    for chunk in sorted(parts.glob("chunk_*.npz")):
        if _chunk_digest(chunk) != digest:
            chunk.unlink(missing_ok=True)


@contextlib.contextmanager
def _hold_rank(out: Path, parts: Path, rank: int) -> Iterator[None]:
    """Hold ``parts/rank_<rank>.lock`` (an ``flock``, freed by the kernel when its holder dies) for the
    block: a second process sampling ``out`` as the same rank is refused with one line (it would redraw
    the first one's chunks, then wait for chunks the first one has already assembled and deleted)."""
    path = parts / f"rank_{rank:05d}.lock"
    while True:
        parts.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"'{out}' is in use: another process (pid {holder}) is sampling it as rank {rank} ({path}); "
                "wait for it to finish, or write to another .npz"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its last holder had already removed
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a waiter that opened it sees another inode and retries
        os.close(fd)


def _wait_for(files: list[Path], timeout_s: float, poll_s: float = 1.0) -> None:
    """Return once every file exists; a ConfigError after ``timeout_s`` seconds (other ranks unfinished)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [f for f in files if not f.is_file()]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"{len(missing)} of {len(files)} chunks (first: {missing[0].name}) are still missing in "
                f"'{missing[0].parent}' after {timeout_s:g} s; finish the other ranks, "
                "or rerun with world_size 1 to draw them"
            )
        time.sleep(poll_s)


def _barrier(world_size: int) -> None:
    """Wait for the other ranks when the caller initialised a process group (sampling needs none)."""
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _assemble(out: Path, files: list[Path], job: _Chunks, digest: str, label_names: Sequence[str] | None) -> Path:
    """Concatenate the chunk files (each checked against the plan) into ``out`` atomically, then delete their folder."""
    images, conditions = None, {}
    for k, f in enumerate(files):
        lo, hi = job.bounds(k)
        if _chunk_digest(f) != digest:
            raise DataError(f"chunk file '{f}' was not made by this sampling run (or is damaged); delete it and rerun")
        with np.load(f, allow_pickle=False) as part:
            if len(part["arr_0"]) != hi - lo:
                n = len(part["arr_0"])
                raise DataError(f"chunk file '{f}' holds {n} images, not {hi - lo}; delete it and rerun")
            if images is None:  # preallocated: 50k images are not held twice
                images = np.empty((job.num_samples, *part["arr_0"].shape[1:]), np.uint8)
            images[lo:hi] = part["arr_0"]
            for key in ("labels", "captions"):
                if key in part:
                    conditions.setdefault(key, []).append(part[key])
    arrays = {"arr_0": images, **{k: np.concatenate(v) for k, v in conditions.items()}}
    if label_names is not None:
        arrays["label_names"] = np.array([str(n) for n in label_names], dtype=str)
    write_batch(out, arrays)
    shutil.rmtree(files[0].parent, ignore_errors=True)
    return out


def _sampling(
    model: torch.nn.Module,
    diffusion: Diffusion,
    sampler: str | None,
    steps: int | str | None,
    cfg_scale: float,
    guided_channels: int | str | None,
    vae: Any,
    device: str | torch.device,
) -> dict[str, Any]:
    """The :func:`sample_images` arguments every chunk shares, defaults filled in (guidance and VAE checked)."""
    check_guidance(model.config, cfg_scale)
    check_vae(model.config, vae)
    sampler, steps = sampler_and_steps(diffusion, sampler, steps)
    return {
        "sampler": sampler,
        "steps": steps,
        "cfg_scale": cfg_scale,
        "vae": vae,
        "device": device,
        "guided_channels": resolve_guided_channels(diffusion, guided_channels, model.config.in_channels),
    }


def _draw_chunks(job: _Chunks, files: list[Path], digest: str, rank: int, world_size: int, progress: bool) -> None:
    """Draw this rank's chunks (``k % world_size == rank``) not yet in ``files``, each written atomically
    with the ``digest`` of its plan."""
    mine = range(rank, job.count, world_size)
    size = {k: job.bounds(k)[1] - job.bounds(k)[0] for k in mine}
    done = sum(size[k] for k in mine if files[k].is_file())
    desc = "sampling" if world_size == 1 else f"sampling (rank {rank}/{world_size})"
    with image_progress(sum(size.values()), done, desc, progress) as bar:
        for k in mine:
            if not files[k].is_file():
                atomic_write_npz(files[k], {**job.draw(k, bar), "plan": np.array(digest)})


def sample_npz(
    model: torch.nn.Module,
    diffusion: Diffusion,
    out: str | Path,
    *,
    num_samples: int,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | str | None = None,
    cfg_scale: float = 1.0,
    guided_channels: int | str | None = "auto",
    captions: Sequence[str] | None = None,
    encode_captions: EncodeCaptions | None = None,
    label_names: Sequence[str] | None = None,
    vae: Any = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    chunk_size: int = 1000,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    wait_timeout_s: float = 3600.0,
) -> Path | None:
    """Sample N images into an ADM-style ``.npz``, as DiT's ``sample_ddp.py``: resumable, split across ranks.

    The file holds ``arr_0`` uint8 (N, H, W, 3), and ``labels`` int64 (N,) (class models: uniform
    random classes), ``label_names`` str (num_classes,) (when given), ``captions`` str (N,) (text
    models: ``captions`` cycled, encoded per batch by ``encode_captions(list[str]) -> (context
    (n, L, D), mask (n, L))``). String arrays are unicode: ``np.load(allow_pickle=False)`` reads them.

    Work goes in chunks of ``chunk_size`` images; chunk k's labels and noise come from (seed, k)
    alone (:func:`derived_seed`), so one process and any number of ranks write the same file. Each
    finished chunk is written atomically to ``FILE.parts/chunk_000k.npz`` with the digest of its plan
    (:func:`_plan_digest`); a rerun skips them (the other arguments and the weights must be the same:
    ``plan.json`` records them) and discards any chunk another plan made. Each rank holds
    ``FILE.parts/rank_<rank>.lock`` while it works: a second process of the same rank is refused. Rank ``rank`` of
    ``world_size`` draws chunks ``k % world_size == rank``; rank 0 then waits (a barrier when a
    process group is initialised, else polling up to ``wait_timeout_s`` seconds) for every chunk,
    writes FILE atomically, removes the parts and returns FILE; the other ranks return None.
    The other arguments are those of :func:`sample_images`; ``batch_size`` must also stay the same.
    An existing FILE is replaced: this samples anew (only FILE.parts/ is resumed).
    """
    _check_npz_args(
        model, num_samples, chunk_size, batch_size, seed, rank, world_size, captions, encode_captions, label_names
    )
    label_names = label_names if model.config.conditioning == "class" else None  # names go with labels
    retain_freed_memory_on(device)  # large batches: reuse freed memory instead of page-faulting it in per call
    sampling = _sampling(model, diffusion, sampler, steps, cfg_scale, guided_channels, vae, device)
    captions = None if captions is None else list(captions)
    job = _Chunks(model, diffusion, num_samples, chunk_size, seed, batch_size, sampling, captions, encode_captions)
    out, parts = Path(out), parts_dir(out)
    plan = _npz_plan(job, label_names)
    files = [parts / f"chunk_{k:06d}.npz" for k in range(job.count)]
    with _hold_rank(out, parts, rank):
        _claim_parts(parts, plan)
        _draw_chunks(job, files, _plan_digest(plan), rank, world_size, progress)
        _barrier(world_size)
        if rank != 0:
            return None
        _wait_for(files, wait_timeout_s)
        return _assemble(out, files, job, _plan_digest(plan), label_names)
