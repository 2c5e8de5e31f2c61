"""The quality stage's CPU work with glibc's default allocator and with ``retain_freed_memory()``.

Usage::

    python benchmarks/sampling_allocator.py                 # w96, 5 rounds, 2 threads
    python benchmarks/sampling_allocator.py --width 64 --rounds 3

One unit of work is what the quickstart's quality stage does per 250 images of one model: a batch of
250 class-conditional 32x32 images drawn with 25 Euler steps of the flow sampler by a depth-2 DiT of
the quickstart's family (random weights: the speed does not depend on them), then the shipped shapes
evaluator's features and scene predictions of those images. The allocator is a process setting, so
each variant runs in its own spawned process (``default``: glibc's policy; ``retained``:
:func:`ditscale.models.kernels.retain_freed_memory`, what ``sample_npz`` and the evaluators' loaders
now set on CPU), timed round-robin (A, B, A, B, ...) with the matmul peak measured before and after.
Both processes must produce the same images and features bit for bit (checked: SHA-256).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, matmul_peak, median  # noqa: E402

from ditscale.diffusion import create_diffusion  # noqa: E402
from ditscale.generate.sample import sample_images  # noqa: E402
from ditscale.metrics.evaluate import shapes_features  # noqa: E402
from ditscale.metrics import shapes_evaluator  # noqa: E402
from ditscale.models import DiT, DiTConfig  # noqa: E402
from ditscale.models.kernels import retain_freed_memory  # noqa: E402

BATCH, STEPS = 250, 25  # the quickstart preset's quality.batch_size and quality.steps


def _unit(model, diffusion, evaluator, seed: int) -> str:
    """Sample one batch, score it; the SHA-256 of the images and features (the same in both processes)."""
    labels = torch.arange(BATCH) % model.config.num_classes
    images = sample_images(model, diffusion, labels=labels, steps=STEPS, seed=seed, progress=False, batch_size=BATCH)
    features = shapes_features(evaluator, images)
    evaluator.predict(images)
    return hashlib.sha256(images.tobytes() + np.ascontiguousarray(features).tobytes()).hexdigest()


def _worker(conn, retained: bool, width: int, threads: int) -> None:
    """A persistent process with one allocator setting: times one unit of work per request."""
    if retained:
        retain_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = DiTConfig(input_size=32, patch_size=4, in_channels=3, hidden_size=width, depth=2,
                    num_heads=width // 32, num_classes=6, learn_sigma=False, block="in_context")  # fmt: skip
    model, diffusion = DiT(cfg).eval(), create_diffusion({"kind": "flow"})
    evaluator = _load_evaluator_plain()
    while (msg := conn.recv()) != "quit":
        t0 = time.perf_counter()
        digest = _unit(model, diffusion, evaluator, seed=msg)
        conn.send((time.perf_counter() - t0, digest))


def _load_evaluator_plain():
    """The shipped evaluator, read without the public loader, whose allocator call would change the
    ``default`` process's setting."""
    return shapes_evaluator._load(shapes_evaluator.DEFAULT_WEIGHTS, "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=96, help="the DiT's width (the quickstart's top budget: 96)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each process (the stage's: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak0, load0 = matmul_peak(), load_average()
    ctx, conns, procs = mp.get_context("spawn"), {}, []
    for retained in (False, True):
        parent, child = ctx.Pipe()
        procs.append(ctx.Process(target=_worker, args=(child, retained, args.width, args.threads), daemon=True))
        procs[-1].start()
        conns["retained" if retained else "default"] = parent
    times: dict[str, list[float]] = {name: [] for name in conns}
    digests: dict[str, set[str]] = {name: set() for name in conns}
    for r in range(args.rounds + 1):  # round 0 warms up (caches, thread pools, the allocator's heap)
        for name, conn in conns.items():
            conn.send(r)
            seconds, digest = conn.recv()
            digests[name].add(f"{r}:{digest}")
            if r > 0:
                times[name].append(seconds)
    for conn in conns.values():
        conn.send("quit")
    for proc in procs:
        proc.join()
    peak = max(peak0, matmul_peak())
    same = digests["default"] == digests["retained"]
    print(f"w{args.width}-d2 at 32 px, batch {BATCH}, {STEPS} Euler steps + shapes evaluator; {args.threads} thread(s)")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s ({args.threads} threads, best of before/after); load {load0:.2f}")
    print("\n| allocator | seconds per 250 images (median) | images/s | / default |\n|---|---:|---:|---:|")
    base = median(times["default"])
    for name, values in times.items():
        t = median(values)
        print(f"| {name} | {t:.2f} | {BATCH / t:.1f} | {t / base:.2f} |")
    print(f"\nsame images and features bit for bit: {same}")
    if not same:
        raise SystemExit("the two allocator settings gave different numbers")


if __name__ == "__main__":
    main()
