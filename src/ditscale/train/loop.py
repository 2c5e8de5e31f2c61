"""The training loop: ``train(cfg, out_dir) -> result``.

It reads as one story (``_train``): set up the run folder, build data / model / diffusion /
optimizer, resume from the newest verified checkpoint, then for each step draw, step, log,
validate and checkpoint, and finish with the final checkpoint, validation and ``result.json``.
:func:`train_steps` is the one step loop: a shared trunk (:mod:`ditscale.train.trunk`) runs it too,
adding its branches' bookkeeping after each step (a :data:`StepHook`). The parts live in their own
modules:

- data order and the per-step seeded draws: :mod:`ditscale.train.data_order`;
- how long the run is (steps, images, exact FLOP budget): :mod:`ditscale.train.budget`;
- the run folder's files: :mod:`ditscale.train.rundir`; checkpoint layout: :mod:`ditscale.train.checkpoint`;
- conditioning and text encoders: :mod:`ditscale.train.conditioning`;
- validation with raw and EMA weights: :mod:`ditscale.train.validate`.

One optimizer step (0-based ``step``) of global batch ``b`` images: the images are positions
``[step * batch_size, step * batch_size + b)`` of the data order; timesteps, noise and the
label-drop mask of the whole global batch come from a generator seeded by (seed, step), rank r of
W takes its rows; then AdamW at ``lr_at(step)``, optional gradient clipping, EMA update. Nothing
depends on global RNG state or on the number of processes, so a resumed run is bit-identical to
an uninterrupted one (CPU), and W processes compute the same update as one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml

from ditscale.config import flatten_dotted, load_yaml, to_dict
from ditscale.data import build_dataset, dataset_info
from ditscale.diffusion import Diffusion, create_diffusion
from ditscale.errors import ConfigError, DitscaleError, TrainingError
from ditscale.generate import save_grid
from ditscale.io import atomic_write_json, atomic_write_text, available_memory, sha256_json
from ditscale.models import create_model
from ditscale.models.kernels import retain_freed_memory
from ditscale.train import checkpoint as ckpt
from ditscale.train.budget import RunLength, run_length
from ditscale.train.claim import check_memory, check_run, claim_run_folder
from ditscale.train.conditioning import (
    JointTextModel,
    build_text_encoder,
    frozen_encode_fn,
    is_trainable,
    model_kwargs,
    word_encoder_spec,
)
from ditscale.train.config import TrainConfig, ValConfig
from ditscale.train.data_order import DataOrder, rank_batches, step_generator
from ditscale.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    pick_device,
    shard_bounds,
    shutdown_distributed,
    wrap_model,
)
from ditscale.train.ema import EMA
from ditscale.train.metrics import LossSums, MetricsLog, peak_flops, progress_bar, tail_start
from ditscale.train.progress import PROGRESS_EVERY, TRAIN_LOG, ProgressLog
from ditscale.train.provenance import versions
from ditscale.train.rundir import RunDir, config_changes
from ditscale.train.samples import check_sampling, ema_sample_grid
from ditscale.train.schedules import lr_at
from ditscale.train.validate import Validator, validate_raw_and_ema
from ditscale.train.wandb_log import check_wandb, start_wandb


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool | None = None,
    force: bool = False,
    progress_every: float = PROGRESS_EVERY,
) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg`` in ``out_dir``; returns the result dict.

    ``progress``: show a tqdm bar (None: only when stderr is a terminal); unless it is False, a
    progress line is also printed to stdout every ``progress_every`` seconds when stdout is not a
    terminal (:mod:`ditscale.train.progress`); ``OUT/train.log`` gets these lines in any case.
    ``force``: continue a run
    whose saved ``config.yaml`` differs (beyond :data:`ditscale.train.rundir.RESUME_SAFE_KEYS`). Under ``torchrun`` the
    process group is initialised here; only rank 0 writes files. Raises :class:`TrainingError`
    when the loss becomes NaN/inf (after the newest checkpoint has been verified).
    """
    check_run(cfg)  # the whole config is accepted before anything is written, the folder included
    check_wandb(cfg.wandb)  # W&B asked for but not installed: a one-line error before any work
    check_sampling(cfg)
    info = init_distributed(cfg.device)
    try:
        check_memory(cfg, *_available_memory(pick_device(cfg.device, info)), world=info.world)
        with claim_run_folder(out_dir, enabled=info.is_main):  # one process per run folder (OUT/run.lock)
            result = _train(cfg, RunDir(out_dir), info, progress=progress, force=force, every=progress_every)
    except BaseException:
        shutdown_distributed(info, failed=True)
        raise
    shutdown_distributed(info)
    return result


def _available_memory(device: torch.device) -> tuple[float | None, str]:
    """Bytes a training step may use on ``device`` (a GPU's total memory, else the RAM available) and its name."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[1]), torch.cuda.get_device_name(device)
    return available_memory(), "RAM"


def _train(
    cfg: TrainConfig, out: RunDir, info: DistInfo, *, progress: bool | None, force: bool, every: float
) -> dict[str, Any]:
    # Set up the run folder and the device (train() has accepted the whole config: check_run)
    device = pick_device(cfg.device, info)
    if device.type == "cpu":  # reuse the last step's freed memory instead of page-faulting it in again
        retain_freed_memory()
    if info.is_main:
        check_run_dir(out, cfg, force=force)
    barrier(info)

    # Build data, model, diffusion and optimizer
    run = build_run(cfg, out, info, device)

    # Resume from the newest verified checkpoint (or start at step 0); config.yaml is written only
    # once the checkpoint has loaded, so a refused --force (another architecture) leaves it as it was
    found = find_checkpoint(out, info)
    start = int(found[1]["step"]) if found else 0
    done = _existing_result(out, cfg, start, run.length)
    sums = _resume(run, *found) if found and done is None else LossSums()
    if info.is_main:
        write_run_config(out, cfg)
    if done is not None:
        return done
    run.log.truncate_after(start)  # drop lines logged after the checkpoint (or all, when starting over)

    # Train
    run.validator = build_validator(run)
    peak = peak_flops(device, cfg.peak_flops) if info.is_main else None  # measured before the clock starts
    _start_logs(run, start, every=every, echo=progress is not False and not sys.stdout.isatty())
    run.start_clock(sums.wall_time)
    try:
        train_steps(run, start, sums, peak, progress)
    except BaseException as err:
        with contextlib.suppress(DitscaleError):  # e.g. a full disk: the error to report is ``err``
            _close_logs(run, f"stopped: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
        raise

    # Finish: the final checkpoint, validation and result.json
    final = _save(run, run.length.total_steps, sums) if start < run.length.total_steps or not found else found[0]
    return _finish(run, final, sums)


# Setup ------------------------------------------------------------------------------------------
def prepare_run_dir(out: RunDir, cfg: TrainConfig, *, force: bool) -> None:
    """Create the run folder and write ``config.yaml``; refuse (ConfigError) to reuse it for another config."""
    check_run_dir(out, cfg, force=force)
    write_run_config(out, cfg)


def write_run_config(out: RunDir, cfg: TrainConfig) -> None:
    """Create the run folder and write ``config.yaml`` (atomically)."""
    out.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.config, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def check_run_dir(out: RunDir, cfg: TrainConfig, *, force: bool) -> None:
    """Refuse (ConfigError) to reuse the run folder for another config, unless ``force``; writes nothing."""
    new = to_dict(cfg)
    if out.config.exists():
        old = load_yaml(out.config)  # a FIFO or a folder there: one line, never a read that blocks
        changed = config_changes(old, new)
        if changed and not force:
            before, after = flatten_dotted(old), flatten_dotted(new)
            shown = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed[:3])
            more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
            raise ConfigError(
                f"{out.root} holds a run with a different config ({shown}{more}); use another --out, "
                "or --force to continue that run with the new config"
            )


@dataclass
class Run:
    """Everything one training run is built from (:func:`build_run`), shared by the loop's steps.

    The built parts are set once; what one call of :func:`train` adds (the validator, the progress
    log, the clock) is set by this module's steps and by the methods below, never from outside.
    """

    cfg: TrainConfig
    out: RunDir
    info: DistInfo
    device: torch.device
    dataset: Any  # the "train" split
    order: DataOrder
    diffusion: Diffusion
    model_config: Any  # DiTConfig
    length: RunLength
    text: Any  # the text encoder or None
    trainable: torch.nn.Module  # what the optimizer and the EMA track: the DiT, or DiT + text encoder
    net: torch.nn.Module  # trainable wrapped for DDP/FSDP (and compiled)
    ema: EMA
    opt: torch.optim.Optimizer
    log: MetricsLog
    encode: Any  # captions -> (context, mask) of a frozen text encoder, else None
    validator: Validator | None = None
    autocast: torch.dtype | None = None  # the forward pass's autocast dtype (bf16), None for fp32
    progress: ProgressLog | None = None  # OUT/train.log and the progress lines on stdout
    wall_before: float = 0.0  # training seconds of earlier calls (from the checkpoint)
    started: float = 0.0  # time.perf_counter() when this call started training

    def wall_time(self) -> float:
        """Training seconds of the run so far, earlier calls included."""
        return self.wall_before + time.perf_counter() - self.started

    def start_clock(self, before: float) -> None:
        """Start this call's training clock; ``before``: training seconds of earlier calls."""
        self.wall_before, self.started = before, time.perf_counter()

    def open_progress(self, start: int, *, every: float, echo: bool) -> None:
        """Open this call's progress log (``OUT/train.log`` on rank 0; also stdout when ``echo``)."""
        main = self.info.is_main
        path = self.out.root / TRAIN_LOG if main else None
        self.progress = ProgressLog(path, self.length.total_steps, start, every=every, echo=echo and main)
        self.progress.begin()

    def with_steps(self, steps: int) -> Run:
        """The same built run, trained for ``steps`` full-batch steps (a shared trunk: its length is
        known only once its model is, from its branches' branch points)."""
        cfg = self.cfg.replace(max_steps=steps, flops=None)
        return dataclasses.replace(self, cfg=cfg, length=run_length(cfg.batch_size, self.model_config, max_steps=steps))

    @property
    def joint(self) -> bool:
        """A text encoder trained with the model (inside ``trainable``)."""
        return isinstance(self.trainable, JointTextModel)

    @property
    def weights_meta(self) -> dict[str, Any]:
        """What ``ditscale sample`` needs to rebuild the model and the process from a weights file."""
        return {"model": self.model_config.to_dict(), "diffusion": self.cfg.diffusion_config().to_dict()}


def build_run(cfg: TrainConfig, out: RunDir, info: DistInfo, device: torch.device) -> Run:
    """Data, text encoder, model (seeded by ``cfg.seed``), its DDP/FSDP wrapping, EMA, diffusion and AdamW."""
    data = cfg.data_config()
    data_info = dataset_info(data)
    dataset = build_dataset(data, "train")
    cache = os.environ.get("DITSCALE_TEXT_CACHE") or str(out.text_cache)
    text = build_text_encoder(cfg, data_info.has_captions, cache, device)
    mcfg = cfg.model_config(text=text, info=data_info)
    diffusion = create_diffusion(cfg.diffusion_config())
    length = run_length(cfg.batch_size, mcfg, max_steps=cfg.max_steps, flops=cfg.flops)
    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = create_model(mcfg).to(device)
    trainable = JointTextModel(model, text) if is_trainable(text) else model
    net = wrap_model(trainable, info, device, fsdp=cfg.fsdp)
    # After wrapping (under FSDP2 it holds shards like the model); a jointly trained text encoder is
    # averaged too, so the EMA DiT is always paired with the EMA encoder it was averaged alongside.
    ema = EMA(trainable, cfg.ema_decay)
    net = maybe_compile(net, cfg, device)
    o = cfg.optim
    # Fused AdamW on GPUs (one kernel; ~2x faster for DiT-XL/2 on an H100, docs/benchmarks.md); on CPUs the
    # multi-tensor (foreach) form, the same arithmetic as the per-parameter loop (bit-identical), 1.4x faster.
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad],
        lr=o.lr,
        betas=tuple(o.betas),
        eps=o.eps,
        weight_decay=o.weight_decay,
        fused=cuda or None,
        foreach=None if cuda else True,
    )
    return Run(
        cfg=cfg,
        out=out,
        info=info,
        device=device,
        dataset=dataset,
        order=DataOrder.for_dataset(dataset, cfg.seed, data.stream_offset),
        diffusion=diffusion,
        model_config=mcfg,
        length=length,
        text=text,
        trainable=trainable,
        net=net,
        ema=ema,
        opt=opt,
        encode=frozen_encode_fn(text),
        log=MetricsLog(out.root, enabled=info.is_main, tensorboard=cfg.tensorboard),
        autocast=autocast_dtype(cfg, device),
    )


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype the forward pass autocasts to: bf16 for ``precision: bf16`` on a GPU, or on a CPU
    with ``cpu_bf16: true`` (with a warning); None (fp32) otherwise, with a warning when bf16 was
    asked for on a CPU without ``cpu_bf16`` (see :class:`~ditscale.train.config.TrainConfig`)."""
    if cfg.precision != "bf16":
        return None
    if device.type == "cpu" and not cfg.cpu_bf16:
        warnings.warn(
            "precision bf16 on CPU trains in fp32 (bf16 is slow or emulated on most CPUs); "
            "set cpu_bf16: true to autocast to bf16 anyway",
            stacklevel=3,
        )
        return None
    if device.type == "cpu":
        warnings.warn(
            "cpu_bf16: true: training with bf16 autocast on CPU; usually slower than fp32 "
            "(AVX512-BF16 EPYC, tiny preset: 1.2x)",
            stacklevel=3,
        )
    return torch.bfloat16


def maybe_compile(net: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """``torch.compile(net)`` for ``compile: true`` on a GPU; ``net`` itself otherwise, with a one-line
    warning on CPU or when ``torch.compile`` raises (the run then trains uncompiled)."""
    if cfg.compile and device.type != "cuda":
        warnings.warn("compile=true is for GPUs; training uncompiled on CPU", stacklevel=4)
    if not cfg.compile or device.type != "cuda":
        return net
    try:
        return torch.compile(net)
    except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
        first = (str(err).splitlines() or [""])[0][:200]
        warnings.warn(f"torch.compile failed ({type(err).__name__}: {first}); training uncompiled", stacklevel=4)
        return net


def _start_logs(run: Run, start: int, *, every: float, echo: bool) -> None:
    """Open this call's progress log (``OUT/train.log``; stdout when ``echo``) and, on rank 0, the W&B run."""
    if run.info.is_main:
        run.log.wandb_run = start_wandb(run.cfg.wandb, run.out, to_dict(run.cfg))
    run.open_progress(start, every=every, echo=echo)


def _close_logs(run: Run, text: str) -> None:
    """The closing line of ``OUT/train.log``, then close TensorBoard and W&B."""
    if run.progress is not None:
        run.progress.end(text)
    run.log.close()


def build_validator(run: Run, val: ValConfig | None = None) -> Validator | None:
    """The fixed validation set of ``val`` (default ``run.cfg.val``; None when ``val.num_images`` is 0)."""
    cfg, val = run.cfg, run.cfg.val if val is None else val
    if val.num_images <= 0:
        return None
    return Validator(
        build_dataset(cfg.data_config(), "val"),
        run.diffusion,
        val,
        device=run.device,
        info=run.info,
        conditioning=run.model_config.conditioning,
        encode_text=run.encode,
    )


# Resume -----------------------------------------------------------------------------------------
def find_checkpoint(out: RunDir, info: DistInfo) -> tuple[Path, dict[str, Any]] | None:
    """(path, state) of the newest verified checkpoint, found by rank 0 and verified on every rank."""
    found = ckpt.latest_checkpoint(out.checkpoints) if info.is_main else None
    path = broadcast_object(str(found[0]) if found else None, info)
    if path is None:
        return None
    return Path(path), (found[1] if info.is_main else ckpt.verify_checkpoint(path))


def _resume(run: Run, path: Path, state: dict[str, Any]) -> LossSums:
    """Load the checkpoint into the run; returns its loss sums. The data position must match."""
    step = ckpt.load_training(path, state, run.trainable, run.ema, run.opt, joint=run.joint)
    expected = run.length.counters(step)["images"]
    if state["data_position"] != expected:
        raise TrainingError(
            f"checkpoint {path} is at data position {state['data_position']}, "
            f"expected {expected}; the batch size changed — use a new --out"
        )
    return LossSums(**state["accumulators"])


def _existing_result(out: RunDir, cfg: TrainConfig, start: int, length: RunLength) -> dict[str, Any] | None:
    """The saved result when this exact run is already finished (re-running is then a no-op)."""
    if start < length.total_steps:
        return None
    result = out.read_result()
    if (
        result is not None
        and result.get("status") == "done"
        and not config_changes(result.get("config", {}), to_dict(cfg))
    ):
        return result
    return None


# The steps --------------------------------------------------------------------------------------
class StepResult(NamedTuple):
    """What one optimizer step gives: the global mean loss, the lr it used and the gradient norm
    (None without ``grad_clip``)."""

    loss: float
    lr: float
    grad_norm: float | None


# Called after each step's logging, validation and checkpoint with (steps done, the step's result,
# the run's loss sums): what a caller adds to the loop (a shared trunk's branches, ditscale.train.trunk).
StepHook = Callable[[int, StepResult, LossSums], None]


@dataclass
class Interval:
    """Images and seconds since the last metrics line (for images/s, and MFU against ``peak`` FLOP/s:
    None on other ranks)."""

    peak: float | None
    images: int = 0
    seconds: float = 0.0


def train_steps(
    run: Run,
    start: int,
    sums: LossSums,
    peak: float | None,
    progress: bool | None,
    *,
    hook: StepHook | None = None,
    desc: str = "train",
    log_last: bool = True,
) -> None:
    """Steps ``start .. total_steps - 1``, each followed by its logging, validation and checkpoint
    (:func:`after_step`), then ``hook`` (``peak``: FLOP/s for the MFU column, None on other ranks;
    ``desc``: the bar's label; ``log_last``: also log after the last step, off the ``log_every``
    cadence — a trunk does not: its steps go on when a later branch extends it)."""
    length = run.length
    tail_from = tail_start(length.total_steps)  # train_loss = mean of the last 10% of steps
    steps = range(start, length.total_steps)
    batches = rank_batches(
        run.dataset, run.order, length.batch_at, length.batch_size, steps, run.info, run.cfg.data_config().num_workers
    )
    bar, interval = progress_bar(length.total_steps, start, progress, desc=desc), Interval(peak)
    run.net.train()
    for step in steps:
        t_step = time.perf_counter()
        result = train_step(run, step, next(batches))
        sums.add(result.loss, tail=step >= tail_from)
        interval.images += length.batch_at(step)
        interval.seconds += time.perf_counter() - t_step
        bar.update(1)
        bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)
        if run.progress is not None:
            run.progress.update(step + 1, result.loss, length.batch_at(step))
        after_step(run, step + 1, result, sums, interval, log_last=log_last)
        if hook is not None:
            hook(step + 1, result, sums)
    bar.close()
    del batches


def train_step(run: Run, step: int, batch: dict) -> StepResult:
    """One optimizer step on this rank's rows of the global batch; returns (global mean loss, lr, grad norm)."""
    cfg, o, device, info = run.cfg, run.cfg.optim, run.device, run.info
    n = run.length.batch_at(step)
    lo, hi = shard_bounds(n, info)
    lr = lr_at(step, run.length.total_steps, o, run.model_config.hidden_size)
    for group in run.opt.param_groups:
        group["lr"] = lr

    # The draws of the whole global batch, seeded by (seed, step); this rank takes rows lo:hi.
    g = step_generator(cfg.seed, step)
    t = run.diffusion.sample_t(n, "cpu", g)[lo:hi].to(device)
    noise = torch.randn((n, *batch["x"].shape[1:]), generator=g)[lo:hi].to(device)
    drop_p = run.model_config.class_dropout_prob if run.model_config.conditioning != "none" else 0.0
    drop = (torch.rand(n, generator=g) < drop_p).long()[lo:hi].to(device)
    x = batch["x"].to(device, non_blocking=True)
    kwargs = model_kwargs(
        run.model_config.conditioning,
        labels=batch.get("y"),
        captions=batch.get("caption"),
        encode=run.encode,
        device=device,
        drop=drop,
    )
    losses = run.diffusion.training_losses(forward_fn(run), x, t, model_kwargs=kwargs, noise=noise)["loss"].float()
    local_sum = losses.sum()
    step_loss = all_reduce_sum([float(local_sum.detach())], info, device)[0] / n
    if not math.isfinite(step_loss):
        raise _nan_error(run.out, step, "nan" if math.isnan(step_loss) else "inf", info)
    # DDP averages gradients over ranks: weight this rank's sum so the average is the global mean.
    (local_sum * (info.world / n)).backward()
    grad_norm = None
    if o.grad_clip is not None:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.net.parameters(), o.grad_clip, foreach=True))
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.ema.update(run.trainable, copy=step < cfg.ema_start)  # the EMA window starts after ema_start steps
    return StepResult(step_loss, lr, grad_norm)


def forward_fn(run: Run) -> Any:
    """The model function of a training step: ``run.net``, or for bf16 runs ``run.net`` under
    ``torch.autocast(device type, bf16)`` with its output cast back to fp32, so the loss (and
    everything after the forward pass) is computed in fp32 on fp32 master weights."""
    if run.autocast is None:
        return run.net

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(run.device.type, dtype=run.autocast):
            out = run.net(*args, **kwargs)
        return out.float()

    return forward


def after_step(
    run: Run, done: int, result: StepResult, sums: LossSums, interval: Interval, *, log_last: bool = True
) -> None:
    """Log every ``log_every`` steps (and after the last step, with ``log_last``), validate every
    ``val.every``, checkpoint every ``ckpt_every`` (the last step's validation and checkpoint are the
    run's final ones, in :func:`_finish`)."""
    cfg, total = run.cfg, run.length.total_steps
    if done % cfg.log_every == 0 or (log_last and done == total):
        write_log_line(run, done, result, sums, interval)
    if run.validator is not None and cfg.val.every and done % cfg.val.every == 0 and done < total:
        run.log.write({"step": done, **run.length.counters(done), **_validate(run)})
        log_samples(run, done)
    if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < total:
        _save(run, done, sums)


def write_log_line(run: Run, done: int, result: StepResult, sums: LossSums, interval: Interval) -> None:
    """One ``metrics.jsonl`` line after ``done`` steps (:func:`metrics_line`, with images/s and MFU
    over the interval); then the interval and the sums' log part start again."""
    rate = interval.images / max(interval.seconds, 1e-9)
    peak = interval.peak
    mfu = (rate * run.length.flops_per_image / (peak * run.info.world)) if peak else None
    run.log.write(metrics_line(run.length, done, result, sums, images_per_s=rate, mfu=mfu))
    sums.reset_log()
    interval.images, interval.seconds = 0, 0.0


def metrics_line(
    length: RunLength,
    done: int,
    result: StepResult,
    sums: LossSums,
    *,
    images_per_s: float | None = None,
    mfu: float | None = None,
) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of a run of ``length`` after ``done`` steps: counters, the mean
    loss since the last line (``sums``), the last step's lr (and grad norm, with clipping), and the
    timings (None where they are not known: a branch's line written by its trunk)."""
    record = {
        "step": done,
        **length.counters(done),
        "train_loss": sums.log_mean(),
        "lr": result.lr,
        "images_per_s": images_per_s,
        "mfu": mfu,
    }
    if result.grad_norm is not None:
        record["grad_norm"] = result.grad_norm
    return record


def _validate(run: Run) -> dict[str, Any]:
    return validate_raw_and_ema(run.validator, run.net, run.trainable, run.ema, run.cfg.val)


def log_samples(run: Run, step: int) -> None:
    """The sample grid of ``val.sample_images`` EMA images after ``step`` steps (every rank draws, rank 0
    logs it to TensorBoard / W&B as ``samples`` and writes ``OUT/samples/step_XXXXXXXX.png``)."""
    val = run.cfg.val
    if not val.sample_images or run.validator is None:
        return
    grid = ema_sample_grid(
        run.validator,
        run.diffusion,
        run.net,
        run.trainable,
        run.ema,
        val.sample_images,
        val.sample_steps,
    )
    if run.info.is_main:
        run.log.add_image("samples", grid, step)
        save_grid(grid[None], run.out.root / "samples" / f"step_{step:08d}.png", padding=0)


def _save(run: Run, step: int, sums: LossSums) -> Path | None:
    """Checkpoint after ``step`` steps (every rank calls it; rank 0 writes and returns the path)."""
    sums.wall_time = run.wall_time()
    state = ckpt.run_state(to_dict(run.cfg), run.length, step, sums)
    path = ckpt.save_training(
        run.out.checkpoints,
        step,
        run.trainable,
        run.ema,
        run.opt,
        weights_meta=run.weights_meta,
        state=state,
        text_spec=word_encoder_spec(run.text) if run.joint else None,
        keep=run.cfg.keep_checkpoints,
        write=run.info.is_main,
    )
    barrier(run.info)
    return path


# Finish -----------------------------------------------------------------------------------------
def _finish(run: Run, final_checkpoint: Path | None, sums: LossSums) -> dict[str, Any]:
    """Validate the final weights, write ``result.json`` (rank 0) and return the result."""
    val = _validate(run) if run.validator is not None else {}
    total = run.length.total_steps
    if val:
        run.log.write({"step": total, **run.length.counters(total), **val})
        log_samples(run, total)
    result = _result(run, val, sums, final_checkpoint)
    if run.info.is_main:
        atomic_write_json(run.out.result, result)
    shown = f"val_loss {val['val_loss']:.4f} " if val else ""
    _close_logs(run, f"done: {total} steps, {shown}wall {result['wall_time_s']:.1f} s")
    barrier(run.info)
    return result


def _result(run: Run, val: dict[str, Any], sums: LossSums, final_checkpoint: Path | None) -> dict[str, Any]:
    """The run's summary (``result.json``): sizes, data and compute seen, losses, wall time."""
    length = run.length
    c = length.counters(length.total_steps)
    return {
        "status": "done",
        "config": to_dict(run.cfg),
        "config_sha256": sha256_json(to_dict(run.cfg)),
        "model_config": run.model_config.to_dict(),
        "params": length.params_total,
        "params_non_embedding": length.params_non_embedding,
        "steps": length.total_steps,
        "images": c["images"],
        "tokens": c["tokens"],
        "flops_exact": c["flops"],
        "flops_6nd": c["flops_6nd"],
        "flops_budget": run.cfg.flops,
        "flops_per_image": length.flops_per_image,
        "tokens_per_image": length.tokens_per_image,
        **val,
        "train_loss": sums.tail_mean(),
        "wall_time_s": run.wall_time(),
        "world_size": run.info.world,
        "checkpoint": str(final_checkpoint) if final_checkpoint else None,
        "autocast": str(run.autocast).removeprefix("torch.") if run.autocast is not None else None,
        "torch_threads": torch.get_num_threads(),
        "versions": versions(run.device),
    }


def _nan_error(out: RunDir, step: int, kind: str, info: DistInfo) -> TrainingError:
    """The error for a NaN/inf loss at 0-based ``step``, naming the newest verified checkpoint."""
    found = ckpt.latest_checkpoint(out.checkpoints)
    where = f"last good checkpoint: {found[0]}" if found else "no checkpoint was written before it"
    msg = f"loss became {kind} at step {step}; {where} (lower the learning rate or enable grad_clip)"
    if info.is_main:
        atomic_write_json(out.result, {"status": "failed", "error": msg, "step": step})
    return TrainingError(msg)
