"""Where a study's grids go, from a pilot's losses (pure Python; ``ditscale study init --pilot``).

A pilot (:mod:`ditscale.study.pilot`) trains a few model sizes at the study's two smallest budgets
and this module reads its losses. Everything here is arithmetic on numbers:

- :func:`narrower_rungs`: rungs below the family's smallest, at its depth, each ``WIDTH_STEP`` narrower
  (about half the non-embedding N per two steps), down to ``MIN_WIDTH``; heads as close to the
  family's head width as divide the width.
- :func:`first_round` / :func:`next_round`: which sizes a pilot round trains. Round 1: the sizes
  nearest the prior's optimum and ``FIRST_SPREAD`` times below and above it. A later round follows a
  budget whose lowest loss sits at the edge of the sizes trained: ``STEP``, ``STEP**2``, ``STEP**3``
  times beyond that edge. Once no lowest loss is at such an edge (or nothing lies beyond it), a
  round refines: the sizes halfway in log N between a budget's lowest loss and the sizes trained
  next to it, the largest budget first. A round is padded with the untrained sizes nearest there,
  so it has 3 sizes.
- :func:`budget_optimum`: a budget's optimum: the vertex of the parabola in log N through the lowest
  loss and its two neighbours, within them; at the edge of the sizes trained, that edge (a bound).
- :func:`place`: the prior through the pilot's optima: its exponent the slope of log N* over
  log C between the pilot's budgets (:func:`pilot_exponent`: within ``EXPONENT_RANGE``; the spec's
  exponent when an optimum is a bound), its coefficient
  ``exp(mean over budgets of log N* - exponent x log C)``; and the rungs of the
  candidate ladder that cover every grid of the study: from the largest size at or below
  ``N_opt(C_min) / sqrt(span)`` to the smallest at or above ``N_opt(C_max) x sqrt(span)``.
- :func:`trained_flops`: the training FLOPs a plan costs, each shared trunk counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ditscale.flops import fmt_flops
from ditscale.study.plan import PlannedRun, Rung, choose_grid
from ditscale.study.spec import PriorConfig

ROUND_SIZES = 3  # model sizes a pilot round trains (a study's family needs at least 3)
FIRST_SPREAD = 4.0  # round 1: the prior's optimum and 4x below and above it (N)
STEP = 2.0  # a later round: 2x, 4x, 8x beyond the edge the loss falls towards
WIDTH_STEP = 8  # narrower rungs: the smallest width less 8, 16, ... (multiples of 4: the sin-cos embedding)
MIN_WIDTH = 8  # the narrowest rung the pilot builds
SIGNIFICANT = 3  # digits of the placed prior's coefficient and exponent (as ditscale.study.prior)
# The pilot's exponent is kept inside this range: two budgets 2x apart measure it roughly (an error of
# 10% in each optimum moves it by ~0.2), and a prior needs 0 < exponent < 1.
EXPONENT_RANGE = (0.1, 0.9)


@dataclass(frozen=True)
class PilotPoint:
    """One finished pilot run: its budget (training FLOPs), rung, non-embedding N and validation loss."""

    budget: float
    rung: Rung
    n: int
    loss: float


@dataclass(frozen=True)
class BudgetOptimum:
    """The pilot's optimum at one budget: ``n_opt`` (non-embedding N); ``edge`` "below" or "above" when
    the lowest loss is at the smallest or largest size trained (``n_opt`` is then that size: a bound),
    else None; ``points``: ``(N, loss)`` ascending in N."""

    budget: float
    n_opt: float
    edge: str | None
    points: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Placement:
    """A study's design from a pilot: the ``prior`` through its optima, the ``rungs`` (ascending in N)
    that cover every grid, ``exponent_source`` ("pilot": measured between its budgets, or "spec"), and
    ``warnings`` (one line each) where the pilot could not bracket an optimum."""

    optima: tuple[BudgetOptimum, ...]
    prior: PriorConfig
    rungs: tuple[Rung, ...]
    warnings: tuple[str, ...]
    exponent_source: str = "spec"


def _heads(width: int, head_dim: int) -> int:
    """Heads of a rung ``width`` wide: the count nearest ``width / head_dim`` (at least 1) that divides it."""
    heads = max(1, round(width / head_dim))
    while width % heads:
        heads -= 1
    return heads


def narrower_rungs(smallest: Rung) -> list[Rung]:
    """Rungs below ``smallest`` (depth, width, heads) at its depth and head width, each :data:`WIDTH_STEP`
    narrower, down to :data:`MIN_WIDTH`; ascending in width."""
    depth, width, heads = smallest
    head_dim = width // heads
    widths = range(width - WIDTH_STEP, MIN_WIDTH - 1, -WIDTH_STEP)
    return [(depth, w, _heads(w, head_dim)) for w in sorted(widths) if w % 4 == 0]


def first_round(log_n: list[float], n_centre: float) -> list[int]:
    """Indices (into ``log_n``, the candidates' log N ascending) of the pilot's first sizes: the ones
    nearest ``n_centre`` and :data:`FIRST_SPREAD` times below and above it."""
    return choose_grid(log_n, math.log(n_centre), ROUND_SIZES, 2 * math.log(FIRST_SPREAD))


def next_round(log_n: list[float], trained: set[int], optima: list[BudgetOptimum]) -> list[int]:
    """Indices of the next round's sizes (see the module): beyond the edge of the sizes trained that a
    budget's lowest loss sits at ("below" before "above"); else between a budget's lowest loss and its
    trained neighbours. Padded with the untrained sizes nearest there; [] when there is nothing to
    learn, or fewer than :data:`ROUND_SIZES` sizes are left untrained."""
    untrained = [i for i in range(len(log_n)) if i not in trained]
    picked, anchor = _beyond(log_n, trained, untrained, optima)
    if not picked:
        picked, anchor = _between(log_n, untrained, optima)
    if not picked:
        return []
    rest = sorted((i for i in untrained if i not in picked), key=lambda i: abs(log_n[i] - log_n[anchor]))
    picked = sorted(picked + rest[: ROUND_SIZES - len(picked)])
    return picked if len(picked) == ROUND_SIZES else []


def _index(log_n: list[float], n: float) -> int:
    """The candidate whose log N is nearest ``n``."""
    return min(range(len(log_n)), key=lambda i: abs(log_n[i] - math.log(n)))


def _beyond(log_n, trained, untrained, optima) -> tuple[list[int], int]:
    """``(sizes STEP, STEP^2, STEP^3 times beyond the edge, the edge)`` when a budget's lowest loss is
    at the smallest ("below") or largest ("above") size trained at all; ``([], 0)`` otherwise."""
    for direction, edge, sign in (("below", min(trained), -1), ("above", max(trained), 1)):
        if not any(o.edge == direction and _index(log_n, o.n_opt) == edge for o in optima):
            continue
        beyond = [i for i in untrained if sign * (i - edge) > 0]
        if len(beyond) > ROUND_SIZES:
            centre = log_n[edge] + sign * 2 * math.log(STEP)
            beyond = [
                beyond[i] for i in choose_grid([log_n[i] for i in beyond], centre, ROUND_SIZES, 2 * math.log(STEP))
            ]
        if beyond:
            return beyond, edge
    return [], 0


def _between(log_n, untrained, optima) -> tuple[list[int], int]:
    """``(sizes halfway in log N between a budget's lowest loss and its trained neighbours, the lowest
    loss of the largest budget)``: the largest budget first, at most :data:`ROUND_SIZES`."""
    picked: list[int] = []
    anchor = 0
    for o in sorted(optima, key=lambda o: -o.budget):
        logs = [math.log(n) for n, _ in o.points]
        j = min(range(len(logs)), key=lambda i: (o.points[i][1], i))
        anchor = anchor if picked else _index(log_n, o.points[j][0])
        for k in (j - 1, j + 1):
            if not 0 <= k < len(logs):
                continue
            lo, hi = sorted((logs[j], logs[k]))
            inside = [i for i in untrained if lo < log_n[i] < hi and i not in picked]
            if inside:
                picked.append(min(inside, key=lambda i: abs(log_n[i] - (lo + hi) / 2)))
    return picked[:ROUND_SIZES], anchor


def budget_optimum(budget: float, points: list[tuple[int, float]]) -> BudgetOptimum:
    """The optimum of one budget from its ``(N, loss)`` points (at least 2; see the module)."""
    pts = tuple(sorted(points))
    if len(pts) < 2:
        raise ValueError(f"budget {fmt_flops(budget)}: {len(pts)} pilot point(s); an optimum needs at least 2")
    j = min(range(len(pts)), key=lambda i: (pts[i][1], i))
    if j == 0 or j == len(pts) - 1:
        return BudgetOptimum(budget, float(pts[j][0]), "below" if j == 0 else "above", pts)
    (x0, y0), (x1, y1), (x2, y2) = ((math.log(n), loss) for n, loss in pts[j - 1 : j + 2])
    curvature = ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)
    if curvature <= 0:  # three equal losses: the middle size
        return BudgetOptimum(budget, float(pts[j][0]), None, pts)
    slope = (y1 - y0) / (x1 - x0) - curvature * (x0 + x1)
    vertex = min(max(-slope / (2 * curvature), x0), x2)
    return BudgetOptimum(budget, math.exp(vertex), None, pts)


def place(
    optima: list[BudgetOptimum],
    candidates: list[tuple[Rung, int]],
    budgets: list[float],
    span: float,
    exponent: float,
    models: int,
) -> Placement:
    """The study's prior and rungs from the pilot's ``optima`` (see the module). ``candidates``:
    ``(rung, N)`` ascending in N, the family's ladder with the narrower rungs; ``budgets``: the study's
    (FLOPs, ascending); ``span``, ``exponent``, ``models``: its grid span, prior exponent (used when
    the pilot cannot measure one) and models per budget."""
    exponent, source = pilot_exponent(optima, exponent)
    log_k = sum(math.log(o.n_opt) - exponent * math.log(o.budget) for o in optima) / len(optima)
    prior = PriorConfig(coefficient=float(f"{math.exp(log_k):.{SIGNIFICANT}g}"), exponent=exponent)
    sizes = [n for _, n in candidates]
    low, high = prior.n_opt(budgets[0]) / math.sqrt(span), prior.n_opt(budgets[-1]) * math.sqrt(span)
    lo = max((i for i, n in enumerate(sizes) if n <= low), default=0)
    hi = min((i for i, n in enumerate(sizes) if n >= high), default=len(sizes) - 1)
    while hi - lo + 1 < min(models, len(sizes)):
        hi, lo = (hi + 1, lo) if hi < len(sizes) - 1 else (hi, lo - 1)
    rungs = tuple(rung for rung, _ in candidates[lo : hi + 1])
    return Placement(tuple(optima), prior, rungs, tuple(_edge_warnings(optima, sizes, high)), source)


def pilot_exponent(optima: list[BudgetOptimum], fallback: float) -> tuple[float, str]:
    """``(exponent, "pilot")``: the least-squares slope of log N* over log C of ``optima``, within
    :data:`EXPONENT_RANGE`, to :data:`SIGNIFICANT` digits; ``(fallback, "spec")`` when fewer than 2
    budgets have an optimum or one of them is a bound (at the edge of the sizes trained)."""
    if len({o.budget for o in optima}) < 2 or any(o.edge for o in optima):
        return fallback, "spec"
    xs, ys = [math.log(o.budget) for o in optima], [math.log(o.n_opt) for o in optima]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    lo, hi = EXPONENT_RANGE
    return float(f"{min(max(slope, lo), hi):.{SIGNIFICANT}g}"), "pilot"


def _edge_warnings(optima: list[BudgetOptimum], sizes: list[int], high: float) -> list[str]:
    """One line per budget whose optimum the pilot left at an edge, and for grids above the ladder."""
    out = []
    for o in optima:
        if o.edge is None:
            continue
        label = f"pilot budget {fmt_flops(o.budget)}: the lowest loss is at the {'smallest' if o.edge == 'below' else 'largest'} size trained (N={o.n_opt:.3g})"
        if o.edge == "below" and o.n_opt <= sizes[0]:
            out.append(
                f"{label}, the narrowest the pilot builds: the optimum may lie below it; the prior is an upper bound"
            )
        elif o.edge == "above" and o.n_opt >= sizes[-1]:
            out.append(f"{label}, the family's largest: the optimum may lie above it; add wider rungs")
        else:
            out.append(f"{label}: the pilot's rounds ended before it turned; the prior there is a bound")
    if high > sizes[-1]:
        out.append(
            f"the largest budget's grid reaches N={high:.3g}, above the family's largest model (N={sizes[-1]:.3g}); add wider rungs"
        )
    return out


def trained_flops(runs: list[PlannedRun], share_trunks: bool, cooldown: float) -> float:
    """Training FLOPs of ``runs``: their sum, or with shared trunks each model (rung, batch, seed) once
    to its largest run plus the last ``cooldown`` fraction (wsd's cooldown, where a branch leaves its
    trunk; 0 for other schedules) of each of its other runs."""
    if not share_trunks:
        return sum(r.flops_exact for r in runs)
    models: dict[tuple, list[float]] = {}
    for r in runs:
        models.setdefault((r.rung, r.batch_size, r.seed), []).append(r.flops_exact)
    return sum(max(f) + cooldown * (sum(f) - max(f)) for f in models.values())
