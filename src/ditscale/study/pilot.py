"""A tiny pilot that places a study's grids from its data (``ditscale study init --pilot``).

The default prior is another setting's law, and the prior ``study init`` suggests only centres the
grids on the ladder; neither knows the data. The pilot measures where the loss is lowest: it trains
a few model sizes at the study's two smallest budgets, in rounds of 3 sizes (at most
:data:`MAX_ROUNDS`), each round an ordinary study folder ``DIR/round<k>`` run by
:func:`ditscale.study.run.run_study` (shared trunks, locks, atomic writes, a progress bar: a pilot
killed anywhere resumes where it stopped, a finished one trains nothing again). Which sizes, and
how their losses become the study's ``prior`` and ``rungs``, is :mod:`ditscale.study.placement`:
the sizes are the family's ladder and narrower rungs below it, round 1 spans 16x in N around the
prior's optimum, later rounds follow the falling loss beyond the edge of the sizes trained, then
fill in the sizes next to the lowest losses.

``DIR/pilot.json`` records the outcome (points, optima, prior, rungs, FLOPs). Its cost is the
training FLOPs of the pilot's runs (shared trunks counted once), set against the placed study's
(:func:`ditscale.study.placement.trained_flops` of its plan).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ditscale.errors import DataError
from ditscale.flops import fmt_flops
from ditscale.io import atomic_write_json
from ditscale.study.analyze import compute_summary
from ditscale.study.folder import StudyFolder
from ditscale.study.placement import (
    BudgetOptimum,
    PilotPoint,
    Placement,
    budget_optimum,
    first_round,
    narrower_rungs,
    next_round,
    place,
    trained_flops,
)
from ditscale.study.plan import RungSize, ladder_sizes, plan_study
from ditscale.study.prior import prior_misses_ladder, suggest_prior
from ditscale.study.replan import all_runs
from ditscale.study.run import run_study
from ditscale.study.spec import FamilyConfig, PriorConfig, RepeatConfig, StudySpec

MAX_ROUNDS = 3  # rounds of 3 sizes: at most 9 models, each trained to the second-smallest budget
PILOT_SHARE = 0.2  # a pilot costing more than this share of the study's training FLOPs is warned about
PILOT_JSON = "pilot.json"


@dataclass(frozen=True)
class PilotOutcome:
    """What a pilot measured and placed: its ``points``, the ``placement`` (prior, rungs, warnings),
    the ``rounds`` it ran at ``budgets`` (FLOPs), the training FLOPs it cost (``flops``) and the
    placed study's (``study_flops``), ``wall_s`` (the seconds of every call that ran a round, as a
    study's ``study_s``) and its folder."""

    placement: Placement
    points: tuple[PilotPoint, ...]
    rounds: int
    budgets: tuple[float, ...]
    flops: float
    study_flops: float
    wall_s: float
    out_dir: str

    @property
    def share(self) -> float:
        """The pilot's training FLOPs over the placed study's."""
        return self.flops / self.study_flops

    def lines(self) -> list[str]:
        """What the pilot found, for the console: its cost, each budget's optimum, the prior and rungs."""
        p = self.placement
        sizes = len({x.rung for x in self.points})
        head = (
            f"pilot: {self.rounds} round(s), {sizes} model sizes at {' and '.join(fmt_flops(b) for b in self.budgets)} "
            f"FLOPs in {self.wall_s:.0f} s of training calls: {self.flops:.3g} training FLOPs, {self.share:.0%} of the placed study's "
            f"{self.study_flops:.3g} ({Path(self.out_dir) / PILOT_JSON})"
        )
        out = [head] + [f"  {_optimum_text(o)}" for o in p.optima]
        rungs = ", ".join(f"d{d}w{w}h{h}" for d, w, h in p.rungs)
        how = "its exponent measured between the budgets" if p.exponent_source == "pilot" else "the spec's exponent"
        out.append(f"  prior N_opt = {p.prior.coefficient:.3g} C^{p.prior.exponent:g} (through the optima, {how})")
        out.append(f"  rungs {rungs}")
        return out

    def warnings(self) -> list[str]:
        """The placement's warnings, and one when the pilot cost more than :data:`PILOT_SHARE` of the study."""
        extra = []
        if self.share > PILOT_SHARE:
            extra.append(f"the pilot cost {self.share:.0%} of the study's training FLOPs (more than {PILOT_SHARE:.0%})")
        return list(self.placement.warnings) + extra

    def to_json(self) -> dict:
        p = self.placement
        return {
            "budgets": list(self.budgets),
            "rounds": self.rounds,
            "points": [dataclasses.asdict(x) for x in self.points],
            "optima": [{"budget": o.budget, "n_opt": o.n_opt, "edge": o.edge} for o in p.optima],
            "prior": {"coefficient": p.prior.coefficient, "exponent": p.prior.exponent},
            "exponent_source": p.exponent_source,
            "rungs": [list(r) for r in p.rungs],
            "warnings": list(p.warnings),
            "flops": self.flops,
            "study_flops": self.study_flops,
            "share": self.share,
            "wall_s": round(self.wall_s, 3),
        }


def candidate_sizes(spec: StudySpec) -> list[RungSize]:
    """The sizes a pilot may train: the family's ladder and the narrower rungs below its smallest
    (:func:`~ditscale.study.placement.narrower_rungs`), ascending in non-embedding N."""
    ladder = [s.rung for s in ladder_sizes(spec)]
    rungs = narrower_rungs(ladder[0]) + ladder
    return ladder_sizes(dataclasses.replace(spec, family=FamilyConfig(rungs=rungs, model=dict(spec.family.model))))


def round_spec(spec: StudySpec, sizes: list[RungSize], budgets: list[float], number: int) -> StudySpec:
    """The study spec of pilot round ``number``: ``sizes`` at ``budgets``, every size at every budget
    (its prior centred on them), one seed, no backtest, no bootstrap, no quality stage."""
    centre = math.sqrt(sizes[0].non_embedding * sizes[-1].non_embedding)
    exponent = spec.prior.exponent
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-pilot{number}",
        family=FamilyConfig(rungs=[s.rung for s in sizes], model=dict(spec.family.model)),
        budgets=list(budgets),
        models_per_budget=len(sizes),
        prior=PriorConfig(coefficient=centre / math.sqrt(budgets[0] * budgets[-1]) ** exponent, exponent=exponent),
        adaptive=False,
        repeat=RepeatConfig(),
        holdout=0,
        laws=dataclasses.replace(spec.laws, bootstrap=0),
        quality=None,
    )


def placed_spec(spec: StudySpec, placement: Placement) -> StudySpec:
    """``spec`` with the pilot's rungs and prior."""
    family = FamilyConfig(rungs=list(placement.rungs), model=dict(spec.family.model))
    return dataclasses.replace(spec, family=family, prior=placement.prior)


def run_pilot(
    spec: StudySpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> PilotOutcome:
    """Run (or continue) the pilot of ``spec`` in ``out_dir`` and place the study (see the module)."""
    sizes = candidate_sizes(spec)
    log_n = [math.log(s.non_embedding) for s in sizes]
    budgets = spec.budgets[:2]
    picked = first_round(log_n, _centre(spec, budgets))
    index = {s.rung: i for i, s in enumerate(sizes)}
    points: list[PilotPoint] = []
    tried: set[int] = set()
    flops, wall, number = 0.0, 0.0, 0
    while picked and number < MAX_ROUNDS:
        number += 1
        new, cost, seconds = _pilot_round(
            spec, [sizes[i] for i in picked], budgets, Path(out_dir), number, echo, progress, workers, threads
        )
        points += new
        tried |= set(picked) | {index[p.rung] for p in new if p.rung in index}
        flops, wall = flops + cost, wall + seconds
        optima = _optima(points, budgets, Path(out_dir))
        echo(f"pilot round {number}: " + "; ".join(_optimum_text(o) for o in optima))
        picked = next_round(log_n, tried, optima)
    candidates = [(s.rung, s.non_embedding) for s in sizes]
    placement = place(optima, candidates, spec.budgets, spec.span, spec.prior.exponent, spec.models_per_budget)
    hp = spec.hparams
    cooldown = hp.cooldown_frac if hp.schedule == "wsd" else 0.0
    study = trained_flops(plan_study(placed_spec(spec, placement)).runs, spec.share_trunks, cooldown)
    outcome = PilotOutcome(placement, tuple(points), number, tuple(budgets), flops, study, wall, str(out_dir))
    atomic_write_json(Path(out_dir) / PILOT_JSON, outcome.to_json())
    return outcome


def _centre(spec: StudySpec, budgets: list[float]) -> float:
    """The N round 1 centres on: the spec's prior (or, when it misses the ladder, the suggested one)
    at the geometric mean of the pilot's budgets."""
    prior = suggest_prior(spec) if prior_misses_ladder(spec) else spec.prior
    return prior.n_opt(math.sqrt(budgets[0] * budgets[-1]))


def _pilot_round(spec, sizes, budgets, out_dir: Path, number: int, echo, progress, workers, threads):
    """Train round ``number`` in ``out_dir/round<number>``: ``(its finished points, its training FLOPs,
    the wall seconds of every call that ran it)``."""
    widths = ", ".join(f"d{d}w{w}h{h}" for d, w, h in (s.rung for s in sizes))
    echo(f"pilot round {number}: {widths} at {' and '.join(fmt_flops(b) for b in budgets)} FLOPs")
    folder = StudyFolder(out_dir / f"round{number}")
    rspec = round_spec(spec, sizes, budgets, number)
    outcome = run_study(
        rspec,
        folder.root,
        workers=workers,
        report=False,
        progress=progress,
        echo=echo,
        threads=threads,
        measure_peak=False,
    )
    if not outcome.complete:
        raise DataError(
            f"pilot round {number} in {folder.root} did not finish ({outcome.remaining} run(s) left, held by "
            "another process or interrupted); run the same command again to continue"
        )
    rows = folder.finished_rows(all_runs(folder.read_plan()))
    points = [
        PilotPoint(
            float(r["budget"]),
            (int(r["depth"]), int(r["hidden_size"]), int(r["num_heads"])),
            int(r["params"]),
            float(r["loss"]),
        )
        for r in rows
    ]
    compute = compute_summary(folder)
    return points, float(compute["trained_flops"]), float(compute["study_s"] or 0.0)


def _optima(points: list[PilotPoint], budgets: list[float], out_dir: Path) -> list[BudgetOptimum]:
    """Each pilot budget's optimum (those with at least 2 finished sizes)."""
    by_budget = {b: [(p.n, p.loss) for p in points if p.budget == b] for b in budgets}
    optima = [budget_optimum(b, pts) for b, pts in by_budget.items() if len(pts) >= 2]
    if not optima:
        raise DataError(
            f"the pilot in {out_dir} has fewer than 2 finished model sizes at each budget (the others failed: "
            "see round*/runs/*/failed.json); fix the cause and run the same command again"
        )
    return optima


def _optimum_text(o: BudgetOptimum) -> str:
    """``1.6e11: N 2.5e4 0.241, 5.6e4 0.262 -> optimum N=2.5e4 (at the smallest size)``."""
    pts = ", ".join(f"{n:.2g} {loss:.3f}" for n, loss in o.points)
    where = {"below": " (the smallest size: a bound)", "above": " (the largest size: a bound)", None: ""}[o.edge]
    return f"{fmt_flops(o.budget)}: N {pts} -> optimum N={o.n_opt:.3g}{where}"
