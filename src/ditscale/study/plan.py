"""The plan of a study: which model trains at which budget, for how many images and steps.

Pure Python (no torch): it needs only the FLOP accounting of :mod:`ditscale.flops` and the
dataset facts of :func:`ditscale.data.dataset_info`, read once per plan.

For every budget C (training FLOPs, exact convention) the planner predicts the compute-optimal
non-embedding parameter count N*(C) (the prior law, or the law fitted to the budgets already done)
and picks ``models_per_budget`` rungs of the family spread evenly in log N over a factor ``span``
centred on N*. Each run trains on ``floor(C / (6 x forward MACs))`` images (its exact FLOPs are
therefore at most C; :func:`ditscale.flops.images_in_budget`), in ``ceil(images / batch)``
optimizer steps. Runs with fewer than ``min_steps`` steps are dropped; a grid that does not have
models on both sides of N* is warned about.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import re
import typing
from dataclasses import asdict, dataclass, fields

from ditscale.config import from_dict
from ditscale.data.config import MAX_STREAM_OFFSET, DataConfig, DataInfo
from ditscale.errors import DataError
from ditscale.flops import (
    ParamCounts,
    fmt_flops,
    forward_macs,
    images_in_budget,
    param_counts,
    tokens_per_image,
    train_flops_6nd,
    train_flops_exact,
)
from ditscale.io import csv_errors
from ditscale.models.config import DiTConfig
from ditscale.study.inputs import data_config, planning_info
from ditscale.study.spec import StudySpec
from ditscale.train.config import TrainConfig
from ditscale.train.schedules import peak_lr

Rung = tuple[int, int, int]  # (depth, hidden_size, num_heads)


# -- one planned run ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    """One training run of a study.

    Attributes:
        run_id: folder name under ``DIR/runs/``.
        budget: the isoFLOP budget, training FLOPs.
        depth, hidden_size, num_heads: the rung.
        params: total parameters.
        params_non_embedding: non-embedding parameters N (the scaling-law N).
        macs_per_image: forward MACs of one image.
        images: training images (samples) seen.
        tokens: training image tokens seen, D = images x tokens per image.
        batch_size: images per optimizer step.
        steps: optimizer steps (the last batch may be smaller).
        lr: peak learning rate after the width rule.
        warmup_steps: linear warmup steps.
        flops_exact: training FLOPs, 3 x forward MACs x 2 x images (<= budget).
        flops_6nd: 6 x N x D FLOPs.
        seed: training seed.
        role: "grid" (a point of the isoFLOP curve) or "repeat" (a seed replicate).
        n_opt: the predicted compute-optimal N the budget's grid is centred on.
        centre: where ``n_opt`` came from: "prior" or "fit".
    """

    run_id: str
    budget: float
    depth: int
    hidden_size: int
    num_heads: int
    params: int
    params_non_embedding: int
    macs_per_image: int
    images: int
    tokens: int
    batch_size: int
    steps: int
    lr: float
    warmup_steps: int
    flops_exact: float
    flops_6nd: float
    seed: int
    role: str
    n_opt: float
    centre: str

    @property
    def flops_ratio(self) -> float:
        """Exact training FLOPs / 6ND (dimensionless)."""
        return self.flops_exact / self.flops_6nd

    @property
    def rung(self) -> Rung:
        return (self.depth, self.hidden_size, self.num_heads)

    def row(self) -> dict:
        """The run as a flat dict (CSV/JSON row), with ``flops_ratio``."""
        out = asdict(self)
        out["flops_ratio"] = round(self.flops_ratio, 6)
        return out

    @classmethod
    def from_row(cls, row: dict[str, str], where: str = "plan.csv") -> "PlannedRun":
        """A run from a CSV row of text cells, each converted to its field's type (extra columns
        such as ``flops_ratio`` ignored); a missing or malformed cell raises :class:`DataError`."""
        kw = {}
        for name, kind in _FIELD_TYPES.items():
            text = row.get(name)
            try:
                if text is None or text == "":
                    raise ValueError(name)
                kw[name] = kind(text)
            except (TypeError, ValueError):
                raise DataError(
                    f"{where}: column {name!r} of run {row.get('run_id')!r} is {text!r}, not {kind.__name__}; "
                    "delete the study's plan.csv or fix that row"
                ) from None
        check_run_id(kw["run_id"], where)
        run = cls(**kw)
        _check_row(run, row, where)
        return run


def _check_row(run: PlannedRun, row: dict[str, str], where: str) -> None:
    """A row cut short or edited: a word outside its set, or a ``flops_ratio`` (the last column) that
    is not the one its FLOPs give, raises :class:`DataError`."""
    for name, allowed in (("role", ("grid", "repeat")), ("centre", ("prior", "fit"))):
        if getattr(run, name) not in allowed:
            raise DataError(
                f"{where}: column {name!r} of run {run.run_id!r} is {getattr(run, name)!r}, not one of "
                f"{', '.join(allowed)}; delete the study's plan.csv or fix that row"
            )
    try:
        ratio = float(row.get("flops_ratio") or "nan")
    except ValueError:
        ratio = math.nan
    if ratio != round(run.flops_ratio, 6):
        raise DataError(
            f"{where}: the row of run {run.run_id!r} is cut short or edited (flops_ratio "
            f"{row.get('flops_ratio')!r}, its FLOPs give {round(run.flops_ratio, 6)}); "
            "delete the study's plan.csv or fix that row"
        )


_FIELD_TYPES = {name: kind for name, kind in typing.get_type_hints(PlannedRun).items()}
COLUMNS = [f.name for f in fields(PlannedRun)] + ["flops_ratio"]


# -- the plan -------------------------------------------------------------------------------------
class PlanWarning(str):
    """A planner warning about one budget: the text ``budget <C>: <message>`` (a ``str``, so it
    prints, joins and serialises as before), with the budget (training FLOPs) and the message as data."""

    budget: float
    message: str

    def __new__(cls, budget: float, message: str) -> "PlanWarning":
        self = super().__new__(cls, f"budget {fmt_flops(budget)}: {message}")
        self.budget, self.message = float(budget), message
        return self

    def __reduce__(self):  # pickle / deepcopy rebuild it from its data
        return PlanWarning, (self.budget, self.message)


@dataclass
class StudyPlan:
    """The runs of a study plus the planner's warnings and the runs it dropped."""

    runs: list[PlannedRun]
    warnings: list[PlanWarning]
    dropped: list[PlannedRun]

    def by_budget(self) -> dict[float, list[PlannedRun]]:
        out: dict[float, list[PlannedRun]] = {}
        for r in self.runs:
            out.setdefault(r.budget, []).append(r)
        return out

    def to_csv(self) -> str:
        return plan_csv(self.runs)

    def to_json(self) -> dict:
        return {
            "runs": [r.row() for r in self.runs],
            "dropped": [r.row() for r in self.dropped],
            "warnings": [str(w) for w in self.warnings],
        }

    def table(self) -> str:
        """A human-readable table of the plan."""
        head = (
            f"{'run_id':<24} {'budget':>8} {'d':>3} {'width':>5} {'N (non-emb)':>11} {'N total':>9} "
            f"{'images':>8} {'tokens D':>9} {'steps':>6} {'batch':>5} {'lr':>8} {'exact/6ND':>9}"
        )
        lines = [head, "-" * len(head)]
        for r in self.runs:
            lines.append(
                f"{r.run_id:<24} {r.budget:>8.2g} {r.depth:>3} {r.hidden_size:>5} {r.params_non_embedding:>11,} "
                f"{r.params:>9.3g} {r.images:>8,} {r.tokens:>9.3g} {r.steps:>6} {r.batch_size:>5} {r.lr:>8.2e} "
                f"{r.flops_ratio:>9.3f}"
            )
        total = sum(r.flops_exact for r in self.runs)
        lines.append(f"{len(self.runs)} runs, {total:.3g} training FLOPs in all")
        return "\n".join(lines)


def plan_csv(runs: list[PlannedRun]) -> str:
    """``plan.csv`` text of ``runs``: the :data:`COLUMNS` header, one row per run."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in runs:
        writer.writerow(r.row())
    return buf.getvalue()


def read_plan_csv(text: str, where: str = "plan.csv") -> list[PlannedRun]:
    """The runs of a ``plan.csv`` text, typed (see :meth:`PlannedRun.from_row`); a run id given twice
    is a one-line :class:`DataError` here, before any run trains."""
    with csv_errors(where):
        rows = list(csv.DictReader(io.StringIO(text)))
    runs = [PlannedRun.from_row(row, where) for row in rows]
    seen: set[str] = set()
    for i, run in enumerate(runs):
        if run.run_id in seen:
            raise DataError(f"{where}: run_id {run.run_id!r} is given twice (row {i + 2}); remove the second row")
        seen.add(run.run_id)
    return runs


# -- names ----------------------------------------------------------------------------------------
# A run id names a folder under DIR/runs/: one path component of letters, digits, '.', '_', '+' and
# '-', starting with a letter or digit (so never '..', never a '/'), at most 128 characters.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_run_id(run_id: str, where: str = "plan.csv") -> str:
    """``run_id`` if it is a safe folder name (:data:`RUN_ID_PATTERN`), else a one-line :class:`DataError`."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise DataError(
            f"{where}: run_id {run_id!r} is not a run name (letters, digits, '.', '_', '+', '-'; "
            "no '/' or '..'); fix that row"
        )
    return run_id


def run_id_for(budget: float, rung: Rung, seed: int) -> str:
    """Folder name of a run: ``c<budget>-d<depth>w<width>h<heads>-s<seed>``."""
    d, w, h = rung
    return f"c{fmt_flops(budget)}-d{d}w{w}h{h}-s{seed}"


# -- configs of a rung and of a run ---------------------------------------------------------------
def base_model_config(spec: StudySpec, info: DataInfo | None = None) -> DiTConfig:
    """The resolved :class:`~ditscale.models.config.DiTConfig` of the family's first rung: dataset
    facts (channels, size, classes; ``info`` when given, else read from the data) and ``learn_sigma``
    filled in as :meth:`TrainConfig.model_config` does. Every rung shares all but depth, width and
    heads with it (:func:`rung_config`)."""
    rung = spec.family.ladder()[0]
    if info is None:
        return train_config(spec, rung, budget=1.0, batch_size=1, steps=1, seed=spec.seed).model_config()
    cfg = train_config(spec, rung, budget=1.0, batch_size=1, steps=1, seed=spec.seed, data=data_config(spec))
    return cfg.model_config(info=info)


def rung_config(spec: StudySpec, rung: Rung, base: DiTConfig | None = None) -> DiTConfig:
    """The resolved DiTConfig of ``rung``: ``base`` (default :func:`base_model_config`; pass it
    when resolving many rungs, it reads the dataset's description) with the rung's sizes."""
    base = base_model_config(spec) if base is None else base
    d, w, h = rung
    return dataclasses.replace(base, depth=d, hidden_size=w, num_heads=h)


def train_config(
    spec: StudySpec,
    rung: Rung,
    *,
    budget: float,
    batch_size: int,
    steps: int,
    seed: int,
    data: DataConfig | None = None,
) -> TrainConfig:
    """The :class:`~ditscale.train.TrainConfig` of one run of ``spec`` (``budget`` in FLOPs) of
    ``steps`` optimizer steps: its optimizer from ``spec.hparams`` (:meth:`HparamConfig.optim_for`);
    ``data`` (for planning: :func:`ditscale.study.inputs.data_config`) in place of ``spec.data``."""
    hp = spec.hparams
    d, w, h = rung
    extra = dict(spec.train)
    extra.setdefault("ckpt_every", max(25, steps // 4))
    if hp.ema_fraction is not None:
        extra["ema_decay"] = hp.ema_decay_for(steps)
    if hp.ema_window is not None:
        extra["ema_start"] = hp.ema_start_for(steps)
    data_fields = dict(spec.data) if data is None else asdict(data)
    if spec.streams == "per_trunk":
        data_fields["stream_offset"] = stream_offset(rung, batch_size, seed)
    data = {
        "model": {**spec.family.model, "depth": d, "hidden_size": w, "num_heads": h},
        "diffusion": dict(spec.diffusion),
        "data": data_fields,
        "optim": hp.optim_for(steps),
        "batch_size": batch_size,
        "flops": float(budget),
        "val": asdict(spec.val),
        "seed": seed,
        **extra,
    }
    return from_dict(TrainConfig, data, where="run config")


def stream_offset(rung: Rung, batch_size: int, seed: int) -> int:
    """``data.stream_offset`` of a trunk under ``streams: per_trunk``: a hash of what the runs of one
    trunk share (rung, batch, seed), below :data:`~ditscale.data.config.MAX_STREAM_OFFSET`. Two trunks
    start ~2**30 / (number of trunks) images apart on average; a quickstart trunk reads under 10**6."""
    d, w, h = rung
    digest = hashlib.sha256(f"stream d{d} w{w} h{h} b{batch_size} s{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % MAX_STREAM_OFFSET


def run_config(spec: StudySpec, run: PlannedRun) -> TrainConfig:
    """The :class:`~ditscale.train.TrainConfig` a planned ``run`` of ``spec`` trains with (its rung,
    budget, batch, steps and seed through :func:`train_config`)."""
    return train_config(spec, run.rung, budget=run.budget, batch_size=run.batch_size, steps=run.steps, seed=run.seed)


@dataclass(frozen=True)
class RungSize:
    """A rung with its resolved DiTConfig, parameter counts and forward MACs per image."""

    rung: Rung
    config: DiTConfig
    params: ParamCounts
    macs: int

    @property
    def non_embedding(self) -> int:
        return int(self.params.non_embedding)


def ladder_sizes(spec: StudySpec) -> list[RungSize]:
    """Every rung of the family with its sizes, sorted by non-embedding parameters: the data's shape
    read, or declared where it cannot be read yet (:func:`ditscale.study.inputs.planning_info`)."""
    base = base_model_config(spec, planning_info(spec)[0])
    out = []
    for rung in spec.family.ladder():
        cfg = rung_config(spec, rung, base)
        out.append(RungSize(rung, cfg, param_counts(cfg), int(forward_macs(cfg).total)))
    out.sort(key=lambda s: s.params.non_embedding)
    return out


# -- the grid of one budget -----------------------------------------------------------------------
def choose_grid(log_sizes: list[float], log_centre: float, count: int, log_span: float) -> list[int]:
    """Indices of ``count`` distinct rungs (``log_sizes`` ascending) best matching ``count`` points
    evenly spaced in log N over ``[log_centre - log_span / 2, log_centre + log_span / 2]``.

    "Best" is the least total squared log distance between the i-th point and the i-th chosen rung
    (an order-preserving matching, solved exactly by dynamic programming), so on a ladder coarser
    than the points the grid stays centred on the optimum instead of drifting to one side.
    """
    n = len(log_sizes)
    if count >= n:
        return list(range(n))
    points = [log_centre + log_span * (i / (count - 1) - 0.5) for i in range(count)]
    inf = float("inf")
    # cost[k][i]: best cost of matching points[0..k] with rung i taking point k
    cost = [[inf] * n for _ in range(count)]
    back = [[-1] * n for _ in range(count)]
    for i in range(n):
        cost[0][i] = (log_sizes[i] - points[0]) ** 2
    for k in range(1, count):
        best, arg = inf, -1
        for i in range(k, n):
            if cost[k - 1][i - 1] < best:
                best, arg = cost[k - 1][i - 1], i - 1
            cost[k][i] = best + (log_sizes[i] - points[k]) ** 2
            back[k][i] = arg
    i = min(range(count - 1, n), key=lambda j: (cost[count - 1][j], j))
    chosen = [i]
    for k in range(count - 1, 0, -1):
        i = back[k][i]
        chosen.append(i)
    return sorted(chosen)


def _replicated(spec: StudySpec, index: int, picked: list[int], log_n: list[float], n_opt: float) -> set[int]:
    """Rungs (indices into the ladder) of budget number ``index`` that get seed replicates."""
    repeated = set(picked) if index < spec.repeat.budgets else set()
    if repeated and spec.repeat.models:
        near = sorted(picked, key=lambda i: (abs(log_n[i] - math.log(n_opt)), i))
        repeated = set(near[: spec.repeat.models])
    return repeated


def planned_run(
    spec: StudySpec, size: RungSize, budget: float, batch: int, seed: int, n_opt: float, source: str
) -> PlannedRun:
    """One run of ``size`` at ``budget`` FLOPs: as many whole images as the budget buys."""
    cfg, (d, w, h) = size.config, size.rung
    images = images_in_budget(cfg, budget)
    steps = math.ceil(images / batch) if images else 0
    optim = spec.hparams.optim_for(steps)
    return PlannedRun(
        run_id=run_id_for(budget, size.rung, seed),
        budget=budget,
        depth=d,
        hidden_size=w,
        num_heads=h,
        params=int(size.params.total),
        params_non_embedding=size.non_embedding,
        macs_per_image=size.macs,
        images=images,
        tokens=images * int(tokens_per_image(cfg)),
        batch_size=batch,
        steps=steps,
        lr=peak_lr(optim, w),
        warmup_steps=optim.warmup_steps,
        flops_exact=float(train_flops_exact(cfg, images)),
        flops_6nd=float(train_flops_6nd(cfg, images)),
        seed=seed,
        role="grid" if seed == spec.seed else "repeat",
        n_opt=float(n_opt),
        centre=source,
    )


def _grid_warnings(
    spec: StudySpec,
    budget: float,
    n_opt: float,
    source: str,
    picked: list[int],
    n_rungs: int,
    kept: list[PlannedRun],
    dropped: list[PlannedRun],
) -> list[PlanWarning]:
    """Warnings of one budget: runs dropped for too few steps; a grid that cannot bracket N*."""
    out = []
    short = [r for r in dropped if r.seed == spec.seed]
    if short:
        listed = ", ".join(f"{r.run_id} ({r.steps} steps)" for r in short)
        out.append(
            PlanWarning(
                budget,
                f"dropped {len(short)} run(s) with fewer than min_steps={spec.min_steps} "
                f"steps ({listed}); raise the budget or lower the batch",
            )
        )
    sizes = [r.params_non_embedding for r in kept if r.role == "grid"]
    label = f"predicted optimum N={n_opt:.3g} ({source})"
    if len(sizes) < 3:
        out.append(PlanWarning(budget, f"{label}: only {len(sizes)} runs left, too few for an isoFLOP parabola"))
    elif n_opt <= min(sizes):
        why = "the smallest model of the family is too big" if picked[0] == 0 else "its smaller models were dropped"
        out.append(
            PlanWarning(
                budget, f"{label} is below the grid ({min(sizes):.3g}..{max(sizes):.3g}): {why}; add smaller rungs"
            )
        )
    elif n_opt >= max(sizes):
        why = (
            "the largest model of the family is too small"
            if picked[-1] == n_rungs - 1
            else f"its larger models were dropped (fewer than {spec.min_steps} steps)"
        )
        out.append(PlanWarning(budget, f"{label} is above the grid ({min(sizes):.3g}..{max(sizes):.3g}): {why}"))
    return out


# -- the plan of every budget ---------------------------------------------------------------------
NO_INTERVALS = (
    "models_per_budget is 3 with no seed replicates (repeat.budgets: 0): a parabola through 3 points fits them "
    "exactly, so the runs will measure no noise and the case bootstrap will give no intervals (laws.json, the "
    "console and the report will say 'withheld'); use models_per_budget: 4 or more, or repeat.budgets: 1 (seed "
    "replicates), or laws.bootstrap_kind: residual (intervals from the scatter of the budgets' optima)"
)
SCATTER_INTERVALS = (
    "models_per_budget is 3 with no seed replicates (repeat.budgets: 0): the runs will measure no noise, so the "
    "residual bootstrap's intervals will come from the scatter of the budgets' optima alone (on simulated sweeps "
    "they cover 0.82-0.90 for a nominal 0.90); models_per_budget: 4 or repeat.budgets: 1 measure the noise too"
)


def interval_warning(spec: StudySpec) -> str | None:
    """The plan's warning when every budget has 3 model sizes and no seed replicates (no measure of the
    loss noise): the case bootstrap will withhold every interval (:data:`NO_INTERVALS`,
    :data:`ditscale.laws.bootstrap.NO_NOISE_MESSAGE`), the residual one will draw them from the optima's
    scatter alone (:data:`SCATTER_INTERVALS`); None otherwise."""
    if spec.models_per_budget == 3 and spec.repeat.budgets == 0 and spec.laws.resamples >= 2:
        return SCATTER_INTERVALS if spec.laws.bootstrap_kind == "residual" else NO_INTERVALS
    return None


def plan_study(spec: StudySpec, centres: dict[float, tuple[float, str]] | None = None) -> StudyPlan:
    """Plan every run of ``spec``.

    ``centres`` maps a budget (FLOPs) to ``(N*, source)``: the non-embedding parameter count its
    grid is centred on and where that came from ("prior" or "fit"); budgets missing from it use
    the spec's prior. Units: budgets and FLOPs columns in training FLOPs; ``tokens`` in image tokens.
    """
    centres = dict(centres or {})
    sizes = ladder_sizes(spec)
    log_n = [math.log(s.non_embedding) for s in sizes]
    plan = StudyPlan(runs=[], warnings=[], dropped=[])
    for index, budget in enumerate(spec.budgets):
        n_opt, source = centres.get(budget, (spec.prior.n_opt(budget), "prior"))
        picked = choose_grid(log_n, math.log(n_opt), spec.models_per_budget, math.log(spec.span))
        batch = spec.hparams.batch_for(budget, spec.budgets[0])
        repeated = _replicated(spec, index, picked, log_n, n_opt)
        kept, dropped = [], []
        for i in picked:
            for seed in [spec.seed] + (list(spec.repeat.seeds) if i in repeated else []):
                run = planned_run(spec, sizes[i], budget, batch, seed, n_opt, source)
                (kept if run.steps >= spec.min_steps else dropped).append(run)
        plan.warnings.extend(_grid_warnings(spec, budget, n_opt, source, picked, len(sizes), kept, dropped))
        plan.runs.extend(kept)
        plan.dropped.extend(dropped)
    return plan
