"""Run metrics: ``OUT/metrics.jsonl``, optional TensorBoard, a tqdm bar, and MFU.

MFU (model FLOPs utilisation) = achieved training FLOP/s / peak FLOP/s, where the achieved rate
counts the exact model FLOPs (3 x forward MACs x 2 per image, ``ditscale.flops``) of the images
processed per second, and the peak is ``peak_flops`` from the config, else the dense bf16 peak of
a known GPU, else (CPU) a short fp32 matmul measurement made once per process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ditscale.flops import GPU_BF16_PEAK_FLOPS, gpu_peak_flops  # noqa: F401  (the GPU peaks' one home; re-exported)
from ditscale.io import append_jsonl, atomic_write_text, read_text, refuse_symlink
from ditscale.train.rundir import RunDir
from ditscale.train.wandb_log import wandb_image

_MEASURED_PEAK: dict[str, float] = {}


def measure_matmul_peak(size: int = 512, seconds: float = 0.5, device: str = "cpu", *, cached: bool = True) -> float:
    """Achieved fp32 FLOP/s of a square matmul (2 * size^3 FLOPs each) over ~``seconds``; cached
    per (device, size) unless ``cached`` is False (a fresh reading, which then replaces the cached one)."""
    key = f"{device}:{size}"
    if key not in _MEASURED_PEAK or not cached:
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        torch.mm(a, b)  # warm-up
        n, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        _MEASURED_PEAK[key] = 2.0 * size**3 * n / elapsed
    return _MEASURED_PEAK[key]


def peak_flops(device: torch.device, configured: float | None = None) -> float | None:
    """Peak FLOP/s used for MFU: ``configured``, else a known GPU's bf16 peak, else the measured CPU fp32 peak."""
    if configured:
        return float(configured)
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device))
    return measure_matmul_peak()


@dataclass
class LossSums:
    """Loss sums of a run, kept across resumes (saved in every checkpoint's state.json).

    ``log_*``: since the last metrics line (its ``train_loss``); ``tail_*``: over the last 10% of
    the run's steps (the result's ``train_loss``); ``wall_time``: training seconds of the run up to
    the checkpoint that holds these sums (earlier calls included).
    """

    log_sum: float = 0.0
    log_steps: int = 0
    tail_sum: float = 0.0
    tail_steps: int = 0
    wall_time: float = 0.0

    def add(self, loss: float, tail: bool) -> None:
        self.log_sum += loss
        self.log_steps += 1
        if tail:
            self.tail_sum += loss
            self.tail_steps += 1

    def log_mean(self) -> float:
        return self.log_sum / max(1, self.log_steps)

    def reset_log(self) -> None:
        self.log_sum, self.log_steps = 0.0, 0

    def tail_mean(self) -> float | None:
        return self.tail_sum / self.tail_steps if self.tail_steps else None


def tail_start(total_steps: int) -> int:
    """First step of the last 10% of a run (at least its last step): the result's ``train_loss`` window."""
    return total_steps - max(1, total_steps // 10)


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics record other than ``step`` (what TensorBoard and W&B get)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


class MetricsLog:
    """Appends records to ``OUT/metrics.jsonl`` (rank 0 only) and mirrors scalars to TensorBoard
    and, when given a W&B run (``wandb_run``, see :mod:`ditscale.train.wandb_log`), to W&B.

    ``truncate_after(step)`` drops records past a resumed checkpoint, so the log of a resumed run
    equals that of an uninterrupted one. ``add_image`` logs a sample grid to both.
    """

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = False, wandb_run: Any = None):
        self.path = RunDir(out_dir).metrics
        self.enabled = enabled
        self.wandb_run = wandb_run if enabled else None
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency tensorboard

                self.writer = SummaryWriter(str(RunDir(out_dir).tensorboard))
            except ImportError:  # tensorboard is optional
                self.writer = None

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (atomic rewrite)."""
        if not self.enabled:
            return
        refuse_symlink(self.path)  # neither read nor replaced through a link planted in the run folder
        if not self.path.exists():
            return
        kept = []
        for line in read_text(self.path).splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a line torn by a crash
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        values = scalars(record)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, record["step"])
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=record["step"])

    def add_image(self, tag: str, image: Any, step: int) -> None:
        """Log a uint8 ``(H, W, 3)`` image (a sample grid) to TensorBoard and W&B under ``tag``."""
        if not self.enabled:
            return
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")
            self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({tag: wandb_image(image, caption=f"step {step}")}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """All records of ``OUT/metrics.jsonl``."""
    path = RunDir(out_dir).metrics
    if not path.exists():
        return []
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


def progress_bar(total: int, initial: int, enabled: bool | None, desc: str = "train"):
    """A tqdm bar over optimizer steps; shown when ``enabled`` or (None) when stderr is a terminal."""
    show = enabled if enabled is not None else sys.stderr.isatty()
    if os.environ.get("RANK", "0") != "0":
        show = False
    return tqdm(total=total, initial=initial, desc=desc, disable=not show, dynamic_ncols=True, unit="step")
