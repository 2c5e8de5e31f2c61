"""Off rungs left out by rule: a model size that sits off its budgets' parabolas at every budget.

A rung that trains differently from its neighbours (a one-head or too-narrow model: a capacity
cliff) lies above (or below) the isoFLOP curve at every budget; it bends each parabola towards it
and moves N*. :mod:`ditscale.laws.residuals` detects it (the per-size F-test); under
``laws.off_rungs: drop`` :func:`rung_rule` leaves it out, by the rule :data:`RUNG_RULE`, decided
from the runs it is given alone (a study gives it the budgets its fit sees, never a held-out one):

1. run the F-test; stop when it passes (p >= 0.01) or cannot be tested;
2. test every size in 2+ budgets alone (:func:`ditscale.laws.residuals.size_offsets`: one offset
   added to the parabolas, its t-test, Bonferroni over the tested sizes); a size qualifies when it
   appears in at least :data:`MIN_BUDGETS` budgets, lies on its offset's side of the parabolas at
   :data:`SIDE_SHARE` of them or more, and its adjusted p < 0.01;
3. the qualifying size with the largest |t| (the largest drop in the residual sum of squares) is
   dropped, unless that would leave a budget with fewer than :data:`MIN_SIZES` sizes, or would move
   a budget's parabola vertex to the edge of its remaining sizes (``edge``, as
   :func:`ditscale.laws.isoflop.fit_isoflop` flags it, where it was not before): then it is kept, the
   rule stops and says why; else refit and repeat.

The edge guard is what the quickstart taught: its width-48 rung is the smallest size of its 9
smallest budgets, and without it 6 of their 11 optima fall below the remaining sizes (extrapolated
vertices, N* down to 5.3e4 against 1e5 for the smallest size left); every form's backtest error
then grew at every distance (docs/laws.md). A rung that is off and also brackets the optimum cannot
be mended by dropping it: train a size in its place.

The largest |t|, not the largest mean residual, picks the size: a cliff at the small end bends the
parabolas so much that its neighbour's mean residual can be the larger one (the quickstart's width
64 sits 3.9% below on average while the width-48 cliff sits 1.7% above; width 48's own offset is
+0.20 in log loss, t = 8.6).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import warnings

import numpy as np

from ditscale.laws.isoflop import fit_isoflop
from ditscale.laws.residuals import P_THRESHOLD, ResidualStructure, residual_structure, size_offsets
from ditscale.laws.results import RungStepSummary, RungTestSummary
from ditscale.laws.runs import Runs

OFF_RUNGS = ("keep", "drop")  # laws.off_rungs: keep every rung (the default) or drop the off ones by rule
MIN_BUDGETS = 3  # a size is judged on 3 or more budgets
SIDE_SHARE = 0.8  # ... on its offset's side of the parabolas at 80% of them or more
MIN_SIZES = 4  # a budget keeps at least 4 sizes (a parabola and one residual dof)
RUNG_RULE = (
    "on the fitted budgets only, repeat: run the per-size F-test of the isoFLOP log-loss residuals; stop when "
    "p >= 0.01 or untestable; else test each size in 2+ budgets alone (one offset added to the per-budget "
    "parabolas, two-sided t-test, p times the number of sizes tested); a size qualifies when it is in >= 3 "
    "budgets, on its offset's side of the parabolas at >= 80% of them and its adjusted p < 0.01; drop the "
    "qualifying size with the largest |t| from every budget and refit, unless a budget would keep fewer than "
    "4 sizes or a budget's parabola vertex would move to the edge of its remaining sizes (then keep it and "
    "stop); stop when no size qualifies"
)


@dataclass(frozen=True)
class RungRule:
    """:func:`rung_rule`'s decision: the ``rule`` in words (:data:`RUNG_RULE`), the largest budget it saw
    (``fitted_max_flops``), its ``steps``, the sizes ``dropped`` (non-embedding params) and why it
    ``stopped``. :meth:`apply` removes the dropped sizes' runs from any runs table."""

    rule: str
    fitted_max_flops: float
    steps: tuple[RungStepSummary, ...]
    dropped: tuple[float, ...]
    stopped: str

    def apply(self, runs: Runs) -> Runs:
        """``runs`` without the dropped sizes' rows (at every budget)."""
        return drop_sizes(runs, self.dropped)

    @property
    def message(self) -> str | None:
        """One line naming the dropped sizes (None when none was dropped)."""
        if not self.dropped:
            return None
        sizes = ", ".join(f"{p:.4g}" for p in self.dropped)
        return (
            f"laws.off_rungs: drop left out N = {sizes} at every budget (off its parabolas at every budget; "
            f"rule decided on the budgets up to {self.fitted_max_flops:.3g} FLOPs; laws.json rung_rule)"
        )

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "fitted_max_flops": self.fitted_max_flops,
            "steps": [s.to_dict() for s in self.steps],
            "dropped": list(self.dropped),
            "stopped": self.stopped,
        }


def _size_key(params: np.ndarray) -> np.ndarray:
    """The key that names a model size (as :mod:`ditscale.laws.residuals` groups them)."""
    return np.round(np.log(np.asarray(params, dtype=np.float64)), 6)


def drop_sizes(runs: Runs, params: Iterable[float]) -> Runs:
    """``runs`` without the rows whose model size is one of ``params``."""
    gone = _size_key(list(params))
    return runs.take(~np.isin(_size_key(runs.params), gone)) if len(gone) else runs


def rung_rule(runs: Runs, budget_rtol: float = 0.1, edge_margin: float = 0.05) -> RungRule:
    """The off rungs of ``runs`` by :data:`RUNG_RULE` (module doc), decided from ``runs`` alone
    (``edge_margin``: :func:`~ditscale.laws.isoflop.fit_isoflop`'s, for the edge guard)."""
    fitted_max = float(runs.budgets(budget_rtol)[1][-1])
    steps, dropped = [], []
    while True:
        structure = residual_structure(runs, budget_rtol)
        tests = _tests(runs, structure, budget_rtol)
        stopped, worst = _verdict(runs, structure, tests, budget_rtol, edge_margin)
        steps.append(
            RungStepSummary(
                statistic=structure.statistic,
                dof=list(structure.dof),
                p_value=structure.p_value,
                sizes=tests,
                dropped=worst,
            )
        )
        if worst is None:
            return RungRule(RUNG_RULE, fitted_max, tuple(steps), tuple(dropped), stopped)
        dropped.append(worst)
        runs = drop_sizes(runs, [worst])


def _tests(runs: Runs, structure: ResidualStructure, budget_rtol: float) -> tuple[RungTestSummary, ...]:
    """Every size's :class:`RungTestSummary` (its residuals from ``structure``, its own offset's t-test)."""
    offsets = size_offsets(runs, budget_rtol)
    out = []
    for s, o in zip(structure.sizes, offsets, strict=True):
        p = None if o.p_value is None else min(1.0, o.p_value * len(offsets))
        side = s.above if (o.offset or 0.0) > 0 else s.budgets - s.above
        ok = p is not None and p < P_THRESHOLD and s.budgets >= MIN_BUDGETS and side >= SIDE_SHARE * s.budgets
        out.append(
            RungTestSummary(
                params=s.params,
                budgets=s.budgets,
                mean_residual=s.mean_residual,
                above=s.above,
                offset=o.offset,
                t=o.t,
                p_value=p,
                qualifies=bool(ok),
            )
        )
    return tuple(out)


def _verdict(
    runs: Runs, structure: ResidualStructure, tests: tuple[RungTestSummary, ...], budget_rtol: float, edge_margin: float
) -> tuple[str, float | None]:
    """``(why the rule stops, None)`` or ``("", the size to drop)``."""
    if structure.p_value is None:
        return "the F-test cannot be tested (3 sizes per budget and no replicates)", None
    if not structure.warn:
        return f"the F-test passes (p = {structure.p_value:.2g} >= {P_THRESHOLD:g})", None
    qualified = [t for t in tests if t.qualifies]
    if not qualified:
        return f"the F-test fails (p = {structure.p_value:.2g}) but no size qualifies", None
    worst = max(qualified, key=lambda t: abs(t.t))
    label, flops = runs.budgets(budget_rtol)
    key = _size_key(runs.params)
    short = [
        float(flops[b])
        for b in np.unique(label[key == _size_key([worst.params])[0]])
        if len(np.unique(key[label == b])) - 1 < MIN_SIZES
    ]
    if short:
        return (
            f"N = {worst.params:.4g} qualifies (t = {worst.t:.3g}) but dropping it would leave {len(short)} "
            f"budget(s) (from {short[0]:.3g} FLOPs) fewer than {MIN_SIZES} sizes: kept"
        ), None
    edged = _new_edges(runs, drop_sizes(runs, [worst.params]), budget_rtol, edge_margin)
    if edged:
        return (
            f"N = {worst.params:.4g} qualifies (t = {worst.t:.3g}) but without it {len(edged)} budget(s) (from "
            f"{edged[0]:.3g} FLOPs) would have their optimum at the edge of the sizes left: kept (train a size "
            f"in its place)"
        ), None
    return "", worst.params


def _new_edges(before: Runs, after: Runs, budget_rtol: float, edge_margin: float) -> list[float]:
    """The budgets (FLOPs) whose parabola vertex is at the edge of its sizes in ``after`` but not in ``before``."""
    with warnings.catch_warnings():  # the fits' own warnings belong to the study's fit, not to this guard
        warnings.simplefilter("ignore")
        edges = [
            {b.flops for b in fit_isoflop(r, edge_margin=edge_margin, budget_rtol=budget_rtol).budgets if b.edge}
            for r in (before, after)
        ]
    return sorted(edges[1] - edges[0])
