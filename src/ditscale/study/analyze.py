"""Fit and predict from a study folder (numpy/scipy through :mod:`ditscale.laws`).

- :func:`analyze_study` writes ``DIR/laws.json`` (and the report): Approach 2 laws on all budgets
  with bootstrap 90% intervals, the per-budget optima with edge flags, the isoFLOP point checks
  (off-centre and drifting grids, near-duplicate sizes, outliers), Approach 3 with its own
  bootstrap intervals when it converges, the backtests (:mod:`ditscale.study.backtest`: refit
  without the ``holdout`` largest budgets, and at every distance, predicting the held-out budgets'
  compute-optimal loss and N_opt), the measured noise and the wall time.
- :func:`predict_study` answers "what should I train with C FLOPs": N_opt, D_opt (tokens and
  images), loss, each with a 90% interval, and the nearest model of the study's family; every
  fitted form at the target side by side, how far it extrapolates, which exponents are resolved.
- :func:`compare_studies` puts two studies' laws side by side.

Each builds the typed records of :mod:`ditscale.laws.results` (:func:`study_laws`,
:func:`study_prediction`, :func:`study_comparison`); the ``*_study`` functions return their JSON
(``to_dict``). The study's runs are read and fitted once (:func:`fit_study`, a
:class:`~ditscale.study.fitted.StudyFit`); the loss form of record is decided by
:func:`~ditscale.study.fitted.form_of_record`; the warnings of refits and predictions are silenced
(and the study fit's collected) by :func:`~ditscale.study.fitted.quiet` alone.

The analysis stores every bootstrap it draws in ``DIR/bootstrap.npz`` (:data:`DRAWS_FILE`,
:class:`ditscale.laws.draws.DrawStore`, keyed by the runs and options they were drawn from);
``predict_study`` and ``compare_studies`` reuse the draws whose key matches, so they give exactly
laws.json's intervals in seconds, and redraw (saying so in ``notes``) when none does.

Units: C in training FLOPs, N non-embedding parameters, D image tokens, loss in the runs' val-loss
units; ``relative_error = (predicted - actual) / actual``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zipfile
from pathlib import Path

import numpy as np

from ditscale.errors import DataError
from ditscale.flops import param_counts
from ditscale.flops import tokens_per_image as flops_tokens_per_image
from ditscale.io import atomic_write_npz, check_npz, sha256_json
from ditscale.laws import Bootstrap, FitConfig, Runs, compare, fit_runs, predict
from ditscale.laws.checks import isoflop_checks, loss_bend
from ditscale.laws.degenerate import degenerate_warning
from ditscale.laws.draws import DrawStore, draws_key
from ditscale.laws.extrapolation import budgets_noise_floor, floor_at, loss_law_points, measured_error
from ditscale.laws.fit import LOSS_LAW_NAMES
from ditscale.laws.noise import noise_summary  # noqa: F401  (laws.json "noise"; also public here)
from ditscale.laws.predict import (
    INTERVAL_GOAL,
    below_sweep_warning,
    exponent_resolution,
    extrapolation_warning,
    form_phrase,
    forms_disagreement,
    smallest_budget,
)
from ditscale.laws.quality import fit_metric, fit_quality
from ditscale.laws.residuals import residual_structure
from ditscale.laws.results import (
    BacktestSummary,
    CheckSummary,
    ComparisonSummary,
    ComputeSummary,
    DifferenceSummary,
    EstimateSummary,
    ExponentSummary,
    ExtrapolationRow,
    FitSummary,
    FloorAt,
    FormSummary,
    LawsSummary,
    LossBendSummary,
    LossLawRule,
    NearestModel,
    NoiseSummary,
    ParametricSummary,
    PowerLawSummary,
    PredictionSummary,
    ProvenanceSummary,
    QualityMetricSummary,
    QualitySummary,
    ResidualStructureSummary,
    StudyRef,
    WallTime,
)
from ditscale.laws.runs import runs_from_rows
from ditscale.study.backtest import backtest_study, extrapolation_study, record_rule, rule_margin
from ditscale.study.epochs import prediction_epochs, study_train_images
from ditscale.study.fitted import (
    StudyFit,
    check_target_flops,
    form_degeneracy,
    loss_of_record,
    parametric_fit,
    quiet,
    wanted_form,
)
from ditscale.study.folder import StudyFolder
from ditscale.study.plan import base_model_config, rung_config
from ditscale.study.quality import metric_points, quality_frame, quality_points, sample_rows, steps_points
from ditscale.study.verified import read_verifications
from ditscale.study.rungs import rung_summary, rungs_of_record
from ditscale.study.spec import PAPER_LAWS, StudySpec


def load_study_spec(out_dir: str | Path) -> StudySpec:
    """The spec a study folder was run with (``DIR/spec.yaml``)."""
    return StudyFolder(out_dir).read_spec()


# -- family members for "nearest model" ------------------------------------------------------------
def family_members(
    spec: StudySpec, up_to_params: float = 0.0, base=None
) -> list[tuple[str, float, tuple[int, int, int]]]:
    """``(name, non-embedding params, rung)`` of the family; a rule-based family is extended
    (deeper or wider) until a member has at least ``2 * up_to_params`` parameters. ``base``:
    :func:`~ditscale.study.plan.base_model_config` of ``spec`` if the caller has it."""
    base = base_model_config(spec) if base is None else base

    def member(rung):
        d, w, h = rung
        return (f"d{d}-w{w}-h{h}", float(param_counts(rung_config(spec, rung, base)).non_embedding), rung)

    out = [member(r) for r in spec.family.ladder()]
    fam = spec.family
    step = 0
    while fam.rungs is None and max(m[1] for m in out) < 2 * up_to_params and step < 2000:
        step += 1
        rung = fam.next_rung(max(out, key=lambda m: m[1])[2])
        if rung is None or rung in {m[2] for m in out}:
            break
        out.append(member(rung))
    return sorted(out, key=lambda m: m[1])


def tokens_per_image(spec: StudySpec, base=None) -> int:
    """Image tokens per training image of the family (equal for every rung)."""
    return int(flops_tokens_per_image(base_model_config(spec) if base is None else base))


# -- stored bootstrap draws -------------------------------------------------------------------------
DRAWS_FILE = "bootstrap.npz"


def draws_path(out_dir: str | Path) -> Path:
    """``DIR/bootstrap.npz``: the study's stored bootstrap draws."""
    return Path(out_dir) / DRAWS_FILE


def load_draws(out_dir: str | Path) -> DrawStore:
    """The stored draws of a study (an empty store when the file is missing; an empty store marked
    ``loaded`` when it cannot be read, so the redraw is reported)."""
    path = draws_path(out_dir)
    if not path.is_file():
        return DrawStore()
    try:
        check_npz(path)  # a header declaring more than the file holds or memory allows: unreadable
        with np.load(path, allow_pickle=False) as arrays:
            return DrawStore.from_arrays(arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DataError) as e:
        return DrawStore(loaded=True, unreadable=str(e).splitlines()[0] if str(e) else type(e).__name__)


def write_draws(out_dir: str | Path, draws: DrawStore) -> Path:
    """Write ``draws`` atomically to ``DIR/bootstrap.npz``."""
    return atomic_write_npz(draws_path(out_dir), draws.to_arrays())


def draws_note(out_dir: str | Path, draws: DrawStore, *, stored: bool = False) -> str | None:
    """One line saying that bootstraps were redrawn, and why (None when every draw was reused).
    ``stored``: the caller has written the new draws to the file (a report), so the line says so
    instead of how to store them."""
    if not draws.redrawn:
        return None
    path = draws_path(out_dir)
    why = "was drawn from other runs.csv rows or laws options" if draws.loaded else "is missing"
    if draws.unreadable:
        why = f"is unreadable ({draws.unreadable})"
    then = "the new draws are stored there" if stored else f"`ditscale study report {out_dir}` stores the draws again"
    return f"bootstrap redrawn ({', '.join(dict.fromkeys(draws.redrawn))}): {path} {why}; {then}"


# -- the form of record's fallback ----------------------------------------------------------------
def loss_law_fallback(wanted: str) -> str:
    """The warning when ``laws.loss_law`` (or the form its "auto" rule chose) names a form that could
    not be fitted."""
    why = (
        "Approach 3 did not converge"
        if wanted == "parametric"
        else "the saturating law was not fitted (needs 4 or more budgets)"
    )
    return f"laws.loss_law is {wanted!r} but {why}: L_opt and its backtest come from the power law e C^f"


# -- the study's fits -------------------------------------------------------------------------------
def read_study_runs(folder: StudyFolder) -> tuple[Runs, list[dict[str, str]]]:
    """The study's runs.csv, read once: its checked rows of text cells and their :class:`Runs`."""
    rows = folder.read_runs_rows()
    if not rows:
        return folder.read_runs(), rows  # no runs.csv: the folder's one-line error
    return runs_from_rows(rows, folder.runs_csv), rows


def fit_study(
    out_dir: str | Path, spec: StudySpec | None = None, *, seed_offset: int = 0, draws: DrawStore | None = None
) -> StudyFit:
    """Approach 2 fit of all budgets (options: ``spec.laws``; seed plus ``seed_offset``) with its bootstrap,
    the isoFLOP point checks (:func:`ditscale.laws.checks.isoflop_checks`) and the residual-structure
    test (:func:`ditscale.laws.residuals.residual_structure`), whose messages join the fit's warnings.
    ``draws``: reuse (and keep) bootstrap draws there (:class:`~ditscale.laws.draws.DrawStore`)."""
    folder = StudyFolder(out_dir)
    spec = spec or folder.read_spec()
    cfg = dataclasses.replace(spec.laws, seed=spec.laws.seed + seed_offset)
    all_runs, rows = read_study_runs(folder)
    with quiet():
        runs, rungs = rungs_of_record(all_runs, spec.holdout, cfg)
    with quiet() as caught:
        fit, boot = fit_runs(runs, cfg, draws)
    to_6nd = six_nd_per_exact(rows)
    rule = record_rule(runs, spec.holdout, cfg, to_6nd) if cfg.loss_law == "auto" else None
    checks = tuple(isoflop_checks(runs, fit, wanted_form(cfg.loss_law, rule)))
    structure = residual_structure(runs, cfg.budget_rtol)
    found = {str(w.message) for w in caught} | {c.message for c in checks}
    found |= {m for m in (structure.message, rungs and rungs.message) if m}
    kept = None if rungs is None else all_runs
    return StudyFit(spec, runs, rows, fit, boot, checks, structure, tuple(sorted(found)), to_6nd, rule, rungs, kept)


def six_nd_per_exact(rows: list[dict]) -> float:
    """6ND FLOPs per exact training FLOP at the study's largest budget (geometric mean of its runs'
    ``flops_6nd / flops``): the conversion of an exact-FLOP target for Approach 3, whose allocation
    counts C = 6ND. Small DiTs spend 1.3-1.7 exact FLOPs per 6ND FLOP (attention, embeddings)."""
    largest = max(float(r["budget"]) for r in rows)
    ratios = [
        float(r["flops_6nd"]) / float(r["flops"])
        for r in rows
        if float(r["budget"]) == largest and r.get("flops_6nd") not in (None, "")
    ]
    return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else 1.0  # no 6ND column: C as given


def parametric_summary(
    fitted,
    runs: Runs,
    cfg: FitConfig | None = None,
    target_flops: float | None = None,
    tpi: int | None = None,
    to_6nd: float = 1.0,
) -> ParametricSummary | None:
    """Approach 3 (``L = E + A/N^alpha + B/D^beta``) as laws.json's ``parametric``, or None if it did not converge.

    ``fitted``: :func:`~ditscale.study.fitted.parametric_fit`'s ``(fit, Bootstrap or None)`` of ``runs``,
    or None. ``cfg`` (a :class:`~ditscale.laws.FitConfig`, the spec's ``laws``; default: its defaults) gave the
    solver (``parametric_method``, ``delta``, ``top_k``) and the bootstrap (``cfg.resamples``
    resamples of whole runs, stratified by budget, seed ``cfg.seed``): intervals and standard
    errors of E, A, B, alpha, beta and of the implied N_opt / D_opt laws. With ``target_flops``,
    ``prediction`` holds the compute-optimal N, D (tokens, and images with ``tpi`` tokens per
    image) and loss there with 90% intervals. Approach 3 allocates compute as C = 6ND, so an exact
    FLOP target is first converted with ``to_6nd`` (6ND FLOPs per exact FLOP; :func:`six_nd_per_exact`);
    the prediction keeps the exact target as ``flops`` and adds ``flops_6nd``.
    """
    cfg = cfg or FitConfig()
    if fitted is None:
        return None
    fit, boot = fitted
    out = ParametricSummary.from_dict(fit.to_dict(boot))
    if target_flops is None:
        return out
    largest = max(runs.budgets(cfg.budget_rtol)[1]) * to_6nd
    with quiet():
        pred = predict(fit, target_flops * to_6nd, boot=boot, tokens_per_image=tpi, trained_flops=largest).to_dict()
    pred = {**pred, "flops": float(target_flops), "flops_6nd": float(target_flops * to_6nd)}
    return dataclasses.replace(out, prediction=PredictionSummary.from_dict(pred))


# -- the prediction ---------------------------------------------------------------------------------
def predict_study(out_dir: str | Path, flops: float, **options) -> dict:
    """:func:`study_prediction` (same arguments) as JSON: ``study predict --json``."""
    return study_prediction(out_dir, flops, **options).to_dict()


def study_prediction(
    out_dir: str | Path,
    flops: float,
    *,
    spec: StudySpec | None = None,
    fitted: StudyFit | None = None,
    with_backtest: bool = True,
    draws: DrawStore | None = None,
) -> PredictionSummary:
    """Compute-optimal model at ``flops`` training FLOPs from the study in ``out_dir``.

    Fields (:class:`~ditscale.laws.results.PredictionSummary`): ``flops``; ``n_opt`` (non-embedding
    params), ``d_opt`` (tokens), ``images_opt`` (images), ``loss_opt``, each a value and ``ci90``;
    ``nearest`` (the family member nearest N_opt); ``tokens_per_image``; ``largest_budget`` and
    ``extrapolation`` (``flops`` over it); ``forms`` (:func:`prediction_forms`: every fitted form's
    N_opt and L_opt at ``flops``); ``loss_law`` (the form ``loss_opt`` comes from,
    :func:`form_of_record`, with a warning when it is not ``spec.laws.loss_law``); ``exponents``
    (:func:`exponent_checks`); ``residual_structure``; ``backtest`` (see :func:`backtest_study`;
    unless ``with_backtest`` is False); ``warnings`` (the fit's, the exponents' and, past 100x, the
    extrapolation's); ``notes`` (one line when a bootstrap was redrawn); ``measured_error`` (the
    study's measured backtest error nearest this distance, every form's, from ``DIR/laws.json``'s
    ``extrapolation`` when it has one); ``noise_floor`` (what noise alone would cost this prediction
    if its form is right, against one run: :func:`_noise_frame`). ``spec``: the study's spec
    when the caller has it (else read from ``DIR/spec.yaml``); ``fitted``: :func:`fit_study`'s result
    when already fitted; ``draws``: the bootstrap draws to use and keep (default: ``DIR/bootstrap.npz``'s,
    reporting redraws in ``notes``).
    """
    check_target_flops(flops)
    spec = spec or load_study_spec(out_dir)
    stored = draws is None
    draws = load_draws(out_dir) if stored else draws
    study = fitted or fit_study(out_dir, spec, draws=draws)
    backtest = backtest_study(study, draws=draws).rows if with_backtest else None
    out = _prediction(study, flops, parametric_fit(study.runs, spec.laws, draws), backtest)
    note = draws_note(out_dir, draws) if stored else None
    measured = measured_error(_stored_extrapolation(out_dir), out.extrapolation)
    frame = _noise_frame(study, out)
    return dataclasses.replace(out, notes=(note,) if note else (), measured_error=measured, noise_floor=frame)


def _noise_frame(study: StudyFit, pred: PredictionSummary) -> FloorAt | None:
    """What noise alone would cost the prediction ``pred`` of ``study`` if its loss form is right, checked
    against one run with the study's seed spread (:func:`~ditscale.laws.extrapolation.floor_at`; None
    below the largest budget, for Approach 3, or with too few budgets)."""
    if pred.extrapolation is None or pred.extrapolation < 1 or pred.loss_law is None:
        return None
    points = loss_law_points(study.fit.budgets, study.spec.laws.exclude_edge)
    if not points[0]:
        return None
    spread = noise_summary(study.runs)["seed_spread"] or 0.0
    return floor_at(*points, pred.loss_law, pred.flops / points[0][-1], actual_sd=spread)


def _stored_extrapolation(out_dir: str | Path) -> tuple[ExtrapolationRow, ...] | None:
    """The study's backtests at every distance (every form's rows), as ``DIR/laws.json`` stored them
    (None when the file is missing, unreadable or older than the key): predict measures its distance's
    error from them rather than refitting every distance."""
    path = StudyFolder(out_dir).laws_json
    try:
        return LawsSummary.read(path).extrapolation if path.is_file() else None
    except DataError:
        return None


def _prediction(
    study: StudyFit, flops: float, parametric, backtest: tuple[BacktestSummary, ...] | None = None
) -> PredictionSummary:
    """:func:`study_prediction`'s answer from what is already fitted: ``parametric`` is
    :func:`~ditscale.study.fitted.parametric_fit`'s ``(fit, boot)`` or None, ``backtest`` the rows to include (None: no
    ``backtest`` key); ``notes`` is left empty."""
    spec, fit, boot = study.spec, study.fit, study.boot
    base = base_model_config(spec)
    tpi = tokens_per_image(spec, base)
    members = family_members(spec, float(fit.params_law(flops)), base)
    pred = predict(fit, flops, boot=boot, tokens_per_image=tpi, family=[(m[0], m[1]) for m in members])
    forms = prediction_forms(fit, boot, parametric, flops, study.to_6nd, float(np.min(study.runs.loss)))
    law, loss_opt = loss_of_record(spec.laws.loss_law, forms, study.rule)
    exponents = exponent_checks(fit, boot, parametric)
    nearest = _nearest(spec, base, members, pred.nearest[0], pred.n_opt.value)
    warns = [*study.warnings, *(e.message for e in exponents if e.message)]
    warns += _prediction_warnings(pred, forms, law, nearest, study.rule)
    below = below_sweep_warning(pred.flops, smallest_budget(study.fit))
    warns += [below] if below else []
    if law != wanted_form(spec.laws.loss_law, study.rule):
        warns.append(loss_law_fallback(wanted_form(spec.laws.loss_law, study.rule)))
    plain = PredictionSummary.from_dict({**pred.to_dict(), "nearest": None})  # nearest: with its rung, below
    n_train = study_train_images(spec)
    epochs_opt, epochs_warn = prediction_epochs(plain.images_opt, n_train, flops)
    warns += [epochs_warn] if epochs_warn else []
    return dataclasses.replace(
        plain,
        loss_opt=loss_opt,
        nearest=nearest,
        warnings=tuple(warns),
        tokens_per_image=tpi,
        forms=forms,
        loss_law=law,
        exponents=exponents,
        residual_structure=ResidualStructureSummary.from_dict(study.structure.to_dict()),
        backtest=backtest,
        notes=(),
        train_images=n_train if epochs_opt is not None else None,
        epochs_opt=epochs_opt,
    )


LADDER_SLACK = 2.0  # N_opt more than 2x from its nearest family model (beyond a rung step) lies outside the ladder


def _prediction_warnings(
    pred, forms: tuple[FormSummary, ...], law: str, nearest: NearestModel, rule: LossLawRule | None
) -> list[str]:
    """A prediction's own warnings: the distance (naming the form of record, :func:`extrapolation_warning`),
    the degenerate forms, the forms that disagree beyond their intervals, an N_opt outside the family, and
    a form of record that ``rule`` chose by a near tie (:func:`near_tie_warning`)."""
    out = [w for w in (extrapolation_warning(pred.flops, pred.largest_budget, form=form_phrase(law)),) if w]
    out += [degenerate_warning(f.name, f.degenerate) for f in forms if f.degenerate]
    out += forms_disagreement(pred.flops, forms)
    if nearest.outside_ladder:
        ratio = pred.n_opt.value / nearest.params
        out.append(
            f"N_opt = {pred.n_opt.value:.3g} params lies outside the family's ladder: {ratio:.2g}x its nearest "
            f"model {nearest.name} ({nearest.params:.3g} non-embedding params); add rungs that reach it"
        )
    return out + [w for w in (near_tie_warning(rule, forms, law, pred.flops),) if w]


def near_tie_warning(rule: LossLawRule | None, forms: tuple[FormSummary, ...], law: str, flops: float) -> str | None:
    """One line when the ``laws.loss_law: auto`` ``rule`` chose the form of record ``law`` by a margin its
    inner rows cannot resolve (:func:`~ditscale.study.backtest.rule_margin`), with both forms' L_opt at
    ``flops`` from ``forms``: the choice between them is then part of the prediction's uncertainty.
    None when the rule resolved its choice, had no rival, its form is not the one of record (a
    fallback, which has its own warning), or the two forms predict the same loss."""
    margin = rule_margin(rule)
    losses = {f.form: f.loss_opt.value for f in forms}
    if margin is None or margin.resolved or margin.chosen != law or margin.runner_up not in losses:
        return None
    if math.isclose(losses[law], losses[margin.runner_up], rel_tol=1e-6):  # e.g. a saturating floor at 0
        return None
    how = f"paired t = {margin.t:.2g} over {margin.rows}" if margin.t is not None else f"over {margin.rows}"
    return (
        f"the loss form of record, {form_phrase(law)}, won the inner backtest that chose it over "
        f"{form_phrase(margin.runner_up)} by a near tie ({how} inner row(s); a resolved choice needs t >= 2 "
        f"over 3 or more): at C = {flops:.3g} FLOPs they give L_opt {losses[law]:.4g} and "
        f"{losses[margin.runner_up]:.4g}; read the spread between them as part of the uncertainty"
    )


def _nearest(spec: StudySpec, base, members, name: str, n_opt: float) -> NearestModel:
    """The family member ``name`` as predict shows it (rung, non-embedding and total parameters), and
    whether ``n_opt`` lies more than :data:`LADDER_SLACK` times from it (outside the ladder)."""
    rung = next(m[2] for m in members if m[0] == name)
    counts = param_counts(rung_config(spec, rung, base))
    off = max(n_opt / counts.non_embedding, counts.non_embedding / n_opt)
    return NearestModel(
        name=name,
        depth=rung[0],
        hidden_size=rung[1],
        num_heads=rung[2],
        params=int(counts.non_embedding),
        params_total=int(counts.total),
        in_ladder=rung in spec.family.ladder(),
        outside_ladder=bool(off > LADDER_SLACK),
    )


def prediction_forms(
    fit, boot, parametric, flops: float, to_6nd: float = 1.0, smallest_loss: float | None = None
) -> tuple[FormSummary, ...]:
    """Every fitted form at ``flops`` FLOPs side by side: its name, N_opt and L_opt (each with its 90%
    interval), and ``form``, the :class:`~ditscale.laws.FitConfig` ``loss_law`` that names it: the
    isoFLOP power law ``e C^f``, the saturating ``E + k C^-gamma`` (N_opt from the same ``a C^b``;
    when fitted) and Approach 3 (``parametric``: ``(fit, boot)`` or None; its C = 6ND target is
    ``flops * to_6nd``). With ``smallest_loss`` (the smallest loss fitted), each form says whether
    its fit is degenerate (:func:`form_degeneracy`)."""
    preds = {"power": predict(fit, flops, boot=boot)}
    if fit.loss_law_saturating is not None:
        preds["saturating"] = predict(fit, flops, boot=boot, saturating=True)
    if parametric is not None:
        with quiet():
            preds["parametric"] = predict(parametric[0], flops * to_6nd, boot=parametric[1])
    return tuple(
        FormSummary(
            form=form,
            name=LOSS_LAW_NAMES[form],
            n_opt=EstimateSummary(**p.n_opt.to_dict()),
            loss_opt=EstimateSummary(**p.loss_opt.to_dict()),
            degenerate=None if smallest_loss is None else form_degeneracy(form, fit, boot, parametric, smallest_loss),
        )
        for form, p in preds.items()
    )


def exponent_checks(fit, boot, parametric) -> tuple[ExponentSummary, ...]:
    """The allocation and loss exponents' intervals in words (:func:`ditscale.laws.predict.exponent_resolution`):
    the isoFLOP N_opt, D_opt (against the 0.25-width goal) and L_opt (includes 0 only) exponents, and
    Approach 3's N_opt and D_opt exponents (``parametric``: ``(fit, boot)`` or None)."""
    ci = lambda b, name: None if b is None else b.ci90(name)  # noqa: E731
    items = [
        ("N_opt exponent", fit.params_law.exponent, ci(boot, "params_law.exponent"), INTERVAL_GOAL),
        ("D_opt exponent", fit.tokens_law.exponent, ci(boot, "tokens_law.exponent"), INTERVAL_GOAL),
        ("L_opt exponent", fit.loss_law.exponent, ci(boot, "loss_law.exponent"), None),
    ]
    if parametric is not None:
        pfit, pboot = parametric
        for law, what in (("n_opt_law", "N_opt"), ("d_opt_law", "D_opt")):
            exponent = getattr(pfit, law).exponent
            items.append((f"Approach 3 {what} exponent", exponent, ci(pboot, f"{law}.exponent"), INTERVAL_GOAL))
    return tuple(
        ExponentSummary(**exponent_resolution(name, float(value), interval, goal))
        for name, value, interval, goal in items
    )


# -- cost, quality, provenance ----------------------------------------------------------------------
def _wall_time(wall: dict, rows: list[dict[str, str]], analysis_s: float) -> WallTime:
    """laws.json's ``wall_time``: the study's wall seconds (``wall.json``), the runs' sums (``runs.csv``)
    and this analysis's own seconds."""
    run_wall = cpu = 0.0
    for row in rows:
        run_wall += float(row.get("wall_s") or 0)
        cpu += float(row.get("cpu_s") or 0)
    return WallTime(
        study_s=wall.get("total_s"),
        calls=len(wall.get("calls", [])),
        runs_wall_s_sum=round(run_wall, 1),
        runs_cpu_s_sum=round(cpu, 1),
        analysis_s=analysis_s,
    )


def compute_summary(folder: StudyFolder) -> dict:
    """laws.json's ``compute`` of the study in ``folder`` (:func:`_compute`) as JSON."""
    return _compute(folder, folder.read_runs_rows(), folder.read_wall()).to_dict()


def _compute(folder: StudyFolder, rows: list[dict[str, str]], wall: dict) -> ComputeSummary:
    """laws.json's ``compute``: what the study's runs cost and how well the machine was used.

    ``grid_flops``: the sum of every finished run's exact training FLOPs (what independent runs
    would train); ``trained_flops``: what was trained (less with shared trunks: each branch's
    shared steps counted once, in its trunk); ``study_s``: wall seconds of all ``study run`` calls
    (``wall``: wall.json), less the quality stage;
    ``matmul_peak_flops``: the machine's fp32 matmul FLOP/s measured by those calls (the highest);
    ``study_mfu = trained_flops / (study_s x matmul_peak_flops)`` (None without a measured peak);
    ``quality_s``: wall seconds of the quality stage (sampling and scoring), left out of ``study_s``.
    """
    grid = sum(float(r["flops"]) for r in rows)
    trunks, shared = folder.trunk_flops()
    trained = grid - sum(float(shared.get(r["run_id"], 0.0)) for r in rows) + trunks
    peaks = [c["matmul_peak_flops"] for c in wall.get("calls", []) if c.get("matmul_peak_flops")]
    quality_s = sum(c.get("quality_s", 0.0) for c in wall.get("calls", []))
    peak, study_s = (max(peaks) if peaks else None), wall.get("total_s")
    study_s = None if study_s is None else round(study_s - quality_s, 3)
    mfu = trained / (study_s * peak) if (peak and study_s) else None
    return ComputeSummary(
        grid_flops=grid,
        trained_flops=trained,
        study_s=study_s,
        matmul_peak_flops=peak,
        study_mfu=mfu,
        quality_s=round(quality_s, 3),
    )


def study_compute(
    folder: StudyFolder, spec: StudySpec, rows: list[dict[str, str]], wall: dict
) -> tuple[ComputeSummary, str | None]:
    """``(compute, note)``: :func:`_compute`, unless the study shared trunks and its ``trunks/`` folder
    is not here (a study shipped as runs.csv and laws.json): then the trained FLOPs cannot be
    recounted, so the ``compute`` laws.json recorded is kept, with a note saying so (``note`` None
    otherwise; without a readable record the recount stands, and the note says it is an upper bound)."""
    computed = _compute(folder, rows, wall)
    if not spec.share_trunks or any(folder.trunks_dir.glob("*/trunk.json")):
        return computed, None
    try:
        recorded = LawsSummary.read(folder.laws_json).compute
    except DataError:  # missing or damaged: nothing recorded to keep
        recorded = None
    if recorded is None:
        return (
            computed,
            f"{folder.trunks_dir} is not here: compute.trained_flops counts every run whole (an upper bound)",
        )
    return (
        recorded,
        f"compute kept from {folder.laws_json}: {folder.trunks_dir} is not here to recount the trained FLOPs",
    )


def quality_summary(out_dir: str | Path, spec: StudySpec) -> QualitySummary | None:
    """laws.json's ``quality`` (:class:`ditscale.laws.quality.QualityLaws`): the study's scored models
    (``quality.csv``) fitted against compute and loss, backtested on the ``spec.holdout`` largest
    budgets, predicted at ``target_flops``; None when the study scored no models."""
    found = quality_points(out_dir)
    if found is None:
        return None
    metric, points = found
    with quiet():
        laws = fit_quality(
            points,
            metric=metric,
            holdout=spec.holdout,
            resamples=spec.laws.resamples,
            seed=spec.laws.seed,
            target_flops=spec.target_flops,
        )
    return QualitySummary.from_dict(laws.to_dict())


def quality_metrics_summary(out_dir: str | Path, spec: StudySpec) -> dict[str, QualityMetricSummary] | None:
    """laws.json's ``quality_metrics``: every metric of ``quality.csv`` (:func:`metric_points`) fitted as
    :func:`quality_summary` fits the primary one (:func:`ditscale.laws.quality.fit_metric`), with its
    chance level and floor from the study's ``quality/frame.json`` (None without one: a study scored
    before the frame existed; ``ditscale study run DIR`` adds it): chance is the frame's (an accuracy
    of real images with shuffled conditions), floor its real-vs-real value (FD) or its real-image
    accuracy (an accuracy). None when the study scored no models."""
    metrics = metric_points(out_dir, spec.family.model.get("conditioning", "class"))
    if not metrics:
        return None
    frame = quality_frame(out_dir) or {}
    chance, floor = frame.get("chance") or {}, {**(frame.get("ceiling") or {}), **(frame.get("floor") or {})}
    out = {}
    for name, points in metrics.items():
        with quiet():
            laws = fit_metric(
                points,
                holdout=spec.holdout,
                resamples=spec.laws.resamples,
                seed=spec.laws.seed,
                chance=chance.get(name),
                floor=floor.get(name),
            )
        out[name] = QualityMetricSummary.from_dict(laws.to_dict())
    return out


def provenance(spec: StudySpec) -> ProvenanceSummary:
    """laws.json's ``provenance``: :func:`ditscale.train.provenance.versions` and the SHA-256 of the
    spec (its canonical JSON), so a result names the code and the spec that produced it."""
    from ditscale.train.provenance import versions  # lazy: ditscale.train's package imports torch

    return ProvenanceSummary(spec_sha256=sha256_json(spec.to_dict()), **versions())


# -- the analysis -----------------------------------------------------------------------------------
def analyze_study(
    out_dir: str | Path,
    spec: StudySpec | None = None,
    *,
    report: bool = True,
    draws: DrawStore | None = None,
    started: float | None = None,
) -> dict:
    """Fit the finished study in ``out_dir`` (:func:`study_laws`); write ``laws.json`` (its
    :meth:`~ditscale.laws.results.LawsSummary.to_dict`, with the bootstrap draws in ``bootstrap.npz``)
    and, with ``report``, ``report.html``; return laws.json's dict. ``draws``: bootstraps to reuse where
    their keys match (the runs and options they were drawn from, e.g. :func:`load_draws`); by default a
    report redraws every bootstrap, and stores them for predict and compare (only the draws this
    analysis used: those of other runs or options are dropped). ``started``: the ``time.monotonic()``
    that laws.json's ``analysis_s`` counts from (default: now; ``study run`` gives the moment it began
    waiting for the fits made ahead)."""
    started = time.monotonic() if started is None else started
    folder = StudyFolder(out_dir)
    draws = DrawStore() if draws is None else draws
    study = fit_study(folder.root, spec or folder.read_spec(), draws=draws)
    laws = study_laws(folder, study, draws, started=started)
    write_draws(folder.root, draws.only_used())  # draws of other runs or options are dropped
    folder.write_laws(laws.to_dict())
    if report:
        from ditscale.report import write_report  # lazy: matplotlib (CLI start-up)

        write_report(
            folder.root,
            laws,
            study.spec,
            runs=study.runs,
            boot=study.boot,
            samples=sample_rows(folder.root),
            metric_points=metric_points(folder.root, study.spec.family.model.get("conditioning", "class")),
            steps_points=steps_points(folder.root),
            verified=[(v.flops, v.actual_loss) for v in read_verifications(folder.root)[0]],
        )
    return laws.to_dict()


def prefit_study(out_dir: str | Path, spec: StudySpec, draws: DrawStore) -> None:
    """The loss-law fits of :func:`analyze_study` made ahead of it, for a study whose runs have all
    trained: every bootstrap drawn into ``draws``, Approach 3's point fits into this process's cache and
    the noise frame of the form of record (:func:`~ditscale.laws.extrapolation.budgets_noise_floor`), so
    that ``analyze_study(out_dir, spec, draws=draws)`` then reuses them: the same numbers as fitting them
    there (the fits are deterministic on one machine). Sample quality enters none of them, so ``study
    run`` makes them while its workers score the last models."""
    study = fit_study(out_dir, spec, draws=draws)
    backtest_study(study, draws=draws)
    parametric_fit(study.runs, spec.laws, draws)
    extrapolation_study(study, draws)
    budgets_noise_floor(study.fit.budgets, spec.laws.exclude_edge, wanted_form(spec.laws.loss_law, study.rule))


def study_laws(folder: StudyFolder, study: StudyFit, draws: DrawStore, *, started: float) -> LawsSummary:
    """laws.json of the fitted ``study`` (:class:`~ditscale.laws.results.LawsSummary`, whose docstring
    names every key): the fit of all budgets with each budget's ``held_out`` flag, the isoFLOP point
    checks (their messages also in ``warnings``), Approach 3 (:func:`parametric_summary`, with its
    prediction at ``target_flops`` and its own backtest, N_opt included), the backtest of record
    (:func:`backtest_study`) and its refit, the prediction at ``target_flops`` (:func:`_prediction`)
    with its form of record, the loss bend (:func:`ditscale.laws.checks.loss_bend`), the noise, the
    paper's laws, the wall time (``analysis_s``: seconds since ``started``, a ``time.monotonic()``),
    the compute (:func:`compute_summary`), sample quality (:func:`quality_summary`) and the provenance
    (:func:`provenance`), the backtests at every distance (:func:`extrapolation_study`; the
    prediction's ``measured_error`` from its rows) and, under ``laws.loss_law: auto``, the
    rules that chose the forms of record. ``draws``: where the bootstraps are reused and kept."""
    spec, fit = study.spec, study.fit
    bt = backtest_study(study, draws=draws)
    par = parametric_fit(study.runs, spec.laws, draws)  # one Approach 3 fit for its summary and the prediction
    parametric = parametric_summary(par, study.runs, spec.laws, spec.target_flops, tokens_per_image(spec), study.to_6nd)
    if parametric is not None:
        parametric = dataclasses.replace(parametric, backtest=bt.parametric)
    ext = extrapolation_study(study, draws)
    prediction = _prediction(study, spec.target_flops, par)
    prediction = dataclasses.replace(prediction, measured_error=measured_error(ext.rows, prediction.extrapolation))
    warns = [*study.warnings, *(e.message for e in prediction.exponents if e.message), *ext.skipped]
    warns += [degenerate_warning(f.name, f.degenerate) for f in prediction.forms if f.degenerate]
    wanted = wanted_form(spec.laws.loss_law, study.rule)
    if {prediction.loss_law, *(row.loss_law for row in bt.rows)} != {wanted}:
        warns.append(loss_law_fallback(wanted))
    bend, wall = loss_bend(fit), folder.read_wall()
    quality, origin = quality_summary(folder.root, spec), provenance(spec)
    compute, kept = study_compute(folder, spec, study.rows, wall)
    warns += [kept] if kept else []
    return LawsSummary(
        study=spec.name,
        **_held_out(FitSummary.from_dict(fit.to_dict(study.boot)), bt.rows),
        checks=tuple(CheckSummary(**c.to_dict()) for c in study.checks),
        parametric=parametric,
        backtest=bt.rows,
        backtest_fit=bt.fit,
        prediction=prediction,
        exponents=prediction.exponents,
        residual_structure=prediction.residual_structure,
        noise=NoiseSummary.from_dict(noise_summary(study.runs)),
        paper={k: PowerLawSummary(**v) for k, v in PAPER_LAWS.items()},
        warnings=tuple(warns),
        loss_law_of_record=prediction.loss_law,
        loss_bend=None if bend is None else LossBendSummary(**bend.to_dict()),
        wall_time=_wall_time(wall, study.rows, round(time.monotonic() - started, 1)),
        compute=compute,
        quality=quality,
        provenance=origin,
        extrapolation=ext.rows,
        extrapolation_of_record=ext.of_record,
        loss_law_rule=study.rule,
        extrapolation_rules=ext.rules or None,
        rung_rule=rung_summary(study.rungs),
        extrapolation_rung_rules=tuple(map(rung_summary, ext.rung_rules)) or None,
        quality_metrics=quality_metrics_summary(folder.root, spec),
    )


def _held_out(fit: FitSummary, rows: tuple[BacktestSummary, ...]) -> dict:
    """The fields of ``fit``, each budget flagged ``held_out`` when a backtest row holds it out."""
    held = {row.flops for row in rows}
    fields = {f.name: getattr(fit, f.name) for f in dataclasses.fields(fit)}
    fields["budgets"] = tuple(dataclasses.replace(b, held_out=b.flops in held) for b in fit.budgets)
    return fields


# -- comparing two studies --------------------------------------------------------------------------
def compare_studies(dir_a: str | Path, dir_b: str | Path, **options) -> dict:
    """:func:`study_comparison` (same arguments) as JSON: ``study compare --json``."""
    return study_comparison(dir_a, dir_b, **options).to_dict()


def study_comparison(
    dir_a: str | Path,
    dir_b: str | Path,
    *,
    flops: float | None = None,
    spec_a: StudySpec | None = None,
    spec_b: StudySpec | None = None,
) -> ComparisonSummary:
    """Both studies' laws side by side: each coefficient/exponent with its interval, the difference
    a - b with its 90% interval and whether it is resolved (the interval excludes 0), and the loss
    each predicts at ``flops`` FLOPs from its own loss form of record (the value ``study predict``
    gives). ``spec_a``/``spec_b``: the studies' specs when the caller has them (else read from each
    folder's spec.yaml).

    Each study's intervals are its stored ones (``bootstrap.npz``; redrawn, with a line in
    ``notes``, when they do not match). Draws drawn from the same runs with the same options (a
    study compared with itself or a copy) are the same draws, paired: the difference is exactly 0.
    Otherwise B's draws are paired with A's shifted by half the resamples, so that two studies
    bootstrapped with the same seed are not paired draw for draw (same seed and design would
    correlate their resamples and narrow the difference's interval).
    """
    if flops is not None:
        check_target_flops(flops)
    spec_a = spec_a or load_study_spec(dir_a)
    spec_b = spec_b or load_study_spec(dir_b)
    draws_a, draws_b = load_draws(dir_a), load_draws(dir_b)
    a, b = fit_study(dir_a, spec_a, draws=draws_a), fit_study(dir_b, spec_b, draws=draws_b)
    same = _isoflop_key(a.runs, spec_a) == _isoflop_key(b.runs, spec_b)
    with quiet():  # heavy-tailed bootstrap coefficients overflow
        comp = compare(a.fit, a.boot, b.fit, b.boot if same else _shifted(b.boot))
    ci = lambda boot, name: None if boot is None else boot.ci90(name)  # noqa: E731
    law_a, loss_a = _loss_of_record(a, draws_a, flops) if flops is not None else (None, None)
    law_b, loss_b = _loss_of_record(b, draws_b, flops) if flops is not None else (None, None)
    return ComparisonSummary(
        differences=tuple(
            DifferenceSummary(**d.to_dict(), a_ci90=ci(a.boot, d.name), b_ci90=ci(b.boot, d.name))
            for d in comp.differences
        ),
        flops=None if flops is None else float(flops),
        loss_a=loss_a,
        loss_b=loss_b,
        loss_a_law=law_a,
        loss_b_law=law_b,
        a=StudyRef(dir=str(dir_a), study=spec_a.name),
        b=StudyRef(dir=str(dir_b), study=spec_b.name),
        notes=tuple(n for n in (draws_note(dir_a, draws_a), draws_note(dir_b, draws_b)) if n),
    )


def _loss_of_record(study: StudyFit, draws: DrawStore, flops: float) -> tuple[str, EstimateSummary]:
    """``(form, L_opt)`` at ``flops`` FLOPs from the study's loss form of record: the value and interval
    ``study predict`` gives (Approach 3 is fitted only when it is the form asked for)."""
    laws = study.spec.laws
    wanted = wanted_form(laws.loss_law, study.rule)
    parametric = parametric_fit(study.runs, laws, draws) if wanted == "parametric" else None
    return loss_of_record(
        laws.loss_law, prediction_forms(study.fit, study.boot, parametric, flops, study.to_6nd), study.rule
    )


def _isoflop_key(runs: Runs, spec: StudySpec) -> str:
    """The key of a study's isoFLOP bootstrap (:func:`ditscale.laws.draws.draws_key`)."""
    cfg = spec.laws
    return draws_key(cfg.method, runs, cfg.fit_options(), cfg.resamples, cfg.seed)


def _shifted(boot: Bootstrap | None) -> Bootstrap | None:
    """``boot`` with its resamples rotated by half their number (None stays None)."""
    if boot is None:
        return None
    half = boot.n_resamples // 2
    return Bootstrap(boot.method, {k: np.roll(v, half) for k, v in boot.samples.items()}, boot.seed, boot.n_failed)
