"""Throughput and MFU of the real training loop (``ditscale.train.train``) on a GPU, on synthetic latents.

Usage::

    python benchmarks/gpu_train.py --models DiT-XL/2 --batch-size 64 --steps 40 --compile both
    python benchmarks/gpu_train.py --models DiT-S/2 DiT-B/2 DiT-XL/2 --peak-tflops 790   # a size ladder
    python benchmarks/gpu_train.py --models DiT-S/2 --steps 10 --resume-check            # + resume on GPU
    torchrun --standalone --nproc_per_node=1 benchmarks/gpu_train.py --models DiT-XL/2   # under torchrun
    torchrun --standalone --nproc_per_node=2 benchmarks/gpu_train.py --pg-backend gloo   # 2 ranks, DDP
    python benchmarks/gpu_train.py --dry-run --json rows.json        # CPU check of the code path (seconds)

No VAE is needed (diffusers is not imported): the script writes a latent store of random
"posteriors" directly in the format of ``ditscale.data.latents`` (``plan.json``, ``shard-*.npy``
of shape ``(n, 2 flips, 2 [mean|std], 4, 32, 32)`` float16, ``shard-*.json`` with labels and the
SHA-256, ``meta.json``), so the loop's latent resampling, random flips and DataLoader workers run
as in a real DiT run. Each case is the preset ``dit-s2`` with ``model.name``, ``batch_size``,
``max_steps``, ``precision``, ``compile``, ``device`` and a small validation set overridden
(``val.every=0``: validation and the one checkpoint only at the end, outside the timed steps).

Per case it reports, from ``OUT/metrics.jsonl`` (the mean of the logged intervals after the
first, which holds the compile / warm-up):

- images/s of the loop (data, per-step seeded draws, forward, backward, AdamW, EMA),
- model TFLOP/s = images/s x 6 x forward MACs (``ditscale.flops.forward_macs``, exact count),
- the fraction of the measured bf16 matmul peak (``--peak-tflops``, else an 8192^3 ``torch.mm``
  measured in this process with CUDA events) and MFU against the nominal dense bf16 figure
  (``--nominal-tflops``, default 989 for H100 SXM), both peaks times the world size under
  torchrun (one GPU per rank; when ranks share one GPU, divide by the world size instead),
- the loop's own ``mfu`` field (against ``ditscale.train.metrics.peak_flops``), peak GPU memory
  and wall time of the whole ``train`` call (model build, compile, final checkpoint, validation).

``--pg-backend nccl|gloo`` initialises the process group before ``train`` (which then uses it):
``gloo`` lets two ranks share one GPU (NCCL refuses two ranks on one device), so the DDP/FSDP code
path can be exercised on a single GPU. ``--resume-check`` also trains the first model for
``--steps`` steps in two halves (stop, then resume from the checkpoint with ``force=True``) and
compares the final weights with two uninterrupted runs.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ditscale.flops import forward_macs
from ditscale.io import atomic_write_json, sha256_file
from ditscale.models.config import DiTConfig
from ditscale.train import load_train_config, train

SHAPE = (4, 32, 32)  # SD-VAE latents of 256x256 images
VAE_SCALE = 0.18215


# ------------------------------------------------------------------------------------------ the store
def write_random_store(
    root: Path, count: int, val_count: int, *, num_classes: int = 1000, shard_size: int = 4096, seed: int = 0
) -> Path:
    """A finished latent store of ``count + val_count`` random posteriors (mean ~ N(0, 5.5^2), std
    in [0.01, 0.1]: raw SD-VAE latents have a standard deviation of about 5.5) in ``root``.

    Written in a temporary folder renamed into place, so concurrent ranks see either nothing or a
    complete store. An existing complete store is reused.
    """
    if (root / "meta.json").is_file():
        return root
    tmp = Path(tempfile.mkdtemp(prefix=".store-", dir=root.parent))
    rng = np.random.default_rng(seed)
    total = count + val_count
    plan = {
        "format": "ditscale-latents",
        "version": 1,
        "vae": "random (benchmarks/gpu_train.py)",
        "scale": VAE_SCALE,
        "dtype": "float16",
        "shape": list(SHAPE),
        "image_size": 256,
        "count": total,
        "splits": {"train": count, "val": val_count},
        "shard_size": shard_size,
        "num_classes": num_classes,
        "has_captions": False,
        "source": {"name": "random"},
    }
    atomic_write_json(tmp / "plan.json", plan)
    shards = []
    for s, start in enumerate(range(0, total, shard_size)):
        n = min(shard_size, total - start)
        arr = np.empty((n, 2, 2, *SHAPE), dtype=np.float16)
        mean = rng.standard_normal((n, *SHAPE), dtype=np.float32) * 5.5
        arr[:, 0, 0], arr[:, 1, 0] = mean, mean[..., ::-1]  # flip axis 1 = the mirrored image
        std = rng.uniform(0.01, 0.1, (n, *SHAPE)).astype(np.float32)
        arr[:, 0, 1], arr[:, 1, 1] = std, std[..., ::-1]
        name = f"shard-{s:05d}"
        np.save(tmp / f"{name}.npy", arr)
        record = {
            "file": f"{name}.npy",
            "start": start,
            "count": n,
            "sha256": sha256_file(tmp / f"{name}.npy"),
            "labels": rng.integers(0, num_classes, n).tolist(),
            "captions": None,
        }
        atomic_write_json(tmp / f"{name}.json", record, indent=None)
        shards.append({k: record[k] for k in ("file", "start", "count", "sha256")})
    atomic_write_json(tmp / "meta.json", dict(plan, shards=shards))
    try:
        os.rename(tmp, root)
    except OSError:  # another rank won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def wait_for_store(root: Path, timeout: float = 600.0) -> Path:
    t0 = time.time()
    while not (root / "meta.json").is_file():
        if time.time() - t0 > timeout:
            raise RuntimeError(f"no latent store appeared at {root}")
        time.sleep(0.5)
    return root


# ------------------------------------------------------------------------------------------ peaks
def measure_bf16_peak(n: int = 8192, repeats: int = 10) -> float:
    """Median FLOP/s of an n^3 bf16 ``torch.mm`` timed with CUDA events (random inputs)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        torch.mm(a, b)
    ms = []
    for _ in range(repeats):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        torch.mm(a, b)
        e1.record()
        e1.synchronize()
        ms.append(e0.elapsed_time(e1))
    del a, b
    return 2.0 * n**3 / (statistics.median(ms) / 1e3)


# ------------------------------------------------------------------------------------------ cases
def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def case_config(args, model: str, compile_: bool, store: Path, steps: int, extra: list[str]):
    log_every = args.log_every or max(1, steps // 5)
    overrides = [
        f"model.name={model}",
        f"data.path={store}",
        f"data.num_workers={args.num_workers}",
        f"batch_size={args.batch_size}",
        f"max_steps={steps}",
        f"log_every={log_every}",
        "val.every=0",
        "ckpt_every=0",
        f"val.num_images={args.val_images}",
        "val.num_timesteps=8",
        "val.buckets=4",
        f"val.batch_size={max(8, args.val_images * 8)}",
        f"precision={args.precision}",
        f"compile={'true' if compile_ else 'false'}",
        f"device={args.device}",
        f"fsdp={'true' if args.fsdp else 'false'}",
    ]
    return load_train_config("dit-s2", overrides + list(args.override) + extra)


def interval_rates(out: Path) -> tuple[list[float], list[float | None]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["images_per_s"] for r in rows if "images_per_s" in r], [r.get("mfu") for r in rows if "images_per_s" in r]


def run_case(args, model: str, compile_: bool, store: Path, root: Path, peak: float | None) -> dict:
    tag = f"{model.replace('/', '_')}_b{args.batch_size}_{args.precision}_{'compile' if compile_ else 'eager'}"
    out = root / tag
    if rank() == 0 and out.exists():
        shutil.rmtree(out)
    cfg = case_config(args, model, compile_, store, args.steps, [])
    cuda = args.device == "cuda" and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    row = {
        "case": tag,
        "model": model,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "compile": compile_,
        "world": world(),
        "fsdp": args.fsdp,
        "steps": args.steps,
        "pg_backend": args.pg_backend,
    }
    t0 = time.perf_counter()
    try:
        result = train(cfg, out, progress=False)
    except Exception as err:  # a failure is a result: record it and go on with the next case
        row.update(
            status="failed",
            error=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc(),
            wall_s=time.perf_counter() - t0,
        )
        print(f"[rank {rank()}] case {tag} FAILED: {row['error']}", flush=True)
        print(row["traceback"], flush=True)
        return row
    row["wall_s"] = time.perf_counter() - t0
    if rank() != 0:
        return row
    mcfg = DiTConfig.from_dict(result["model_config"])
    macs = forward_macs(mcfg).total
    rates, mfus = interval_rates(out)
    timed = rates[1:] or rates  # drop the first interval (compile, cuDNN/cuBLAS autotuning, warm-up)
    ips = statistics.mean(timed)
    tflops = ips * 6 * macs / 1e12
    row.update(
        status="ok",
        forward_gmacs=macs / 1e9,
        intervals=len(timed),
        images_per_s=ips,
        images_per_s_intervals=rates,
        step_s=args.batch_size / ips,
        model_tflops=tflops,
        frac_measured_peak=(tflops * 1e12 / (peak * world())) if peak else None,
        mfu_nominal=tflops / (args.nominal_tflops * world()),
        loop_mfu_field=statistics.mean([m for m in mfus[1:] or mfus if m is not None]) if any(mfus) else None,
        peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        train_loss=result.get("train_loss"),
        val_loss=result.get("val_loss"),
        checkpoint_written=bool(result.get("checkpoint")),
    )
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return row


def resume_check(args, model: str, store: Path, root: Path) -> dict:
    """Final weights of a run trained in two halves (resumed from the checkpoint) vs uninterrupted runs."""
    from safetensors.torch import load_file

    n, half = args.steps, max(1, args.steps // 2)
    outs = {k: root / f"resume_{k}" for k in ("full_a", "full_b", "split")}
    if rank() == 0:
        for o in outs.values():
            shutil.rmtree(o, ignore_errors=True)
    res = {}
    try:
        for k in ("full_a", "full_b"):
            res[k] = train(case_config(args, model, False, store, n, []), outs[k], progress=False)
        train(case_config(args, model, False, store, half, []), outs["split"], progress=False)
        res["split"] = train(case_config(args, model, False, store, n, []), outs["split"], progress=False, force=True)
    except Exception as err:
        return {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    if rank() != 0:
        return {"status": "ok"}
    w = {k: load_file(str(Path(r["checkpoint"]) / "model.safetensors")) for k, r in res.items()}

    def max_diff(a, b):
        return max(float((w[a][key].double() - w[b][key].double()).abs().max()) for key in w[a])

    metrics = {k: [json.loads(line) for line in (outs[k] / "metrics.jsonl").read_text().splitlines()] for k in outs}
    out = {
        "status": "ok",
        "model": model,
        "steps": n,
        "resumed_at": half,
        "max_abs_diff_full_a_vs_full_b": max_diff("full_a", "full_b"),
        "max_abs_diff_full_a_vs_split": max_diff("full_a", "split"),
        "val_loss": {k: r.get("val_loss") for k, r in res.items()},
        "logged_train_loss": {k: [m.get("train_loss") for m in metrics[k] if "train_loss" in m] for k in outs},
    }
    if not args.keep:
        for o in outs.values():
            shutil.rmtree(o, ignore_errors=True)
    return out


def dry_run_settings(args: argparse.Namespace) -> None:
    """``--dry-run``: the whole script (store, the training loop, resume check, table, JSON) on a tiny
    model on the CPU, in a temporary root of its own unless ``--root`` is given."""
    args.device, args.models, args.batch_size, args.steps, args.count = "cpu", ["DiT-S/8"], 4, 4, 32
    args.compile, args.num_workers, args.val_images, args.resume_check = "off", 0, 4, True
    if args.root is None:
        args.root = tempfile.mkdtemp(prefix="ditscale_gpu_train_dry_")
        atexit.register(shutil.rmtree, args.root, True)  # its own root goes when the script ends


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["DiT-XL/2"])
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split over torchrun ranks)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=0, help="steps per logged interval (default steps // 5)")
    p.add_argument("--compile", choices=["off", "on", "both"], default="both")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--count", type=int, default=4096, help="train items in the synthetic store")
    p.add_argument("--val-images", type=int, default=8)
    p.add_argument("--fsdp", action="store_true")
    p.add_argument(
        "--pg-backend",
        choices=["none", "nccl", "gloo"],
        default="none",
        help="initialise the process group here (before train) under torchrun",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="measured bf16 peak (default: measure here)")
    p.add_argument("--nominal-tflops", type=float, default=989.0, help="datasheet dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--root", default=None, help="folder for the store and run folders (default /dev/shm or tmp)")
    p.add_argument("--store", default=None, help="an existing latent store of 32x32x4 latents")
    p.add_argument("--resume-check", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the run folders")
    p.add_argument("--override", nargs="*", default=[], help="extra dotted config overrides for every case")
    p.add_argument("--json", default=None, help="write all rows to this file (rank 0)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the code path on a CPU in seconds (DiT-S/8, batch 4, 4 steps, 32 items, no compile, "
        "a resume check, a private temporary root); tests/test_benchmarks.py runs it so the script cannot rot",
    )
    args = p.parse_args()
    if args.dry_run:
        dry_run_settings(args)

    if args.pg_backend != "none" and "RANK" in os.environ:
        import torch.distributed as dist

        if args.device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        dist.init_process_group(backend=args.pg_backend)
        probe = torch.ones(1, device=args.device if args.device == "cuda" else "cpu")
        dist.all_reduce(probe)  # the group works at all: sum of ones = world size
        print(
            f"[rank {rank()}] {args.pg_backend} process group up: all_reduce(1) = {probe.item():.0f} (world {world()})",
            flush=True,
        )
    shm = Path("/dev/shm")  # tmpfs: the final checkpoint of DiT-XL/2 (~11 GB with AdamW state) is written fast
    use_shm = shm.is_dir() and shutil.disk_usage(shm).free > 40 * 2**30
    root = Path(args.root) if args.root else (shm if use_shm else Path(tempfile.gettempdir())) / "ditscale_gpu_train"
    root.mkdir(parents=True, exist_ok=True)
    store = Path(args.store) if args.store else root / f"store_{args.count}"
    if not args.store:
        (write_random_store(store, args.count, max(args.val_images, 16)) if rank() == 0 else wait_for_store(store))

    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None and args.device == "cuda" and rank() == 0:
        peak = measure_bf16_peak()
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]

    rows, extra = [], {}
    if args.resume_check:
        extra["resume_check"] = resume_check(args, args.models[0], store, root)
        if rank() == 0:
            print(json.dumps(extra["resume_check"], indent=1), flush=True)
    for model in args.models:
        for c in compiles:
            rows.append(run_case(args, model, c, store, root, peak))
            torch._dynamo.reset()
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
            if rank() == 0 and rows[-1].get("status") == "ok":
                r = rows[-1]
                print(
                    f"[{r['case']}] {r['images_per_s']:.1f} img/s, {r['model_tflops']:.1f} TFLOP/s, "
                    f"wall {r['wall_s']:.1f} s, intervals {[round(x, 1) for x in r['images_per_s_intervals']]}",
                    flush=True,
                )
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if rank() != 0:
        return
    summary = {
        "device": device_name,
        "torch": torch.__version__,
        "world": world(),
        "pg_backend": args.pg_backend,
        "measured_bf16_peak_tflops": peak / 1e12 if peak else None,
        "nominal_tflops": args.nominal_tflops,
        "rows": rows,
        **extra,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    print(
        f"{device_name}, torch {torch.__version__}, world {world()}"
        + (f", measured bf16 peak {peak / 1e12:.1f} TFLOP/s" if peak else "")
    )
    print(
        "| config | batch | dtype | compile | world | images/s | model TFLOP/s | frac. of measured bf16 peak | "
        "MFU vs nominal | peak mem GiB | wall s |"
    )
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("status") != "ok":
            print(
                f"| {r['model']} | {r['batch_size']} | {r['precision']} | {r['compile']} | {r['world']} | "
                f"FAILED: {r.get('error', '')[:120]} |"
            )
            continue
        frac = f"{r['frac_measured_peak']:.3f}" if r["frac_measured_peak"] is not None else "-"
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        print(
            f"| {r['model']} | {r['batch_size']} | {r['precision']} | {r['compile']} | {r['world']} | "
            f"{r['images_per_s']:.1f} | {r['model_tflops']:.1f} | {frac} | {r['mfu_nominal']:.3f} | {mem} | "
            f"{r['wall_s']:.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
