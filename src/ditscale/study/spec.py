"""The study spec: what an isoFLOP scaling study trains (pure Python, no torch import).

A spec is YAML (or a built-in preset, ``ditscale/presets/study/NAME.yaml``) read strictly with
:func:`ditscale.config.from_dict`: unknown keys and malformed values raise a one-line
:class:`~ditscale.errors.ConfigError` naming the key. Example::

    name: quickstart
    data: {name: shapes, image_size: 16}
    diffusion: {kind: flow}
    family:                      # the model ladder
      depths: [1, 2, 3, 4, 6, 8] # rule: width = aspect * depth, heads = width / head_dim
      aspect: 32
      head_dim: 32
      model: {patch_size: 2, block: in_context, learn_sigma: false}
    budgets: [3e11, 1e12, 3e12]  # training FLOPs (exact: 3 x forward MACs x 2 per image)
    models_per_budget: 5
    span: 8                      # grid covers a factor 8 in N around the predicted optimum
    hparams: {lr: 1e-3, base_width: 64, width_rule: inverse, warmup_fraction: 0.05, schedule: cosine, batch_size: 32}
    val: {num_images: 256, num_timesteps: 8}
    holdout: 1

Units: ``budgets`` and ``target_flops`` are training FLOPs (not MACs); params are counted as
non-embedding parameters N (the 6ND convention) unless a field says "total".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ditscale.config import apply_overrides, from_dict, load_preset_or_yaml, to_dict
from ditscale.data.config import INFINITE_DATASETS
from ditscale.errors import ConfigError
from ditscale.laws import FitConfig
from ditscale.models.config import DiTConfig
from ditscale.train.config import CooldownShape, OptimConfig, Schedule, TrainConfig, ValConfig, WidthRule
from ditscale.train.schedules import SHAREABLE_SCHEDULES

STREAMS = ("shared", "per_trunk")  # which train images the runs of a study read (StudySpec.streams)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "study"

# Liang et al. (ICLR 2026), Chinchilla Approach 2 on in-context DiTs with rectified flow;
# C in FLOPs, N in parameters, D in tokens, L the validation loss.
PAPER_LAWS = {
    "params_law": {"coefficient": 0.0009, "exponent": 0.5681},
    "tokens_law": {"coefficient": 186.8535, "exponent": 0.4319},
    "loss_law": {"coefficient": 2.3943, "exponent": -0.0273},
}

_LADDER_FIELDS = ("depth", "hidden_size", "num_heads")


@dataclass
class FamilyConfig:
    """The model ladder: which DiTs a study may train.

    Give exactly one of ``rungs`` (explicit ``[depth, hidden_size, num_heads]`` triples),
    ``depths`` (the rule ``hidden_size = aspect * depth``, ``num_heads = hidden_size / head_dim``),
    or ``widths`` (the rule: fixed ``depth``, ``num_heads = width / head_dim``).

    Attributes:
        rungs: explicit ladder of ``[depth, hidden_size, num_heads]``.
        depths: depths of the aspect-ratio rule.
        aspect: width per unit depth of that rule (hidden_size = aspect * depth).
        widths: widths of the fixed-depth rule.
        depth: depth of the fixed-depth rule.
        head_dim: attention head width of both rules (num_heads = hidden_size / head_dim).
        model: DiTConfig fields shared by every rung (patch_size, block, conditioning, in_channels,
            input_size, mlp_ratio, learn_sigma, ...); in_channels, input_size and num_classes
            default to the dataset's.
    """

    rungs: list[tuple[int, int, int]] | None = None
    depths: list[int] | None = None
    aspect: int = 64
    widths: list[int] | None = None
    depth: int = 2
    head_dim: int = 64
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.rungs, self.depths, self.widths)) != 1:
            raise ConfigError(
                "family needs exactly one of 'rungs' (a list of [depth, hidden_size, num_heads]), "
                "'depths' (with aspect and head_dim) or 'widths' (with depth and head_dim)"
            )
        if self.aspect <= 0 or self.head_dim <= 0 or self.depth <= 0:
            raise ConfigError(
                f"family.aspect, family.depth and family.head_dim must be positive, got {self.aspect}, {self.depth}, {self.head_dim}"
            )
        for d in self.depths or ():
            if d <= 0 or (self.aspect * d) % self.head_dim:
                raise ConfigError(
                    f"family.depths: depth {d} gives width {self.aspect * d}, not a positive multiple of "
                    f"head_dim {self.head_dim}; choose aspect/head_dim so every width divides"
                )
        for w in self.widths or ():
            if w <= 0 or w % self.head_dim:
                raise ConfigError(f"family.widths: width {w} is not a positive multiple of head_dim {self.head_dim}")
        ladder = self.ladder()
        if len(ladder) < 3:
            raise ConfigError(f"family has {len(ladder)} distinct models; give at least 3 rungs")
        shared = [k for k in self.model if k in _LADDER_FIELDS]
        if shared:
            raise ConfigError(f"family.model sets {', '.join(shared)}; those come from the ladder (rungs or depths)")
        valid = {f.name for f in dataclasses.fields(DiTConfig)}
        unknown = [k for k in self.model if k not in valid]
        if unknown:
            from_dict(DiTConfig, {k: self.model[k] for k in unknown}, where="family.model")

    def ladder(self) -> list[tuple[int, int, int]]:
        """The distinct ``(depth, hidden_size, num_heads)`` rungs in the given order."""
        if self.rungs is not None:
            rungs = [tuple(int(v) for v in r) for r in self.rungs]
        elif self.depths is not None:
            rungs = [(d, self.aspect * d, self.aspect * d // self.head_dim) for d in self.depths]
        else:
            rungs = [(self.depth, w, w // self.head_dim) for w in self.widths]
        return list(dict.fromkeys(rungs))

    def next_rung(self, rung: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The next larger member of a rule-based family after ``rung`` (None for an explicit ladder):
        one block deeper (aspect rule) or ~25% wider (fixed-depth rule)."""
        if self.depths is not None:
            d = rung[0] + 1
            return (d, self.aspect * d, self.aspect * d // self.head_dim)
        if self.widths is not None:
            w = max(rung[1] + self.head_dim, -(-int(rung[1] * 1.25) // self.head_dim) * self.head_dim)
            return (self.depth, w, w // self.head_dim)
        return None


@dataclass
class PriorConfig:
    """Where grids are centred before any budget of the study is done.

    ``N_opt(C) = coefficient * C ** exponent`` (N non-embedding parameters, C training FLOPs).
    The default is Liang et al.'s law; small pixel-space models need their own coefficient
    (keep the exponent, move the coefficient).
    """

    coefficient: float = PAPER_LAWS["params_law"]["coefficient"]
    exponent: float = PAPER_LAWS["params_law"]["exponent"]

    def __post_init__(self) -> None:
        if self.coefficient <= 0 or not 0 < self.exponent < 1:
            raise ConfigError(
                f"prior needs coefficient > 0 and 0 < exponent < 1, got {self.coefficient}, {self.exponent}"
            )

    def n_opt(self, flops: float) -> float:
        """Prior compute-optimal non-embedding parameters at ``flops`` training FLOPs."""
        return self.coefficient * flops**self.exponent


# The hparams keys that are OptimConfig's own (with a study's defaults): a run's OptimConfig is
# these, plus the warmup of the run's length (HparamConfig.optim_for).
OPTIM_KEYS = (
    "lr",
    "betas",
    "weight_decay",
    "grad_clip",
    "schedule",
    "cooldown_frac",
    "cooldown_shape",
    "min_lr_ratio",
    "width_rule",
    "base_width",
)


@dataclass
class HparamConfig:
    """The training rules of every run of a study: each run's :class:`~ditscale.train.config.OptimConfig`
    (:meth:`optim_for`), batch (:meth:`batch_for`) and EMA (:meth:`ema_decay_for`, :meth:`ema_start_for`).

    The keys are the spec's flat ``hparams`` mapping. The AdamW and schedule keys (:data:`OPTIM_KEYS`)
    are OptimConfig's, with a study's defaults, and pass to each run's OptimConfig as they are; the
    others are rules of the study (warmup as a fraction of the run, batch growth, EMA window).

    Attributes:
        lr: peak lr at ``base_width``.
        base_width: width (hidden_size) at which ``lr`` was tuned.
        width_rule: "none", "inverse" (lr * base_width / width) or "inverse_sqrt".
        warmup_fraction: warmup steps = round(warmup_fraction * the run's steps).
        warmup_steps: a warmup of this many steps in every run instead (what shared trunks need).
        schedule: "constant", "cosine" or "wsd", always matched to the run's own length.
        min_lr_ratio: final lr / peak lr of "cosine" and "wsd".
        cooldown_frac: fraction of the steps in the "wsd" cooldown.
        cooldown_shape: "linear" or "1-sqrt" (Hägele et al. 2024) decay of the "wsd" cooldown.
        batch_size: images per optimizer step at the smallest budget.
        batch_exponent: batch = batch_size * (budget / smallest budget) ** batch_exponent, rounded
            to a power of two (0: the same batch for every run).
        ema_fraction: average the weights over the last ``ema_fraction`` of each run: EMA decay
            ``1 - 1 / (ema_fraction * steps)`` (None: the run's ``train.ema_decay``). With a
            constant lr and ``val.weights: ema`` this gives the least seed-to-seed noise.
        ema_window: the EMA starts averaging only for the last ``ema_window`` of each run's steps
            (before that it follows the weights; None: from the first step). A window that starts
            after the branch point of the previous budget lets a shared trunk extend to a budget
            planned later (adaptive studies).
        weight_decay, grad_clip, betas: AdamW settings.
    """

    lr: float = 1e-3
    base_width: int = 64
    width_rule: WidthRule = "inverse"
    warmup_fraction: float = 0.05
    warmup_steps: int | None = None
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.1
    cooldown_frac: float = 0.2
    cooldown_shape: CooldownShape = "linear"
    batch_size: int = 32
    batch_exponent: float = 0.0
    ema_fraction: float | None = None
    ema_window: float | None = None
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.base_width <= 0 or self.batch_size <= 0:
            raise ConfigError("hparams.lr, hparams.base_width and hparams.batch_size must be positive")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"hparams.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.batch_exponent <= 1.0:
            raise ConfigError(f"hparams.batch_exponent must be in [0, 1], got {self.batch_exponent}")
        if self.ema_fraction is not None and not 0.0 < self.ema_fraction <= 1.0:
            raise ConfigError(f"hparams.ema_fraction must be in (0, 1] or null, got {self.ema_fraction}")
        if self.ema_window is not None and not 0.0 < self.ema_window <= 1.0:
            raise ConfigError(f"hparams.ema_window must be in (0, 1] or null, got {self.ema_window}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"hparams.warmup_steps must be >= 0 or null, got {self.warmup_steps}")

    def optim_for(self, steps: int) -> OptimConfig:
        """The OptimConfig of a run of ``steps`` optimizer steps: the :data:`OPTIM_KEYS` as given, and
        the run's warmup (:meth:`warmup_for`); the width rule applies in the run (its ``hidden_size``)."""
        return OptimConfig(**{key: getattr(self, key) for key in OPTIM_KEYS}, warmup_steps=self.warmup_for(steps))

    def warmup_for(self, steps: int) -> int:
        """Warmup steps of a run of ``steps`` optimizer steps."""
        return self.warmup_steps if self.warmup_steps is not None else int(round(self.warmup_fraction * steps))

    def ema_start_for(self, steps: int) -> int:
        """Optimizer steps after which a run's EMA starts averaging (0: from the start)."""
        return 0 if self.ema_window is None else steps - int(round(self.ema_window * steps))

    def ema_decay_for(self, steps: int) -> float | None:
        """EMA decay of a run of ``steps`` optimizer steps (None: not set by the rule)."""
        if self.ema_fraction is None:
            return None
        return 1.0 - 1.0 / max(1.0, self.ema_fraction * steps)

    def batch_for(self, budget: float, smallest: float) -> int:
        """Global batch (images) of a run at ``budget`` FLOPs."""
        if self.batch_exponent == 0:
            return self.batch_size
        raw = self.batch_size * (budget / smallest) ** self.batch_exponent
        return int(2 ** round(math.log2(raw)))


@dataclass
class RepeatConfig:
    """Seed replicates that measure run-to-run noise.

    In each of the ``budgets`` smallest budgets, the ``models`` runs nearest the predicted optimum
    (0: all of the grid) are trained again with each seed of ``seeds``.
    """

    budgets: int = 0
    models: int = 0
    seeds: list[int] = field(default_factory=lambda: [1])

    def __post_init__(self) -> None:
        if self.budgets < 0 or self.models < 0:
            raise ConfigError(f"repeat.budgets and repeat.models must be >= 0, got {self.budgets}, {self.models}")
        if self.budgets and not self.seeds:
            raise ConfigError("repeat.seeds is empty; give the extra seeds, e.g. [1]")


@dataclass
class QualityConfig:
    """Sample quality of the study's models (Liang et al.: FID follows a power law in compute).

    After training, the compute-optimal model of each budget (its lowest validation loss; or every
    model with ``runs: all``) draws ``num_samples`` images, which are scored against a reference
    batch of the study's own data (``num_samples`` images of the val split); laws.json gains the
    quality laws (:mod:`ditscale.laws.quality`).

    Attributes:
        evaluator: "shapes" (the embedded evaluator: Fréchet distance ``fd`` on its features, and
            attribute accuracy; no download) or "inception" (ADM's FID, sFID, IS, precision/recall;
            needs ``inception``).
        inception: path of the pt_inception-2015-12-05 weights file (the inception evaluator).
        num_samples: images sampled per model, and images in the reference batch.
        sampler: sampler name (None: the process's default, euler for flow, ddpm for gaussian).
        steps: sampling steps.
        cfg_scale: classifier-free guidance scale (1: none).
        runs: "optimal" (each budget's lowest-loss model) or "all".
        seed: seeds the labels and noise of the samples.
        batch_size: images per sampler call.
    """

    evaluator: Literal["shapes", "inception"] = "shapes"
    inception: str | None = None
    num_samples: int = 1000
    sampler: str | None = None
    steps: int = 25
    cfg_scale: float = 1.0
    runs: Literal["optimal", "all"] = "optimal"
    seed: int = 0
    batch_size: int = 250

    def __post_init__(self) -> None:
        if self.evaluator == "inception" and not self.inception:
            raise ConfigError(
                "quality.evaluator is inception but quality.inception is not set; give the path of the "
                "pt_inception-2015-12-05 weights file, or use evaluator: shapes"
            )
        if self.num_samples < 10 or self.steps < 1 or self.batch_size < 1:
            raise ConfigError(
                f"quality needs num_samples >= 10, steps >= 1 and batch_size >= 1, got "
                f"{self.num_samples}, {self.steps}, {self.batch_size}"
            )
        if self.cfg_scale < 0:
            raise ConfigError(f"quality.cfg_scale must be >= 0, got {self.cfg_scale}")

    @property
    def metric(self) -> str:
        """The quality metric the laws are fitted to: ``fd`` (shapes) or ``fid`` (inception)."""
        return "fd" if self.evaluator == "shapes" else "fid"


@dataclass
class StudySpec:
    """An isoFLOP scaling study (see the module docstring for an example).

    Attributes:
        name: the study's name (used in reports).
        data: :class:`ditscale.data.DataConfig` fields.
        diffusion: :class:`ditscale.diffusion.DiffusionConfig` fields.
        family: the model ladder, :class:`FamilyConfig`.
        budgets: training-compute budgets, FLOPs (exact convention), sorted ascending.
        models_per_budget: models per isoFLOP curve (>= 3 to fit a parabola).
        span: ratio of the largest to the smallest N of a budget's grid.
        prior: :class:`PriorConfig`, where grids are centred before budgets are done.
        adaptive: centre a budget's grid on the law fitted so far once 2 smaller budgets are done.
        min_steps: runs with fewer optimizer steps are dropped from the plan (with a warning).
        hparams: :class:`HparamConfig`.
        val: :class:`ditscale.train.ValConfig`, identical for every run.
        train: further TrainConfig fields shared by every run (ckpt_every, log_every, device, ...).
        seed: training seed of every run.
        repeat: :class:`RepeatConfig`, seed replicates.
        holdout: number of largest budgets the backtest leaves out of the fit.
        laws: :class:`ditscale.laws.FitConfig` of the study's Approach 2 fits (bootstrap resamples,
            seed, robust parabolas, edge handling); ``method`` must be "isoflop".
        workers: parallel local worker processes (0: train in the calling process).
        share_trunks: train each model once as a trunk that the runs of several budgets branch off
            (:mod:`ditscale.train.trunk`; exact for "constant" and "wsd" schedules with
            ``hparams.warmup_steps``); runs.csv is the same as with independent runs.
        streams: which train images each run reads: "shared" (every run from the start of the same
            stream, as one training run would) or "per_trunk" (procedural data only: each trunk (rung,
            batch, seed) from its own place in the infinite stream, ``data.stream_offset`` =
            :func:`ditscale.study.plan.stream_offset`; validation images stay shared). With "shared",
            a fluctuation of the stream is common to every model and budget and seed replicates differ
            only in initialisation and noise; "per_trunk" makes each model's draw of the data its own.
        target_flops: budget, FLOPs, that reports extrapolate to.
        quality: :class:`QualityConfig`: sample and score the models after training (None: no quality).
    """

    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    diffusion: dict[str, Any] = field(default_factory=dict)
    family: FamilyConfig | None = None
    budgets: list[float] = field(default_factory=list)
    models_per_budget: int = 5
    span: float = 8.0
    prior: PriorConfig = field(default_factory=PriorConfig)
    adaptive: bool = True
    min_steps: int = 20
    hparams: HparamConfig = field(default_factory=HparamConfig)
    val: ValConfig = field(default_factory=ValConfig)
    train: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    repeat: RepeatConfig = field(default_factory=RepeatConfig)
    holdout: int = 1
    laws: FitConfig = field(default_factory=FitConfig)
    workers: int = 1
    share_trunks: bool = False
    streams: str = "shared"
    target_flops: float = 1e21
    quality: QualityConfig | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("study spec has no 'name'; give the study a name")
        if self.family is None:
            raise ConfigError("study spec has no 'family'; give a model ladder (family.rungs or family.depths)")
        self._check_budgets()
        self._check_grid()
        self._check_settings()
        self._check_train_keys()

    def _check_budgets(self) -> None:
        """Budgets: given, positive, finite, distinct; sorted ascending here."""
        if not self.budgets:
            raise ConfigError(
                "study spec has no 'budgets'; list training-FLOP budgets, e.g. budgets: [1e12, 3e12, 1e13]"
            )
        for i, b in enumerate(self.budgets):
            if not (b > 0 and math.isfinite(b)):
                raise ConfigError(f"budgets[{i}] is {b}; every budget must be a positive number of training FLOPs")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError("budgets has duplicates; list each training-FLOP budget once")
        self.budgets = sorted(float(b) for b in self.budgets)

    def _check_grid(self) -> None:
        """Enough models per budget, a ladder to pick them from, and budgets left to fit after the holdout."""
        if self.models_per_budget < 3:
            raise ConfigError(
                f"models_per_budget is {self.models_per_budget}; need at least 3 models per budget to fit a parabola"
            )
        if self.models_per_budget > len(self.family.ladder()):
            raise ConfigError(
                f"models_per_budget is {self.models_per_budget} but the family has only "
                f"{len(self.family.ladder())} models; add rungs or lower models_per_budget"
            )
        if not self.span > 1:
            raise ConfigError(f"span must be > 1 (the ratio of largest to smallest N per budget), got {self.span}")
        if self.holdout < 0 or len(self.budgets) - self.holdout < 2:
            raise ConfigError(
                f"holdout={self.holdout} leaves {len(self.budgets) - self.holdout} budgets to fit; "
                "the backtest needs at least 2 fitted budgets, so add budgets or lower holdout"
            )

    def _check_settings(self) -> None:
        """The fit method, workers, min_steps, target and seed replicates."""
        if self.laws.method != "isoflop":
            raise ConfigError(
                f"laws.method is {self.laws.method!r}; studies fit isoFLOP profiles (Approach 2): use method: isoflop"
            )
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0: train in this process), got {self.workers}")
        if self.min_steps < 1:
            raise ConfigError(f"min_steps must be >= 1, got {self.min_steps}")
        if self.target_flops <= 0:
            raise ConfigError(f"target_flops must be positive FLOPs, got {self.target_flops}")
        if self.repeat.budgets > len(self.budgets):
            raise ConfigError(f"repeat.budgets={self.repeat.budgets} exceeds the {len(self.budgets)} budgets")
        if self.seed in self.repeat.seeds and self.repeat.budgets:
            raise ConfigError(f"repeat.seeds contains the study seed {self.seed}; give other seeds")
        self._check_trunks()
        self._check_streams()

    def _check_streams(self) -> None:
        """``streams``: "shared", or "per_trunk" on procedural data with no fixed ``data.stream_offset``."""
        if self.streams not in STREAMS:
            raise ConfigError(f"streams must be one of {', '.join(STREAMS)}, got {self.streams!r}")
        if self.streams == "shared":
            return
        if self.data.get("name", "shapes") not in INFINITE_DATASETS:
            raise ConfigError(
                f"streams: per_trunk needs procedural data ({', '.join(INFINITE_DATASETS)}); the "
                f"{self.data.get('name')!r} dataset is finite: use streams: shared"
            )
        if "stream_offset" in self.data:
            raise ConfigError("streams: per_trunk sets data.stream_offset for each trunk; leave it out of data")

    def _check_trunks(self) -> None:
        """share_trunks needs a schedule whose lr before the cooldown ignores the run's length."""
        hp = self.hparams
        if not self.share_trunks:
            return
        if hp.schedule not in SHAREABLE_SCHEDULES:
            raise ConfigError(
                f"share_trunks needs hparams.schedule {' or '.join(SHAREABLE_SCHEDULES)} (the lr of {hp.schedule!r} "
                "depends on each run's length from the start)"
            )
        if hp.warmup_steps is None and hp.warmup_fraction > 0:
            raise ConfigError(
                "share_trunks needs a warmup fixed in steps: set hparams.warmup_steps (or warmup_fraction: 0)"
            )

    def _check_train_keys(self) -> None:
        """``train`` may set only TrainConfig fields the study does not set per run."""
        owned = {"model", "diffusion", "data", "optim", "batch_size", "max_steps", "flops", "val", "seed"}
        valid = {f.name for f in dataclasses.fields(TrainConfig)} - owned
        bad = [k for k in self.train if k not in valid]
        if self.hparams.ema_fraction is not None and "ema_decay" in self.train:
            bad.append("ema_decay (set by hparams.ema_fraction)")
        if self.hparams.ema_window is not None and "ema_start" in self.train:
            bad.append("ema_start (set by hparams.ema_window)")
        if bad:
            raise ConfigError(
                f"unknown or study-owned key {', '.join(map(repr, bad))} in train; valid keys: {', '.join(sorted(valid))}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (YAML-ready)."""
        return to_dict(self)


def preset_names() -> list[str]:
    """Names of the built-in study presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def spec_from_dict(data: dict[str, Any]) -> StudySpec:
    """Build a :class:`StudySpec` strictly from a mapping (raises :class:`ConfigError`)."""
    return from_dict(StudySpec, data, where="study spec")


def load_spec(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    """A :class:`StudySpec` from a YAML path or a preset name, with dotted ``key=value`` overrides."""
    data = load_preset_or_yaml(name_or_path, PRESET_DIR, "study")
    return spec_from_dict(apply_overrides(data, list(overrides)))
