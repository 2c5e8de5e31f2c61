"""Forward+backward throughput of DiT configs, as a fraction of this machine's measured matmul peak.

Usage::

    python benchmarks/model_throughput.py                 # default configs, CPU fp32
    python benchmarks/model_throughput.py --configs DiT-S/2 DiT-B/4 --batch-size 8 --iters 5
    python benchmarks/model_throughput.py --device cuda --dtype bf16 --compile   # on a GPU

For each config it times ``loss = model(x, t, y).square().mean(); loss.backward()`` (no optimizer
step, no data pipeline: that is ``train_throughput.py``) and reports:

- images/s,
- model FLOP/s = images/s x 3 x 2 x forward MACs per image (the exact count of ``ditscale.flops``:
  backward costs twice the forward, 2 FLOPs per multiply-accumulate),
- the fraction of the peak matmul FLOP/s measured in the same run (a large square ``torch.mm``,
  best of 5, measured before and after the configs; the higher value is kept).

The peak is measured, not looked up, so the fraction is comparable across machines.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ditscale.flops import forward_macs
from ditscale.models import create_model
from ditscale.models.config import resolve_config

DEFAULT_CONFIGS = [
    # (label, model, overrides)
    (
        "tiny pixel (32px, p4, d4, w128)",
        {
            "input_size": 32,
            "patch_size": 4,
            "in_channels": 3,
            "hidden_size": 128,
            "depth": 4,
            "num_heads": 4,
            "num_classes": 10,
        },
        {},
    ),
    ("DiT-S/8 latent 32", "DiT-S/8", {"input_size": 32}),
    ("DiT-S/4 latent 32", "DiT-S/4", {"input_size": 32}),
    ("DiT-S/2 latent 32", "DiT-S/2", {"input_size": 32}),
    ("DiT-B/4 latent 32", "DiT-B/4", {"input_size": 32}),
]


def measure_matmul_peak(n: int | None = None, repeats: int = 5, device: str = "cpu", dtype=torch.float32) -> float:
    """Best-of-``repeats`` FLOP/s of an n x n x n matmul (2 n^3 FLOPs) on ``device`` in ``dtype``.

    n defaults to 2048 on a CPU and 8192 on a GPU: a 2048^3 product does not fill an H100 (it
    measured 348-402 of 786 TFLOP/s bf16 there, so fractions of it exceeded 1; docs/benchmarks.md).
    """
    n = n or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def bench_config(model_spec, overrides, *, batch_size: int, iters: int, device: str, dtype, compile: bool) -> dict:
    cfg = resolve_config(model_spec, **overrides)
    model = create_model(cfg).to(device).train()
    if compile:
        model = torch.compile(model)
    x = torch.randn(batch_size, cfg.in_channels, cfg.input_size, cfg.input_size, device=device)
    t = torch.randint(0, 1000, (batch_size,), device=device).float()
    y = torch.randint(0, max(cfg.num_classes, 1), (batch_size,), device=device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            loss = model(x, t, y).float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up (and compile)
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]  # median step time
    macs = forward_macs(cfg).total
    images_per_s = batch_size / sec
    return {
        "forward_gmacs": macs / 1e9,
        "batch_size": batch_size,
        "step_s": sec,
        "images_per_s": images_per_s,
        "model_flops_per_s": images_per_s * 3 * 2 * macs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="*", help="paper model names (default: a fixed set of small configs)")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    configs = DEFAULT_CONFIGS if not args.configs else [(n, n, {"input_size": args.input_size}) for n in args.configs]

    peak_before = measure_matmul_peak(device=args.device, dtype=dtype)
    rows = []
    for label, spec, overrides in configs:
        r = bench_config(
            spec,
            overrides,
            batch_size=args.batch_size,
            iters=args.iters,
            device=args.device,
            dtype=dtype,
            compile=args.compile,
        )
        r["config"] = label
        rows.append(r)
    # The peak is taken before and after the configs and the higher one kept: a single short
    # measurement on a CPU can land in a slow moment and make the fractions exceed 1.
    peak = max(peak_before, measure_matmul_peak(device=args.device, dtype=dtype))
    for r in rows:
        r["fraction_of_peak"] = r["model_flops_per_s"] / peak
    if args.json:
        print(
            json.dumps(
                {
                    "peak_matmul_flops_per_s": peak,
                    "device": args.device,
                    "dtype": args.dtype,
                    "threads": torch.get_num_threads(),
                    "rows": rows,
                },
                indent=2,
            )
        )
        return
    print(
        f"device {args.device}, {args.dtype}, {torch.get_num_threads()} threads; "
        f"measured matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print("| config | fwd GMACs/img | batch | images/s | model GFLOP/s | fraction of peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['config']} | {r['forward_gmacs']:.3f} | {r['batch_size']} | {r['images_per_s']:.1f} | "
            f"{r['model_flops_per_s'] / 1e9:.1f} | {r['fraction_of_peak']:.2f} |"
        )


if __name__ == "__main__":
    main()
