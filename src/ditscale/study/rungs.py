"""Which rungs a study's fits see under ``laws.off_rungs`` (:mod:`ditscale.laws.rungs` decides).

- The study's own fits (every form, the backtest of record, the prediction): the rule decided on the
  budgets the backtest of record fits (all but the ``holdout`` largest), applied to every budget, so a
  held-out budget cannot move it (:func:`rungs_of_record`).
- Each refit of the backtests at every distance: the rule decided on that refit's own fitted
  budgets (:func:`refit_rungs`).

Under ``keep`` (the default) every rung is fitted and nothing is recorded.
"""

from __future__ import annotations

from ditscale.laws import FitConfig, Runs
from ditscale.laws.predict import holdout_split
from ditscale.laws.results import RungRuleSummary
from ditscale.laws.rungs import RungRule, rung_rule


def rungs_of_record(runs: Runs, holdout: int, cfg: FitConfig) -> tuple[Runs, RungRule | None]:
    """``(runs without the off rungs, the rule)`` when ``cfg.off_rungs`` is "drop", the rule decided on
    all but the ``holdout`` largest budgets; ``(runs, None)`` under "keep"."""
    if cfg.off_rungs == "keep":
        return runs, None
    fitted = holdout_split(runs, holdout, cfg.budget_rtol)[0] if holdout >= 1 else runs
    rule = rung_rule(fitted, cfg.budget_rtol, cfg.edge_margin)
    return rule.apply(runs), rule


def refit_rungs(fitted: Runs, cfg: FitConfig) -> tuple[Runs, RungRule | None]:
    """A refit's runs ``fitted`` without the off rungs its own budgets show (``cfg.off_rungs: drop``), and
    the rule; ``(fitted, None)`` under "keep"."""
    if cfg.off_rungs == "keep":
        return fitted, None
    rule = rung_rule(fitted, cfg.budget_rtol, cfg.edge_margin)
    return rule.apply(fitted), rule


def rung_summary(rule: RungRule | None) -> RungRuleSummary | None:
    """laws.json's record of ``rule`` (None stays None)."""
    return None if rule is None else RungRuleSummary.from_dict(rule.to_dict())
