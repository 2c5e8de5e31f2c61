"""Execute a study: plan, train every run once, collect ``runs.csv``, fit, report.

Folder layout (``DIR``)::

    spec.yaml            the spec, as run
    plan.csv             the planned runs; a budget's rows are frozen once it starts
    runs/<run_id>/       one training run folder each (``ditscale.train``): result.json, checkpoints, ...
        study.json       the SHA-256 of its TrainConfig (resume-safe keys left out) and its CPU seconds
        run.lock         held while a worker trains it (see :mod:`ditscale.study.locks`)
        failed.json      why it failed (a later ``study run --retry-failed`` tries again)
    runs.csv             one row per finished run (flops, params, tokens, loss, budget, run_id, seed)
    laws.json, report.html, *.png

Idempotent and resumable: a run with a valid ``result.json`` is never trained again; a run
stopped midway resumes from its own last checkpoint; a study stopped midway continues with the
runs not done. Budgets run from the smallest up: with ``adaptive`` the two smallest run first
(centred on the prior), every later budget is centred from the budgets done (``analyze.fit_so_far``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import yaml

from ditscale.errors import ConfigError, DitscaleError
from ditscale.io import atomic_write_json, atomic_write_text
from ditscale.study.launchers import LocalLauncher, RunTask, SlurmLauncher, threads_per_worker
from ditscale.study.plan import Plan, PlannedRun, fmt_flops, make_plan, read_plan_csv, train_config
from ditscale.study.spec import StudySpec

RUNS_CSV_COLUMNS = ["run_id", "budget", "seed", "role", "depth", "hidden_size", "num_heads", "params",
                    "params_total", "tokens", "images", "steps", "flops", "flops_6nd", "loss", "wall_s", "cpu_s"]


# -- one run --------------------------------------------------------------------------------------
def config_sha(config: dict) -> str:
    """SHA-256 of a run's TrainConfig dict (key order independent), without the keys a run may
    change when it resumes (``ditscale.train.loop.RESUME_SAFE_KEYS``: logging, checkpointing, ...)."""
    from ditscale.train.loop import RESUME_SAFE_KEYS

    flat = {}

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(config)
    kept = {k: v for k, v in flat.items() if k not in RESUME_SAFE_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def load_result(run_dir: str | Path) -> dict | None:
    """The run's ``result.json`` if it is complete and valid (finite val_loss and flops), else None."""
    try:
        res = json.loads((Path(run_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or res.get("status", "done") != "done":
        return None
    loss, flops = res.get("val_loss"), res.get("flops_exact")
    if not isinstance(loss, (int, float)) or not math.isfinite(loss) or not isinstance(flops, (int, float)) or flops <= 0:
        return None
    return res


def check_run_dir(run_dir: Path, run_id: str, sha: str) -> None:
    """Raise :class:`ConfigError` if ``run_dir`` belongs to a run planned with another config."""
    try:
        old = json.loads((run_dir / "study.json").read_text())
    except (OSError, ValueError):
        return
    if old.get("config_sha") != sha:
        raise ConfigError(
            f"run {run_id} in {run_dir.parent.parent} was trained with a different config (the spec changed); "
            f"use a new --out folder or delete {run_dir}"
        )


def execute_run(task: RunTask, main_rank: bool = True) -> str:
    """Train one run unless it is done or taken. Returns "done", "trained", "busy" or "failed: ...".

    Safe to call from several processes or hosts at once: the run's lock file decides who trains.
    Only ``main_rank`` takes the lock in a multi-process (torchrun) job.
    """
    from ditscale.study.locks import RunLock

    run_dir = Path(task.run_dir)
    if load_result(run_dir) is not None:
        return "done"
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir / "run.lock")
    if main_rank and not lock.acquire():
        return "busy"
    try:
        if load_result(run_dir) is not None:  # finished by another worker just before we took the lock
            return "done"
        check_run_dir(run_dir, task.run_id, task.config_sha)
        if main_rank:
            atomic_write_json(run_dir / "study.json", {"run_id": task.run_id, "config_sha": task.config_sha})
            (run_dir / "failed.json").unlink(missing_ok=True)
        import torch

        from ditscale.config import from_dict
        from ditscale.train import train
        from ditscale.train.config import TrainConfig

        if task.threads > 0:
            torch.set_num_threads(task.threads)
        cfg = from_dict(TrainConfig, task.config, where=f"run {task.run_id}")
        cpu0 = time.process_time()
        try:
            train(cfg, run_dir, progress=False)
        except DitscaleError as err:
            if main_rank:
                atomic_write_json(run_dir / "failed.json", {"run_id": task.run_id, "error": str(err), "time": time.time()})
            return f"failed: {err}"
        if main_rank:  # CPU seconds (all threads) of the call that finished the run: its cost on an idle machine
            atomic_write_json(run_dir / "study.json", {"run_id": task.run_id, "config_sha": task.config_sha,
                                                      "cpu_s": round(time.process_time() - cpu0, 3)})
        return "trained"
    finally:
        if main_rank:
            lock.release()


# -- the plan of a study folder -------------------------------------------------------------------
def _row_to_run(row: dict) -> PlannedRun:
    names = [f.name for f in dataclasses.fields(PlannedRun)]
    kw = {k: row[k] for k in names}
    for k in ("run_id", "role", "centre"):
        kw[k] = str(kw[k])
    for k in ("budget", "lr", "flops_exact", "flops_6nd", "n_opt"):
        kw[k] = float(kw[k])
    return PlannedRun(**kw)


def frozen_runs(out_dir: Path) -> dict[float, list[PlannedRun]]:
    """Rows of ``DIR/plan.csv`` by budget (budgets whose runs were already launched)."""
    path = out_dir / "plan.csv"
    if not path.is_file():
        return {}
    out: dict[float, list[PlannedRun]] = {}
    for row in read_plan_csv(path.read_text()):
        run = _row_to_run(row)
        out.setdefault(run.budget, []).append(run)
    return out


def fitted_centres(spec: StudySpec, out_dir: Path, budgets: list[float]) -> dict[float, tuple[float, str]]:
    """``{budget: (N*, "fit")}`` from the study's finished budgets (needs 2; see ``analyze.fit_so_far``)."""
    from ditscale.study.analyze import fit_so_far

    centre = fit_so_far(spec, out_dir)
    if centre is None:
        return {}
    return {b: (float(centre(b)), "fit") for b in budgets}


def current_plan(spec: StudySpec, out_dir: str | Path | None = None) -> Plan:
    """The study's plan: frozen rows of budgets already started in ``out_dir``, the others centred
    on the law fitted to the finished budgets (``spec.adaptive``) or on the prior."""
    if out_dir is None or not Path(out_dir).is_dir():
        return make_plan(spec)
    out_dir = Path(out_dir)
    frozen = frozen_runs(out_dir)
    todo = [b for b in spec.budgets if b not in frozen]
    centres = fitted_centres(spec, out_dir, todo) if (spec.adaptive and todo) else {}
    fresh = make_plan(spec, centres)
    runs = []
    for b in spec.budgets:
        runs.extend(frozen[b] if b in frozen else [r for r in fresh.runs if r.budget == b])
    labels = {f"budget {fmt_flops(b)}:" for b in todo}
    warnings = [w for w in fresh.warnings if any(w.startswith(l) for l in labels)]
    return Plan(runs=runs, warnings=warnings, dropped=[r for r in fresh.dropped if r.budget in todo])


def _write_plan(out_dir: Path, runs: list[PlannedRun]) -> None:
    atomic_write_text(out_dir / "plan.csv", Plan(runs=runs, warnings=[], dropped=[]).to_csv())


def task_for(spec: StudySpec, out_dir: Path, run: PlannedRun, threads: int = 1) -> RunTask:
    """The :class:`RunTask` of a planned run of study folder ``out_dir`` (``threads`` 0: leave torch's)."""
    cfg = train_config(spec, (run.depth, run.hidden_size, run.num_heads), budget=run.budget,
                       batch_size=run.batch_size, steps=run.steps, seed=run.seed).to_dict()
    return RunTask(run_id=run.run_id, run_dir=str(out_dir / "runs" / run.run_id), config=cfg,
                   config_sha=config_sha(cfg), flops=run.flops_exact, threads=threads)


# -- collect ---------------------------------------------------------------------------------------
def collect_runs(out_dir: str | Path) -> list[dict]:
    """Write ``DIR/runs.csv`` from the finished runs of ``plan.csv``; returns its rows.

    Columns: run_id, budget (FLOPs), seed, role, depth, hidden_size, num_heads, params (non-embedding
    N), params_total, tokens (image tokens seen, D), images, steps, flops (exact training FLOPs),
    flops_6nd, loss (the run's validation loss), wall_s (training wall time, seconds), cpu_s (CPU
    seconds of the worker process while it trained).
    """
    import csv
    import io

    out_dir = Path(out_dir)
    rows = []
    for runs in frozen_runs(out_dir).values():
        for run in runs:
            res = load_result(out_dir / "runs" / run.run_id)
            if res is None:
                continue
            try:
                cpu = json.loads((out_dir / "runs" / run.run_id / "study.json").read_text()).get("cpu_s", "")
            except (OSError, ValueError):
                cpu = ""
            rows.append({
                "run_id": run.run_id, "budget": run.budget, "seed": run.seed, "role": run.role, "depth": run.depth,
                "hidden_size": run.hidden_size, "num_heads": run.num_heads,
                "params": res.get("params_non_embedding", run.params_non_embedding),
                "params_total": res.get("params", run.params), "tokens": res.get("tokens", run.tokens),
                "images": res.get("images", run.images), "steps": res.get("steps", run.steps),
                "flops": res["flops_exact"], "flops_6nd": res.get("flops_6nd", run.flops_6nd),
                "loss": res["val_loss"], "wall_s": res.get("wall_time_s", ""), "cpu_s": cpu,
            })
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUNS_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "runs.csv", buf.getvalue())
    return rows


# -- the study -------------------------------------------------------------------------------------
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


def _stages(spec: StudySpec) -> list[list[float]]:
    if not spec.adaptive:
        return [list(spec.budgets)]
    return [spec.budgets[:2]] + [[b] for b in spec.budgets[2:]]


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
) -> StudyOutcome:
    """Run (or continue) the study ``spec`` in ``out_dir``; see the module docstring.

    Args:
        workers: local worker processes (default ``spec.workers``; 0 trains in this process).
        launcher: "local" or "slurm" (``slurm``: :class:`~ditscale.study.launchers.SlurmOptions`).
        max_runs: train at most this many runs in this call, then stop (the rest on the next call).
        retry_failed: train again runs that failed before (``failed.json``).
        report: write laws.json and report.html once every run is finished.
    """
    from tqdm import tqdm

    t0 = time.time()
    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    workers = spec.workers if workers is None else workers
    if launcher == "local":
        runner = LocalLauncher(workers)
        threads = threads_per_worker(workers) if workers else 0  # 0: leave this process's setting alone
    elif launcher == "slurm":
        runner = SlurmLauncher(out / "slurm", slurm)
        threads = getattr(slurm, "cpus_per_task", 1) or 1
    else:
        raise ConfigError(f"unknown launcher {launcher!r}; choose local or slurm")

    trained, skipped, failed, busy = [], [], [], []
    budget_left = math.inf if max_runs is None else max_runs
    bar = None
    submitted, n_done = [0], [0]
    try:
        for stage in _stages(spec):
            plan = current_plan(spec, out)
            frozen = frozen_runs(out)
            stage_runs = [r for r in plan.runs if r.budget in stage]
            for w in plan.warnings:
                if any(w.startswith(f"budget {fmt_flops(b)}:") for b in stage):
                    echo(f"warning: {w}")
            all_runs = [r for b in spec.budgets for r in (frozen.get(b) or [])] + \
                [r for r in stage_runs if r.budget not in frozen]
            all_runs.sort(key=lambda r: (r.budget, r.params_non_embedding, r.seed))
            _write_plan(out, all_runs)
            tasks = []
            for run in stage_runs:
                task = task_for(spec, out, run, threads)
                run_dir = Path(task.run_dir)
                check_run_dir(run_dir, run.run_id, task.config_sha)
                if load_result(run_dir) is not None:
                    skipped.append(run.run_id)
                elif (run_dir / "failed.json").exists() and not retry_failed:
                    failed.append(run.run_id)
                else:
                    tasks.append(task)
            # longest first (most steps, then most FLOPs) so the short runs fill the gaps at the end
            steps = {r.run_id: r.steps for r in stage_runs}
            tasks.sort(key=lambda t: (-steps[t.run_id], -t.flops))
            if budget_left < len(tasks):
                tasks = tasks[: int(budget_left)]
            if not tasks:
                continue
            budget_left -= len(tasks)
            # the bar advances by each run's FLOPs (so the ETA weighs runs by their cost) and counts runs
            if bar is None and progress:
                bar = tqdm(total=0, dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
            submitted[0] += len(tasks)
            if bar is not None:
                bar.total += sum(t.flops for t in tasks)
                bar.set_description_str(f"study {spec.name}: {n_done[0]}/{submitted[0]} runs")

            def on_done(task: RunTask, outcome: str) -> None:
                n_done[0] += 1
                if outcome == "trained":
                    trained.append(task.run_id)
                elif outcome == "done":
                    skipped.append(task.run_id)
                elif outcome == "busy":
                    busy.append(task.run_id)
                else:
                    failed.append(task.run_id)
                    echo(f"warning: run {task.run_id} {outcome}")
                if bar is not None:
                    bar.set_description_str(f"study {spec.name}: {n_done[0]}/{submitted[0]} runs", refresh=False)
                    bar.update(task.flops)

            runner.run(tasks, on_done)
            if budget_left <= 0:
                break
    finally:
        if bar is not None:
            bar.close()
        runner.close()

    planned = [r for runs in frozen_runs(out).values() for r in runs]
    finished = {r.run_id for r in planned if load_result(out / "runs" / r.run_id) is not None}
    failed_for_good = {r.run_id for r in planned if (out / "runs" / r.run_id / "failed.json").exists()}
    n_planned_total = len(current_plan(spec, out).runs)
    remaining = n_planned_total - len(finished) - len(failed_for_good)
    complete = remaining <= 0
    collect_runs(out)
    laws = None
    wall = time.time() - t0
    _add_wall(out, wall)
    if complete and report and (trained or not (out / "laws.json").exists()):
        from ditscale.study.analyze import analyze_study

        laws = analyze_study(out, spec)
    elif complete and (out / "laws.json").exists():
        laws = json.loads((out / "laws.json").read_text())
    elif not complete:
        echo(f"{remaining} run(s) not finished; run the same command again to continue")
    return StudyOutcome(complete, trained, skipped, failed, busy, remaining, laws, time.time() - t0)


def _add_wall(out: Path, seconds: float) -> None:
    """Accumulate the wall time of every ``study run`` call in ``DIR/wall.json`` (seconds)."""
    path = out / "wall.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {"calls": []}
    data["calls"].append({"wall_s": round(seconds, 3), "host": os.uname().nodename, "time": time.time()})
    data["total_s"] = round(sum(c["wall_s"] for c in data["calls"]), 3)
    atomic_write_json(out / "wall.json", data)
