"""A training run before it runs: its length, compute, GPU-hours and launch commands (pure Python).

``ditscale train CONFIG [key=value ...] --plan`` prints :func:`plan_text` and writes nothing. Units:
images (samples), image tokens, exact training FLOPs (3 x forward MACs x 2 per image; 6ND beside
it), GPU-hours = training FLOPs / (the GPU's dense bf16 peak x an assumed MFU) / 3600
(:func:`ditscale.flops.gpu_hours`, where the peak table and the default GPU and MFU live).

The model is resolved as training resolves it (dataset facts from :func:`ditscale.data.dataset_info`);
a dataset that cannot be read yet (a latent store not extracted) is planned from the config's
declared ``data.channels`` / ``data.image_size``, with a note, as ``ditscale flops`` does.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from ditscale.data.epochs import epoch_count, epochs_warning
from ditscale.data.info import declared_info, train_images
from ditscale.errors import ConfigError
from ditscale.flops import DEFAULT_GPU, DEFAULT_MFU, forward_macs, gpu_hours, resolve_gpu
from ditscale.train.budget import RunLength, run_length
from ditscale.train.config import TrainConfig

CPUS_PER_GPU = 8  # CPU cores per GPU process asked of Slurm (its DataLoader workers and threads)
RDZV_PORT = 29500  # torchrun's rendezvous port on the first node


@dataclass(frozen=True)
class TrainPlan:
    """The run of a :class:`TrainConfig` on ``nodes`` x ``gpus_per_node`` GPUs of ``gpu`` at ``mfu``.

    Attributes:
        model: the resolved DiTConfig.
        length: steps, images and per-image FLOPs (:class:`~ditscale.train.budget.RunLength`).
        gpu, peak_flops, mfu: the GPU's table name, its dense bf16 peak FLOP/s, the assumed MFU.
        nodes, gpus_per_node: the launch layout (wall time = GPU-hours / GPUs).
        train_images: images in the dataset's train split when known (a readable finite dataset), else None.
        note: why the dataset facts are the config's declared ones (None when the dataset was read).
        name: the paper name of the model (``model.name``, e.g. "DiT-XL/2"), if the config gives one.
    """

    model: object
    length: RunLength
    gpu: str
    peak_flops: float
    mfu: float
    nodes: int
    gpus_per_node: int
    train_images: int | None = None
    note: str | None = None
    name: str | None = None

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def flops(self) -> float:
        """Exact training FLOPs of the whole run."""
        return self.length.total_images * self.length.flops_per_image

    @property
    def flops_6nd(self) -> float:
        """6ND training FLOPs of the whole run."""
        return self.length.total_images * self.length.flops_6nd_per_image

    @property
    def gpu_hours(self) -> float:
        """GPU-hours at :attr:`mfu` of :attr:`peak_flops`."""
        return gpu_hours(self.flops, self.peak_flops, self.mfu)

    @property
    def wall_hours(self) -> float:
        """Hours on :attr:`gpus` GPUs."""
        return self.gpu_hours / self.gpus


def _dataset_facts(cfg: TrainConfig):
    """``(DataInfo, train images or None, note or None)``: read from the dataset, or declared by the config."""
    data = cfg.data_config()
    info, note = declared_info(data)
    if note is not None:
        return info, None, note
    return info, train_images(data), None


def plan_training(
    cfg: TrainConfig, *, gpu: str | None = None, mfu: float | None = None, nodes: int = 1, gpus_per_node: int = 8
) -> TrainPlan:
    """The :class:`TrainPlan` of ``cfg`` (defaults: :data:`~ditscale.flops.DEFAULT_GPU`,
    :data:`~ditscale.flops.DEFAULT_MFU`, one node of 8 GPUs)."""
    if nodes < 1 or gpus_per_node < 1:
        raise ConfigError(f"--nodes and --gpus-per-node must be >= 1, got {nodes} and {gpus_per_node}")
    if cfg.text_encoder and not {"context_dim", "context_len"} <= {*cfg.model, *cfg.word_text_sizes()}:
        raise ConfigError(
            "this run conditions on a frozen text encoder; give its width and tokens as model.context_dim "
            "and model.context_len to plan it"
        )
    name, peak = resolve_gpu(gpu or DEFAULT_GPU)
    mfu = DEFAULT_MFU if mfu is None else mfu
    gpu_hours(0.0, peak, mfu)  # checks the MFU
    info, train_images, note = _dataset_facts(cfg)
    model = cfg.model_config(info=info)
    length = run_length(cfg.batch_size, model, max_steps=cfg.max_steps, flops=cfg.flops)
    return TrainPlan(model, length, name, peak, mfu, nodes, gpus_per_node, train_images, note, cfg.model.get("name"))


def _slurm_time(hours: float) -> str:
    """Slurm ``--time`` (D-HH:MM:SS) for a job of ``hours`` estimated: x1.25 + 30 minutes, whole hours."""
    total = int(math.ceil(hours * 1.25 + 0.5))
    return f"{total // 24}-{total % 24:02d}:00:00"


def launch_commands(plan: TrainPlan, config: str, overrides: list[str], out: str) -> list[str]:
    """Lines of the torchrun (one node, several nodes) and sbatch launches of the planned run."""
    run = " ".join(shlex.quote(w) for w in ["-m", "ditscale", "train", config, "--out", out, *overrides])
    g, n = plan.gpus_per_node, plan.nodes
    lines = ["one node:", f"  torchrun --standalone --nproc_per_node {g} {run}"]
    lines += [
        f"{max(n, 2)} nodes (run on every node; HEAD = the first node's address):",
        f"  torchrun --nnodes {max(n, 2)} --nproc_per_node {g} --rdzv_id dit --rdzv_backend c10d "
        f"--rdzv_endpoint HEAD:{RDZV_PORT} {run}",
    ]
    lines += [
        f"Slurm (sbatch this script; {n} node(s) x {g} GPUs, time = 1.25 x the estimate + 30 min; "
        "submitting it again resumes from the newest checkpoint):",
        "  #!/bin/bash",
        *(
            f"  #SBATCH --{k}={v}"
            for k, v in (
                ("job-name", "ditscale-train"),
                ("nodes", n),
                ("ntasks-per-node", 1),
                ("gpus-per-node", g),
                ("cpus-per-task", g * CPUS_PER_GPU),
                ("time", _slurm_time(plan.wall_hours)),
            )
        ),
        '  head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f'  srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node {g} --rdzv_id "$SLURM_JOB_ID" '
        f'--rdzv_backend c10d --rdzv_endpoint "$head:{RDZV_PORT}" {run}',
    ]
    return lines


def plan_text(plan: TrainPlan, config: str, overrides: list[str], out: str) -> str:
    """What ``ditscale train --plan`` prints: model, length, compute, GPU time, launch commands."""
    m, ln = plan.model, plan.length
    epochs = (
        f" = {ln.total_images / plan.train_images:.1f} epochs of the {plan.train_images:,} train images"
        if plan.train_images
        else ""
    )
    per_gpu = ln.batch_size / plan.gpus
    lines = [
        f"{config}{f' ({plan.name})' if plan.name else ''}: depth {m.depth}, width {m.hidden_size}, "
        f"{m.num_heads} heads, patch {m.patch_size}, "
        f"{ln.tokens_per_image} tokens per image, block {m.block}, conditioning {m.conditioning}",
        f"  parameters  {ln.params_total:,} total, {ln.params_non_embedding:,} non-embedding",
        f"  forward     {forward_macs(m).total / 1e9:.4f} GMACs per image (the DiT paper's 'Gflops'); training "
        f"{ln.flops_per_image:.4e} FLOPs per image (exact, 6 x MACs)",
        f"  length      {ln.total_steps:,} steps x {ln.batch_size} images = {ln.total_images:,} images{epochs}; "
        f"{ln.total_images * ln.tokens_per_image:.4e} tokens",
        f"  compute     {plan.flops:.4e} training FLOPs exact (6ND: {plan.flops_6nd:.4e})",
        f"  GPU time    {plan.gpu_hours:,.1f} GPU-hours at MFU {plan.mfu:g} of {plan.gpu} ({plan.peak_flops / 1e12:g} "
        f"TFLOP/s dense bf16) = {plan.wall_hours:,.1f} h on {plan.nodes} node(s) x {plan.gpus_per_node} GPUs "
        f"({per_gpu:g} images per GPU per step; validation, checkpoints and compilation not included)",
    ]
    if plan.note:
        lines.append(f"  note        {plan.note}")
    if plan.train_images:
        warn = epochs_warning(epoch_count(ln.total_images, plan.train_images), plan.train_images, "this run")
        lines += [f"  warning     {warn}"] if warn else []
    return "\n".join(lines + launch_commands(plan, config, overrides, out))
