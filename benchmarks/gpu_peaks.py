"""Measured GPU ceilings: dense matmul FLOP/s per dtype and device-to-device copy bandwidth.

Usage::

    python benchmarks/gpu_peaks.py                      # 8192^3 torch.mm in bf16, fp16, tf32, fp32
    python benchmarks/gpu_peaks.py --n 8192 --repeats 20 --json peaks.json

For each dtype it times ``torch.mm(a, b)`` of n x n random matrices (2 n^3 FLOPs) with CUDA events,
after warm-up, rotating over three input pairs (so repeated products do not re-read the same
operands from L2), and reports the median and best FLOP/s over ``--repeats`` products. "fp32" is
full fp32 (``torch.backends.cuda.matmul.allow_tf32 = False``); "tf32" is the same fp32 inputs with
TF32 tensor cores allowed. The copy bandwidth counts bytes read plus bytes written of a large
``Tensor.copy_``. These are the denominators the other GPU benchmarks use (``gpu_train.py
--peak-tflops``); datasheet figures are only leads (H100 SXM: 989 TFLOP/s dense bf16).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch


def time_ms(fn, repeats: int, warmup: int = 3) -> list[float]:
    """Per-call milliseconds of ``fn()`` measured with CUDA events (one event pair per call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def matmul_peak(n: int, dtype_name: str, repeats: int) -> dict:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32}[dtype_name]
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype_name == "tf32"
    try:
        pairs = [
            (torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype))
            for _ in range(3)
        ]
        c = torch.empty(n, n, device="cuda", dtype=dtype)
        i = [0]

        def step():
            a, b = pairs[i[0] % len(pairs)]
            i[0] += 1
            torch.mm(a, b, out=c)

        ms = time_ms(step, repeats)
        # check against a float64 reference on a slice (the result must be right, not just fast)
        a, b = pairs[0]
        torch.mm(a, b, out=c)
        ref = a[:256].double() @ b.double()
        rel = float((c[:256].double() - ref).norm() / ref.norm())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    flops = 2.0 * n**3
    return {
        "dtype": dtype_name,
        "n": n,
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "median_tflops": flops / statistics.median(ms) / 1e9,
        "best_tflops": flops / min(ms) / 1e9,
        "rel_err_vs_fp64": rel,
        "repeats": repeats,
    }


def copy_bandwidth(mbytes: int, repeats: int) -> dict:
    src = torch.randn(mbytes * 2**20 // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), repeats)
    moved = 2 * src.numel() * 4
    return {
        "bytes_moved": moved,
        "median_ms": statistics.median(ms),
        "median_tb_per_s": moved / statistics.median(ms) / 1e9,
        "best_tb_per_s": moved / min(ms) / 1e9,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--dtypes", nargs="*", default=["bf16", "fp16", "tf32", "fp32"])
    p.add_argument("--copy-mb", type=int, default=2048)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    props = torch.cuda.get_device_properties(0)
    info = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sms": props.multi_processor_count,
        "memory_gib": props.total_memory / 2**30,
    }
    rows = [matmul_peak(args.n, d, args.repeats) for d in args.dtypes]
    copy = copy_bandwidth(args.copy_mb, args.repeats)
    result = {**info, "matmul": rows, "copy": copy}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    print(
        f"{info['device']}, torch {info['torch']} (CUDA {info['cuda']}), {info['sms']} SMs, "
        f"{info['memory_gib']:.1f} GiB"
    )
    print("| dtype | n | median ms | median TFLOP/s | best TFLOP/s | rel. error vs fp64 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['n']} | {r['median_ms']:.3f} | {r['median_tflops']:.1f} | {r['best_tflops']:.1f} | "
            f"{r['rel_err_vs_fp64']:.1e} |"
        )
    print(
        f"device-to-device copy ({args.copy_mb} MiB, read + write): median {copy['median_tb_per_s']:.2f} TB/s, "
        f"best {copy['best_tb_per_s']:.2f} TB/s"
    )


if __name__ == "__main__":
    main()
