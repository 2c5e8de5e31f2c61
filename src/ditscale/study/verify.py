"""Verify a study's prediction by training it: ``ditscale study verify DIR --flops C [--sizes 1|3]``.

A finished study predicts the compute-optimal N_opt and loss L_opt at a budget C beyond its sweep
(:func:`ditscale.study.analyze.study_prediction`, the loss law of record, with its 90% interval).
This module trains the family member nearest N_opt at C (log distance, the prediction's
``nearest``) and, with ``sizes=3``, also the members nearest N_opt / 2 (among the smaller ones) and
2 N_opt (among the larger ones; a rule-based family is extended to reach it), each on the study's
own recipe: the run a budget-C grid of the study would train (:func:`ditscale.study.plan.planned_run`:
as many whole images as C buys, the study's batch rule, hparams, EMA, data, validation and seed),
executed as a study run (:func:`ditscale.study.executor.execute_run`), so it is resumable and
measured as ``runs.csv`` measures a run: its ``result.json`` ``val_loss``.

Shared trunks: the sizes are different models, so no two of them share a trunk (a trunk serves one
model's runs, :mod:`ditscale.train.trunk`). But in a study with ``share_trunks`` a size the study
trained has a trunk in ``DIR/trunks/``, at its largest branch point: the verification run branches
off a copy of it (``DIR/verify/trunks/<trunk_id>/``), which saves the study's steps of that model
(1 / factor of the run at most) and leaves the study's own trunks, and so its compute accounting,
untouched. A branch equals the run trained alone (``docs/studies.md``, shared trunks); other sizes
train alone.

Layout, inside the study folder::

    verify/<run_id>/     one study run folder per size (config.yaml, checkpoints/, train.log,
                         result.json, study.json); a killed verify resumes from its checkpoints
    verify/trunks/       copies of the study's trunks that verification runs branch off (resumable)
    verify/verify*.json  the answer, written atomically when every size is done (its files, record and
                         reader: :mod:`ditscale.study.verified`)

Units: C in training FLOPs (exact convention); ``params`` non-embedding parameters (the law's N);
``factor = C / the study's largest budget``; ``relative_error = (predicted - actual) / actual`` with
``actual_loss`` the loss of the member nearest N_opt; ``best_params`` the size with the lowest loss.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ditscale.errors import ConfigError, DataError, TrainingError
from ditscale.flops import fmt_flops, forward_macs, param_counts
from ditscale.io import atomic_write_json
from ditscale.laws.fit import loss_law_name
from ditscale.laws.predict import nearest_model
from ditscale.laws.results import LawsSummary, PredictionSummary
from ditscale.study.analyze import family_members, study_prediction
from ditscale.study.executor import RunTask, config_sha
from ditscale.study.fitted import check_target_flops
from ditscale.study.folder import StudyFolder, StudyRunDir
from ditscale.study.launchers import make_launcher
from ditscale.study.plan import PlannedRun, RungSize, base_model_config, planned_run, run_config, rung_config
from ditscale.study.run import Tally, trunk_tasks
from ditscale.study.spec import StudySpec
from ditscale.study.verified import VERIFY_JSON, Verification, VerifySize, verify_dir, verify_file

# The target of each trained size, as a multiple of the predicted N_opt.
ROLES = {"n_opt": 1.0, "half": 0.5, "double": 2.0}
# z of a two-sided 90% band: two sizes whose log losses differ by less than SEED_BAND x sqrt(2) x the
# seed-to-seed sd are within seed noise of each other.
SEED_BAND = 1.645


# -- what a verification trains -------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyPlan:
    """The runs a verification of the study ``spec`` trains at ``flops`` (training FLOPs) and what it
    checks them against.

    ``runs``: the :class:`~ditscale.study.plan.PlannedRun` of each size (ascending N), ``roles`` the
    target each is nearest ("n_opt", "half", "double"); ``prediction``: the study's prediction at
    ``flops``; ``largest_budget``: the study's largest budget (FLOPs); ``rate``: the study's measured
    training FLOP/s on its machine (laws.json ``compute``: trained_flops / study_s; None unknown);
    ``seed_spread``: the study's seed-to-seed sd of log loss (laws.json ``noise``; None without
    replicates); ``notes``: sizes that could not be placed, runs shorter than ``min_steps``."""

    spec: StudySpec
    flops: float
    largest_budget: float
    prediction: PredictionSummary
    runs: tuple[PlannedRun, ...]
    roles: tuple[str, ...]
    rate: float | None
    seed_spread: float | None
    notes: tuple[str, ...]

    @property
    def factor(self) -> float:
        """How far C extrapolates: C / the largest budget of the study."""
        return self.flops / self.largest_budget


def plan_verification(out_dir: str | Path, flops: float, sizes: int = 1) -> VerifyPlan:
    """What ``study verify`` trains at ``flops`` FLOPs (it trains nothing; one-line errors for a study
    that is not finished and fitted, or a C below its largest budget). A run shorter than the spec's
    ``min_steps`` (which the study would have dropped) is kept and named in the notes."""
    if sizes not in (1, 3):
        raise ConfigError(f"--sizes must be 1 or 3, got {sizes}")
    check_target_flops(flops)
    folder = StudyFolder(out_dir)
    spec = folder.read_spec()
    if not folder.laws_json.is_file():
        raise DataError(f"{folder.root} has no laws.json yet; finish the study with `ditscale study run` first")
    laws = LawsSummary.of(folder.read_laws(), where=str(folder.laws_json))
    pred = study_prediction(folder.root, flops, spec=spec, with_backtest=False)
    largest = pred.largest_budget or max(spec.budgets)
    if flops < largest:
        raise ConfigError(
            f"--flops {flops:.4g} is below the study's largest budget {largest:.4g} FLOPs; "
            "verify checks a prediction at or beyond the sweep"
        )
    members, notes = _members(spec, pred, sizes)
    base = base_model_config(spec)
    batch = spec.hparams.batch_for(flops, spec.budgets[0])  # the study's batch rule at C
    runs = [
        planned_run(spec, _size(spec, rung, base), flops, batch, spec.seed, pred.n_opt.value, "fit")
        for _, rung in members
    ]
    notes += [
        f"{r.run_id} has {r.steps} steps, fewer than min_steps={spec.min_steps}"
        for r in runs
        if r.steps < spec.min_steps
    ]
    compute = laws.compute
    rate = compute.trained_flops / compute.study_s if compute.study_s else None
    roles = tuple(role for role, _ in members)
    return VerifyPlan(spec, flops, largest, pred, tuple(runs), roles, rate, laws.noise.seed_spread, tuple(notes))


def _members(spec: StudySpec, pred: PredictionSummary, sizes: int) -> tuple[list[tuple[str, tuple]], list[str]]:
    """``(role, rung)`` of each size to train, ascending N: the prediction's nearest member and, with
    ``sizes=3``, the member nearest N_opt / 2 among the smaller ones and nearest 2 N_opt among the
    larger ones (a family without one says so in the notes)."""
    n_opt = float(pred.n_opt.value)
    family = family_members(spec, n_opt)
    near = pred.nearest
    centre = next(m for m in family if m[2] == (near.depth, near.hidden_size, near.num_heads))
    out, notes = [("n_opt", centre)], []
    if sizes == 3:
        for role, side in (
            ("half", [m for m in family if m[1] < centre[1]]),
            ("double", [m for m in family if m[1] > centre[1]]),
        ):
            if not side:
                notes.append(
                    f"no family member {'below' if role == 'half' else 'above'} {centre[0]}: {role} N_opt not trained"
                )
                continue
            name, _ = nearest_model(ROLES[role] * n_opt, [(m[0], m[1]) for m in side])
            out.append((role, next(m for m in side if m[0] == name)))
    out.sort(key=lambda item: item[1][1])
    return [(role, m[2]) for role, m in out], notes


def _size(spec: StudySpec, rung: tuple[int, int, int], base) -> RungSize:
    """A family member's :class:`~ditscale.study.plan.RungSize` (in the ladder or beyond it)."""
    cfg = rung_config(spec, rung, base)
    return RungSize(rung, cfg, param_counts(cfg), int(forward_macs(cfg).total))


def verify_tasks(out_dir: str | Path, plan: VerifyPlan, threads: int = 1) -> list[RunTask]:
    """The :class:`~ditscale.study.executor.RunTask` of each run of ``plan``, in ``DIR/verify/<run_id>/``.
    A folder that holds a run trained with another config (another C with the same label, or a
    changed spec) is refused with a one-line :class:`ConfigError`."""
    tasks = []
    for run in plan.runs:
        cfg_dict = run_config(plan.spec, run).to_dict()
        task = RunTask(
            run.run_id, str(verify_dir(out_dir) / run.run_id), cfg_dict, config_sha(cfg_dict), run.flops_exact, threads
        )
        old = StudyRunDir(task.run_dir).read_study()
        if old is not None and old.get("config_sha") != task.config_sha:
            raise ConfigError(
                f"{task.run_dir} holds a run trained with another config (another --flops with the same label "
                f"{fmt_flops(plan.flops)}, or a changed spec); delete that folder to verify again"
            )
        tasks.append(task)
    return tasks


def remaining_seconds(out_dir: str | Path, plan: VerifyPlan) -> tuple[float, float | None]:
    """Training FLOPs of the runs of ``plan`` without a result yet (less what a trunk they branch off
    has trained), and the seconds they would take at the study's measured rate (None when the study
    did not measure it)."""
    flops = 0.0
    for r in plan.runs:
        if StudyRunDir(verify_dir(out_dir) / r.run_id).valid_result() is None:
            flops += r.flops_exact - min(r.flops_exact, _trunk_flops(out_dir, plan, r))
    return flops, (flops / plan.rate if plan.rate else None)


# -- shared trunks --------------------------------------------------------------------------------
def trunk_id(run: PlannedRun) -> str:
    """The trunk of ``run``'s model, batch and seed, as the study names it (:func:`ditscale.study.run.trunk_tasks`)."""
    return f"d{run.depth}w{run.hidden_size}h{run.num_heads}-b{run.batch_size}-s{run.seed}"


def _trunk_source(out_dir: str | Path, plan: VerifyPlan, run: PlannedRun) -> Path | None:
    """The trunk ``run`` branches off: the verification's copy, else the study's own (None: none, or
    the study does not share trunks)."""
    if not plan.spec.share_trunks:
        return None
    for path in (verify_dir(out_dir) / "trunks" / trunk_id(run), StudyFolder(out_dir).trunk_dir(trunk_id(run))):
        if (path / "trunk.json").is_file():
            return path
    return None


def _trunk_flops(out_dir: str | Path, plan: VerifyPlan, run: PlannedRun) -> float:
    """Training FLOPs the trunk of ``run`` has trained already (0 without one)."""
    path = _trunk_source(out_dir, plan, run)
    if path is None:
        return 0.0
    return float((json.loads((path / "trunk.json").read_text()).get("trained") or {}).get("flops", 0.0))


def copy_trunks(out_dir: str | Path, plan: VerifyPlan, todo: list[PlannedRun]) -> None:
    """Copy the study's trunk of each run of ``todo`` that has one into ``DIR/verify/trunks/`` (once:
    through a ``.partial`` folder renamed when whole), so the run branches off it and the study's own
    trunk is never written."""
    for run in todo:
        source = _trunk_source(out_dir, plan, run)
        mine = verify_dir(out_dir) / "trunks" / trunk_id(run)
        if source is None or source == mine:
            continue
        partial = mine.with_name(mine.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a copy cut short by a kill
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns("*.lock"))
        os.replace(partial, mine)


# -- the answer (its record: ditscale.study.verified) ------------------------------------------------
def verification(out_dir: str | Path, plan: VerifyPlan) -> Verification:
    """The answer of ``plan`` from its finished runs (each ``DIR/verify/<run_id>/result.json``)."""
    sizes = []
    for run, role in zip(plan.runs, plan.roles):
        res = StudyRunDir(verify_dir(out_dir) / run.run_id).valid_result()
        if res is None:
            raise DataError(f"verification run {run.run_id} has no result; run `ditscale study verify` again")
        sizes.append(
            VerifySize(
                params=int(res.get("params_non_embedding", run.params_non_embedding)),
                loss=float(res["val_loss"]),
                name=f"d{run.depth}-w{run.hidden_size}-h{run.num_heads}",
                run_id=run.run_id,
                role=role,
                params_total=int(res.get("params", run.params)),
                steps=int(res.get("steps", run.steps)),
                images=int(res.get("images", run.images)),
                flops=float(res["flops_exact"]),
            )
        )
    return _answer(plan, tuple(sizes))


def _answer(plan: VerifyPlan, sizes: tuple[VerifySize, ...]) -> Verification:
    """:class:`Verification` of ``plan`` given the trained ``sizes``."""
    pred = plan.prediction
    loss, ci = float(pred.loss_opt.value), pred.loss_opt.ci90
    actual = next(s.loss for s in sizes if s.role == "n_opt")
    gap = math.log(actual / min(s.loss for s in sizes))
    spread = plan.seed_spread
    tie = None if spread is None or len(sizes) == 1 else bool(gap <= SEED_BAND * math.sqrt(2.0) * spread)
    return Verification(
        flops=plan.flops,
        factor=plan.factor,
        predicted_loss=loss,
        predicted_ci90=None if ci is None else (float(ci[0]), float(ci[1])),
        actual_loss=actual,
        relative_error=(loss - actual) / actual,
        within_ci90=None if ci is None else bool(ci[0] <= actual <= ci[1]),
        sizes=sizes,
        predicted_n_opt=float(pred.n_opt.value),
        best_params=min(sizes, key=lambda s: (s.loss, s.params)).params,
        predicted_n_opt_ci90=None if pred.n_opt.ci90 is None else tuple(float(x) for x in pred.n_opt.ci90),
        loss_law=pred.loss_law,
        largest_budget=plan.largest_budget,
        seed_spread=spread,
        n_opt_gap=gap,
        within_seed_noise=tie,
        notes=plan.notes,
    )


# -- training it ----------------------------------------------------------------------------------
def verify_study(
    out_dir: str | Path,
    flops: float,
    *,
    sizes: int = 1,
    workers: int | None = None,
    max_hours: float | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    threads: int | None = None,
) -> Verification:
    """Train the study's predicted compute-optimal model at ``flops`` FLOPs (``sizes=3``: also the
    members nearest N_opt / 2 and 2 N_opt), resuming runs already started, and write
    ``DIR/verify/verify.json``; see the module docstring.

    ``workers``: local worker processes (default: the spec's, at most one per size; 0 trains in this
    process); ``max_hours``: refuse, before training, when the estimated time left (at the study's
    measured FLOP/s) is longer; ``echo`` gets the plan and estimate before training; ``threads``: torch
    threads of each run (default: the cores shared by the workers)."""
    plan = plan_verification(out_dir, flops, sizes)
    left, seconds = remaining_seconds(out_dir, plan)
    for line in describe(plan, left, seconds):
        echo(line)
    if max_hours is not None and seconds is not None and seconds > max_hours * 3600:
        raise ConfigError(
            f"verifying at {flops:.4g} FLOPs needs an estimated {seconds / 3600:.3g} h here, above --max-hours "
            f"{max_hours:g}; lower --flops or raise --max-hours"
        )
    if left:
        echo(f"  progress of each run: tail -f {verify_dir(out_dir)}/<run_id>/train.log")
    workers = plan.spec.workers if workers is None else workers
    _train(out_dir, plan, min(workers, len(plan.runs)), progress, echo, threads)
    answer = verification(out_dir, plan)
    atomic_write_json(verify_file(out_dir, flops), answer.to_dict())
    atomic_write_json(verify_dir(out_dir) / VERIFY_JSON, answer.to_dict())
    return answer


def _train(
    out_dir: str | Path,
    plan: VerifyPlan,
    workers: int,
    progress: bool,
    echo: Callable[[str], None],
    threads: int | None = None,
) -> None:
    """Train (or resume) the runs of ``plan`` without a result; a run that fails or is held by another
    process raises a one-line error (the finished runs are kept: run the command again)."""
    runner = make_launcher("local", workers, None, verify_dir(out_dir), threads)
    tasks = verify_tasks(out_dir, plan, runner.threads)
    todo = [t for t in tasks if StudyRunDir(t.run_dir).valid_result() is None]
    if plan.spec.share_trunks:  # a size the study trained branches off a copy of its trunk
        copy_trunks(out_dir, plan, [r for r in plan.runs if r.run_id in {t.run_id for t in todo}])
        todo = trunk_tasks(StudyFolder(verify_dir(out_dir)), list(plan.runs), todo, runner.threads)
    tally = Tally(f"{plan.spec.name} verify", progress, echo)
    try:
        if todo:
            tally.submit(todo)
            runner.run(sorted(todo, key=lambda t: -t.flops), tally.on_done)
    finally:
        tally.close()
        runner.close()
    if tally.busy:
        raise TrainingError(
            f"verification run(s) {', '.join(tally.busy)} are being trained by another process; "
            "run the same command again once they finish"
        )
    if tally.failed:
        raise TrainingError(
            f"verification run(s) {', '.join(tally.failed)} failed (see their train.log); run again to retry"
        )


def describe(plan: VerifyPlan, left_flops: float, seconds: float | None) -> list[str]:
    """Lines saying what a verification trains, the prediction it checks and the time it should take."""
    pred = plan.prediction
    ci = pred.loss_opt.ci90
    interval = f" 90% [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
    head = (
        f"verify at C = {plan.flops:.4g} FLOPs ({plan.factor:.3g}x the largest budget, {plan.largest_budget:.4g}): "
        f"predicted L_opt {pred.loss_opt.value:.4f}{interval} ({loss_law_name(pred.loss_law)}), N_opt {pred.n_opt.value:.4g}"
    )
    lines = [head]
    for run, role in zip(plan.runs, plan.roles):
        lines.append(
            f"  {run.run_id} ({role}): N {run.params_non_embedding:,} non-embedding, {run.images:,} images, "
            f"{run.steps:,} steps of {run.batch_size}, {run.flops_exact:.4g} FLOPs"
        )
    lines += [f"  note: {n}" for n in plan.notes]
    if left_flops == 0:
        lines.append("  every run is done already: nothing to train")
    elif seconds is None:
        lines.append(f"  {left_flops:.4g} FLOPs to train (the study measured no rate: no time estimate)")
    else:
        lines.append(
            f"  {left_flops:.4g} FLOPs to train: about {seconds / 60:.3g} min at the study's measured "
            f"{plan.rate:.3g} FLOP/s"
        )
    return lines
