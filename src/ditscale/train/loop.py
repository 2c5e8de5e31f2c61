"""The training loop: ``train(cfg, out_dir) -> result``.

One optimizer step (0-based ``step``) of global batch ``b`` images:

1. the images are positions ``[step * batch_size, step * batch_size + b)`` of the data order
   (a permutation per (seed, epoch) for finite datasets, sequential for infinite ones);
2. timesteps, noise and the label-drop mask of the whole global batch are drawn from a CPU
   generator seeded by (seed, step); rank r of W takes rows :func:`shard_bounds` of them;
3. AdamW step at ``lr_at(step)``, optional gradient clipping, EMA update.

Because nothing depends on the global RNG state or on the number of processes, a resumed run is
bit-identical to an uninterrupted one (CPU), and W processes compute the same update as one.
The run stops after ``max_steps`` or, with a FLOP budget, after
``floor(flops / exact FLOPs per image)`` images (the last batch smaller).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ditscale.config import to_dict
from ditscale.errors import ConfigError, TrainingError
from ditscale.io import atomic_write_json, atomic_write_text
from ditscale.train import checkpoint as ckpt
from ditscale.train.config import TrainConfig, check_config
from ditscale.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    pick_device,
    reshard,
    shard_bounds,
    shutdown_distributed,
    wrap_model,
)
from ditscale.train.ema import EMA
from ditscale.train.metrics import MetricsLog, peak_flops, progress_bar
from ditscale.train.schedules import lr_at
from ditscale.train.validate import Validator

# Keys that may change between runs in the same OUT without changing the trained weights.
RESUME_SAFE_KEYS = ("log_every", "ckpt_every", "keep_checkpoints", "tensorboard", "val.every", "data.num_workers")
INFINITE_LENGTH = 2**31  # datasets at least this long are read sequentially (no permutation)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """64-bit seed of the per-step generator for (run seed, step, stream)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, np.uint64)[0] >> 1)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """CPU generator of step ``step``: its draws are identical on every rank, device and resume."""
    return torch.Generator().manual_seed(step_seed(seed, step, stream))


# Data order --------------------------------------------------------------------------------------
class DataOrder:
    """Maps a global image position to ``(epoch, index)``: a fresh permutation per (seed, epoch) of a
    finite dataset of ``length`` items, or ``(0, position)`` for an infinite one."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed = length, seed
        self.sequential = length >= INFINITE_LENGTH
        self._perm: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.length, generator=step_generator(self.seed, epoch, stream=1)))
        return self._perm[1]

    def items(self, start: int, count: int) -> list[tuple[int, int]]:
        """(epoch, dataset index) of positions ``[start, start + count)``."""
        if self.sequential:
            return [(0, p) for p in range(start, start + count)]
        out = []
        for p in range(start, start + count):
            epoch, i = divmod(p, self.length)
            out.append((epoch, int(self.permutation(epoch)[i])))
        return out


class EpochIndexed(torch.utils.data.Dataset):
    """``ds[(epoch, index)]`` = item ``index`` of ``dataset`` at ``epoch`` (works in DataLoader workers)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


# Plan -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How long the run is: ``total_steps`` steps, ``total_images`` images (last batch may be smaller)."""

    total_steps: int
    total_images: int
    batch_size: int
    flops_per_image: float  # exact training FLOPs per image (3 x forward MACs x 2)
    flops_6nd_per_image: float  # 6 N x tokens per image
    tokens_per_image: int
    params_total: int
    params_non_embedding: int

    def batch_at(self, step: int) -> int:
        """Global batch of 0-based ``step`` in images."""
        return min(self.batch_size, self.total_images - step * self.batch_size)

    def counters(self, steps_done: int) -> dict[str, Any]:
        """images / tokens / exact and 6ND FLOPs after ``steps_done`` steps."""
        images = min(steps_done * self.batch_size, self.total_images)
        return {
            "images": images,
            "tokens": images * self.tokens_per_image,
            "flops": images * self.flops_per_image,
            "flops_6nd": images * self.flops_6nd_per_image,
        }


def make_plan(cfg: TrainConfig, model_config) -> Plan:
    """Steps and images of the run from ``max_steps`` or from the exact FLOP budget ``flops``."""
    from ditscale import flops as F

    per_image = float(F.train_flops_exact(model_config, 1))
    per_image_6nd = float(F.train_flops_6nd(model_config, 1))
    counts = F.param_counts(model_config)
    if cfg.flops is not None:
        total_images = math.floor(F.images_for_flops(model_config, cfg.flops))
        while (total_images + 1) * per_image <= cfg.flops:  # guard the float division both ways
            total_images += 1
        while total_images > 0 and total_images * per_image > cfg.flops:
            total_images -= 1
        if total_images <= 0:
            raise ConfigError(
                f"flops={cfg.flops:.4g} is less than one image's training cost ({per_image:.4g} FLOPs); raise the budget"
            )
        total_steps = -(-total_images // cfg.batch_size)
    else:
        total_steps = cfg.max_steps
        total_images = total_steps * cfg.batch_size
    return Plan(
        total_steps=total_steps, total_images=total_images, batch_size=cfg.batch_size,
        flops_per_image=per_image, flops_6nd_per_image=per_image_6nd,
        tokens_per_image=int(F.tokens_per_image(model_config)),
        params_total=int(counts.total), params_non_embedding=int(counts.non_embedding),
    )


# Run folder -------------------------------------------------------------------------------------
def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts, excluding :data:`RESUME_SAFE_KEYS`."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUME_SAFE_KEYS)


def prepare_run_dir(out: Path, cfg: TrainConfig, *, force: bool) -> None:
    """Create ``out`` and write ``config.yaml``; refuse (ConfigError) to reuse it for another config."""
    new = to_dict(cfg)
    path = out / "config.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        changed = config_changes(old, new)
        if changed and not force:
            shown = ", ".join(f"{k}: {_flat(old).get(k)!r} -> {_flat(new).get(k)!r}" for k in changed[:3])
            more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
            raise ConfigError(
                f"{out} holds a run with a different config ({shown}{more}); use another --out, "
                "or --force to continue that run with the new config"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(new, sort_keys=False))


# Text conditioning ------------------------------------------------------------------------------
WORD_ENCODER = {"context_dim": 64, "max_length": 16, "num_layers": 1, "num_heads": 4}


def build_text_encoder(cfg: TrainConfig, out: Path, device: torch.device):
    """The text encoder of a text-conditioned run (None without ``text_encoder``).

    "word": a :class:`~ditscale.data.text.WordTextEncoder` (:data:`WORD_ENCODER` sizes) trained with
    the model, its vocabulary from :meth:`~ditscale.data.text.WordTokenizer.for_dataset`. Anything else: a frozen
    Hugging Face encoder (path or hub id), embeddings cached in ``$DITSCALE_TEXT_CACHE`` or ``OUT/text_cache``.
    """
    if not cfg.text_encoder:
        if cfg.model.get("conditioning") == "text":
            raise ConfigError("model.conditioning is 'text' but no text_encoder is set; set text_encoder=word or a HF path/id")
        return None
    from ditscale.data import dataset_info
    from ditscale.data import text as T

    data_cfg = cfg.data_config()
    if not dataset_info(data_cfg).has_captions:
        raise ConfigError(f"text_encoder={cfg.text_encoder!r} needs captions; set data.captions=true")
    if cfg.text_encoder == "word":
        tokenizer = T.WordTokenizer.for_dataset(data_cfg)  # shapes grammar, digit words, or the captions' words
        torch.manual_seed(cfg.seed + 1)
        return T.WordTextEncoder(tokenizer, **WORD_ENCODER).to(device)
    cache = os.environ.get("DITSCALE_TEXT_CACHE") or str(out / "text_cache")
    return T.HFTextEncoder(cfg.text_encoder, cache_dir=cache, device=device)


# The loop ---------------------------------------------------------------------------------------
def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, progress: bool | None = None, force: bool = False) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg`` in ``out_dir``; returns the result dict.

    ``progress``: show a tqdm bar (None: only when stderr is a terminal). ``force``: continue a run
    whose saved ``config.yaml`` differs (beyond :data:`RESUME_SAFE_KEYS`). Under ``torchrun`` the
    process group is initialised here; only rank 0 writes files. Raises :class:`TrainingError`
    when the loss becomes NaN/inf (after the newest checkpoint has been verified).
    """
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, Path(out_dir), info, progress=progress, force=force)
    finally:
        shutdown_distributed(info)


def _train(cfg: TrainConfig, out: Path, info: DistInfo, *, progress: bool | None, force: bool) -> dict[str, Any]:
    from ditscale.data import build_dataset
    from ditscale.diffusion import create_diffusion
    from ditscale.models import create_model

    check_config(cfg)
    device = pick_device(cfg.device, info)
    if cfg.precision == "bf16" and device.type != "cuda":
        warnings.warn("precision bf16 needs a GPU; training in fp32 on CPU", stacklevel=2)
    autocast = cfg.precision == "bf16" and device.type == "cuda"
    if info.is_main:
        prepare_run_dir(out, cfg, force=force)
    barrier(info)

    # Build everything -----------------------------------------------------------------------------
    data_cfg, diff_cfg = cfg.data_config(), cfg.diffusion_config()
    dataset = build_dataset(data_cfg, "train")
    text = build_text_encoder(cfg, out, device)
    mcfg = cfg.model_config(text=text)
    diffusion = create_diffusion(diff_cfg)
    plan = make_plan(cfg, mcfg)
    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = create_model(mcfg).to(device)
    joint = text is not None and _has_params(text)  # a text encoder trained with the model
    trainable: torch.nn.Module = _Joint(model, text) if joint else model
    net = wrap_model(trainable, info, device, fsdp=cfg.fsdp)
    # After wrapping (under FSDP2 it holds shards like the model); a jointly trained text encoder is
    # averaged too, so the EMA DiT is always paired with the EMA encoder it was averaged alongside.
    ema = EMA(trainable, cfg.ema_decay)
    if cfg.compile and device.type == "cuda":
        net = torch.compile(net)
    elif cfg.compile:
        warnings.warn("compile=true is for GPUs; training uncompiled on CPU", stacklevel=2)
    o = cfg.optim
    opt = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad], lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
    )
    weights_meta = {"model": mcfg.to_dict(), "diffusion": diff_cfg.to_dict()}
    order = DataOrder(len(dataset), cfg.seed)
    loader_ds = EpochIndexed(dataset)

    # Resume -------------------------------------------------------------------------------------
    start, acc = 0, _Accumulators()
    log = MetricsLog(out, enabled=info.is_main, tensorboard=cfg.tensorboard)
    found = ckpt.latest_checkpoint(out / "checkpoints") if info.is_main else None
    found_path = broadcast_object(str(found[0]) if found else None, info)
    if found_path is not None:
        state = ckpt.verify_checkpoint(found_path) if not info.is_main else found[1]
        start = _load_checkpoint(Path(found_path), state, trainable, ema, opt)
        acc = _Accumulators(**state["accumulators"])
        if state["data_position"] != plan.counters(start)["images"]:
            raise TrainingError(f"checkpoint {found_path} is at data position {state['data_position']}, "
                                f"expected {plan.counters(start)['images']}; the batch size changed — use a new --out")
    log.truncate_after(start)  # drop lines logged after the checkpoint (or all, when starting over)
    done = _existing_result(out, cfg, start, plan)
    if done is not None:
        return done

    validator = None
    if cfg.val.num_images > 0:
        validator = Validator(
            build_dataset(data_cfg, "val"), diffusion, diff_cfg.kind, cfg.val, device=device, info=info,
            conditioning=mcfg.conditioning, encode_text=None if joint else _encoder_fn(text),
        )
    peak = peak_flops(device, cfg.peak_flops) if info.is_main else None
    drop_p = mcfg.class_dropout_prob if mcfg.conditioning != "none" else 0.0
    tail_start = plan.total_steps - max(1, plan.total_steps // 10)  # train_loss = mean of the last 10% of steps

    run_t0, wall_before = time.perf_counter(), acc.wall_time

    def save(step: int) -> Path | None:
        acc.wall_time = wall_before + time.perf_counter() - run_t0
        return _save_checkpoint(out, step, trainable, text, ema, opt, acc, plan, cfg, weights_meta, info)

    # Loop -----------------------------------------------------------------------------------------
    bar = progress_bar(plan.total_steps, start, progress)
    interval_images, interval_time = 0, 0.0
    batches = _batches(loader_ds, order, plan, info, start, data_cfg.num_workers)
    net.train()
    for step in range(start, plan.total_steps):
        t_step = time.perf_counter()
        n = plan.batch_at(step)
        lo, hi = shard_bounds(n, info)
        batch = next(batches)
        lr = lr_at(step, plan.total_steps, o, mcfg.hidden_size)
        for group in opt.param_groups:
            group["lr"] = lr

        g = step_generator(cfg.seed, step)
        t = diffusion.sample_t(n, "cpu", g)[lo:hi].to(device)
        noise = torch.randn((n, *batch["x"].shape[1:]), generator=g)[lo:hi].to(device)
        drop = (torch.rand(n, generator=g) < drop_p).long()[lo:hi].to(device)
        x = batch["x"].to(device, non_blocking=True)
        kwargs = _model_kwargs(mcfg.conditioning, batch, drop, text, device, joint)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            losses = diffusion.training_losses(net, x, t, model_kwargs=kwargs, noise=noise)["loss"].float()
        local_sum = losses.sum()
        total = all_reduce_sum([float(local_sum.detach())], info, device)[0]
        step_loss = total / n
        if not math.isfinite(step_loss):
            raise _nan_error(out, step, "nan" if math.isnan(step_loss) else "inf", info)
        # DDP averages gradients over ranks: weight this rank's sum so the average is the global mean.
        (local_sum * (info.world / n)).backward()
        grad_norm = None
        if o.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(trainable)

        done_steps = step + 1
        acc.add(step_loss, tail=step >= tail_start)
        interval_images += n
        interval_time += time.perf_counter() - t_step
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)

        if done_steps % cfg.log_every == 0 or done_steps == plan.total_steps:
            rate = interval_images / max(interval_time, 1e-9)
            record = {"step": done_steps, **plan.counters(done_steps), "train_loss": acc.log_mean(), "lr": lr,
                      "images_per_s": rate,
                      "mfu": (rate * plan.flops_per_image / (peak * info.world)) if peak else None}
            if grad_norm is not None:
                record["grad_norm"] = grad_norm
            log.write(record)
            acc.reset_log()
            interval_images, interval_time = 0, 0.0
        if validator is not None and cfg.val.every and done_steps % cfg.val.every == 0 and done_steps < plan.total_steps:
            log.write({"step": done_steps, **plan.counters(done_steps), **_validate(validator, net, trainable, ema, cfg)})
        if cfg.ckpt_every and done_steps % cfg.ckpt_every == 0 and done_steps < plan.total_steps:
            save(done_steps)
    bar.close()
    del batches

    # Finish ---------------------------------------------------------------------------------------
    final_ckpt = save(plan.total_steps) if start < plan.total_steps or found_path is None else Path(found_path)
    val = _validate(validator, net, trainable, ema, cfg) if validator is not None else {}
    if val:
        log.write({"step": plan.total_steps, **plan.counters(plan.total_steps), **val})
    c = plan.counters(plan.total_steps)
    result = {
        "status": "done",
        "config": to_dict(cfg),
        "model_config": mcfg.to_dict(),
        "params": plan.params_total,
        "params_non_embedding": plan.params_non_embedding,
        "steps": plan.total_steps,
        "images": c["images"],
        "tokens": c["tokens"],
        "flops_exact": c["flops"],
        "flops_6nd": c["flops_6nd"],
        "flops_budget": cfg.flops,
        "flops_per_image": plan.flops_per_image,
        "tokens_per_image": plan.tokens_per_image,
        **{k: v for k, v in val.items()},
        "train_loss": acc.tail_mean(),
        "wall_time_s": wall_before + time.perf_counter() - run_t0,
        "world_size": info.world,
        "checkpoint": str(final_ckpt) if final_ckpt else None,
    }
    if info.is_main:
        atomic_write_json(out / "result.json", result)
    log.close()
    barrier(info)
    return result


# Helpers of the loop ------------------------------------------------------------------------------
class _Joint(torch.nn.Module):
    """DiT + a trainable text encoder as one module (one DDP wrapper, one optimizer)."""

    def __init__(self, dit: torch.nn.Module, text: torch.nn.Module):
        super().__init__()
        self.dit, self.text = dit, text

    def forward(self, x, t, captions=None, force_drop_ids=None):
        context, mask = self.text.encode(captions)
        return self.dit(x, t, context=context.to(x.device), context_mask=mask.to(x.device), force_drop_ids=force_drop_ids)


def _has_params(module) -> bool:
    return isinstance(module, torch.nn.Module) and any(p.requires_grad for p in module.parameters())


def _encoder_fn(text):
    if text is None:
        return None

    def encode(captions):
        with torch.no_grad():
            return text.encode(captions)

    return encode


def _model_kwargs(conditioning: str, batch: dict, drop: torch.Tensor, text, device, joint: bool) -> dict[str, Any]:
    if conditioning == "class":
        return {"y": batch["y"].to(device), "force_drop_ids": drop}
    if conditioning == "text":
        if joint:  # trained jointly: encoded inside the wrapped module
            return {"captions": list(batch["caption"]), "force_drop_ids": drop}
        with torch.no_grad():
            context, mask = text.encode(list(batch["caption"]))
        return {"context": context.to(device), "context_mask": mask.to(device), "force_drop_ids": drop}
    return {}


def _batches(ds: EpochIndexed, order: DataOrder, plan: Plan, info: DistInfo, start: int, workers: int):
    """This rank's collated batch of every step from ``start`` (a DataLoader when ``workers`` > 0)."""
    def keys():
        for step in range(start, plan.total_steps):
            n = plan.batch_at(step)
            lo, hi = shard_bounds(n, info)
            yield order.items(step * plan.batch_size + lo, hi - lo)

    collate = torch.utils.data.default_collate
    if workers == 0:
        for k in keys():
            yield collate([ds[key] for key in k])
        return
    loader = torch.utils.data.DataLoader(ds, batch_sampler=_Iterable(keys), num_workers=workers,
                                         collate_fn=collate, pin_memory=torch.cuda.is_available(),
                                         persistent_workers=False, prefetch_factor=2)
    yield from loader


class _Iterable:
    """A re-iterable wrapper of a generator function (a DataLoader batch_sampler without a length)."""

    def __init__(self, fn):
        self.fn = fn

    def __iter__(self):
        return self.fn()


@dataclass
class _Accumulators:
    """Loss sums kept across resumes (part of the checkpoint)."""

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


def _validate(validator: Validator, net, model, ema: EMA, cfg: TrainConfig) -> dict[str, Any]:
    """Validation with the raw and the EMA weights of ``model`` (the module the EMA tracks);
    ``val_loss`` is the one named by ``val.weights``."""
    raw = validator.evaluate(net)
    reshard(net)
    backup = [p.detach().clone() for p in model.parameters()]
    ema.copy_to(model)
    try:
        averaged = validator.evaluate(net)
    finally:
        reshard(net)
        with torch.no_grad():
            for p, b in zip(model.parameters(), backup):
                p.copy_(b)
    head = averaged if cfg.val.weights == "ema" else raw
    return {
        "val_loss": head["val_loss"], "val_loss_buckets": head["val_loss_buckets"], "val_weights": cfg.val.weights,
        "val_loss_raw": raw["val_loss"], "val_loss_ema": averaged["val_loss"],
        "val_loss_buckets_raw": raw["val_loss_buckets"], "val_loss_buckets_ema": averaged["val_loss_buckets"],
    }


def _state_dicts(trainable, opt):
    """Full model and optimizer state dicts (collective under FSDP; CPU tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(trainable, options=opts), get_optimizer_state_dict(trainable, opt, options=opts)


def _split_joint(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _save_checkpoint(out, step, trainable, text, ema, opt, acc, plan, cfg, weights_meta, info) -> Path | None:
    from ditscale.models.io import METADATA_KEY

    model_sd, opt_sd = _state_dicts(trainable, opt)
    ema_sd = ema.state_dict()
    if not info.is_main:
        barrier(info)
        return None
    joint = isinstance(trainable, _Joint)
    dit_sd = _split_joint(model_sd, "dit.") if joint else model_sd
    opt_tensors, opt_meta = ckpt.flatten_optimizer_state(opt_sd)

    def meta(kind: str) -> dict[str, str]:
        return {METADATA_KEY: json.dumps({**weights_meta, "step": step, "weights": kind})}

    weights = {"model": (dit_sd, meta("raw")), "ema": (_split_joint(ema_sd, "dit.") if joint else ema_sd, meta("ema")),
               "optimizer": (opt_tensors, None)}
    if joint:
        spec = {METADATA_KEY: json.dumps({"text_encoder": "word", **WORD_ENCODER, "vocab": text.tokenizer.vocab})}
        weights["text_encoder"] = (_split_joint(model_sd, "text."), spec)
        weights["text_encoder_ema"] = (_split_joint(ema_sd, "text."), spec)
    state = {
        "config": to_dict(cfg),
        "data_position": plan.counters(step)["images"],
        "optimizer": opt_meta,
        "accumulators": dict(acc.__dict__),
        "rng": ckpt.rng_state(),
        "counters": plan.counters(step),
    }
    path = ckpt.write_checkpoint(out / "checkpoints", step, weights, state, keep=cfg.keep_checkpoints)
    barrier(info)
    return path


def _load_checkpoint(path: Path, state, trainable, ema: EMA, opt) -> int:
    """Restore weights, EMA, optimizer and RNG from a verified checkpoint; returns its step."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    sd, ema_sd = ckpt.load_tensors(path, "model"), ckpt.load_tensors(path, "ema")
    if isinstance(trainable, _Joint):
        text_sd = ckpt.load_tensors(path, "text_encoder")
        text_ema = ckpt.load_tensors(path, "text_encoder_ema") if (path / "text_encoder_ema.safetensors").is_file() else text_sd
        sd = {**{f"dit.{k}": v for k, v in sd.items()}, **{f"text.{k}": v for k, v in text_sd.items()}}
        ema_sd = {**{f"dit.{k}": v for k, v in ema_sd.items()}, **{f"text.{k}": v for k, v in text_ema.items()}}
    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(trainable, sd, options=opts)
    ema.load_state_dict(ema_sd)
    osd = ckpt.unflatten_optimizer_state(ckpt.load_tensors(path, "optimizer"), state["optimizer"])
    set_optimizer_state_dict(trainable, opt, osd, options=StateDictOptions(full_state_dict=True))
    ckpt.set_rng_state(state.get("rng", {}))
    return int(state["step"])


def _existing_result(out: Path, cfg: TrainConfig, start: int, plan: Plan) -> dict[str, Any] | None:
    """The saved result when this exact run is already finished (re-running is then a no-op)."""
    path = out / "result.json"
    if start < plan.total_steps or not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError:
        return None
    if result.get("status") == "done" and not config_changes(result.get("config", {}), to_dict(cfg)):
        return result
    return None


def _nan_error(out: Path, step: int, kind: str, info: DistInfo) -> TrainingError:
    """The error for a NaN/inf loss at 0-based ``step``, naming the newest verified checkpoint."""
    found = ckpt.latest_checkpoint(out / "checkpoints")
    where = f"last good checkpoint: {found[0]}" if found else "no checkpoint was written before it"
    msg = f"loss became {kind} at step {step}; {where} (lower the learning rate or enable grad_clip)"
    if info.is_main:
        atomic_write_json(out / "result.json", {"status": "failed", "error": msg, "step": step})
    return TrainingError(msg)
