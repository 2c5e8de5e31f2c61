"""Speed of the CPU attention paths per shape, forward+backward, as a fraction of the measured matmul peak.

Usage::

    python benchmarks/attention_paths.py                  # default shape grid, torch's default threads
    python benchmarks/attention_paths.py --threads 1      # one thread (a study worker of `workers: 2`)
    python benchmarks/attention_paths.py --threads 1 --forward-only     # no backward (sampling)
    python benchmarks/attention_paths.py --shapes 16x4x66x32 64x2x258x64 --rounds 9

Paths, each timed on the model's layout (a (B, T, 3 H d) qkv projection split into heads, the
output merged back to (B, T, H d), as ``ditscale.models.dit.Attention`` does), forward + backward:

- ``flash``: ``F.scaled_dot_product_attention`` inside ``sdpa_kernel(FLASH_ATTENTION)`` (what
  SDPA picks on CPU by default),
- ``math``: the same inside ``sdpa_kernel(MATH)``,
- ``explicit``: ``ditscale.models.kernels.explicit_attention`` (``softmax(q k^T / sqrt(d)) v`` with
  ``baddbmm``/``bmm``, the scale folded into the first GEMM).

The process's allocator keeps freed memory (``kernels.retain_freed_memory()``, which the explicit
path's first call makes in the model too), so every path is timed under the same setting. The
paths are timed round-robin (flash, math, explicit, flash, ...) and the median of ``--rounds``
calls is kept. Attention FLOPs per call = 3 (forward + backward) x 2 x (2 B H T^2 d) MACs
(``--forward-only``: the forward alone, 1 x, as in sampling). The
table gives each path's fraction of the matmul peak (a 2048^3 fp32 ``torch.mm``, best of 5,
measured before and after the grid; the higher value is kept), the fastest path, the path
``ditscale.models.kernels.attention_path`` picks, the picked path's time / the fastest time, and
flash's time / the picked path's time (the speed-up over SDPA's default, what the model used before),
with geometric means over the grid.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_times, load_average, matmul_peak, median  # noqa: E402

from ditscale.models.kernels import attention_path, explicit_attention, retain_freed_memory  # noqa: E402

# (batch, heads, tokens, head_dim). Tokens = image tokens + 2 condition tokens of the in-context
# design (16, 32, 64, 128, 256 image tokens).
TOKENS = (18, 34, 66, 130, 258)
DEFAULT_SHAPES = [(16, 4, t, d) for t in TOKENS for d in (4, 16, 32, 64)] + [
    (b, h, t, d) for b, h in ((8, 1), (8, 8), (64, 2), (64, 16)) for t in (66, 130, 258) for d in (32, 64)
]


def _flash(q, k, v):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v)


def _math(q, k, v):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


PATHS = {"flash": _flash, "math": _math, "explicit": explicit_attention}


def attention_step(fn, batch: int, heads: int, tokens: int, head_dim: int, backward: bool = True):
    """A closure running forward (+ backward) of ``fn`` on the model's qkv layout."""
    width = heads * head_dim
    torch.manual_seed(0)
    qkv = torch.randn(batch, tokens, 3 * width, requires_grad=backward)
    grad = torch.randn(batch, tokens, width)

    def step():
        q, k, v = (p.reshape(batch, tokens, heads, head_dim).transpose(1, 2) for p in qkv.chunk(3, dim=-1))
        out = fn(q, k, v).transpose(1, 2).reshape(batch, tokens, width)
        if backward:
            out.backward(grad)
            qkv.grad = None

    return step


def bench_shape(shape: tuple[int, int, int, int], rounds: int, backward: bool = True) -> dict:
    b, h, t, d = shape
    steps = {name: attention_step(fn, b, h, t, d, backward) for name, fn in PATHS.items()}
    with torch.set_grad_enabled(backward):
        times = interleaved_times(steps, rounds)
    seconds = {name: median(ts) for name, ts in times.items()}
    fastest = min(seconds, key=seconds.get)
    picked = "explicit" if attention_path(b, h, t, t, "cpu", torch.float32, backward) == "explicit" else "flash"
    return {
        "batch": b,
        "heads": h,
        "tokens": t,
        "head_dim": d,
        "flops": (3 if backward else 1) * 2 * 2 * b * h * t * t * d,
        "seconds": seconds,
        "fastest": fastest,
        "picked": picked,
        "picked_over_fastest": seconds[picked] / seconds[fastest],
        "flash_over_picked": seconds["flash"] / seconds[picked],
    }


def parse_shape(text: str) -> tuple[int, int, int, int]:
    b, h, t, d = (int(v) for v in text.lower().split("x"))
    return b, h, t, d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="*", type=parse_shape, help="BxHxTxD (batch, heads, tokens, head_dim)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--forward-only", action="store_true", help="time the forward pass alone (sampling)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    retain_freed_memory()  # as the explicit path's first call does in the model: every path timed with it
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shapes or DEFAULT_SHAPES
    load0 = load_average()
    peak = matmul_peak()
    rows = [bench_shape(s, args.rounds, backward=not args.forward_only) for s in shapes]
    peak = max(peak, matmul_peak())
    for r in rows:
        r["fraction_of_peak"] = {name: r["flops"] / s / peak for name, s in r["seconds"].items()}
    meta = {
        "peak_matmul_flops_per_s": peak,
        "threads": torch.get_num_threads(),
        "forward_only": args.forward_only,
        "load_average": [load0, load_average()],
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps({**meta, "rows": rows}, indent=2))
        return
    print(
        f"{'forward only' if args.forward_only else 'forward+backward'}; CPU fp32, {meta['threads']} threads, "
        f"torch {torch.__version__}; matmul peak {peak / 1e9:.1f} GFLOP/s; "
        f"load average {load0:.2f} -> {meta['load_average'][1]:.2f}"
    )
    names = list(PATHS)
    print(
        "| B | H | T | d | "
        + " | ".join(f"{n} ms" for n in names)
        + " | "
        + " | ".join(f"{n} /peak" for n in names)
        + " | fastest | rule | rule / fastest | speed-up vs flash |"
    )
    print("|" + "---:|" * (4 + 2 * len(names)) + "---|---|---:|---:|")
    for r in rows:
        ms = " | ".join(f"{1e3 * r['seconds'][n]:.2f}" for n in names)
        fr = " | ".join(f"{r['fraction_of_peak'][n]:.3f}" for n in names)
        print(
            f"| {r['batch']} | {r['heads']} | {r['tokens']} | {r['head_dim']} | {ms} | {fr} | {r['fastest']} | "
            f"{r['picked']} | {r['picked_over_fastest']:.2f} | {r['flash_over_picked']:.2f}x |"
        )
    explicit = [r for r in rows if r["picked"] == "explicit"]
    gmean = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")  # noqa: E731
    print(
        f"\nrule / fastest: geometric mean {gmean([r['picked_over_fastest'] for r in rows]):.3f}, worst "
        f"{max(r['picked_over_fastest'] for r in rows):.2f}; on the {len(explicit)} shapes the rule sends to the "
        f"explicit path, flash / explicit: geometric mean {gmean([r['flash_over_picked'] for r in explicit]):.3f}, "
        f"range {min((r['flash_over_picked'] for r in explicit), default=float('nan')):.2f}-"
        f"{max((r['flash_over_picked'] for r in explicit), default=float('nan')):.2f}"
    )


if __name__ == "__main__":
    main()
