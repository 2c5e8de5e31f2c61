"""Run a study: plan each stage, train every run once, write ``runs.csv``, score, fit, report.

The study folder's layout is :mod:`ditscale.study.folder`; one run is executed by
:mod:`ditscale.study.executor`, through a launcher (:mod:`ditscale.study.launchers`).

Idempotent and resumable: a run with a valid ``result.json`` is never trained again; a run
stopped midway resumes from its own last checkpoint; a study stopped midway continues with the
runs not done. Budgets run from the smallest up: with ``adaptive`` the two smallest run first
(centred on the prior), every later budget is centred from the budgets done
(:func:`ditscale.study.replan.fit_so_far`). The design depends on results only: a later budget is
planned once every run of the smaller budgets has a result (or failed for good); runs that other
processes hold are waited for (:func:`wait_for_held`), never planned around. With a ``quality``
section, the models of budgets that have finished are sampled and scored by local workers that the
last runs leave idle (:class:`~ditscale.study.quality.EarlyScoring`), the rest by the quality stage;
once every run has trained, the loss laws are fitted in this process while the workers score the last
models (:class:`FitAhead`), and the analysis reuses those fits.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ditscale.config import from_dict
from ditscale.data import DataConfig, dataset_info
from ditscale.errors import WARNING, ConfigError, DataError
from ditscale.laws.draws import DrawStore
from ditscale.laws.parallel import at_most
from ditscale.study.analyze import analyze_study, prefit_study
from ditscale.study.executor import RunTask, TrunkTask, config_sha, execute_run  # noqa: F401  (public here too)
from ditscale.study.folder import RUNS_CSV_COLUMNS, StudyFolder  # noqa: F401
from ditscale.study.launchers import make_launcher
from ditscale.study.locks import RunLock
from ditscale.study.plan import PlannedRun, interval_warning, run_config
from ditscale.study.quality import EarlyScoring, QualityTask, run_quality
from ditscale.study.replan import all_runs, current_plan, folder_plan
from ditscale.study.spec import StudySpec
from ditscale.train.rundir import RunDir


# Seconds between looks at runs held by other processes, while a stage waits for them (wait_for_held).
HELD_POLL_S = 10.0
# A study run call this long (seconds) reads the machine's matmul peak again after training and keeps
# the higher reading (the first can be low when the machine was busy at the start); shorter calls
# keep their first reading rather than spend another second on it.
SECOND_PEAK_AFTER_S = 60.0


@dataclasses.dataclass
class StudyOutcome:
    """What one ``run_study`` call did.

    ``complete``: every planned run has a result (or failed for good); ``laws``: the laws.json dict
    when the study was fitted; ``wall_s``: seconds this call took.
    """

    complete: bool
    trained: list[str]
    skipped: list[str]
    failed: list[str]
    busy: list[str]
    remaining: int
    laws: dict | None
    wall_s: float


def task_for(spec: StudySpec, out_dir: str | Path, run: PlannedRun, threads: int = 1) -> RunTask:
    """The :class:`RunTask` of a planned run of study folder ``out_dir`` (``threads`` 0: leave torch's)."""
    cfg = run_config(spec, run).to_dict()
    return RunTask(
        run_id=run.run_id,
        run_dir=str(StudyFolder(out_dir).run(run.run_id).root),
        config=cfg,
        config_sha=config_sha(cfg),
        flops=run.flops_exact,
        threads=threads,
    )


def collect_runs(out_dir: str | Path) -> list[dict]:
    """Write ``DIR/runs.csv`` from the finished runs of ``plan.csv``; returns its rows
    (columns :data:`~ditscale.study.folder.RUNS_CSV_COLUMNS`)."""
    folder = StudyFolder(out_dir)
    rows = folder.finished_rows(all_runs(folder.read_plan()))
    folder.write_runs_csv(rows)
    return rows


# -- the study loop -------------------------------------------------------------------------------
def run_study(
    spec: StudySpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    launcher: str = "local",
    slurm=None,
    max_runs: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    report: bool = True,
    echo: Callable[[str], None] = print,
    threads: int | None = None,
    measure_peak: bool = True,
) -> StudyOutcome:
    """Run (or continue) the study ``spec`` in ``out_dir``; see the module docstring.

    Args:
        workers: local worker processes (default ``spec.workers``; 0 trains in this process).
        launcher: "local" or "slurm" (``slurm``: :class:`~ditscale.study.launchers.SlurmOptions`).
        max_runs: train at most this many runs in this call, then stop (the rest on the next call).
        retry_failed: train again runs that failed before (``failed.json``).
        report: write laws.json and report.html once every run is finished.
        threads: torch threads of each local run (default: the cores shared by the workers).
        measure_peak: read the machine's matmul peak for laws.json's ``study_mfu`` (False: a folder
            that is never fitted, such as a pilot's round; wall.json then records no peak).
    """
    t0 = time.time()
    folder = prepare_folder(spec, out_dir)
    peak = machine_matmul_peak() if measure_peak else None
    ahead = FitAhead(spec, folder, echo) if report and spec.quality else None
    runner = make_launcher(launcher, spec.workers if workers is None else workers, slurm, folder.slurm_dir, threads)
    tally = Tally(spec.name, progress, echo)
    finished = Finished(tally, echo)
    left = math.inf if max_runs is None else max_runs
    if interval_warning(spec):
        echo(f"{WARNING} {interval_warning(spec)}")
    try:
        stages = _stages(spec)
        for i, stage in enumerate(stages):
            runs = plan_stage(spec, folder, stage, echo)
            if runs is None:  # earlier budgets unfinished: later grids are planned only from results
                break
            pending = stage_tasks(spec, folder, runs, runner.threads, retry_failed, tally)
            tasks = _at_most(pending, left)
            left -= sum(len(_run_ids(t)) for t in tasks)
            if tasks:
                tally.submit(tasks)
                last = i + 1 == len(stages) and len(tasks) == len(pending)  # the call trains to the end
                runner.run(tasks, finished, more=_more(spec, folder, runs, runner, finished, ahead) if last else None)
            if left <= 0 or len(tasks) < len(pending):  # --max-runs reached
                break
            if i + 1 < len(stages):  # (adaptive) the next budget is centred on this stage's results: wait for them
                wait_for_held(spec, folder, runs, runner, tally)
    finally:
        tally.close()
        runner.close()
    if measure_peak and time.time() - t0 >= SECOND_PEAK_AFTER_S:  # one short reading can be low: take another
        peak = max((p for p in (peak, machine_matmul_peak()) if p is not None), default=None)
    return finish_study(spec, folder, tally, t0, peak, report, echo, finished.quality_tail_s(), ahead)


def machine_matmul_peak() -> float | None:
    """The peak FLOP/s laws.json's ``study_mfu`` divides by: on a CPU the fp32 matmul rate of all its
    cores (torch's default threads, a 2048^3 product for a second), measured before each ``study run``
    call's training and, when it lasted :data:`SECOND_PEAK_AFTER_S` or more, after it (the higher
    kept); on a GPU its dense bf16 figure by name (None
    for an unknown GPU)."""
    import torch  # lazy: torch (and train.metrics, which imports it) only in a call that trains

    from ditscale.train.metrics import gpu_peak_flops, measure_matmul_peak  # lazy: torch (train.metrics)

    if torch.cuda.is_available():
        return gpu_peak_flops(torch.cuda.get_device_name())
    return measure_matmul_peak(size=2048, seconds=1.0, cached=False)  # a fresh reading each time: they can differ


def prepare_folder(spec: StudySpec, out_dir: str | Path) -> StudyFolder:
    """Create the study folder and write the spec as run, once the spec is accepted: a spec under
    which a run already started in the folder would train differently is refused before anything
    is written (so spec.yaml keeps describing the runs)."""
    folder = StudyFolder(out_dir)
    check_trainable(spec)
    check_started_runs(spec, folder)
    check_plans_runs(spec, folder)
    folder.create()
    folder.write_spec(spec)
    return folder


def check_trainable(spec: StudySpec) -> None:
    """Refuse, before anything is written, what would fail every run: a text-conditional family
    without a text encoder to condition on, data that cannot be read (no ``data.path``, a latent
    store not extracted: ``study plan`` plans from the declared shapes, a run cannot)."""
    if spec.family.model.get("conditioning") == "text" and not spec.train.get("text_encoder"):
        raise ConfigError(
            "the family conditions on text (family.model.conditioning: text) but no text encoder is "
            "set; give one with --set train.text_encoder=PATH (a Hugging Face encoder folder) or word"
        )
    dataset_info(from_dict(DataConfig, spec.data, where="data"))  # raises what the runs would


def check_plans_runs(spec: StudySpec, folder: StudyFolder) -> None:
    """Refuse, before the folder is created, a new study whose plan holds no run at all (every run
    dropped, e.g. for fewer than ``min_steps`` steps): it would create a folder with nothing to train."""
    if folder.plan_csv.is_file():
        return
    plan = current_plan(spec, None)
    if not plan.runs:
        raise ConfigError(
            f"the spec plans no run ({len(plan.dropped)} dropped: fewer than min_steps={spec.min_steps} steps, "
            "or no model of the family fits a budget); raise the budgets, or lower min_steps or the batch size"
        )


def check_started_runs(spec: StudySpec, folder: StudyFolder) -> None:
    """Raise a one-line :class:`ConfigError` if ``spec`` gives a run of ``plan.csv`` that has started
    (its ``study.json``) another TrainConfig than the one it was started with."""
    for run in all_runs(folder.read_plan()):
        folder.run(run.run_id).check_config(run.run_id, task_for(spec, folder.root, run).config_sha)


def _stages(spec: StudySpec) -> list[list[float]]:
    """Budgets planned and trained together: all at once, or (adaptive) the two smallest, then one by one."""
    if not spec.adaptive:
        return [list(spec.budgets)]
    return [spec.budgets[:2]] + [[b] for b in spec.budgets[2:]]


def _at_most(tasks: list, left: float) -> list:
    """The first tasks holding at most ``left`` runs in all (a trunk counts its branches)."""
    out, runs = [], 0
    for task in tasks:
        runs += len(_run_ids(task))
        if runs > left:
            break
        out.append(task)
    return out


def plan_stage(
    spec: StudySpec, folder: StudyFolder, stage: list[float], echo: Callable[[str], None]
) -> list[PlannedRun] | None:
    """Plan the budgets of ``stage`` (warnings echoed), freeze them in ``plan.csv``; return their runs.

    With ``adaptive`` a budget not yet frozen is planned only once every smaller budget is finished
    (each run has a result or failed for good): else None, and nothing is written. So the design
    depends on results alone, never on which runs another process happens to hold.
    """
    frozen = folder.read_plan()
    unplanned = [b for b in stage if b not in frozen]
    if spec.adaptive and unplanned and unfinished_before(spec, folder, frozen, min(unplanned)):
        echo(
            f"budgets from {min(unplanned):.3g} FLOPs not planned yet: smaller budgets have runs without results "
            "(held by other workers, or interrupted); run the same command again once they finish"
        )
        return None
    plan = folder_plan(spec, folder, frozen)
    for w in plan.warnings:
        if w.budget in stage:
            echo(f"{WARNING} {w}")
    runs = [r for r in plan.runs if r.budget in stage]
    keep = [r for b in spec.budgets for r in frozen.get(b, [])] + [r for r in runs if r.budget not in frozen]
    keep.sort(key=lambda r: (r.budget, r.params_non_embedding, r.seed))
    folder.write_plan(keep)
    return runs


def unfinished_before(spec: StudySpec, folder: StudyFolder, frozen: dict, budget: float) -> bool:
    """True when a budget of ``spec`` below ``budget`` (FLOPs) is not planned yet, or has a run
    without a result that did not fail for good."""
    if any(b < budget and b not in frozen for b in spec.budgets):
        return True
    return any(
        folder.run(r.run_id).valid_result() is None and not folder.run(r.run_id).failed()
        for b, runs in frozen.items()
        if b < budget
        for r in runs
    )


def wait_for_held(spec: StudySpec, folder: StudyFolder, runs: list[PlannedRun], runner, tally: "Tally") -> None:
    """Wait until no run of ``runs`` is held by another process (``tally.busy``). Their locks are
    looked at every :data:`HELD_POLL_S` seconds (no job is launched for a run still held); a run
    whose lock is free or stale (its holder died) is trained here. Runs that failed or crashed in
    this call are not retried (the next stage is then not planned)."""
    told = False
    while True:
        busy = set(tally.busy)
        tasks = [t for t in stage_tasks(spec, folder, runs, runner.threads, False, None) if busy & set(_run_ids(t))]
        waiting = {run_id for t in tasks for run_id in _run_ids(t)}
        for run_id in busy & {r.run_id for r in runs} - waiting:  # finished or failed by their holder
            done = folder.run(run_id).valid_result() is not None
            tally.resolve(run_id, "done" if done else "failed: in another worker")
        if not tasks:
            return
        free = [t for t in tasks if not _held_elsewhere(t)]
        if free:
            runner.run(free, tally.on_retry)
            continue
        if not told:
            tally.echo(
                f"waiting for {len(waiting)} run(s) held by other workers: the next budgets are planned "
                "from their results"
            )
            told = True
        time.sleep(HELD_POLL_S)


def _held_elsewhere(task: RunTask | TrunkTask) -> bool:
    """True when a lock the task needs (its run's, or its trunk's and its branches') is held by a live process."""
    branches = task.branches if isinstance(task, TrunkTask) else (task,)
    paths = [RunDir(t.run_dir).lock for t in branches]
    if isinstance(task, TrunkTask):
        paths.append(RunDir(task.trunk_dir).lock)
    return any(lock.path.exists() and not lock.is_stale() for lock in map(RunLock, paths))


def stage_tasks(
    spec: StudySpec,
    folder: StudyFolder,
    runs: list[PlannedRun],
    threads: int,
    retry_failed: bool,
    tally: "Tally | None",
) -> list[RunTask]:
    """Tasks of the ``runs`` still to train, longest first (most steps, then most FLOPs) so the
    short runs fill the gaps at the end; runs done or failed before are tallied instead (if ``tally``)."""
    tasks = []
    for run in runs:
        task = task_for(spec, folder.root, run, threads)
        run_dir = folder.run(run.run_id)
        run_dir.check_config(run.run_id, task.config_sha)
        if run_dir.valid_result() is not None:
            if tally is not None:
                tally.skipped.append(run.run_id)
        elif run_dir.failed() and not retry_failed:
            if tally is not None:
                tally.failed.append(run.run_id)
        else:
            tasks.append(task)
    steps = {r.run_id: r.steps for r in runs}
    tasks.sort(key=lambda t: (-steps[t.run_id], -t.flops))
    return trunk_tasks(folder, runs, tasks, threads) if spec.share_trunks else tasks


def trunk_tasks(folder: StudyFolder, runs: list[PlannedRun], tasks: list[RunTask], threads: int) -> list:
    """The runs of one model (rung, seed and batch) as one :class:`TrunkTask` when two or more of
    them train now or its trunk already exists (a later budget extends it); others stay alone.
    Largest first, so the short tasks fill the gaps at the end."""
    planned = {r.run_id: r for r in runs}
    groups: dict[str, list[RunTask]] = {}
    for t in tasks:
        r = planned[t.run_id]
        groups.setdefault(f"d{r.depth}w{r.hidden_size}h{r.num_heads}-b{r.batch_size}-s{r.seed}", []).append(t)
    out: list = []
    for trunk_id, group in groups.items():
        trunk_dir = folder.trunk_dir(trunk_id)
        if len(group) == 1 and not trunk_dir.is_dir():
            out.extend(group)
            continue
        group.sort(key=lambda t: t.flops)
        out.append(
            TrunkTask(
                trunk_id=trunk_id,
                trunk_dir=str(trunk_dir),
                branches=tuple(group),
                flops=group[-1].flops,
                threads=threads,
            )
        )
    return sorted(out, key=lambda t: -t.flops)


def finish_study(
    spec: StudySpec,
    folder: StudyFolder,
    tally: "Tally",
    t0: float,
    peak: float | None,
    report: bool,
    echo: Callable[[str], None],
    scored_after_training_s: float = 0.0,
    ahead: "FitAhead | None" = None,
) -> StudyOutcome:
    """Write ``runs.csv`` and ``wall.json``; fit and report once every run is finished.

    ``scored_after_training_s``: seconds the workers went on scoring models after the last run had
    trained (:class:`~ditscale.study.quality.EarlyScoring`), counted in the quality stage's time;
    ``ahead``: the loss-law fits made while they scored (:class:`FitAhead`), which the analysis waits
    for (its seconds count from then) and reuses."""
    frozen = folder.read_plan()
    planned = all_runs(frozen)
    rows = folder.finished_rows(planned)
    failed_for_good = {r.run_id for r in planned if folder.run(r.run_id).failed()}
    remaining = len(folder_plan(spec, folder, frozen, rows).runs) - len(rows) - len(failed_for_good)
    complete = remaining <= 0
    folder.write_runs_csv(rows)
    t_quality = time.time()
    try:
        scored = _quality_stage(spec, folder, complete, tally.progress, echo)
    finally:  # this call's wall time is kept even when the quality stage fails
        quality_s = time.time() - t_quality + scored_after_training_s if complete and spec.quality is not None else 0.0
        folder.add_wall(time.time() - t0, peak, quality_s)
    laws = None
    fitting, draws = time.monotonic(), ahead.draws() if ahead is not None else None
    if complete and report and (tally.trained or scored or not folder.laws_json.exists()):
        laws = analyze_study(folder.root, spec, draws=draws, started=fitting)
    elif complete and folder.laws_json.exists():
        laws = _read_or_refit_laws(spec, folder, report, echo)
    elif not complete:
        echo(f"{remaining} run(s) not finished; run the same command again to continue")
    return StudyOutcome(
        complete, tally.trained, tally.skipped, tally.failed, tally.busy, remaining, laws, time.time() - t0
    )


def _read_or_refit_laws(spec: StudySpec, folder: StudyFolder, report: bool, echo: Callable[[str], None]) -> dict | None:
    """laws.json; when it is damaged, reported and (``report``) rebuilt by refitting the runs."""
    try:
        return folder.read_laws()
    except DataError as err:
        echo(f"{WARNING} {err}")
        if not report:
            return None
    echo(f"{WARNING} rebuilding {folder.laws_json} from the runs")
    return analyze_study(folder.root, spec)


def _quality_stage(
    spec: StudySpec, folder: StudyFolder, complete: bool, progress: bool, echo: Callable[[str], None]
) -> int:
    """Sample and score the study's models once every run is finished (``spec.quality``): the
    number of models newly scored."""
    if not complete or spec.quality is None:
        return 0
    return run_quality(spec, folder.root, progress=progress, echo=echo)


# -- the loss laws fitted while the last models are scored -----------------------------------------
class FitAhead:
    """Fits the loss laws in a thread of this process once every run of the study has trained, while
    the workers score the last models (:func:`~ditscale.study.analyze.prefit_study`: the bootstraps,
    Approach 3 and the noise frame, none of which sample quality enters); at the end of the training
    one worker scores the top budget's model and the other core would idle, so the refits run
    serially here (:func:`~ditscale.laws.parallel.at_most` 1) rather than on a pool that would slow
    the scoring. :meth:`draws` hands the
    analysis what was drawn, so it reuses the fits instead of making them again (the same numbers).
    A fit that fails here is echoed once and left to the analysis, which meets it again."""

    def __init__(self, spec: StudySpec, folder: StudyFolder, echo: Callable[[str], None]):
        self.spec, self.folder, self.echo = spec, folder, echo
        self.store: DrawStore | None = None
        self.thread: threading.Thread | None = None
        self.asked = False

    def start(self) -> None:
        """Start the fits if every planned run has its result (asked once, when the training is over)."""
        if self.asked:
            return
        self.asked = True
        frozen = self.folder.read_plan()
        rows = self.folder.finished_rows(all_runs(frozen))
        if len(folder_plan(self.spec, self.folder, frozen, rows).runs) != len(rows):
            return  # runs failed or left for another call: the analysis waits for them
        self.folder.write_runs_csv(rows)
        self.echo("laws: every run has trained; fitting the loss laws while the last models are scored")
        self.store = DrawStore()
        self.thread = threading.Thread(target=self._fit, name="ditscale-fit-ahead", daemon=True)
        self.thread.start()

    def _fit(self) -> None:
        try:
            with at_most(1):  # the one core the scoring worker leaves: serial refits in this thread
                prefit_study(self.folder.root, self.spec, self.store)
        except Exception as err:  # the analysis fits again and reports it there
            self.store = None
            self.echo(
                f"{WARNING} fitting the laws beside the scoring failed ({type(err).__name__}: {err}); fitting after it"
            )

    def draws(self) -> DrawStore | None:
        """The draws made ahead once the fits are done (None when none started or they failed)."""
        if self.thread is None:
            return None
        self.thread.join()
        return self.store


def _more(spec: StudySpec, folder: StudyFolder, runs: list, runner, finished: "Finished", ahead) -> Callable | None:
    """The launcher's ``more`` for the stage that trains the study to the end (None without a quality
    section): the quality jobs of its finished budgets (:class:`~ditscale.study.quality.EarlyScoring`)
    and, once its training tasks have all finished, the fits made ``ahead`` (:class:`FitAhead`)."""
    if spec.quality is None:
        return None
    early, tally = EarlyScoring(spec, folder, runs, runner.threads, finished.echo), finished.tally

    def more() -> list:
        found = early.more()
        if ahead is not None and tally.done >= tally.submitted:  # every run submitted has its outcome
            ahead.start()
        return found

    return more


# -- what happened to each run, and the progress bar ----------------------------------------------
class Finished:
    """``on_done`` of the launcher: a run's or trunk's outcome goes to the tally; a quality task's
    (:class:`~ditscale.study.quality.QualityTask`) score is echoed, or its failure as a warning (the
    quality stage tries it again). Remembers when the last of each finished, to split the wall time."""

    def __init__(self, tally: "Tally", echo: Callable[[str], None]):
        self.tally, self.echo = tally, echo
        self.trained_at = self.scored_at = 0.0

    def __call__(self, task, outcome: str | dict[str, str]) -> None:
        if isinstance(task, QualityTask):
            self.scored_at = time.time()
            if isinstance(outcome, str) and outcome.startswith("scored: "):
                self.echo(f"quality: {task.run['run_id']}: {outcome.removeprefix('scored: ')} (on a worker)")
            else:
                self.echo(f"{WARNING} {task.run_id}: {outcome}; the quality stage scores it again")
            return
        self.trained_at = time.time()
        self.tally.on_done(task, outcome)

    def quality_tail_s(self) -> float:
        """Seconds from the last run trained to the last model scored after it (0 when none was)."""
        return max(0.0, self.scored_at - self.trained_at) if self.trained_at else 0.0


class Tally:
    """The runs trained, skipped, failed and taken by others, and a tqdm bar that advances by
    each run's FLOPs (so the ETA weighs runs by their cost) and counts runs."""

    def __init__(self, name: str, progress: bool, echo: Callable[[str], None]):
        self.name, self.progress, self.echo = name, progress, echo
        self.trained: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[str] = []
        self.busy: list[str] = []
        self.submitted = self.done = 0
        self.bar = None

    def submit(self, tasks: list) -> None:
        if self.bar is None and self.progress:
            self.bar = tqdm(
                total=0, dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"
            )
        self.submitted += sum(len(_run_ids(t)) for t in tasks)
        if self.bar is not None:
            self.bar.total += sum(t.flops for t in tasks)
            self.bar.set_description_str(self._label())

    def on_done(self, task, outcome: str | dict[str, str]) -> None:
        """Record a task's outcome: one for a run, ``{run_id: outcome}`` for a trunk (a string for a
        trunk whose job failed as a whole: every branch gets it)."""
        outcomes = outcome if isinstance(outcome, dict) else {run_id: outcome for run_id in _run_ids(task)}
        for run_id in _run_ids(task):
            self._record(run_id, outcomes.get(run_id, "busy"))
        if self.bar is not None:
            self.bar.set_description_str(self._label(), refresh=False)
            self.bar.update(task.flops)

    def on_retry(self, task, outcome: str | dict[str, str]) -> None:
        """Record the outcome of a task retried while waiting for runs held by others (each of its
        runs was recorded "busy" before; it stays so while still held)."""
        outcomes = outcome if isinstance(outcome, dict) else {run_id: outcome for run_id in _run_ids(task)}
        for run_id in _run_ids(task):
            self.resolve(run_id, outcomes.get(run_id, "busy"))

    def resolve(self, run_id: str, outcome: str) -> None:
        """Replace the "busy" recorded for ``run_id`` by ``outcome`` (nothing while it is still busy)."""
        if outcome != "busy" and run_id in self.busy:
            self.busy.remove(run_id)
            self.done -= 1
            self._record(run_id, outcome)

    def _record(self, run_id: str, outcome: str) -> None:
        self.done += 1
        if outcome == "trained":
            self.trained.append(run_id)
        elif outcome == "done":
            self.skipped.append(run_id)
        elif outcome == "busy":
            self.busy.append(run_id)
        else:
            self.failed.append(run_id)
            self.echo(f"{WARNING} run {run_id} {outcome}")

    def _label(self) -> str:
        return f"study {self.name}: {self.done}/{self.submitted} runs"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_ids(task) -> list[str]:
    return [t.run_id for t in task.branches] if isinstance(task, TrunkTask) else [task.run_id]
