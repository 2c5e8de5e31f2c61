"""The plan of a study part-way through: started budgets frozen, later grids centred on what is done.

A budget's rows are frozen in ``plan.csv`` once it starts, so a resumed study never re-plans runs
already started. The budgets not started yet are planned afresh, centred (with ``spec.adaptive``)
on the law fitted to the finished budgets (:func:`fit_so_far`), else on the prior. Reads the study
folder, writes nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ditscale.errors import DataError
from ditscale.laws import fit_isoflop
from ditscale.study.folder import StudyFolder, runs_table
from ditscale.study.plan import PlannedRun, StudyPlan, plan_study
from ditscale.study.spec import StudySpec

Frozen = dict[float, list[PlannedRun]]  # plan.csv's rows by budget (FLOPs)


def current_plan(spec: StudySpec, out_dir: str | Path | None = None) -> StudyPlan:
    """The study's plan: frozen rows of budgets already started in ``out_dir``, the others centred
    on the law fitted to the finished budgets (``spec.adaptive``) or on the prior."""
    if out_dir is None or not Path(out_dir).is_dir():
        return plan_study(spec)
    folder = StudyFolder(out_dir)
    return folder_plan(spec, folder, folder.read_plan())


def folder_plan(spec: StudySpec, folder: StudyFolder, frozen: Frozen, rows: list[dict] | None = None) -> StudyPlan:
    """:func:`current_plan` from the ``frozen`` rows already read from ``folder``'s plan.csv and,
    if known, the finished runs' ``rows`` (:meth:`StudyFolder.finished_rows` of every frozen run)."""
    unplanned = [b for b in spec.budgets if b not in frozen]
    centres = {}
    if spec.adaptive and unplanned:
        rows = folder.finished_rows(all_runs(frozen)) if rows is None else rows
        centres = fitted_centres(spec, frozen, rows, folder.failed_run_ids(), unplanned)
    new_plan = plan_study(spec, centres)
    runs = []
    for b in spec.budgets:
        runs.extend(frozen[b] if b in frozen else [r for r in new_plan.runs if r.budget == b])
    return StudyPlan(
        runs=runs,
        warnings=[w for w in new_plan.warnings if w.budget in unplanned],
        dropped=[r for r in new_plan.dropped if r.budget in unplanned],
    )


def all_runs(frozen: Frozen) -> list[PlannedRun]:
    """Every frozen run, in plan.csv order."""
    return [r for runs in frozen.values() for r in runs]


# -- centring from the budgets done ---------------------------------------------------------------
def complete_budgets(frozen: Frozen, finished: set[str], failed: set[str]) -> list[float]:
    """Budgets (ascending) whose planned runs all have results (``finished`` run ids) or failed for good."""
    done = finished | failed
    return [b for b, runs in sorted(frozen.items()) if all(r.run_id in done for r in runs)]


def fitted_centres(
    spec: StudySpec, frozen: Frozen, rows: list[dict], failed: set[str], budgets: list[float]
) -> dict[float, tuple[float, str]]:
    """``{budget: (N*, "fit")}`` for ``budgets`` from the finished budgets (needs 2; see :func:`fit_so_far`)."""
    done = complete_budgets(frozen, {row["run_id"] for row in rows}, failed)
    centre = fit_so_far(spec, rows, done)
    if centre is None:
        return {}
    return {b: (float(centre(b)), "fit") for b in budgets}


def fit_so_far(spec: StudySpec, rows: list[dict], done: list[float]) -> Callable[[float], float] | None:
    """Where to centre the next grids, from the finished runs' ``rows`` of the ``done`` budgets: a
    function C -> N* (non-embedding params; C in FLOPs), or None with fewer than 2 done budgets.

    Extrapolating a law fitted to two or three noisy budgets can throw a grid far off, so the
    centre is anchored at the best-determined point, the largest finished budget C_last:
    ``N*(C) = N_last * (C / C_last) ** a``. ``N_last`` is the fitted law at C_last when the
    optima are inside their grids (else the best run of that budget), ``a`` the fitted exponent
    once 3 budgets have interior optima and it lies in [0, 1], else the prior's exponent.
    """
    if len(done) < 2:
        return None
    runs = runs_table(rows, budgets=done)
    c_last = max(done)
    last = runs.budget == c_last
    anchor = float(runs.params[last][np.argmin(runs.loss[last])])
    exponent = spec.prior.exponent
    options = {**spec.laws.fit_options(), "exclude_edge": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_isoflop(runs, **options)
        interior = [b for b in fit.budgets if not (b.edge or b.degenerate)]
        if any(b.flops == c_last for b in interior):
            anchor = float(fit.params_law(c_last))
        if len(interior) >= 3 and 0.0 <= fit.params_law.exponent <= 1.0:
            exponent = fit.params_law.exponent
    except DataError:
        pass
    return lambda c: anchor * (c / c_last) ** exponent
