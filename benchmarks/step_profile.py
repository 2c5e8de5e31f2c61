"""Where a CPU training step of a quickstart-sized DiT spends its time, by kind of op (torch.profiler).

Usage::

    python benchmarks/step_profile.py                                  # w64-d2-h32-b8 and w128-d4-h64-b32
    python benchmarks/step_profile.py --configs w32-d2-h4-b8 --threads 1 --variant before
    python benchmarks/step_profile.py --configs w64-d2-h32-b8 --top 25 # also the top ops by self time

The step is ``benchmarks/small_models.py``'s (config names ``w{width}-d{depth}-h{head_dim}-b{batch}``):
rectified-flow loss forward, backward, gradient clipping, AdamW, EMA. ``--variant`` picks one of
that script's variants (default ``+fused``: the model's CPU kernels, ``retain_freed_memory()`` and
fused AdamW). The profiler's self CPU time of every op is summed into the groups of :data:`GROUPS`
(first match wins) and printed as shares of the profiled time; the profiler adds a few
microseconds per op, so small models read somewhat more "other" than they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_models import VARIANTS, make_step, parse_config  # noqa: E402

from ditscale.models.kernels import retain_freed_memory  # noqa: E402

# (group, substrings of profiler event names), matched in order.
GROUPS = [
    ("optimizer, clip, EMA", ("Optimizer.", "adam", "foreach", "vector_norm", "clip", "lerp", "addcdiv", "sqrt")),
    ("attention (flash / bmm / softmax)", ("flash_attention", "bmm", "softmax", "masked_fill")),
    ("linear layers (mm / addmm)", ("aten::mm", "aten::addmm", "aten::linear")),
    ("patch embedding (conv)", ("convolution",)),
    ("GELU", ("gelu",)),
    ("LayerNorm", ("layer_norm",)),
    ("copies, cat, layout", ("copy_", "aten::cat", "clone", "contiguous", "_to_copy")),
    (
        "elementwise (add, mul, silu, ...)",
        (
            "aten::add",
            "aten::mul",
            "aten::sub",
            "aten::div",
            "silu",
            "aten::pow",
            "aten::sum",
            "aten::mean",
            "aten::exp",
            "aten::cos",
            "aten::sin",
            "fill_",
        ),
    ),
]


def profile_step(name: str, variant: str, steps: int) -> tuple[dict[str, float], float, list]:
    tuned, options = VARIANTS[variant]
    if tuned:
        retain_freed_memory()
    cfg, batch = parse_config(name)
    step = make_step(cfg, batch, **options)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {g: 0.0 for g, _ in GROUPS} | {"other (dispatch, autograd, views, small ops)": 0.0}
    for e in events:
        group = next((g for g, keys in GROUPS if any(k.lower() in e.key.lower() for k in keys)), None)
        shares[group or "other (dispatch, autograd, views, small ops)"] += e.self_cpu_time_total / total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)
    return shares, total / steps / 1e6, top


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="*", default=["w64-d2-h32-b8", "w128-d4-h64-b32"])
    p.add_argument("--variant", choices=list(VARIANTS), default="+fused")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=0, help="also list the top ops by self CPU time")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: profile_step(name, args.variant, args.steps) for name in args.configs}
    print(f"variant {args.variant}, {args.threads} thread(s); share of the profiled step time")
    print()
    print("| group | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    groups = list(next(iter(results.values()))[0])
    for g in groups:
        print(f"| {g} | " + " | ".join(f"{100 * r[0][g]:.1f}%" for r in results.values()) + " |")
    print("| profiled step ms | " + " | ".join(f"{1e3 * r[1]:.1f}" for r in results.values()) + " |")
    for name, (_, _, top) in results.items():
        if args.top:
            print(f"\n{name}: top {args.top} ops by self CPU time per step")
            for e in top[: args.top]:
                print(
                    f"  {e.key[:60]:60s} {e.self_cpu_time_total / args.steps / 1e3:8.3f} ms  x{e.count // args.steps}"
                )


if __name__ == "__main__":
    main()
