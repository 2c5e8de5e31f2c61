"""A study's backtests: refits without its largest budgets, each predicting the budgets it left out.

- :func:`backtest_study`: the backtest of record, every loss form refitted without the ``holdout``
  largest budgets (laws.json's ``backtest`` and ``backtest_fit``, Approach 3's own rows).
- :func:`loss_law_rule`: under ``laws.loss_law: auto``, the loss form of record chosen by an inner
  backtest on the fitted budgets alone (:func:`record_rule`: on the budgets the backtest of record fits).
- :func:`extrapolation_study`: the backtests at every distance (laws.json's ``extrapolation``).

Each builds on a :class:`~ditscale.study.fitted.StudyFit`; the form each refit's rows of record take is
decided by :func:`~ditscale.study.fitted.form_of_record`. Units: C in training FLOPs, N non-embedding
parameters, loss in the runs' val-loss units; ``relative_error = (predicted - actual) / actual``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ditscale.errors import DataError
from ditscale.laws import FitConfig, Runs, fit_runs, predict
from ditscale.laws.draws import DrawStore
from ditscale.laws.extrapolation import EXTRAPOLATION_MIN_FITTED
from ditscale.laws.fit import LOSS_LAWS
from ditscale.laws.predict import backtest_rows, holdout_split
from ditscale.laws.results import BacktestSummary, ExtrapolationRow, FitSummary, LossLawRule, RuleInput
from ditscale.laws.rungs import RungRule
from ditscale.study.fitted import StudyFit, form_degeneracy, form_of_record, parametric_fit, quiet
from ditscale.study.rungs import refit_rungs


# -- the backtest -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backtest:
    """:func:`backtest_study`'s result: the ``rows`` of record (N_opt from the isoFLOP refit, the loss
    of the form of record, every form's loss under ``forms``), Approach 3's own rows (``parametric``;
    () when it did not converge on the refit's runs) and the refit's laws (``fit``; None without a
    holdout)."""

    rows: tuple[BacktestSummary, ...]
    parametric: tuple[BacktestSummary, ...]
    fit: FitSummary | None


def backtest_study(study: StudyFit, fit=None, draws: DrawStore | None = None) -> Backtest:
    """Refit without the ``spec.holdout`` largest budgets and predict their compute-optimal loss and N_opt.

    Every loss form is backtested (:data:`ditscale.laws.fit.LOSS_LAWS`): the isoFLOP refit's power law and
    saturating law, and Approach 3 refitted to the same runs (its C = 6ND target is the held-out
    FLOPs times ``study.to_6nd``, :func:`~ditscale.study.analyze.six_nd_per_exact`). The rows of record
    take N_opt from the isoFLOP refit and the loss from the form of record (:func:`form_of_record` of
    the forms the refit could fit); each row names its ``loss_law`` and carries every form's loss under
    ``forms``.

    ``fit`` is the study's isoFLOP fit of all runs, which gives the held-out budgets' actual L* and N*
    (default: ``study.fit``). ``draws``: reuse (and keep) the refits' bootstraps there.
    """
    spec = study.spec
    cfg = spec.laws
    if spec.holdout < 1:
        return Backtest((), (), None)
    with quiet():
        sub, held_flops = holdout_split(study.runs, spec.holdout, cfg.budget_rtol)
    forms, refit, boot = _refit_forms(study, sub, held_flops, (cfg, cfg), fit, draws)
    law = form_of_record(cfg.loss_law, forms, study.rule)
    rows = tuple(_record_row(i, forms, law) for i in range(len(held_flops)))
    return Backtest(rows, tuple(forms.get("parametric", ())), FitSummary.from_dict(refit.to_dict(boot)))


def _refit_forms(study: StudyFit, sub: Runs, held_flops, cfgs: tuple[FitConfig, FitConfig], full=None, draws=None):
    """Every loss form refitted to the runs ``sub`` predicts the budgets ``held_flops``: ``({form: rows},
    isoFLOP refit, its bootstrap)``, each row naming its ``loss_law`` (:func:`_backtest_rows`; Approach 3's
    C = 6ND target is the FLOPs times ``study.to_6nd``). ``cfgs``: the isoFLOP refit's and Approach 3's
    :class:`~ditscale.laws.FitConfig` (their bootstraps); ``full``: the isoFLOP fit giving the actual L*
    and N* (default ``study.fit``); ``draws``: reuse (and keep) the refits' bootstraps there."""
    full = full if full is not None else study.fit
    with quiet():
        refit, boot = fit_runs(sub, cfgs[0], draws)
        forms = {"power": _backtest_rows(refit, boot, full, held_flops)}
        if refit.loss_law_saturating is not None:
            forms["saturating"] = _backtest_rows(refit, boot, full, held_flops, saturating=True)
        par = parametric_fit(sub, cfgs[1], draws)
        if par is not None:
            forms["parametric"] = _backtest_rows(*par, full, held_flops, to_6nd=study.to_6nd)
    forms = {name: [dataclasses.replace(row, loss_law=name) for row in rows] for name, rows in forms.items()}
    return forms, refit, boot


def _backtest_rows(refit, boot, full_isoflop, held_flops, saturating: bool = False, to_6nd: float = 1.0):
    """The backtest rows (:func:`ditscale.laws.predict.backtest_rows`), each with the 90% intervals of
    the predicted loss and N_opt from the refit's bootstrap and whether the actual values lie inside.
    ``to_6nd``: 6ND FLOPs per FLOP, for Approach 3's refit."""
    inside = lambda ci, x: None if ci is None or x is None else bool(ci[0] <= x <= ci[1])  # noqa: E731
    out = []
    for row in backtest_rows(refit, full_isoflop, held_flops, saturating, to_6nd):
        est = predict(refit, row.flops * to_6nd, boot=boot, saturating=saturating)
        out.append(
            BacktestSummary(
                **row.to_dict(),
                predicted_ci90=est.loss_opt.ci90,
                within_ci90=inside(est.loss_opt.ci90, row.actual_loss),
                predicted_n_opt_ci90=est.n_opt.ci90,
                n_opt_within_ci90=inside(est.n_opt.ci90, row.actual_n_opt),
            )
        )
    return out


def _record_row(i: int, forms: dict[str, list[BacktestSummary]], law: str) -> BacktestSummary:
    """Held-out budget ``i``'s row of record: the isoFLOP refit's N_opt, the loss of form ``law``,
    and every form's loss under ``forms``."""
    return dataclasses.replace(
        forms["power"][i],
        **dataclasses.asdict(forms[law][i].loss()),
        loss_law=law,
        forms={name: rows[i].loss() for name, rows in forms.items()},
    )


# -- the form of record by rule: an inner backtest on the fitted budgets ------------------------------
INNER_HOLDOUT = 3  # the inner backtest holds out the 1, 2, ... up to 3 largest fitted budgets
INNER_MIN_FITTED = 4  # ... while at least 4 stay (the saturating law needs 4 budgets)
RULE_TIE = 1e-6  # scores this close are a tie (a saturating law whose floor fits 0 is the power law)
LOSS_LAW_RULE = (
    "inner backtest on the fitted budgets only: for j = 1 .. min(3, m - 4), refit every form (points, no "
    "bootstrap) without the j largest of the m fitted budgets and predict their L* (actual: the isoFLOP fit "
    "of the fitted budgets); score = mean |relative error| over those rows; the lowest score wins, scores "
    "within 1e-6 of it tie and go to power, saturating, parametric in that order; power when m < 5 or no "
    "form was scored; an inner refit whose budgets hold fewer than 2 usable optima adds no rows; a form whose "
    "point fit to the m fitted budgets is degenerate at a bound (a floor at 0 or above the smallest fitted "
    "loss, an exponent at 0) is scored but cannot be chosen"
)


def loss_law_rule(fitted: Runs, cfg: FitConfig, to_6nd: float = 1.0) -> LossLawRule:
    """``laws.loss_law: auto``: the loss form of record chosen from the runs ``fitted`` alone
    (:data:`LOSS_LAW_RULE`), so a held-out budget's losses cannot move the choice. Each form's score is
    the mean |relative error| of its inner backtest rows (a form that fails to fit in any inner refit
    is not scored); ``to_6nd``: 6ND FLOPs per FLOP, for Approach 3's target."""
    point = dataclasses.replace(cfg, bootstrap=0)
    budgets = fitted.budgets(cfg.budget_rtol)[1]
    inputs = []
    with quiet():
        own = fit_runs(fitted, point)[0]
        excluded = degenerate_forms(own, parametric_fit(fitted, point), float(np.min(fitted.loss)))
        for j in range(1, min(INNER_HOLDOUT, len(budgets) - INNER_MIN_FITTED) + 1):
            sub, held = holdout_split(fitted, j, cfg.budget_rtol)
            try:
                errors = _inner_errors(sub, held, own, point, to_6nd)
            except DataError:  # too few usable optima left (e.g. the smaller budgets' at the grid's edge)
                continue
            inputs += [
                RuleInput(fitted_max_flops=float(budgets[-j - 1]), flops=float(c), relative_errors=errors[i])
                for i, c in enumerate(held)
            ]
    scored = [f for f in LOSS_LAWS if inputs and all(f in x.relative_errors for x in inputs)]
    scores = {f: float(np.mean([abs(x.relative_errors[f]) for x in inputs])) for f in scored}
    eligible = {f: score for f, score in scores.items() if f not in excluded}
    best = min(eligible.values(), default=0.0)
    chosen = next((f for f in eligible if eligible[f] <= best + RULE_TIE), "power")  # in LOSS_LAWS order
    return LossLawRule(
        rule=LOSS_LAW_RULE,
        fitted_max_flops=float(budgets[-1]),
        inputs=tuple(inputs),
        scores=scores,
        excluded=excluded or None,
        chosen=chosen,
    )


RULE_RESOLVED_T = 2.0  # the chosen form's paired lead over the runner-up, in standard errors, to call it resolved
RULE_RESOLVED_ROWS = 3  # ... over at least this many inner rows (fewer cannot resolve a choice)


@dataclass(frozen=True)
class RuleMargin:
    """How clearly :func:`loss_law_rule` chose: the chosen form against the ``runner_up`` (the best other
    form it could have chosen) over the ``rows`` inner rows both were scored on. With d_i = |e_i(runner-up)|
    - |e_i(chosen)| per row, ``gap`` = mean d and ``t`` = gap / (sd(d) / sqrt(rows)), a paired t (None with
    fewer than 2 rows or no spread). ``resolved``: t >= :data:`RULE_RESOLVED_T` over at least
    :data:`RULE_RESOLVED_ROWS` rows. The rows share budgets (nested refits), so t overstates the evidence:
    a near tie by this screen is a near tie, a resolved choice may still be luck."""

    chosen: str
    runner_up: str
    rows: int
    gap: float
    t: float | None
    resolved: bool


def rule_margin(rule: LossLawRule | None) -> RuleMargin | None:
    """The :class:`RuleMargin` of ``rule`` (None without a rule, without inner rows, when its chosen form
    was not scored, or when no other form could have been chosen)."""
    if rule is None or not rule.inputs or rule.chosen not in rule.scores:
        return None
    rivals = [f for f in rule.scores if f != rule.chosen and f not in (rule.excluded or {})]
    if not rivals:
        return None
    runner_up = min(rivals, key=lambda f: rule.scores[f])
    d = np.array([abs(x.relative_errors[runner_up]) - abs(x.relative_errors[rule.chosen]) for x in rule.inputs])
    se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    t = float(np.mean(d)) / se if se > 0 else None
    resolved = t is not None and t >= RULE_RESOLVED_T and len(d) >= RULE_RESOLVED_ROWS
    return RuleMargin(rule.chosen, runner_up, len(d), float(np.mean(d)), t, resolved)


def degenerate_forms(own, parametric, smallest_loss: float) -> dict[str, tuple[str, ...]]:
    """The forms whose point fit is degenerate at a bound (:func:`~ditscale.study.fitted.form_degeneracy`
    without intervals), each with its reasons: the isoFLOP fit ``own``'s saturating law and Approach 3's
    ``parametric`` ``(fit, None)`` (None when it did not fit); ``smallest_loss``: the smallest loss those
    runs reached. The power law ``e C^f`` has no bound to sit at: it is never among them."""
    found = {}
    if own.loss_law_saturating is not None:
        found["saturating"] = form_degeneracy("saturating", own, None, None, smallest_loss)
    if parametric is not None:
        found["parametric"] = form_degeneracy("parametric", None, None, (parametric[0], None), smallest_loss)
    return {form: reasons for form, reasons in found.items() if reasons}


def _inner_errors(sub: Runs, held, own, point: FitConfig, to_6nd: float) -> list[dict[str, float]]:
    """Each budget of ``held``'s relative L* error by every form refitted (points) to ``sub``; the
    actual L* is that of ``own``, the isoFLOP fit of the rule's fitted runs."""
    refit = fit_runs(sub, point)[0]
    forms = {"power": backtest_rows(refit, own, held)}
    if refit.loss_law_saturating is not None:
        forms["saturating"] = backtest_rows(refit, own, held, saturating=True)
    par = parametric_fit(sub, point)
    if par is not None:
        forms["parametric"] = backtest_rows(par[0], own, held, to_6nd=to_6nd)
    return [{f: rows[i].relative_error for f, rows in forms.items()} for i in range(len(held))]


def record_rule(runs: Runs, holdout: int, cfg: FitConfig, to_6nd: float) -> LossLawRule:
    """:func:`loss_law_rule` on the budgets the backtest of record fits (all but the ``holdout``
    largest): the form of record never sees a held-out budget."""
    with quiet():
        fitted = holdout_split(runs, holdout, cfg.budget_rtol)[0] if holdout >= 1 else runs
    return loss_law_rule(fitted, cfg, to_6nd)


# -- backtests at every distance ---------------------------------------------------------------------
# the refits' bootstrap resamples (at most the spec's), fewer than the study's own to bound the cost: the
# quickstart's 6 refits took 18 s (11 s with 50 for Approach 3) on a busy 2-core machine where the rest of
# its analysis took 34-44 s; Approach 3's bootstrap is most of it. Stored in bootstrap.npz with the
# study's own draws, so an analysis given the stored draws reuses them: the same intervals on any CPU
# (Approach 3's, drawn again on another CPU, moved by up to 21%: docs/laws.md), and no redraw.
EXTRAPOLATION_RESAMPLES = {"isoflop": 100, "parametric": 100}


@dataclass(frozen=True)
class Extrapolation:
    """:func:`extrapolation_study`'s result: every refit's rows by every form (``rows``), the rows of
    each refit's form of record (``of_record``) and, under ``laws.loss_law: auto``, each refit's
    :class:`~ditscale.laws.results.LossLawRule` (``rules``; () otherwise) and, under ``laws.off_rungs:
    drop``, each refit's off-rung rule (``rung_rules``; () otherwise); ``skipped``: one line per refit
    that could not be fitted (too few budgets with a usable optimum), which laws.json's warnings carry."""

    rows: tuple[ExtrapolationRow, ...]
    of_record: tuple[ExtrapolationRow, ...]
    rules: tuple[LossLawRule, ...]
    rung_rules: tuple[RungRule, ...] = ()
    skipped: tuple[str, ...] = ()


def extrapolation_study(study: StudyFit, draws: DrawStore | None = None) -> Extrapolation:
    """Backtests at every distance: for K = 1, 2, ... while at least :data:`EXTRAPOLATION_MIN_FITTED`
    budgets stay fitted, every form refitted without the K largest budgets (:func:`_refit_forms`,
    bootstraps of :data:`EXTRAPOLATION_RESAMPLES`, reused from and kept in ``draws`` when given)
    predicts each held-out budget, ``factor`` = its FLOPs over the largest fitted budget; each form's
    rows carry its own N_opt (the isoFLOP refit's for power and saturating, Approach 3's own). The
    rows of record take the loss of each refit's form of record (:func:`form_of_record`; under
    "auto" :func:`loss_law_rule` on that refit's fitted budgets) and N_opt from the isoFLOP refit,
    as the backtest of record (:func:`_record_row`) and the prediction do. Under ``laws.off_rungs:
    drop`` each refit leaves out the off rungs of its own fitted budgets
    (:func:`~ditscale.study.rungs.refit_rungs`, from all the study's runs); the actual L* and N* stay
    those of the study's fit."""
    cfg = study.spec.laws
    budgets = study.runs.budgets(cfg.budget_rtol)[1]
    cfgs = tuple(dataclasses.replace(cfg, bootstrap=min(cfg.resamples, n)) for n in EXTRAPOLATION_RESAMPLES.values())
    rows, of_record, rules, rung_rules, skipped = [], [], [], [], []
    for k in range(1, len(budgets) - EXTRAPOLATION_MIN_FITTED + 1):
        with quiet():
            sub, held = holdout_split(study.runs if study.all_runs is None else study.all_runs, k, cfg.budget_rtol)
            sub, rungs = refit_rungs(sub, cfg)
        rung_rules += [rungs] if rungs is not None else []
        fitted_max = float(budgets[-k - 1])
        try:
            forms = _refit_forms(study, sub, held, cfgs, draws=draws)[0]
        except DataError as err:  # e.g. the refit's budgets hold fewer than 2 usable optima: no rows at this K
            skipped.append(f"the backtest without the {k} largest budgets has no rows: {err}")
            continue
        rule = loss_law_rule(sub, cfg, study.to_6nd) if cfg.loss_law == "auto" else None
        rules += [rule] if rule is not None else []
        law = form_of_record(cfg.loss_law, forms, rule)
        rows += [_extrapolation_row(row, form, fitted_max) for form, form_rows in forms.items() for row in form_rows]
        of_record += [_extrapolation_row(_record_row(i, forms, law), law, fitted_max) for i in range(len(held))]
    return Extrapolation(tuple(rows), tuple(of_record), tuple(rules), tuple(rung_rules), tuple(skipped))


def _extrapolation_row(row: BacktestSummary, form: str, fitted_max: float) -> ExtrapolationRow:
    """A backtest row of ``form`` as an extrapolation row of the refit fitted up to ``fitted_max`` FLOPs."""
    fields = {k: v for k, v in row.to_dict().items() if k not in ("loss_law", "forms")}
    return ExtrapolationRow(**fields, fitted_max_flops=fitted_max, factor=row.flops / fitted_max, form=form)
