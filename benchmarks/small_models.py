"""Training-step speed of quickstart-sized DiTs on CPU: before/after the CPU kernels, and threads vs processes.

Usage::

    python benchmarks/small_models.py                     # the default ladder, every measurement
    python benchmarks/small_models.py --configs w64-d2-h32-b16 w128-d4-h64-b32 --rounds 9
    python benchmarks/small_models.py --no-procs          # skip the 2-processes x 1-thread runs
    python benchmarks/small_models.py --list              # the ladder's names

The models are the quickstart's kind (``presets/study/quickstart.yaml``): in-context blocks, class
conditioning (6 classes), 16x16 RGB images (or 32x32 where the name says ``px32``), patch 2 (64
image tokens + 2 condition tokens), no learned sigma, rectified flow. A config name
``w{width}-d{depth}-h{head_dim}-b{batch}`` gives the model and the batch size.

One training step is what ``ditscale.train`` does per step on one fixed batch (the pattern of
``benchmarks/train_throughput.py``'s ``model_step_s``): the rectified-flow loss forward, backward,
gradient clipping at 1.0 (the quickstart's ``grad_clip``), ``torch.optim.AdamW`` with the loop's
defaults, and the EMA update (``ditscale.train.ema.EMA``). No data pipeline.

For every config it measures the median step time of cumulative variants:

- ``before``: the model as it was (``ditscale.models.kernels.reference_kernels()``: SDPA for every
  attention call, the patch embedding as a convolution) in a process with glibc's default
  allocator, AdamW and ``clip_grad_norm_`` as ``train/`` builds them today (torch's CPU default: a
  Python loop over the parameters),
- ``after``: the model as it is (the attention path of ``kernels.attention_path``, the patch
  embedding as one matmul) in a process whose allocator keeps freed memory
  (``kernels.retain_freed_memory()``, which the first explicit attention call makes itself),
- ``+foreach``: and ``AdamW(foreach=True)``, ``clip_grad_norm_(foreach=True)`` (a ``train/``
  change; bit-identical to the default, see ``--check``),
- ``+fused``: and ``AdamW(fused=True)`` instead (a ``train/`` change; float rounding differs),

each at 1 thread and at 2 threads (``torch.set_num_threads``). The allocator is a process setting,
so two persistent worker processes (glibc's default / ``retain_freed_memory()``) hold the variants; every round times one step of each variant at each thread count in turn, in reverse order
every other round (after a switch of worker or thread count one untimed step runs first), so a
change of load hits every variant alike; the median over ``--rounds`` is kept. With ``--procs`` (default) it then runs the ``+fused`` step in 2
processes x 1 thread at once (the study's ``workers: 2``) for ``--proc-seconds`` and sums their
images/s. ``--check`` prints how far the variants' weights drift apart over a few steps.

Reported: images/s, model GFLOP/s = images/s x 6 x forward MACs (``ditscale.flops.forward_macs``,
exact; backward = 2 x forward) and the fraction of the matmul peak measured in the same run: a
2048^3 fp32 ``torch.mm``, best of 5 (``benchmarks/common.py``, the method of
``benchmarks/model_throughput.py``), at 1 thread for the 1-thread columns and at 2 threads (the
whole machine) for the 2-thread and 2-process columns, each measured before and after the
ladder, the higher kept.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, matmul_peak, median  # noqa: E402

from ditscale.diffusion import create_diffusion  # noqa: E402
from ditscale.flops import forward_macs  # noqa: E402
from ditscale.models import create_model  # noqa: E402
from ditscale.models.config import DiTConfig  # noqa: E402
from ditscale.models.kernels import reference_kernels, retain_freed_memory  # noqa: E402
from ditscale.train.ema import EMA  # noqa: E402

DEFAULT_LADDER = [
    "w32-d2-h4-b8",  # today's quickstart: the middle of its width ladder, head width 4
    "w32-d2-h32-b8",
    "w64-d2-h32-b8",
    "w64-d2-h32-b32",
    "w96-d3-h32-b16",
    "w128-d2-h32-b16",
    "w128-d4-h32-b32",
    "w128-d4-h64-b32",
    "w192-d3-h64-b32",
    "w256-d4-h64-b16",
    "w256-d4-h64-b64",
    "w128-d4-h64-b16-px32",  # 32x32 images: 256 + 2 tokens
]

NAME = re.compile(r"^w(\d+)-d(\d+)-h(\d+)-b(\d+)(?:-px(\d+))?$")


def parse_config(name: str) -> tuple[DiTConfig, int]:
    m = NAME.match(name)
    if not m:
        raise SystemExit(f"config name {name!r} is not w{{width}}-d{{depth}}-h{{head_dim}}-b{{batch}}[-px{{size}}]")
    width, depth, head_dim, batch = (int(v) for v in m.groups()[:4])
    size = int(m.group(5) or 16)
    cfg = DiTConfig(
        input_size=size,
        patch_size=2,
        in_channels=3,
        hidden_size=width,
        depth=depth,
        num_heads=width // head_dim,
        num_classes=6,
        learn_sigma=False,
        block="in_context",
    )
    return cfg, batch


OPTIMIZERS = {  # AdamW / clip_grad_norm_ options
    "default": ({}, None),  # what train/ uses today: torch's default, a per-parameter loop on CPU
    "foreach": ({"foreach": True}, True),  # bit-identical to the default (tested in this script's --check)
    "fused": ({"fused": True}, True),  # one fused kernel per parameter; differs by float rounding
}


def make_step(cfg: DiTConfig, batch: int, *, reference: bool, optim: str = "default"):
    """A closure doing one training step (loss, backward, clip, AdamW, EMA) on a fixed batch.

    ``reference``: the reference ops (``kernels.reference_kernels``); ``optim``: a key of
    :data:`OPTIMIZERS` (AdamW and ``clip_grad_norm_`` options).
    """
    adamw_options, foreach = OPTIMIZERS[optim]
    torch.manual_seed(0)
    model = create_model(cfg).train()
    ema = EMA(model, 0.999)
    diffusion = create_diffusion(kind="flow")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, **adamw_options)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    y = torch.randint(0, cfg.num_classes, (batch,))
    t = diffusion.sample_t(batch, "cpu")
    noise = torch.randn_like(x)

    def step():
        with reference_kernels(reference):
            loss = diffusion.training_losses(model, x, t, {"y": y}, noise=noise)["loss"].mean()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=foreach)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)

    step.model = model
    return step


# Cumulative variants: (allocator keeps freed memory, step options). "before" is the code as it was.
VARIANTS = {
    "before": (False, {"reference": True}),
    "after": (True, {"reference": False}),
    "+foreach": (True, {"reference": False, "optim": "foreach"}),
    "+fused": (True, {"reference": False, "optim": "fused"}),
}
BEST = "+fused"  # the variant of the 2-process runs


def _worker(conn, tuned_allocator: bool) -> None:
    """A persistent benchmark process: builds steps on request and times them (one allocator setting)."""
    if tuned_allocator:
        retain_freed_memory()
    steps = {}
    while True:
        msg = conn.recv()
        if msg[0] == "quit":
            return
        if msg[0] == "setup":
            _, name, variants = msg
            cfg, batch = parse_config(name)
            steps = {v: make_step(cfg, batch, **VARIANTS[v][1]) for v in variants}
            conn.send("ok")
        elif msg[0] == "time":
            _, variant, threads, calls, warm = msg
            torch.set_num_threads(threads)
            if warm:  # an untimed step first: caches and thread pool back from the other worker
                steps[variant]()
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                steps[variant]()
                times.append(time.perf_counter() - t0)
            conn.send(times)


class Workers:
    """Two persistent processes, glibc's default allocator and ``retain_freed_memory()``: the allocator
    is a process setting, so the variants that differ in it run in different processes, round-robin."""

    def __init__(self):
        ctx = mp.get_context("spawn")
        self.conns, self.procs, self.last = {}, [], None
        for tuned in (False, True):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, tuned), daemon=True)
            proc.start()
            self.conns[tuned], self.procs = parent, self.procs + [proc]

    def setup(self, name: str) -> None:
        for tuned, conn in self.conns.items():
            conn.send(("setup", name, [v for v, (t, _) in VARIANTS.items() if t == tuned]))
        for conn in self.conns.values():
            conn.recv()

    def time(self, variant: str, threads: int, calls: int = 1) -> list[float]:
        """Seconds of ``calls`` steps of ``variant``; after a switch of worker or threads one untimed
        step runs first (a worker runs alone in a study; the switches are this benchmark's own)."""
        tuned = VARIANTS[variant][0]
        conn = self.conns[tuned]
        conn.send(("time", variant, threads, calls, self.last != (tuned, threads)))
        self.last = (tuned, threads)
        return conn.recv()

    def close(self) -> None:
        for conn in self.conns.values():
            conn.send(("quit",))
        for proc in self.procs:
            proc.join()


def bench_threads(workers: Workers, name: str, rounds: int) -> dict:
    """Median step seconds of every variant at 1 and 2 threads, round-robin over variants and threads."""
    workers.setup(name)
    keys = [(v, th) for th in (1, 2) for v in VARIANTS]
    for v, th in keys:  # warm-up
        workers.time(v, th, 2)
    times = {f"{v}@{th}": [] for v, th in keys}
    for r in range(rounds):
        for v, th in keys if r % 2 == 0 else keys[::-1]:  # A B C .. C B A: no variant always goes first
            times[f"{v}@{th}"] += workers.time(v, th)
    return {key: median(ts) for key, ts in times.items()}


def _proc_worker(name: str, seconds: float, barrier, queue) -> None:
    retain_freed_memory()
    torch.set_num_threads(1)
    cfg, batch = parse_config(name)
    step = make_step(cfg, batch, **VARIANTS[BEST][1])
    for _ in range(2):
        step()
    barrier.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    queue.put(n * batch / (time.perf_counter() - t0))


def bench_procs(name: str, seconds: float, procs: int = 2) -> float:
    """Sum of images/s of ``procs`` processes x 1 thread training the same config at once (:data:`BEST`)."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_proc_worker, args=(name, seconds, barrier, queue)) for _ in range(procs)]
    for w in workers:
        w.start()
    rates = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(rates)


def check_numerics(name: str, steps: int = 5) -> dict[str, float]:
    """Max |weight difference| of each variant to the variant before it after ``steps`` training steps
    (0 = bit-identical). The allocator setting is left out: it cannot change a number."""
    cfg, batch = parse_config(name)
    weights = {}
    for v, (_, options) in VARIANTS.items():
        step = make_step(cfg, batch, **options)
        for _ in range(steps):
            step()
        weights[v] = torch.cat([p.detach().flatten() for p in step.model.parameters()])
    names = list(weights)
    return {f"{b} vs {a}": float((weights[b] - weights[a]).abs().max()) for a, b in zip(names, names[1:])}


def peaks() -> dict[int, float]:
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[threads] = matmul_peak()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="*", default=DEFAULT_LADDER)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per config (median kept)")
    p.add_argument(
        "--procs", action=argparse.BooleanOptionalAction, default=True, help="also run 2 processes x 1 thread"
    )
    p.add_argument("--proc-seconds", type=float, default=4.0)
    p.add_argument("--list", action="store_true")
    p.add_argument("--check", action="store_true", help="only print the variants' weight drift vs before")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.list:
        print("\n".join(DEFAULT_LADDER))
        return
    if args.check:
        for name in args.configs:
            drift = check_numerics(name)
            print(
                f"{name}: max |weight difference| after 5 steps (lr 1e-4): "
                + ", ".join(f"{v}: {d:.1e}" for v, d in drift.items())
            )
        return
    load0 = load_average()
    peak0 = peaks()
    rows = []
    workers = Workers()
    for name in args.configs:
        cfg, batch = parse_config(name)
        macs = forward_macs(cfg).total
        seconds = bench_threads(workers, name, args.rounds)
        row = {"config": name, "batch": batch, "forward_mmacs": macs / 1e6, "step_s": seconds}
        if args.procs:
            row["procs2_images_per_s"] = bench_procs(name, args.proc_seconds)
        rows.append(row)
        print(f"... {name} done (load {load_average():.2f})", file=sys.stderr)
    workers.close()
    peak1 = peaks()
    peak = {th: max(peak0[th], peak1[th]) for th in (1, 2)}
    for r in rows:
        flops_per_image = 6 * r["forward_mmacs"] * 1e6
        r["images_per_s"] = {k: r["batch"] / s for k, s in r["step_s"].items()}
        r["fraction_of_peak"] = {
            k: ips * flops_per_image / peak[int(k.split("@")[1])] for k, ips in r["images_per_s"].items()
        }
        if "procs2_images_per_s" in r:
            r["procs2_fraction_of_peak"] = r["procs2_images_per_s"] * flops_per_image / peak[2]
    meta = {
        "peak_matmul_flops_per_s": {str(k): v for k, v in peak.items()},
        "torch": torch.__version__,
        "load_average": [load0, load_average()],
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps({**meta, "rows": rows}, indent=2))
        return
    print(
        f"CPU fp32, torch {torch.__version__}, {meta['date']}; matmul peak {peak[1] / 1e9:.1f} GFLOP/s at 1 thread, "
        f"{peak[2] / 1e9:.1f} at 2 threads; load average {load0:.2f} -> {meta['load_average'][1]:.2f}"
    )
    print()
    print("Fraction of the matmul peak (1 thread: of the 1-thread peak; 2 threads and 2 procs: of the 2-thread peak)")
    print()
    head = [f"{v} {th} thr" for th in (1, 2) for v in VARIANTS]
    print(
        "| config | fwd MMACs/img | batch | " + " | ".join(head) + " | 2 procs x 1 thr | "
        f"speed-up 1 thr ({BEST} / before) | images/s 1 thr / 2 thr / 2 procs ({BEST}) |"
    )
    print("|---|---:|---:|" + "---:|" * (len(head) + 2) + "---|")
    for r in rows:
        f, ips = r["fraction_of_peak"], r["images_per_s"]
        procs = f"{r['procs2_fraction_of_peak']:.3f}" if "procs2_fraction_of_peak" in r else "-"
        procs_ips = f"{r['procs2_images_per_s']:.0f}" if "procs2_images_per_s" in r else "-"
        cells = " | ".join(f"{f[f'{v}@{th}']:.3f}" for th in (1, 2) for v in VARIANTS)
        print(
            f"| {r['config']} | {r['forward_mmacs']:.2f} | {r['batch']} | {cells} | {procs} | "
            f"{r['step_s']['before@1'] / r['step_s'][f'{BEST}@1']:.2f}x | "
            f"{ips[f'{BEST}@1']:.0f} / {ips[f'{BEST}@2']:.0f} / {procs_ips} |"
        )


if __name__ == "__main__":
    main()
