"""GPU figures of the quality path: FID-Inception features, DiT-XL/2 sampling, and sample_npz on CUDA.

Usage::

    python benchmarks/gpu_quality.py                  # on a GPU machine; prints one JSON line per case
    python benchmarks/gpu_quality.py --dry-run        # the same code path on the CPU in seconds (a test runs it)

Cases (random weights: only speed and determinism are measured, not quality):

- ``inception``: images/s of :func:`ditscale.metrics.inception.inception_features` (ADM
  preprocessing: TF1 resize of 256x256 uint8 images to 299, full fp32 as the module runs it), and
  the CPU seconds of the statistics and the Fréchet distance of 2048-wide features (``sqrtm``).
- ``sample-fp32`` / ``sample-bf16``: DiT-XL/2 (``--model``; latent 32x32x4) sampling with classifier-free
  guidance (a doubled batch), DDIM steps, fp32 vs bf16 autocast: images/s and model TFLOP/s
  (2 x forward MACs x 2 for guidance x steps per image; ``ditscale.flops.forward_macs``).
- ``sample-npz-split``: :func:`ditscale.generate.sample_npz` of a tiny DiT on the device, once in
  one call and once as ranks 0/1 of 2: the two files must be equal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ditscale.diffusion import create_diffusion
from ditscale.flops import forward_macs
from ditscale.generate import sample_latents, sample_npz
from ditscale.metrics.frechet import feature_statistics, frechet_distance
from ditscale.metrics.inception import FIDInceptionV3, inception_features
from ditscale.models import create_model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def inception_case(device: str, n: int, batch_size: int) -> dict:
    model = FIDInceptionV3().to(device)
    images = np.random.default_rng(0).integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    inception_features(model, images[:batch_size], batch_size=batch_size, device=device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    feats = inception_features(model, images, batch_size=batch_size, device=device)
    _sync(device)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    mu, sigma = feature_statistics(feats["pool"])
    fd = frechet_distance(mu, sigma, mu + 0.01, sigma)
    return {
        "case": "inception",
        "images": n,
        "batch_size": batch_size,
        "images_per_s": n / seconds,
        "stats_and_fd_cpu_s": time.perf_counter() - t1,
        "fd_check": fd,
    }


def sample_case(device: str, n: int, steps: int, bf16: bool, name: str = "DiT-XL/2") -> dict:
    torch.manual_seed(0)
    model = create_model(name, input_size=32).to(device)
    diffusion = create_diffusion({"learn_sigma": True})
    ctx = (
        torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.startswith("cuda") else contextlib.nullcontext()
    )

    def run():
        with ctx:
            return sample_latents(
                model,
                diffusion,
                num_images=n,
                sampler="ddim",
                steps=steps,
                cfg_scale=4.0,
                device=device,
                progress=False,
                batch_size=n,
            )

    run()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    x = run()
    _sync(device)
    seconds = time.perf_counter() - t0
    flops = 2 * forward_macs(model.config).total * 2 * steps * n  # 2 FLOPs/MAC, doubled guidance batch
    return {
        "case": f"sample-{'bf16' if bf16 else 'fp32'}",
        "model": name,
        "images": n,
        "steps": steps,
        "images_per_s": n / seconds,
        "model_tflops": flops / seconds / 1e12,
        "finite": bool(torch.isfinite(x).all()),
    }


def split_case(device: str) -> dict:
    torch.manual_seed(0)
    model = create_model(
        {
            "input_size": 8,
            "in_channels": 3,
            "patch_size": 2,
            "hidden_size": 64,
            "depth": 2,
            "num_heads": 2,
            "num_classes": 6,
            "learn_sigma": False,
        }
    ).to(device)
    diffusion = create_diffusion({"kind": "flow"})
    kw = dict(num_samples=40, seed=3, steps=4, chunk_size=16, batch_size=8, device=device, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        one = sample_npz(model, diffusion, Path(tmp) / "one.npz", **kw)
        sample_npz(model, diffusion, Path(tmp) / "two.npz", rank=1, world_size=2, **kw)
        two = sample_npz(model, diffusion, Path(tmp) / "two.npz", rank=0, world_size=2, **kw)
        a, b = np.load(one), np.load(two)
        equal = bool(np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["labels"], b["labels"]))
    return {"case": "sample-npz-split", "equal": equal}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=5000, help="images through Inception")
    p.add_argument("--batch-size", type=int, default=250, help="Inception batch")
    p.add_argument("--sample-images", type=int, default=128, help="DiT-XL/2 images per sampling case")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps per sampling case")
    p.add_argument("--model", default="DiT-XL/2", help="the DiT of the sampling cases")
    p.add_argument("--dry-run", action="store_true", help="CPU, 2 images through Inception, 1 DiT-S/8 image, 1 step")
    args = p.parse_args()
    if args.dry_run:
        args.device, args.images, args.batch_size, args.sample_images, args.steps = "cpu", 2, 2, 1, 1
        args.model = "DiT-S/8"
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__}), flush=True)
    for case in (
        lambda: inception_case(args.device, args.images, args.batch_size),
        lambda: sample_case(args.device, args.sample_images, args.steps, bf16=False, name=args.model),
        lambda: sample_case(args.device, args.sample_images, args.steps, bf16=True, name=args.model),
        lambda: split_case(args.device),
    ):
        print(json.dumps(case()), flush=True)


if __name__ == "__main__":
    main()
