"""Training configs (pure Python; no torch import, so study planning can build and inspect them).

A run is described by one :class:`TrainConfig`, built strictly with :func:`ditscale.config.from_dict`
(unknown keys raise :class:`ConfigError` naming them) from a preset
(``ditscale/presets/train/NAME.yaml``) or a YAML file, plus dotted overrides::

    cfg = load_train_config("tiny", ["optim.lr=3e-4", "max_steps=200"])

The defaults are the DiT recipe (Peebles & Xie 2022, Sec. 4): AdamW, lr 1e-4 constant, no weight
decay, EMA decay 0.9999, global batch 256.

The ``model``, ``diffusion`` and ``data`` sections are kept as plain mappings here and are
validated strictly by their own modules' configs (``DiTConfig``, ``DiffusionConfig``,
``DataConfig``) in :func:`load_train_config` and at the start of training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ditscale.config import apply_overrides, from_dict, load_preset_or_yaml, to_dict
from ditscale.data import dataset_info
from ditscale.data.config import DataConfig
from ditscale.diffusion.config import DiffusionConfig
from ditscale.errors import ConfigError
from ditscale.models.config import DiTConfig, named_config, resolve_config

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "train"

# The choices of the lr schedule (:mod:`ditscale.train.schedules`); a study's ``hparams`` offer the same.
Schedule = Literal["constant", "cosine", "wsd"]
CooldownShape = Literal["linear", "1-sqrt"]
WidthRule = Literal["none", "inverse", "inverse_sqrt"]


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule.

    Attributes:
        lr: peak learning rate (before the width rule).
        betas, eps, weight_decay: AdamW hyper-parameters (DiT: (0.9, 0.999), 1e-8, 0).
        grad_clip: max global gradient L2 norm, or None for no clipping.
        warmup_steps: linear warmup from 0 to the peak lr over this many optimizer steps.
        schedule: "constant", "cosine" (to ``min_lr_ratio * lr`` at the last step) or "wsd"
            (warmup-stable-decay: constant, then a linear cooldown over the last ``cooldown_frac``
            of the run to ``min_lr_ratio * lr``).
        cooldown_frac: fraction of the total steps used by the "wsd" cooldown.
        cooldown_shape: how the "wsd" cooldown falls to ``min_lr_ratio * lr``: "linear", or
            "1-sqrt" (``1 - sqrt(p)`` of the cooldown's progress p; Hägele et al. 2024).
        min_lr_ratio: final lr / peak lr for "cosine" and "wsd".
        width_rule: "none", "inverse" (lr * base_width / hidden_size, the muP rule for Adam on
            hidden weights) or "inverse_sqrt" (lr * sqrt(base_width / hidden_size)).
        base_width: the hidden size at which ``lr`` is the tuned value (needed by a width rule).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    warmup_steps: int = 0
    schedule: Schedule = "constant"
    cooldown_frac: float = 0.2
    cooldown_shape: CooldownShape = "linear"
    min_lr_ratio: float = 0.0
    width_rule: WidthRule = "none"
    base_width: int | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"optim.grad_clip must be positive or null, got {self.grad_clip}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.cooldown_frac <= 1.0:
            raise ConfigError(f"optim.cooldown_frac must be in [0, 1], got {self.cooldown_frac}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.width_rule != "none" and (self.base_width is None or self.base_width <= 0):
            raise ConfigError(
                f"optim.width_rule={self.width_rule!r} needs optim.base_width (the width the lr was tuned at)"
            )


@dataclass
class ValConfig:
    """Low-noise validation loss on a fixed held-out set (see :mod:`ditscale.train.validate`).

    Attributes:
        every: evaluate every this many optimizer steps (0: only at the end of the run).
        num_images: first ``num_images`` images of the "val" split (0 disables validation).
        num_timesteps: size of the fixed timestep grid; every image is evaluated at every grid point.
        batch_size: images x timesteps per forward pass (does not change the result).
        seed: seed of the fixed validation noise (keep it equal across the runs of a study).
        buckets: number of equal timestep buckets reported in ``val_loss_buckets``.
        weights: which weights give the headline ``val_loss``: "raw" (default; EMA with decay
            0.9999 is meaningless for short scaling runs) or "ema".
        both: also score the other set of weights, recorded as ``val_loss_raw`` / ``val_loss_ema``
            (default). False scores only the headline's weights: half the validation's cost, which
            in a CPU study of small models is ~40% of the training FLOPs (docs/studies.md).
        sample_images: at every validation, also draw this many images from the EMA weights (fp32,
            no guidance, conditioned on the first validation images' labels or captions, initial
            noise seeded by ``seed``) and log them as one grid: TensorBoard ``samples`` image,
            W&B ``samples``, and ``OUT/samples/step_XXXXXXXX.png``. 0 (default) = off; pixel-space
            models only (latents would need the VAE).
        sample_steps: sampler steps for those images (flow: Euler; gaussian: DDIM); keep it small.
    """

    every: int = 0
    num_images: int = 256
    num_timesteps: int = 8
    batch_size: int = 256
    seed: int = 0
    buckets: int = 4
    weights: Literal["raw", "ema"] = "raw"
    both: bool = True
    sample_images: int = 0
    sample_steps: int = 10

    def __post_init__(self) -> None:
        for name in ("every", "num_images", "sample_images", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"val.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("num_timesteps", "batch_size", "buckets", "sample_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"val.{name} must be positive, got {getattr(self, name)}")
        if self.buckets > self.num_timesteps:
            raise ConfigError(
                f"val.buckets ({self.buckets}) exceeds val.num_timesteps ({self.num_timesteps}); lower buckets"
            )
        if self.sample_images and not self.num_images:
            raise ConfigError(
                "val.sample_images draws samples at validation time, but val.num_images is 0 "
                "(no validation); set val.num_images > 0 or val.sample_images=0"
            )


@dataclass
class WandbConfig:
    """Optional Weights & Biases logging beside ``metrics.jsonl`` (``pip install 'ditscale[wandb]'``).

    Logging is on when ``project`` is set and ``mode`` is not "disabled"; then rank 0 logs every
    scalar of ``metrics.jsonl`` at its step, the sample grids of ``val.sample_images``, and passes
    the resolved config to ``wandb.init``. The W&B run id is kept in ``OUT/wandb_run_id``, so a
    resumed run continues the same W&B run. Changing these keys never blocks a resume.

    Attributes:
        project: W&B project (None: no W&B logging).
        entity: W&B team or user (None: your default entity).
        name: display name of the W&B run (None: the run folder's name).
        mode: "online", "offline" (written under ``$WANDB_DIR``, else ``OUT/wandb``; upload later
            with ``wandb sync``) or "disabled"; None: wandb's default (``$WANDB_MODE``, else online).
    """

    project: str | None = None
    entity: str | None = None
    name: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None

    @property
    def enabled(self) -> bool:
        """Whether this run logs to W&B."""
        return bool(self.project) and self.mode != "disabled"


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        model: DiT config fields, optionally with ``name`` (a paper config such as "DiT-S/2");
            ``in_channels``, ``num_classes`` and ``input_size`` default to the dataset's.
        diffusion: :class:`ditscale.diffusion.DiffusionConfig` fields.
        data: :class:`ditscale.data.DataConfig` fields.
        optim: :class:`OptimConfig`.
        batch_size: global batch in images (split over ranks).
        max_steps: optimizer steps to run; exactly one of ``max_steps`` and ``flops``.
        flops: exact training-compute budget in FLOPs (3 x forward MACs x 2 per image); the run
            trains on floor(flops / per-image FLOPs) images, the last batch smaller.
        ema_decay: decay of the exponential moving average of the weights (DiT: 0.9999).
        ema_start: optimizer steps after which the EMA starts averaging; until then it equals the
            weights (0: from the first step, as DiT). A window over the end of a run that does not
            depend on the run's earlier steps' EMA, so a shared-trunk branch keeps its own.
        val: :class:`ValConfig`.
        log_every: write a metrics line every this many steps.
        ckpt_every: write a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: newest checkpoints kept (older ones deleted).
        seed: seed of the model init and of every per-step random draw.
        device: "auto" (cuda when available), "cpu" or "cuda".
        precision: "fp32" or "bf16": mixed precision with ``torch.autocast(device, bfloat16)``
            around the model's forward pass; the weights, gradients, AdamW state, EMA and the loss
            stay fp32, validation and sample grids run in fp32. On a GPU bf16 is what it says. On
            a CPU it trains in fp32 with a warning unless ``cpu_bf16`` is true: CPUs without bf16
            instructions (AVX512-BF16, AMX) emulate bf16 matmuls slowly, and even with them the
            casts cost more than they save at small widths (the ``tiny`` preset: 1.2x slower on an
            AVX512-BF16 EPYC), so a config written for GPUs runs at full speed when smoke-tested on
            a CPU, and CPU runs stay comparable with each other.
        cpu_bf16: honour ``precision: bf16`` on CPU too (with a warning); for testing the bf16
            path on CPU or CPUs with fast bf16 units. Needs ``precision: bf16``.
        compile: ``torch.compile`` the model (GPU only; ignored with a warning on CPU). If
            ``torch.compile`` raises, the run trains uncompiled with a one-line warning.
        text_encoder: None, "word" (a small word-embedding encoder trained with the model) or a
            Hugging Face model path/id (frozen), for text-conditioned models.
        fsdp: shard with FSDP2 (``fully_shard`` per block and the root) instead of DDP.
        peak_flops: peak FLOP/s used for MFU; None = measured fp32 matmul peak on CPU, the known
            bf16 peak of the GPU by name.
        tensorboard: also write TensorBoard scalars (and sample grids) to ``OUT/tb`` (when
            tensorboard is installed).
        wandb: :class:`WandbConfig` (off unless ``wandb.project`` is set).

    DataLoader workers are ``data.num_workers``.
    """

    model: dict[str, Any] = field(default_factory=dict)
    diffusion: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 256
    max_steps: int | None = None
    flops: float | None = None
    ema_decay: float = 0.9999
    ema_start: int = 0
    val: ValConfig = field(default_factory=ValConfig)
    log_every: int = 10
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    cpu_bf16: bool = False
    compile: bool = False
    text_encoder: str | None = None
    fsdp: bool = False
    peak_flops: float | None = None
    tensorboard: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0 (numpy and torch take non-negative seeds), got {self.seed}")
        if (self.max_steps is None) == (self.flops is None):
            raise ConfigError(
                "give exactly one of max_steps and flops (a step count or an exact training-FLOP budget); "
                f"got max_steps={self.max_steps}, flops={self.flops}"
            )
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps must be positive, got {self.max_steps}")
        if self.flops is not None and self.flops <= 0:
            raise ConfigError(f"flops must be positive, got {self.flops}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_start < 0:
            raise ConfigError(f"ema_start must be >= 0 (optimizer steps), got {self.ema_start}")
        for name in ("log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ckpt_every < 0:
            raise ConfigError(f"ckpt_every must be >= 0, got {self.ckpt_every}")
        if self.cpu_bf16 and self.precision != "bf16":
            raise ConfigError(f"cpu_bf16: true needs precision: bf16 (got {self.precision!r}); set both or neither")
        for name in ("model", "diffusion", "data"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping of its config fields")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (YAML/JSON-ready)."""
        return to_dict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with some top-level fields changed."""
        return dataclasses.replace(self, **changes)

    # Typed views of the sections owned by other modules ------------------------------------------
    def diffusion_config(self) -> DiffusionConfig:
        """The :class:`ditscale.diffusion.config.DiffusionConfig` of this run (strict)."""
        return from_dict(DiffusionConfig, self.diffusion, where="diffusion")

    def data_config(self) -> DataConfig:
        """The :class:`ditscale.data.config.DataConfig` of this run (strict)."""
        return from_dict(DataConfig, self.data, where="data")

    def model_config(self, *, text=None, info=None) -> DiTConfig:
        """The resolved :class:`~ditscale.models.config.DiTConfig` of this run.

        Unless given in ``model``: ``in_channels``, ``input_size`` and ``num_classes`` come from
        ``dataset_info(data)`` (channels, image side, classes; pass ``info`` when it is already known),
        ``learn_sigma`` from the diffusion
        process (True only for gaussian with learned variance); with a text encoder ``text``
        (``.context_dim``, ``.max_length``) ``conditioning`` defaults to "text" and
        ``context_dim``/``context_len`` to the encoder's, which for ``text_encoder: word`` are known
        without building it (:func:`word_encoder_sizes`).
        """
        spec = dict(self.model)
        name = spec.pop("name", None)
        unknown = [k for k in spec if k not in _DIT_FIELDS]
        if unknown:
            from_dict(DiTConfig, spec, where="model")  # raises the standard unknown-key message
        if info is None:
            info = dataset_info(self.data_config())
        filled = {"in_channels": info.channels, "input_size": info.image_size, "num_classes": info.num_classes}
        for key, value in filled.items():
            if key not in spec and value:
                spec[key] = value
        spec.setdefault("learn_sigma", self.diffusion_config().learns_sigma)
        if text is not None:
            spec.setdefault("conditioning", "text")
            spec.setdefault("context_dim", int(text.context_dim))
            spec.setdefault("context_len", int(text.max_length))
        else:  # a word encoder's sizes are known before it is built: planning and --threads
            spec = {**self.word_text_sizes(), **spec}
        return resolve_config(name, **spec) if name else resolve_config(spec)

    def word_text_sizes(self) -> dict[str, Any]:
        """What ``model`` takes from ``text_encoder: word`` before the encoder is built: conditioning
        "text" and the encoder's width and tokens (:func:`word_encoder_sizes`); {} for any other run
        (a frozen encoder's sizes are known once it is loaded)."""
        if self.text_encoder != "word":
            return {}
        sizes = word_encoder_sizes(self.model)
        return {"conditioning": "text", "context_dim": sizes["context_dim"], "context_len": sizes["max_length"]}


_DIT_FIELDS = tuple(f.name for f in dataclasses.fields(DiTConfig))


# Sizes of the small word encoder trained with the model (``text_encoder: word``); a model that declares
# ``context_dim`` / ``context_len`` gets an encoder of that width and length (word_encoder_sizes).
WORD_ENCODER = {"context_dim": 64, "max_length": 16, "num_layers": 0, "num_heads": 4}  # no layers: see WordTextEncoder


def word_encoder_sizes(model: dict[str, Any]) -> dict[str, int]:
    """:data:`WORD_ENCODER`, with the width and the caption length (tokens) the run's ``model`` section
    declares as ``context_dim`` / ``context_len``: the DiT and its encoder must agree on both (longer
    captions, e.g. several-object shapes scenes, need more than 16 tokens)."""
    sizes = dict(WORD_ENCODER)
    sizes["context_dim"] = int(model.get("context_dim", sizes["context_dim"]))
    sizes["max_length"] = int(model.get("context_len", sizes["max_length"]))
    return sizes


def preset_names() -> list[str]:
    """Names of the built-in training presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_train_dict(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a preset name or YAML path with dotted overrides applied (not validated)."""
    data = load_preset_or_yaml(name_or_path, PRESET_DIR, "training config")
    return apply_overrides(data, list(overrides))


def load_train_config(
    name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, check_sections: bool = True
) -> TrainConfig:
    """Build a :class:`TrainConfig` from a preset name or YAML path plus ``key.path=value`` overrides.

    With ``check_sections`` the ``model``/``diffusion``/``data`` sections are also validated by
    their modules' configs, so a typo anywhere is a one-line :class:`ConfigError` naming the key.
    """
    cfg = from_dict(TrainConfig, load_train_dict(name_or_path, overrides), where="train config")
    if check_sections:
        check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    """Validate the sections owned by other modules (raises :class:`ConfigError` naming bad keys)."""
    cfg.diffusion_config()
    cfg.data_config()
    spec = {k: v for k, v in cfg.model.items() if k != "name"}
    if any(k not in _DIT_FIELDS for k in spec):
        from_dict(DiTConfig, spec, where="model")
    if cfg.model.get("name"):
        named_config(str(cfg.model["name"]))
    if cfg.model.get("conditioning") == "text" and not cfg.text_encoder:
        raise ConfigError(
            "model.conditioning is 'text' but no text_encoder is set; set text_encoder=word or a HF path/id"
        )
