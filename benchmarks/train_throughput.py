"""Training-loop throughput with the data pipeline included, and the share of a step spent outside the model.

Usage::

    python benchmarks/train_throughput.py                 # tiny preset (shapes) and DiT-S/2 (VAE latents), CPU
    python benchmarks/train_throughput.py --steps 60 --s2-batch 8

For each case it runs the real ``ditscale.train.train`` loop for ``--steps`` steps (validation and
checkpoints only at the end) and reads images/s from ``metrics.jsonl`` (measured over logged
intervals, after the first interval). It then times the model alone on one fixed batch: the
diffusion loss forward, backward, AdamW step and EMA update, with the same model, diffusion and
batch size. ``outside = 1 - model_step_time / loop_step_time`` is the fraction of a training step
spent in data loading, per-step seeding, noise/timestep draws, logging and bookkeeping.

The DiT-S/2 case trains on a latent store of 32x32x4 latents written by ``extract-latents`` with a
tiny random VAE (256x256 shapes images), so the latent resampling and flips are in the loop.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ditscale.diffusion import create_diffusion
from ditscale.flops import forward_macs
from ditscale.models import create_model
from ditscale.models.config import DiTConfig
from ditscale.train import load_train_config, train
from ditscale.train.metrics import measure_matmul_peak


def loop_images_per_s(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r]
    rates = rates[1:] or rates  # drop the first interval (warm-up)
    return sum(rates) / len(rates)


def model_step_s(mcfg: DiTConfig, diff_cfg, batch_size: int, iters: int) -> float:
    """Median seconds of loss forward + backward + AdamW + EMA on one fixed batch."""
    torch.manual_seed(0)
    model = create_model(mcfg).train()
    ema = [p.detach().clone() for p in model.parameters()]
    diffusion = create_diffusion(diff_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x = torch.randn(batch_size, mcfg.in_channels, mcfg.input_size, mcfg.input_size)
    y = torch.randint(0, max(mcfg.num_classes, 1), (batch_size,))
    t = diffusion.sample_t(batch_size, torch.device("cpu"))
    noise = torch.randn_like(x)

    def step():
        loss = diffusion.training_losses(model, x, t, {"y": y}, noise=noise)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.lerp_(p, 1 - 0.999)

    step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run_case(name: str, preset: str, overrides: list[str], steps: int, iters: int, root: Path, peak: float) -> dict:
    cfg = load_train_config(
        preset,
        overrides
        + [f"max_steps={steps}", "val.every=0", "ckpt_every=0", "val.num_images=16", f"log_every={max(steps // 6, 1)}"],
    )
    out = root / name.replace("/", "_")
    result = train(cfg, out, progress=False)
    mcfg = DiTConfig.from_dict(result["model_config"])
    ips = loop_images_per_s(out)
    loop_s = cfg.batch_size / ips
    model_s = model_step_s(mcfg, cfg.diffusion_config(), cfg.batch_size, iters)
    macs = forward_macs(mcfg).total
    return {
        "case": name,
        "batch_size": cfg.batch_size,
        "forward_gmacs": macs / 1e9,
        "loop_images_per_s": ips,
        "loop_step_s": loop_s,
        "model_step_s": model_s,
        "outside_fraction": max(0.0, 1.0 - model_s / loop_s),
        "loop_fraction_of_peak": ips * 6 * macs / peak,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--s2-batch", type=int, default=8)
    p.add_argument("--s2-steps", type=int, default=12)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    peak = measure_matmul_peak(size=2048, seconds=1.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows.append(run_case("tiny preset (shapes 16px)", "tiny", [], args.steps, args.iters, root, peak))

        # A latent store of 256x256 shapes images through a tiny random VAE -> 32x32x4 latents.
        from ditscale.data import DataConfig
        from ditscale.data.latents import extract_latents
        from ditscale.data.vae import make_tiny_vae

        store, vae_dir = root / "latents", root / "tiny_vae"
        make_tiny_vae().save_pretrained(vae_dir)
        extract_latents(
            DataConfig(name="shapes", image_size=256),
            str(vae_dir),
            store,
            count=4 * args.s2_batch,
            val_count=16,
            batch_size=16,
            progress=False,
        )
        rows.append(
            run_case(
                "DiT-S/2 (latents 32x32x4)",
                "dit-s2",
                [f"data.path={store}", f"batch_size={args.s2_batch}", "data.num_workers=0"],
                args.s2_steps,
                max(3, args.iters // 3),
                root,
                peak,
            )
        )
    if args.json:
        print(json.dumps({"peak_matmul_flops_per_s": peak, "threads": torch.get_num_threads(), "rows": rows}, indent=2))
        return
    print(f"CPU fp32, {torch.get_num_threads()} threads; measured matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(
        "| case | batch | loop images/s | loop step s | model-only step s | outside the model | loop fraction of peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['batch_size']} | {r['loop_images_per_s']:.1f} | {r['loop_step_s']:.4f} | "
            f"{r['model_step_s']:.4f} | {100 * r['outside_fraction']:.1f}% | {r['loop_fraction_of_peak']:.2f} |"
        )


if __name__ == "__main__":
    main()
