"""The typed results of a study's analysis: the one schema of ``laws.json``, ``study predict --json``
and ``study compare --json``.

``ditscale.study.analyze`` builds these frozen records and writes ``laws.json`` with
:meth:`LawsSummary.to_dict`; the report, the CLI and the scripts read it back with
:meth:`LawsSummary.read` / :meth:`Record.from_dict`, which refuse a key the schema does not know, a
key it requires and does not find, and a ``schema_version`` other than :data:`SCHEMA_VERSION`, each
with a one-line :class:`SchemaError`. A file without ``schema_version`` is read as version 1 (every
laws.json written before the key existed). Nested records, tuples and maps are converted from the
type annotations, and ``to_dict`` writes the keys in the order the fields are declared.

A field typed ``X | None`` is written as null when None; a field declared with :func:`absent` is a
key some files lack (e.g. Approach 3's prediction of a fit without a target, the rows of a backtest
written before they named their loss form): None there, and left out when written.

Units as in laws.json: C in training FLOPs, N non-embedding parameters, D image tokens, loss in the
runs' validation-loss units; every ``ci90`` is a 90% bootstrap interval ``[lo, hi]``.

    laws = LawsSummary.read("DIR/laws.json")
    laws.params_law.exponent, laws.params_law.interval("exponent")
    laws.prediction.n_opt.value, laws.prediction.nearest.name
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ditscale.errors import DataError

SCHEMA_VERSION = 1  # laws.json's layout; a file without the key is version 1

Interval = list[float]  # a 90% interval [lo, hi]


class SchemaError(DataError):
    """A laws.json-shaped file or dict does not match the schema (one line: the file, the key, what to do)."""


def absent() -> Any:
    """A field whose key some results lack: None there, and left out (not null) when written."""
    return field(default=None, metadata={"absent": True})


# -- reading and writing the records ---------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Record:
    """A frozen result; ``to_dict`` gives its JSON, ``from_dict`` reads it back (strictly)."""

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "laws.json"):
        """The record of ``data``; a one-line :class:`SchemaError` naming ``where`` (the file) and the key
        when a key is unknown or missing or a record is not a JSON object."""
        return _load(cls, data, "", _Source(where))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, keys in field order; :func:`absent` fields that are None left out."""
        return _dump(self)


@dataclass(frozen=True)
class _Source:
    """Where the JSON came from: a file (``DIR/laws.json`` names its study folder in the remedy) or a label."""

    where: str

    def remedy(self) -> str:
        path = Path(self.where)
        if path.name == "laws.json" and str(path.parent) != ".":
            return f"run `ditscale study report {path.parent}` to rewrite it from the runs"
        return "rewrite it with this ditscale (`ditscale study report DIR` rewrites a study's laws.json)"

    def error(self, what: str) -> SchemaError:
        return SchemaError(f"{self.where}: {what} (laws.json schema version {SCHEMA_VERSION}); {self.remedy()}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _load(tp: Any, value: Any, path: str, src: _Source) -> Any:
    """``value`` (JSON) as type ``tp``: records, tuples and maps converted; scalars as they are."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        tp = rest[0] if len(rest) == 1 else Any
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, Record):
        return _load_record(tp, value, path, src)
    if origin is tuple:
        _expect(value, list, path, "a list", src)
        return tuple(_load(args[0], x, f"{path}[{i}]", src) for i, x in enumerate(value))
    if origin is dict:
        _expect(value, dict, path, "a JSON object", src)
        return {k: _load(args[1], v, f"{path}.{k}", src) for k, v in value.items()}
    return value


def _expect(value: Any, kind: type, path: str, what: str, src: _Source) -> None:
    if not isinstance(value, kind):
        raise src.error(f"{path or 'the top level'} is {'null' if value is None else type(value).__name__}, not {what}")


def _load_record(cls: type[Record], data: Any, path: str, src: _Source) -> Record:
    _expect(data, dict, path, "a JSON object", src)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise src.error(f"unknown key {_key(path, unknown[0])!r}")
    kw = {}
    for f in fields:
        if f.name in data:
            kw[f.name] = _load(_hints(cls)[f.name], data[f.name], _key(path, f.name), src)
        elif not f.metadata.get("absent"):
            raise src.error(f"missing key {_key(path, f.name)!r}")
    return cls(**kw)


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if not (v is None and f.metadata.get("absent")):
                out[f.name] = _dump(v)
        return out
    if isinstance(value, (tuple, list)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


class _Intervals:
    """``interval(name)``: the 90% interval of a field from the record's ``ci90`` map (None without a bootstrap)."""

    def interval(self, name: str) -> Interval | None:
        return (self.ci90 or {}).get(name)


# -- laws ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PowerLawSummary(Record):
    """``y = coefficient * C^exponent`` (C in FLOPs): laws.json's ``paper`` laws (Liang et al. 2026's DiT laws)."""

    coefficient: float
    exponent: float


@dataclass(frozen=True, kw_only=True)
class QualityLawSummary(_Intervals, PowerLawSummary):
    """A power law with the 90% intervals of its ``coefficient`` and ``exponent`` (a quality law's shape)."""

    ci90: dict[str, Interval | None] | None


@dataclass(frozen=True, kw_only=True)
class LawSummary(QualityLawSummary):
    """A compute law ``y = coefficient * C^exponent`` with per-field 90% intervals and bootstrap standard
    errors (``se``; both None without a bootstrap): N_opt (params), D_opt (tokens) or L_opt."""

    se: dict[str, float | None] | None


@dataclass(frozen=True, kw_only=True)
class SaturatingValues(Record):
    """The saturating loss law ``L = E + k C^-gamma`` (E: the loss floor, C in FLOPs)."""

    E: float
    k: float
    gamma: float


@dataclass(frozen=True, kw_only=True)
class SaturatingSummary(_Intervals, SaturatingValues):
    """``L = E + k C^-gamma`` with per-field 90% intervals and standard errors (None without a bootstrap)."""

    ci90: dict[str, Interval | None] | None
    se: dict[str, float | None] | None


@dataclass(frozen=True, kw_only=True)
class BudgetSummary(Record):
    """One isoFLOP budget's optimum of the parabola in log N: N* (params), D* (tokens), L*; None where
    ``degenerate`` (not convex); ``edge`` when N* lies at the edge of the runs. ``held_out``: whether the
    backtest leaves the budget out (laws.json's budgets; the backtest's own fit has no such key)."""

    flops: float
    n_opt: float | None
    d_opt: float | None
    loss_opt: float | None
    edge: bool
    degenerate: bool
    n_runs: int
    held_out: bool | None = absent()


@dataclass(frozen=True, kw_only=True)
class EnvelopePointSummary(Record):
    """One point of Approach 1's envelope: the best run (``run_id``) of its compute bin."""

    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    run_id: str


@dataclass(frozen=True, kw_only=True)
class ComputeLawsSummary(Record):
    """The compute laws of Approaches 1 and 2: ``N_opt = a C^b``, ``D_opt = c C^d``, ``L_opt = e C^f``
    and, with 4 or more budgets, ``L_opt = E + k C^-gamma`` (else None)."""

    method: str
    params_law: LawSummary
    tokens_law: LawSummary
    loss_law: LawSummary
    loss_law_saturating: SaturatingSummary | None

    def law(self, name: str) -> LawSummary:
        """The law named ``name``: "params_law", "tokens_law" or "loss_law"."""
        return getattr(self, name)


@dataclass(frozen=True, kw_only=True)
class _FitTail(Record):
    """The keys every Approach 1/2 fit ends with: the runs fitted, the fit's options, its bootstrap
    (resamples, seed, failed refits and, by quantity, the nonfinite ones; None without)."""

    n_runs: int
    options: dict[str, Any]
    bootstrap: dict[str, Any] | None


@dataclass(frozen=True, kw_only=True)
class _Budgets(ComputeLawsSummary):
    budgets: tuple[BudgetSummary, ...]


@dataclass(frozen=True, kw_only=True)
class _Envelope(ComputeLawsSummary):
    envelope: tuple[EnvelopePointSummary, ...]


@dataclass(frozen=True, kw_only=True)
class FitSummary(_FitTail, _Budgets):  # keys: the laws, budgets, then _FitTail's (see _Flops)
    """An Approach 2 fit (``fit isoflop --json``, laws.json's laws and its ``backtest_fit``): the compute
    laws, the per-budget optima, the runs fitted, the fit's options and its bootstrap."""


@dataclass(frozen=True, kw_only=True)
class EnvelopeSummary(_FitTail, _Envelope):
    """An Approach 1 fit (``fit envelope --json``): the compute laws, the envelope points, the runs
    fitted, the options and the bootstrap."""


# -- estimates and predictions ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EstimateSummary(Record):
    """A predicted value with its 90% interval (None without a bootstrap)."""

    value: float | None
    ci90: Interval | None


@dataclass(frozen=True, kw_only=True)
class NearestModel(Record):
    """The family member nearest the predicted N_opt in log N: its rung, ``params`` (non-embedding) and
    ``params_total``; ``in_ladder`` False when the family rule extended the trained ladder to reach it;
    ``outside_ladder`` True when N_opt lies more than 2x from it (no family model near N_opt: a ladder
    of fixed rungs that stops short of it; absent in files written before issue 23)."""

    name: str
    depth: int
    hidden_size: int
    num_heads: int
    params: int
    params_total: int
    in_ladder: bool
    outside_ladder: bool | None = absent()


@dataclass(frozen=True, kw_only=True)
class BacktestLoss(Record):
    """One loss form's prediction of a held-out budget's L*: value, 90% interval, ``relative_error =
    (predicted - actual) / actual``, and whether the actual L* lies inside the interval."""

    predicted_loss: float
    predicted_ci90: Interval | None
    relative_error: float
    within_ci90: bool | None


@dataclass(frozen=True, kw_only=True)
class BacktestSummary(Record):
    """One held-out budget (``flops``): the refit's predicted L* vs the actual one (the isoFLOP fit of
    all budgets), ``relative_error = (predicted - actual) / actual``, and the refit's N_opt (params)
    vs the budget's own N* (None for an edge or degenerate optimum), each with its 90% interval. The
    study's rows of record name the form of their loss (``loss_law``) and hold every form's loss in
    ``forms`` (:class:`BacktestLoss`; power, saturating, parametric); Approach 3's own rows have no
    ``forms``. (The fields of :class:`BacktestLoss` are repeated here to keep laws.json's key order.)"""

    flops: float
    predicted_loss: float
    actual_loss: float
    relative_error: float
    predicted_n_opt: float
    actual_n_opt: float | None
    predicted_ci90: Interval | None
    within_ci90: bool | None
    predicted_n_opt_ci90: Interval | None
    n_opt_within_ci90: bool | None
    loss_law: str | None = absent()
    forms: dict[str, BacktestLoss] | None = absent()

    def loss(self) -> BacktestLoss:
        """The row's own loss prediction as a :class:`BacktestLoss`."""
        return BacktestLoss(
            predicted_loss=self.predicted_loss,
            predicted_ci90=self.predicted_ci90,
            relative_error=self.relative_error,
            within_ci90=self.within_ci90,
        )


@dataclass(frozen=True, kw_only=True)
class ExtrapolationRow(Record):
    """One held-out budget of one refit, by one loss ``form``: the study refitted without every budget
    above ``fitted_max_flops`` (the K largest, K = 1, 2, ... while at least 5 budgets stay fitted)
    predicts the held-out budget at ``flops``, ``factor = flops / fitted_max_flops`` beyond its
    largest fitted budget. Loss and N_opt (params) as in :class:`BacktestSummary` ("actual": the
    budget's own isoFLOP minimum in the fit of all budgets; N* None for an edge or degenerate
    optimum), each with its 90% interval and whether the actual value lies inside."""

    fitted_max_flops: float
    flops: float
    factor: float
    form: str
    predicted_loss: float
    predicted_ci90: Interval | None
    actual_loss: float
    relative_error: float
    within_ci90: bool | None
    predicted_n_opt: float
    predicted_n_opt_ci90: Interval | None
    actual_n_opt: float | None
    n_opt_within_ci90: bool | None


@dataclass(frozen=True, kw_only=True)
class RuleInput(Record):
    """One row of the inner backtest behind ``laws.loss_law: auto``: the fitted budgets up to
    ``fitted_max_flops`` predict the fitted budget ``flops``; ``relative_errors`` per loss form."""

    fitted_max_flops: float
    flops: float
    relative_errors: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class LossLawRule(Record):
    """How ``laws.loss_law: auto`` chose the loss form of record from the fitted budgets alone (those up
    to ``fitted_max_flops``): the ``rule`` in words, its ``inputs`` (the inner backtest's rows),
    each form's ``score`` (mean |relative error| of its inputs; a form that failed to fit in any
    inner refit is not scored), the forms ``excluded`` from the choice, each with why its point fit
    to the fitted budgets is degenerate (:mod:`ditscale.laws.degenerate`; absent when none was), and
    the form ``chosen``."""

    rule: str
    fitted_max_flops: float
    inputs: tuple[RuleInput, ...]
    scores: dict[str, float]
    excluded: dict[str, tuple[str, ...]] | None = absent()
    chosen: str


@dataclass(frozen=True, kw_only=True)
class RungTestSummary(Record):
    """One model size (``params``) at one step of the off-rung rule (:mod:`ditscale.laws.rungs`): in
    ``budgets`` budgets, its mean log-loss residual from their parabolas, at how many it lies
    ``above``, its own ``offset`` (log loss) with ``t`` and Bonferroni-adjusted ``p_value`` (None when
    untestable), and whether it ``qualifies`` to be dropped."""

    params: float
    budgets: int
    mean_residual: float
    above: int
    offset: float | None
    t: float | None
    p_value: float | None
    qualifies: bool


@dataclass(frozen=True, kw_only=True)
class RungStepSummary(Record):
    """One step of the off-rung rule: the per-size F-test of the runs left (``statistic`` on ``dof``,
    ``p_value``; None when untestable), each size's test and the size ``dropped`` (None: the last step)."""

    statistic: float | None
    dof: list[int]
    p_value: float | None
    sizes: tuple[RungTestSummary, ...]
    dropped: float | None


@dataclass(frozen=True, kw_only=True)
class RungRuleSummary(Record):
    """Which rungs ``laws.off_rungs: drop`` left out, decided from the fitted budgets alone (those up to
    ``fitted_max_flops``): the ``rule`` in words (:data:`ditscale.laws.rungs.RUNG_RULE`), its ``steps``
    (the inputs), the sizes ``dropped`` (non-embedding params, left out at every budget) and why it
    ``stopped``."""

    rule: str
    fitted_max_flops: float
    steps: tuple[RungStepSummary, ...]
    dropped: tuple[float, ...]
    stopped: str


@dataclass(frozen=True, kw_only=True)
class FactorError(Record):
    """The measured backtest error of one loss ``form`` at one extrapolation distance: the rows of
    ``extrapolation`` whose factor lies within 10% of ``factor`` (their geometric mean): how many,
    the median and range of ``relative_error``, how many lie inside their 90% interval and how
    many within 2%."""

    form: str
    factor: float
    rows: int
    median: float
    low: float
    high: float
    within_ci90: int
    within_2pct: int


@dataclass(frozen=True, kw_only=True)
class MeasuredError(Record):
    """What a prediction's distance has cost in the study's own backtests: ``factor`` (the target
    over the largest trained budget), the nearest measured factor (``measured_factor``, in log
    distance), whether the target lies ``beyond`` every measured factor, and every form's
    :class:`FactorError` there."""

    factor: float
    measured_factor: float
    beyond: bool
    forms: tuple[FactorError, ...]


@dataclass(frozen=True, kw_only=True)
class FloorAt(Record):
    """What noise alone costs a prediction at ``factor`` times the largest budget if its ``form`` is
    right (:func:`ditscale.laws.extrapolation.floor_at`): the 5-95% band (``low``, ``high``) of its
    relative error over ``draws`` draws whose L* scatter about the law by ``sigma`` (sd of log L*, as
    the study's do), against the law there scattered by ``actual_sd`` (0: the law itself; a study's
    seed spread: one trained run, as ``study verify`` checks it). A miss far outside it is the form's."""

    form: str
    factor: float
    sigma: float
    actual_sd: float
    draws: int
    low: float
    high: float


@dataclass(frozen=True, kw_only=True)
class FormSummary(Record):
    """One fitted loss form at the prediction's target: ``form`` (the ``laws.loss_law`` that names it:
    power, saturating, parametric), its name, and its N_opt (params) and L_opt with their intervals.
    ``degenerate``: why the form's fit is degenerate (:func:`ditscale.laws.degenerate.form_degenerate`:
    a parameter at its optimiser's bound, or an interval spanning more than 10 decades), one line
    each, () when it is not; absent in files written before the rule (issue 23)."""

    form: str
    name: str
    n_opt: EstimateSummary
    loss_opt: EstimateSummary
    degenerate: tuple[str, ...] | None = absent()


@dataclass(frozen=True, kw_only=True)
class ExponentSummary(Record):
    """An exponent's 90% interval in words: ``width = hi - lo``, ``includes_zero``, and ``message`` when
    the interval includes 0 or is wider than the 0.25 goal (all None without an interval)."""

    name: str
    value: float
    ci90: Interval | None
    width: float | None
    includes_zero: bool | None
    message: str | None


@dataclass(frozen=True, kw_only=True)
class SizeResidualSummary(Record):
    """A model size (``params``) in ``budgets`` budgets: its mean log-loss residual from their parabolas,
    and at how many it lies above."""

    params: float
    budgets: int
    mean_residual: float
    above: int


@dataclass(frozen=True, kw_only=True)
class ResidualStructureSummary(Record):
    """The per-size F-test of the isoFLOP residuals (:mod:`ditscale.laws.residuals`): ``statistic`` with
    ``dof`` degrees of freedom, ``p_value`` (None when it cannot be tested: 3 sizes per budget and no
    replicates), ``warn = p_value < threshold`` and ``message`` when it warns."""

    test: str
    statistic: float | None
    dof: list[int]
    p_value: float | None
    threshold: float
    warn: bool
    sizes: tuple[SizeResidualSummary, ...]
    message: str | None


@dataclass(frozen=True, kw_only=True)
class PredictionSummary(Record):
    """The compute-optimal model at ``flops`` (FLOPs): N_opt (params), D_opt (tokens, and images with
    ``tokens_per_image``), L_opt, each with its 90% interval; the ``nearest`` family model; how far it
    extrapolates (``extrapolation = flops / largest_budget``) and its ``warnings``.

    Approach 3's prediction in laws.json adds ``flops_6nd``, the target in 6ND FLOPs (its allocation
    counts C = 6ND), and has no nearest model. A study's prediction (laws.json's and ``study predict
    --json``) adds ``tokens_per_image``, every fitted form at the target (``forms``; ``loss_opt`` is
    that of ``loss_law``), the exponents' intervals in words, the residual-structure test, the
    ``backtest`` rows (``study predict`` only), ``notes`` (e.g. a bootstrap that was redrawn) and
    ``measured_error`` (:class:`MeasuredError`: the study's backtest error nearest the target's
    distance; when the study measured an ``extrapolation``). On a finite dataset it adds ``train_images``
    (the train split) and ``epochs_opt`` (D_opt's images over it, with its interval; a warning past
    16 epochs, :mod:`ditscale.data.epochs`); procedural data (shapes) has neither key."""

    flops: float
    n_opt: EstimateSummary
    d_opt: EstimateSummary
    loss_opt: EstimateSummary
    images_opt: EstimateSummary | None
    nearest: NearestModel | None
    largest_budget: float | None
    extrapolation: float | None
    warnings: tuple[str, ...]
    flops_6nd: float | None = absent()
    tokens_per_image: int | None = absent()
    forms: tuple[FormSummary, ...] | None = absent()
    loss_law: str | None = absent()
    exponents: tuple[ExponentSummary, ...] | None = absent()
    residual_structure: ResidualStructureSummary | None = absent()
    backtest: tuple[BacktestSummary, ...] | None = absent()
    notes: tuple[str, ...] | None = absent()
    measured_error: MeasuredError | None = absent()
    noise_floor: FloorAt | None = absent()
    train_images: int | None = absent()
    epochs_opt: EstimateSummary | None = absent()


# -- Approach 3 ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ParametricSummary(_Intervals, Record):
    """Approach 3, ``L(N, D) = E + A / N^alpha + B / D^beta`` (N params, D tokens), with 90% intervals and
    standard errors (None without a bootstrap), its allocation laws under C = 6ND (``N_opt = G (C/6)^a``
    as ``n_opt_law``, ``d_opt_law``), the Huber ``objective`` it reached and its solver ``options``.
    In a study's laws.json it adds its ``prediction`` at the target and its own ``backtest`` (refitted
    without the held-out budgets)."""

    method: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ci90: dict[str, Interval | None] | None
    se: dict[str, float | None] | None
    n_opt_law: LawSummary
    d_opt_law: LawSummary
    n_runs: int
    objective: float
    options: dict[str, Any]
    bootstrap: dict[str, Any] | None  # resamples, seed, failed refits (and nonfinite: by quantity)
    prediction: PredictionSummary | None = absent()
    backtest: tuple[BacktestSummary, ...] | None = absent()


# -- the rest of laws.json -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CheckSummary(Record):
    """One isoFLOP point check: the budget (FLOPs; None for the whole sweep), its kind (off_centre,
    drifting_centres, near_duplicate, outlier) and its one-line message."""

    budget: float | None
    kind: str
    message: str


@dataclass(frozen=True, kw_only=True)
class BudgetNoise(Record):
    """One budget's rms log-loss residual around its parabola (None with fewer than 4 model sizes)."""

    flops: float
    residual_rms: float | None


@dataclass(frozen=True, kw_only=True)
class NoiseSummary(Record):
    """Seed-to-seed spread (replicated configurations) vs isoFLOP residual spread, standard deviations of
    log(loss) with their degrees of freedom; ``residual_to_seed_ratio`` near 1 means the parabolas fit
    to within the noise."""

    seed_spread: float | None
    seed_groups: int
    seed_dof: int
    residual_spread: float | None
    residual_dof: int
    residual_to_seed_ratio: float | None
    per_budget: tuple[BudgetNoise, ...]
    units: str


@dataclass(frozen=True, kw_only=True)
class WallTime(Record):
    """Wall time of the study (seconds: ``study run`` calls before the final fit, None without
    ``wall.json``; that fit's own ``analysis_s``) and the sums over its runs (seconds)."""

    study_s: float | None
    calls: int
    runs_wall_s_sum: float
    runs_cpu_s_sum: float
    analysis_s: float


@dataclass(frozen=True, kw_only=True)
class ComputeSummary(Record):
    """What the runs cost: ``grid_flops`` (every run's exact training FLOPs), ``trained_flops`` (less with
    shared trunks), ``study_s`` (wall seconds less the quality stage's ``quality_s``), the measured fp32
    matmul peak (FLOP/s) and ``study_mfu = trained_flops / (study_s x matmul_peak_flops)``."""

    grid_flops: float
    trained_flops: float
    study_s: float | None
    matmul_peak_flops: float | None
    study_mfu: float | None
    quality_s: float


@dataclass(frozen=True, kw_only=True)
class LossBendSummary(Record):
    """How the isoFLOP minima bend in log-log (:func:`ditscale.laws.checks.loss_bend`): the local L_opt
    exponent at the first and last budget (FLOPs), their ``change`` and its t-statistic (None: minima
    exactly on a quadratic)."""

    first_flops: float
    last_flops: float
    first_exponent: float
    last_exponent: float
    change: float
    t: float | None


@dataclass(frozen=True, kw_only=True)
class ProvenanceSummary(Record):
    """What produced laws.json: the SHA-256 of the spec's canonical JSON, the package, torch and Python
    versions, the source commit (None outside a git checkout), the host and the device."""

    spec_sha256: str
    ditscale: str
    torch: str
    python: str
    git_commit: str | None
    git_dirty: bool | None
    hostname: str
    device: str


# -- sample quality --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class QualityPointSummary(Record):
    """One evaluated model: its budget (``flops``), quality (the metric, lower is better), val loss,
    non-embedding params, and whether it is its budget's compute-optimal model."""

    run_id: str
    flops: float
    quality: float
    loss: float
    params: float
    optimal: bool


@dataclass(frozen=True, kw_only=True)
class QualityBacktestSummary(Record):
    """The quality law refitted on ``fitted_budgets`` budgets, at the largest held-out one (``flops``):
    predicted vs actual, ``relative_error = (predicted - actual) / actual``."""

    flops: float
    predicted: float
    predicted_ci90: Interval | None
    actual: float
    relative_error: float
    fitted_budgets: int
    within_ci90: bool | None


@dataclass(frozen=True, kw_only=True)
class QualityVsLoss(QualityLawSummary):
    """The quality as a power law in validation loss, with the rank correlation ``spearman``."""

    spearman: float | None


# A base listed last leads the key order: dataclass fields follow the bases in reverse method-resolution
# order, so its one field comes first in to_dict (as laws.json has always written it).
@dataclass(frozen=True, kw_only=True)
class _Flops(Record):
    flops: float


@dataclass(frozen=True, kw_only=True)
class _Metric(Record):
    metric: str


@dataclass(frozen=True, kw_only=True)
class QualityPrediction(EstimateSummary, _Flops):
    """The quality law at the target budget ``flops`` (FLOPs): its value and 90% interval."""


@dataclass(frozen=True, kw_only=True)
class QualityPaper(PowerLawSummary, _Metric):
    """The paper's quality law ``metric = coefficient * C^exponent`` (FID, C in FLOPs)."""


@dataclass(frozen=True, kw_only=True)
class QualitySummary(Record):
    """laws.json's ``quality`` (:mod:`ditscale.laws.quality`): ``metric`` (fd or fid) as a power law in
    compute, the saturating form, the law in loss, the backtest, the prediction at the target budget
    and the scored models."""

    metric: str
    law: QualityLawSummary
    saturating: SaturatingValues | None
    vs_loss: QualityVsLoss | None
    backtest: QualityBacktestSummary | None
    prediction: QualityPrediction | None
    points: tuple[QualityPointSummary, ...]
    paper: QualityPaper


@dataclass(frozen=True, kw_only=True)
class QualityMetricSummary(Record):
    """One metric of laws.json's ``quality_metrics`` (:class:`ditscale.laws.quality.MetricLaws`): the power
    law in C through the compute-optimal models (``law``, 90% intervals), its ``backtest`` on the held-out
    budget, the law in validation loss with its Spearman correlation (``vs_loss``); each None when the
    metric has a value <= 0 (no power law passes through 0) or too few points. ``chance``: the metric's
    chance level (an accuracy of real images with shuffled conditions; None for distances); ``floor``: the
    value real data reaches (FD: real-vs-real at the samples' count; an accuracy: real images with their
    own conditions); None where unknown. ``best_value``: the top budget's compute-optimal model's score."""

    law: QualityLawSummary | None
    backtest: QualityBacktestSummary | None
    vs_loss: QualityVsLoss | None
    chance: float | None
    floor: float | None
    best_value: float


# -- the whole of laws.json ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _Named(Record):
    study: str


@dataclass(frozen=True, kw_only=True)
class LawsSummary(FitSummary, _Named):  # _Named last: ``study`` leads (see _Flops)
    """The whole of laws.json (schema version :data:`SCHEMA_VERSION`): the study's name, the Approach 2 fit
    of all budgets (:class:`FitSummary`), and what the analysis adds: the isoFLOP point ``checks``,
    Approach 3 (``parametric``, None when it did not converge), the ``backtest`` rows of record and the
    refit behind them (``backtest_fit``, None without a holdout), the ``prediction`` at the target and
    the form of record of its L_opt (``loss_law_of_record``), the exponents in words, the residual
    test, the noise, the paper's laws, the warnings, how the minima bend (``loss_bend``, None with too
    few budgets), the wall time, the compute, sample ``quality`` (None without a quality stage), and
    the provenance. Files written since issue 21 add the backtests at every distance
    (``extrapolation``: :class:`ExtrapolationRow` per refit, held-out budget and form; the form of
    record's rows in ``extrapolation_of_record``) and, under ``laws.loss_law: auto``, the rule that
    chose the form of record (``loss_law_rule``) and each refit's own choice (``extrapolation_rules``);
    under ``laws.off_rungs: drop``, the rule that left rungs out of every fit (``rung_rule``, decided on
    the backtest of record's fitted budgets) and each extrapolation refit's own (``extrapolation_rung_rules``).
    Files written since issue 22 by a study with a quality stage add ``quality_metrics``: every metric
    (``fd``, ``accuracy_all``, ``accuracy_<attribute>``, ``accuracy_class``) with its laws, chance level,
    floor and best value (:class:`QualityMetricSummary`)."""

    checks: tuple[CheckSummary, ...]
    parametric: ParametricSummary | None
    backtest: tuple[BacktestSummary, ...]
    backtest_fit: FitSummary | None
    prediction: PredictionSummary
    exponents: tuple[ExponentSummary, ...]
    residual_structure: ResidualStructureSummary
    noise: NoiseSummary
    paper: dict[str, PowerLawSummary]
    warnings: tuple[str, ...]
    loss_law_of_record: str
    loss_bend: LossBendSummary | None
    wall_time: WallTime
    compute: ComputeSummary
    quality: QualitySummary | None
    provenance: ProvenanceSummary
    extrapolation: tuple[ExtrapolationRow, ...] | None = absent()
    extrapolation_of_record: tuple[ExtrapolationRow, ...] | None = absent()
    loss_law_rule: LossLawRule | None = absent()
    extrapolation_rules: tuple[LossLawRule, ...] | None = absent()
    rung_rule: RungRuleSummary | None = absent()
    extrapolation_rung_rules: tuple[RungRuleSummary, ...] | None = absent()
    quality_metrics: dict[str, QualityMetricSummary] | None = absent()

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "laws.json") -> LawsSummary:
        """laws.json's record; ``schema_version`` (1 when absent) must be :data:`SCHEMA_VERSION`."""
        src = _Source(where)
        _expect(data, dict, "", "a JSON object", src)
        version = data.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise src.error(f"schema_version {version!r} is not one this ditscale reads")
        return _load_record(cls, {k: v for k, v in data.items() if k != "schema_version"}, "", src)

    def to_dict(self) -> dict[str, Any]:
        """laws.json: ``schema_version`` first, then the fields in order."""
        return {"schema_version": SCHEMA_VERSION, **_dump(self)}

    @classmethod
    def of(cls, laws: dict | LawsSummary, *, where: str = "laws.json") -> LawsSummary:
        """``laws`` as a record: laws.json's dict read strictly (:meth:`from_dict`), or the record itself."""
        return laws if isinstance(laws, LawsSummary) else cls.from_dict(laws, where=where)

    @classmethod
    def read(cls, path: str | Path) -> LawsSummary:
        """The laws.json file at ``path`` (a one-line error naming it when it is damaged or off-schema)."""
        src = _Source(str(path))
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as err:  # RecursionError: JSON nested too deeply
            raise SchemaError(f"{path} is damaged or missing ({type(err).__name__}); {src.remedy()}") from None
        return cls.from_dict(data, where=str(path))


# -- comparing two studies -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DifferenceSummary(Record):
    """``difference = a - b`` of one named value (e.g. ``params_law.exponent``), its 90% interval from
    paired bootstrap draws, ``resolved`` when that interval excludes 0, and each side's own interval."""

    name: str
    a: float
    b: float
    difference: float
    ci90: Interval | None
    resolved: bool | None
    a_ci90: Interval | None
    b_ci90: Interval | None


@dataclass(frozen=True, kw_only=True)
class StudyRef(Record):
    """A study folder and the study's name."""

    dir: str
    study: str


@dataclass(frozen=True, kw_only=True)
class ComparisonSummary(Record):
    """Two studies side by side (``study compare --json``): the differences of every shared value, and
    both studies' L_opt at ``flops`` (FLOPs; None without ``--flops``), each from its own loss form of
    record (``loss_a_law``, ``loss_b_law``: "power", "saturating" or "parametric"), the value ``study
    predict`` gives."""

    differences: tuple[DifferenceSummary, ...]
    flops: float | None
    loss_a: EstimateSummary | None
    loss_b: EstimateSummary | None
    loss_a_law: str | None = absent()  # absent in JSON written before the forms were named, or without --flops
    loss_b_law: str | None = absent()
    a: StudyRef
    b: StudyRef
    notes: tuple[str, ...]
