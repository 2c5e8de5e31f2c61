"""Time the parts of a training step outside the model's forward+backward, on a GPU.

Usage::

    python benchmarks/gpu_step_parts.py --model DiT-XL/2 --batch-size 64
    python benchmarks/gpu_step_parts.py --device cpu --model DiT-S/2 --iters 3   # smoke test

``gpu_train.py`` (the whole loop) minus ``model_throughput.py`` (forward+backward alone) leaves the
optimizer, the EMA, the data and the per-step host work. This script times those parts of
``ditscale.train.loop`` separately (CUDA events or host clock, median of ``--iters`` after warm-up):

- ``torch.optim.AdamW`` as the loop builds it (default: the foreach implementation) and, for
  comparison, ``AdamW(fused=True)``;
- ``ditscale.train.ema.EMA.update`` (``_foreach_mul_`` + ``_foreach_add_``) and, for comparison,
  one ``torch._foreach_lerp_`` pass (the same arithmetic);
- the per-step draws of the loop (a CPU generator seeded by (seed, step): timesteps, noise,
  label-drop mask) and their copy to the device.

The byte floor of each part is printed beside it (fp32 parameters; device-to-device bandwidth from
``--bandwidth-tbs``, measured by ``gpu_peaks.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ditscale.diffusion import create_diffusion
from ditscale.diffusion.config import DiffusionConfig
from ditscale.models import create_model
from ditscale.train.ema import EMA
from ditscale.train.loop import step_generator


def median_ms(fn, iters: int, device: str, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        if device == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            out.append(e0.elapsed_time(e1))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="DiT-XL/2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--bandwidth-tbs", type=float, default=3.0, help="measured device copy bandwidth (read + write)")
    args = p.parse_args()
    dev = args.device
    torch.manual_seed(0)
    model = create_model(args.model, input_size=32, in_channels=4, num_classes=1000, learn_sigma=True).to(dev)
    params = [q for q in model.parameters() if q.requires_grad]
    n = sum(q.numel() for q in params)
    for q in params:
        q.grad = torch.randn_like(q) * 1e-3
    gb = n * 4 / 1e9  # one fp32 pass over the parameters
    rows = []

    def floor_ms(passes: float) -> float:
        return passes * gb / (args.bandwidth_tbs * 1e3) * 1e3

    for name, kw in (("AdamW (loop default, foreach)", {}), ("AdamW fused=True", {"fused": True})):
        try:
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, **kw)
            rows.append((name, median_ms(opt.step, args.iters, dev), floor_ms(7)))  # read p,g,m,v; write p,m,v
            del opt
        except (RuntimeError, ValueError) as err:
            rows.append((f"{name}: {err}", float("nan"), floor_ms(7)))
    ema = EMA(model, 0.9999)
    rows.append(("EMA.update (foreach mul + add)", median_ms(lambda: ema.update(model), args.iters, dev), floor_ms(3)))
    e_list, p_list = list(ema.params.values()), [q.detach() for q in model.parameters()]
    rows.append(
        (
            "EMA as one _foreach_lerp_",
            median_ms(lambda: torch._foreach_lerp_(e_list, p_list, 1e-4), args.iters, dev),
            floor_ms(3),
        )
    )
    diffusion = create_diffusion(DiffusionConfig(kind="gaussian", learn_sigma=True))
    b, step = args.batch_size, [0]

    def draws():
        g = step_generator(0, step[0])
        step[0] += 1
        t = diffusion.sample_t(b, "cpu", g).to(dev)
        noise = torch.randn((b, 4, 32, 32), generator=g).to(dev)
        drop = (torch.rand(b, generator=g) < 0.1).long().to(dev)
        return t, noise, drop

    rows.append((f"per-step draws + copy (batch {b}, host)", median_ms(draws, args.iters, dev), float("nan")))
    print(
        f"{torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}, torch {torch.__version__}; {args.model}: "
        f"{n / 1e6:.1f} M trainable parameters ({gb:.2f} GB fp32)"
    )
    print("| part | median ms | byte floor ms |")
    print("|---|---:|---:|")
    for name, ms, fl in rows:
        print(f"| {name} | {ms:.2f} | {fl:.2f} |")


if __name__ == "__main__":
    main()
