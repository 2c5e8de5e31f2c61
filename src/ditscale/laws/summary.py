"""A typed, read-only view of ``laws.json`` (and of the predict / compare results of a study).

``laws.json`` is written by ``ditscale.study.analyze`` as plain JSON; this module only reads it, so
the report and the CLI say ``laws.prediction.images_opt.value`` instead of chains of ``.get``.
Every field is optional: keys missing from older files take their defaults (None, empty), and
keys this view does not know are ignored. Units as in laws.json: C in training FLOPs, N
non-embedding parameters, D image tokens, loss in the runs' validation-loss units.

    laws = LawsSummary.read("DIR/laws.json")
    laws.params_law.exponent, laws.params_law.interval("exponent")
    laws.prediction.n_opt.value, laws.prediction.nearest.name
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

Interval = list[float]  # a 90% interval [lo, hi]


class _Intervals:
    """``interval(name)``: the 90% interval of a field from a view's ``ci90`` mapping (None without a bootstrap)."""

    def interval(self, name: str) -> Interval | None:
        return (self.ci90 or {}).get(name)


class _View:
    """``from_dict`` for the views: known keys only, nested views converted (``_nested``: one view,
    where null or empty takes the field's default; ``_lists``: a tuple of views; ``_maps``: a dict
    of views)."""

    _nested: ClassVar[dict[str, type]] = {}
    _lists: ClassVar[dict[str, type]] = {}
    _maps: ClassVar[dict[str, type]] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None):
        """The view of ``data`` (a laws.json-shaped dict; None gives the empty view)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in (data or {}).items() if k in names}
        for key, view in cls._nested.items():
            if kw.get(key):
                kw[key] = view.from_dict(kw[key])
            else:
                kw.pop(key, None)
        for key, view in cls._lists.items():
            kw[key] = tuple(view.from_dict(x) for x in kw.get(key) or ())
        for key, view in cls._maps.items():
            kw[key] = {name: view.from_dict(x) for name, x in (kw.get(key) or {}).items()}
        for key in ("warnings", "notes"):
            if key in names:
                kw[key] = tuple(kw.get(key) or ())
        return cls(**kw)


# -- laws -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LawSummary(_Intervals, _View):
    """A compute law ``y = coefficient * C^exponent`` with per-field 90% intervals and standard errors."""

    coefficient: float | None = None
    exponent: float | None = None
    ci90: dict[str, Interval | None] | None = None
    se: dict[str, float | None] | None = None


@dataclass(frozen=True)
class SaturatingSummary(_Intervals, _View):
    """The saturating loss law ``L = E + k C^-gamma`` with per-field intervals."""

    E: float | None = None
    k: float | None = None
    gamma: float | None = None
    ci90: dict[str, Interval | None] | None = None
    se: dict[str, float | None] | None = None


@dataclass(frozen=True)
class BudgetSummary(_View):
    """One isoFLOP budget's optimum: N* (params), D* (tokens), L*; None where degenerate."""

    flops: float | None = None
    n_opt: float | None = None
    d_opt: float | None = None
    loss_opt: float | None = None
    edge: bool = False
    degenerate: bool = False
    n_runs: int | None = None
    held_out: bool = False


@dataclass(frozen=True)
class FitSummary(_View):
    """An Approach 1/2 fit as laws.json stores it (also the shape of ``backtest_fit``)."""

    method: str | None = None
    params_law: LawSummary | None = None
    tokens_law: LawSummary | None = None
    loss_law: LawSummary | None = None
    loss_law_saturating: SaturatingSummary | None = None
    budgets: tuple[BudgetSummary, ...] = ()
    n_runs: int | None = None
    options: dict[str, Any] | None = None
    bootstrap: dict[str, Any] | None = None

    _nested = {
        "params_law": LawSummary,
        "tokens_law": LawSummary,
        "loss_law": LawSummary,
        "loss_law_saturating": SaturatingSummary,
    }
    _lists = {"budgets": BudgetSummary}

    def law(self, name: str) -> LawSummary | None:
        """The law named ``name``: "params_law", "tokens_law" or "loss_law" (None if absent)."""
        return getattr(self, name)


# -- estimates and predictions --------------------------------------------------------------------
@dataclass(frozen=True)
class EstimateSummary(_View):
    """A predicted value with its 90% interval (both None when absent)."""

    value: float | None = None
    ci90: Interval | None = None


@dataclass(frozen=True)
class NearestModel(_View):
    """The family member nearest the predicted N_opt (``params``: non-embedding parameters)."""

    name: str | None = None
    params: int | float | None = None
    depth: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    params_total: int | None = None
    in_ladder: bool = True


@dataclass(frozen=True)
class BacktestLoss(_View):
    """One loss form's prediction of a held-out budget's L*: value, 90% interval, relative error."""

    predicted_loss: float | None = None
    predicted_ci90: Interval | None = None
    relative_error: float | None = None
    within_ci90: bool | None = None


@dataclass(frozen=True)
class BacktestSummary(BacktestLoss):
    """One held-out budget: predicted vs actual compute-optimal loss, ``relative_error = (p - a) / a``
    (the fields of :class:`BacktestLoss`), and the refit's N_opt (params, with its 90% interval) vs
    the budget's own fitted N* (None when that optimum is an edge or degenerate one). A study's rows
    of record name the form of their loss (``loss_law``) and hold every form's loss in ``forms``
    (power, saturating, parametric)."""

    flops: float | None = None
    actual_loss: float | None = None
    predicted_n_opt: float | None = None
    predicted_n_opt_ci90: Interval | None = None
    actual_n_opt: float | None = None
    n_opt_within_ci90: bool | None = None
    loss_law: str | None = None
    forms: dict[str, BacktestLoss] = field(default_factory=dict)

    _maps = {"forms": BacktestLoss}


@dataclass(frozen=True)
class FormSummary(_View):
    """One fitted form at the prediction's target: its ``form`` (the ``loss_law`` that names it), its
    name, N_opt (params) and L_opt, each with its interval."""

    form: str | None = None
    name: str | None = None
    n_opt: EstimateSummary = field(default_factory=EstimateSummary)
    loss_opt: EstimateSummary = field(default_factory=EstimateSummary)

    _nested = {"n_opt": EstimateSummary, "loss_opt": EstimateSummary}


@dataclass(frozen=True)
class ExponentSummary(_View):
    """An exponent's 90% interval in words: ``message`` when it includes 0 or is wider than the goal."""

    name: str | None = None
    value: float | None = None
    ci90: Interval | None = None
    width: float | None = None
    includes_zero: bool | None = None
    message: str | None = None


@dataclass(frozen=True)
class SizeResidualSummary(_View):
    """A model size's mean log-loss residual from its budgets' parabolas, and at how many it lies above."""

    params: float | None = None
    budgets: int = 0
    mean_residual: float | None = None
    above: int = 0


@dataclass(frozen=True)
class ResidualStructureSummary(_View):
    """The per-size F-test of the isoFLOP residuals (:mod:`ditscale.laws.residuals`); ``p_value`` None
    when it cannot be tested (3 sizes per budget and no replicates), ``message`` when it warns."""

    test: str | None = None
    statistic: float | None = None
    dof: tuple[int, int] | list[int] | None = None
    p_value: float | None = None
    threshold: float | None = None
    warn: bool = False
    sizes: tuple[SizeResidualSummary, ...] = ()
    message: str | None = None

    _lists = {"sizes": SizeResidualSummary}


@dataclass(frozen=True)
class PredictionSummary(_View):
    """The compute-optimal model at ``flops``: N (params), D (tokens and images), loss, nearest model
    (Approach 3's prediction adds ``flops_6nd``, the target in 6ND FLOPs); how far it extrapolates
    (``extrapolation`` = flops / ``largest_budget``), every fitted form at the target (``forms``;
    ``loss_opt`` is that of ``loss_law``), the exponents' intervals in words, the residual-structure
    test, and ``notes`` (e.g. a bootstrap that was redrawn)."""

    flops: float | None = None
    flops_6nd: float | None = None
    n_opt: EstimateSummary = field(default_factory=EstimateSummary)
    d_opt: EstimateSummary = field(default_factory=EstimateSummary)
    loss_opt: EstimateSummary = field(default_factory=EstimateSummary)
    images_opt: EstimateSummary = field(default_factory=EstimateSummary)
    nearest: NearestModel = field(default_factory=NearestModel)
    tokens_per_image: int | None = None
    largest_budget: float | None = None
    extrapolation: float | None = None
    forms: tuple[FormSummary, ...] = ()
    loss_law: str | None = None
    exponents: tuple[ExponentSummary, ...] = ()
    residual_structure: ResidualStructureSummary | None = None
    backtest: tuple[BacktestSummary, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    _nested = {
        "n_opt": EstimateSummary,
        "d_opt": EstimateSummary,
        "loss_opt": EstimateSummary,
        "images_opt": EstimateSummary,
        "nearest": NearestModel,
        "residual_structure": ResidualStructureSummary,
    }
    _lists = {"backtest": BacktestSummary, "forms": FormSummary, "exponents": ExponentSummary}


# -- the rest of laws.json ------------------------------------------------------------------------
@dataclass(frozen=True)
class ParametricSummary(_Intervals, _View):
    """Approach 3, ``L = E + A / N^alpha + B / D^beta``, its allocation laws (C = 6ND) with 90%
    intervals and standard errors, and (in a study's laws.json) its ``prediction`` at the target
    and its own ``backtest`` (refitted without the held-out budgets)."""

    method: str | None = None
    E: float | None = None
    A: float | None = None
    B: float | None = None
    alpha: float | None = None
    beta: float | None = None
    ci90: dict[str, Interval | None] | None = None
    se: dict[str, float | None] | None = None
    n_opt_law: LawSummary | None = None
    d_opt_law: LawSummary | None = None
    n_runs: int | None = None
    objective: float | None = None
    options: dict[str, Any] | None = None
    bootstrap: dict[str, Any] | None = None
    prediction: PredictionSummary | None = None
    backtest: tuple[BacktestSummary, ...] = ()

    _nested = {"n_opt_law": LawSummary, "d_opt_law": LawSummary, "prediction": PredictionSummary}
    _lists = {"backtest": BacktestSummary}


@dataclass(frozen=True)
class CheckSummary(_View):
    """One isoFLOP point check: the budget (FLOPs; None for the whole sweep), its kind
    (off_centre, drifting_centres, near_duplicate, outlier) and its one-line message."""

    budget: float | None = None
    kind: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class BudgetNoise(_View):
    """One budget's rms log-loss residual around its parabola (None with fewer than 4 model sizes)."""

    flops: float | None = None
    residual_rms: float | None = None


@dataclass(frozen=True)
class NoiseSummary(_View):
    """Seed-to-seed spread vs isoFLOP residual spread, standard deviations of log(loss)."""

    seed_spread: float | None = None
    seed_groups: int = 0
    seed_dof: int = 0
    residual_spread: float | None = None
    residual_dof: int = 0
    residual_to_seed_ratio: float | None = None
    per_budget: tuple[BudgetNoise, ...] = ()
    units: str | None = None

    _lists = {"per_budget": BudgetNoise}


@dataclass(frozen=True)
class WallTime(_View):
    """Wall time of the study (seconds: ``study run`` calls before the final fit, and that fit's
    own ``analysis_s``) and the sums over its runs."""

    study_s: float | None = None
    calls: int = 0
    runs_wall_s_sum: float | None = None
    runs_cpu_s_sum: float | None = None
    analysis_s: float | None = None


# -- sample quality -------------------------------------------------------------------------------
@dataclass(frozen=True)
class QualityPointSummary(_View):
    """One evaluated model: its budget (``flops``), quality (the metric), val loss and non-embedding params."""

    run_id: str | None = None
    flops: float | None = None
    quality: float | None = None
    loss: float | None = None
    params: float | None = None
    optimal: bool = True


@dataclass(frozen=True)
class QualityBacktestSummary(_View):
    """The quality law refitted without the held-out budgets, at the largest of them."""

    flops: float | None = None
    predicted: float | None = None
    predicted_ci90: Interval | None = None
    actual: float | None = None
    relative_error: float | None = None
    within_ci90: bool | None = None
    fitted_budgets: int | None = None


@dataclass(frozen=True)
class QualityLawSummary(LawSummary):
    """A quality power law (in compute, or in loss with the rank correlation ``spearman``)."""

    spearman: float | None = None


@dataclass(frozen=True)
class QualitySummary(_View):
    """laws.json's ``quality`` (:mod:`ditscale.laws.quality`): ``metric`` (fd or fid) as a power law in
    compute and in loss, the saturating form, the backtest, the prediction at the target budget."""

    metric: str | None = None
    law: QualityLawSummary | None = None
    saturating: SaturatingSummary | None = None
    vs_loss: QualityLawSummary | None = None
    backtest: QualityBacktestSummary | None = None
    prediction: dict[str, Any] | None = None
    points: tuple[QualityPointSummary, ...] = ()
    paper: dict[str, Any] | None = None

    _nested = {
        "law": QualityLawSummary,
        "saturating": SaturatingSummary,
        "vs_loss": QualityLawSummary,
        "backtest": QualityBacktestSummary,
    }
    _lists = {"points": QualityPointSummary}


@dataclass(frozen=True)
class ProvenanceSummary(_View):
    """What produced laws.json: the package, torch and Python versions, the source commit, the host,
    and the SHA-256 of the spec it was fitted under (``spec_sha256``)."""

    spec_sha256: str | None = None
    ditscale: str | None = None
    torch: str | None = None
    python: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    hostname: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class LossBendSummary(_View):
    """How the isoFLOP minima bend in log-log (:func:`ditscale.laws.checks.loss_bend`): the local
    L_opt exponent at the first and last budget (FLOPs), their change and its t-statistic."""

    first_flops: float | None = None
    last_flops: float | None = None
    first_exponent: float | None = None
    last_exponent: float | None = None
    change: float | None = None
    t: float | None = None


@dataclass(frozen=True)
class LawsSummary(FitSummary):
    """The whole of laws.json: the Approach 2 fit of all budgets plus everything the study adds."""

    study: str | None = None
    checks: tuple[CheckSummary, ...] = ()
    parametric: ParametricSummary | None = None
    backtest: tuple[BacktestSummary, ...] = ()
    backtest_fit: FitSummary | None = None
    prediction: PredictionSummary | None = None
    noise: NoiseSummary = field(default_factory=NoiseSummary)
    paper: dict[str, LawSummary] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    wall_time: WallTime = field(default_factory=WallTime)
    quality: QualitySummary | None = None
    exponents: tuple[ExponentSummary, ...] = ()
    residual_structure: ResidualStructureSummary | None = None
    provenance: ProvenanceSummary | None = None
    loss_law_of_record: str | None = None
    loss_bend: LossBendSummary | None = None

    _nested = {
        **FitSummary._nested,
        "parametric": ParametricSummary,
        "backtest_fit": FitSummary,
        "loss_bend": LossBendSummary,
        "prediction": PredictionSummary,
        "noise": NoiseSummary,
        "wall_time": WallTime,
        "quality": QualitySummary,
        "residual_structure": ResidualStructureSummary,
        "provenance": ProvenanceSummary,
    }
    _lists = {**FitSummary._lists, "backtest": BacktestSummary, "checks": CheckSummary, "exponents": ExponentSummary}
    _maps = {"paper": LawSummary}

    @classmethod
    def read(cls, path: str | Path) -> "LawsSummary":
        """The view of the laws.json file at ``path``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# -- comparing two studies ------------------------------------------------------------------------
@dataclass(frozen=True)
class DifferenceSummary(_View):
    """``difference = a - b`` of one named value, each side with its interval."""

    name: str = ""
    a: float | None = None
    b: float | None = None
    difference: float | None = None
    ci90: Interval | None = None
    resolved: bool | None = None
    a_ci90: Interval | None = None
    b_ci90: Interval | None = None


@dataclass(frozen=True)
class StudyRef(_View):
    """A study folder and the study's name."""

    dir: str | None = None
    study: str | None = None


@dataclass(frozen=True)
class ComparisonSummary(_View):
    """Two studies side by side (``compare_studies``): differences, and both losses at ``flops``."""

    differences: tuple[DifferenceSummary, ...] = ()
    flops: float | None = None
    loss_a: EstimateSummary | None = None
    loss_b: EstimateSummary | None = None
    a: StudyRef = field(default_factory=StudyRef)
    b: StudyRef = field(default_factory=StudyRef)
    notes: tuple[str, ...] = ()

    _nested = {"loss_a": EstimateSummary, "loss_b": EstimateSummary, "a": StudyRef, "b": StudyRef}
    _lists = {"differences": DifferenceSummary}
