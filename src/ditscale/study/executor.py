"""Execute one task of a study: a run, a shared trunk and the runs that branch off it, or the
sampling and scoring of a finished budget's chosen model while other runs train.

A :class:`RunTask` is all a worker needs (picklable: launchers send it to other processes and
hosts): the run's folder, its TrainConfig as a dict, the config's hash and the torch threads to use.
A :class:`TrunkTask` holds the RunTasks of the runs of one model that share a trunk
(``share_trunks``, :mod:`ditscale.train.trunk`). A :class:`~ditscale.study.quality.QualityTask` is one model of the quality
stage (:class:`ditscale.study.quality.EarlyScoring`). Torch and the training loop are imported only
when something actually trains. :func:`execute_task` runs any of them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ditscale.config import from_dict
from ditscale.errors import DitscaleError
from ditscale.study.folder import StudyRunDir
from ditscale.study.locks import RunLock
from ditscale.study.quality import QualityTask, score_one
from ditscale.train.config import TrainConfig
from ditscale.train.rundir import weight_relevant


@dataclass(frozen=True)
class RunTask:
    """One run to execute: its folder, its TrainConfig as a dict, and torch threads to use
    (0: leave the process's setting alone). ``flops``: its exact training FLOPs (progress weight)."""

    run_id: str
    run_dir: str
    config: dict
    config_sha: str
    flops: float
    threads: int = 1


@dataclass(frozen=True)
class TrunkTask:
    """The runs of one model (``branches``, by budget) sharing a trunk trained in ``trunk_dir``.

    ``flops``: the FLOPs it trains (the longest run's; progress weight)."""

    trunk_id: str
    trunk_dir: str
    branches: tuple[RunTask, ...]
    flops: float
    threads: int = 1

    @property
    def run_id(self) -> str:
        return f"trunk {self.trunk_id}"


def execute_task(task: RunTask | TrunkTask | QualityTask) -> str | dict[str, str]:
    """Execute a run (its outcome), a trunk (``{run_id: outcome}`` of its branches) or a quality task
    ("scored: METRIC VALUE", or "failed: ..." where the quality stage will try again)."""
    if isinstance(task, QualityTask):
        return _score(task)
    return execute_trunk(task) if isinstance(task, TrunkTask) else execute_run(task)


def _score(task: QualityTask) -> str:
    if task.threads > 0:
        import torch  # lazy: torch only in a process that works

        torch.set_num_threads(task.threads)
    try:
        return score_one(task.study_dir, task.run)
    except DitscaleError as err:
        return f"failed: {err}"


def config_sha(config: dict) -> str:
    """SHA-256 of a run's TrainConfig dict (key order independent), without the keys a run may
    change when it resumes (:data:`ditscale.train.rundir.RESUME_SAFE_KEYS`: logging, checkpointing, ...)."""
    kept = weight_relevant(config)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def execute_run(task: RunTask, main_rank: bool = True) -> str:
    """Train one run unless it is done or taken. Returns "done", "trained", "busy" or "failed: ...".

    Safe to call from several processes or hosts at once: the run's lock file decides who trains.
    Only ``main_rank`` takes the lock and writes the study's files in a multi-process (torchrun) job.
    Raises :class:`~ditscale.errors.ConfigError` when the folder holds a run with another config.
    """
    run = StudyRunDir(task.run_dir)
    if run.valid_result() is not None:
        return "done"
    run.root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run.lock_path)
    if main_rank and not lock.acquire():
        return "busy"
    try:
        if run.valid_result() is not None:  # finished by another worker just before we took the lock
            return "done"
        run.check_config(task.run_id, task.config_sha)
        if main_rank:
            run.start(task.run_id, task.config_sha)
        return _train_alone(task, run, main_rank)
    finally:
        if main_rank:
            lock.release()


def _train_alone(task: RunTask, run: StudyRunDir, main_rank: bool) -> str:
    """Train the run in this process (resuming from its last checkpoint); record failure or CPU time."""
    import torch  # lazy: torch and the loop load only in a process that trains (planning stays torch-free)

    from ditscale.train import train  # lazy: torch (the loop); planning stays torch-free

    if task.threads > 0:
        torch.set_num_threads(task.threads)
    cfg = from_dict(TrainConfig, task.config, where=f"run {task.run_id}")
    cpu0 = time.process_time()
    try:
        train(cfg, run.root, progress=False)
    except DitscaleError as err:
        if main_rank:
            run.fail(task.run_id, str(err))
        return f"failed: {err}"
    if main_rank:  # CPU seconds (all threads) of the call that finished the run: its cost on an idle machine
        run.finish(task.run_id, task.config_sha, time.process_time() - cpu0)
    return "trained"


def execute_trunk(task: TrunkTask) -> dict[str, str]:
    """Train a trunk and finish its branches; ``{run_id: outcome}`` ("done", "trained", "busy",
    "failed: ...") for each. The trunk's lock and each branch's lock decide who trains what."""
    Path(task.trunk_dir).mkdir(parents=True, exist_ok=True)
    trunk_lock = RunLock(Path(task.trunk_dir) / "run.lock")
    if not trunk_lock.acquire():
        return {t.run_id: "busy" for t in task.branches}
    outcomes, locks, claimed = {}, [], []
    try:
        for t in task.branches:
            run = StudyRunDir(t.run_dir)
            outcome = _claim(t, run, locks)
            if outcome is None:
                claimed.append(t)
            else:
                outcomes[t.run_id] = outcome
        if claimed:
            outcomes.update(_train_trunk(task, claimed))
        return outcomes
    finally:
        for lock in locks:
            lock.release()
        trunk_lock.release()


def _claim(task: RunTask, run: StudyRunDir, locks: list) -> str | None:
    """Take a branch for this trunk (None), or say why not ("done" or "busy")."""
    if run.valid_result() is not None:
        return "done"
    run.root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run.lock_path)
    if not lock.acquire():
        return "busy"
    locks.append(lock)
    if run.valid_result() is not None:  # finished by another worker just before we took the lock
        return "done"
    run.check_config(task.run_id, task.config_sha)
    run.start(task.run_id, task.config_sha)
    return None


def _train_trunk(task: TrunkTask, branches: list[RunTask]) -> dict[str, str]:
    """Train the trunk of ``branches``; the branches it cannot serve train alone. The trunk's CPU
    seconds are shared equally by the branches it served (their ``study.json`` ``cpu_s``)."""
    import torch  # lazy: torch and the loop load only in a process that trains (planning stays torch-free)

    from ditscale.train.trunk import Branch, train_trunk  # lazy: torch (the trunk's loop); planning stays torch-free

    if task.threads > 0:
        torch.set_num_threads(task.threads)
    runs = {t.run_id: StudyRunDir(t.run_dir) for t in branches}
    trunk_branches = [
        Branch(from_dict(TrainConfig, t.config, where=f"run {t.run_id}"), runs[t.run_id]) for t in branches
    ]
    cpu0 = time.process_time()
    try:
        unserved = {b.name for b in train_trunk(task.trunk_dir, trunk_branches)}
    except DitscaleError as err:  # the trunk itself failed: every branch not finished fails with it
        return {t.run_id: _fail(t, runs[t.run_id], str(err)) for t in branches}
    errors = {b.name: b.error for b in trunk_branches if b.error}
    served = [t for t in branches if t.run_id not in unserved and t.run_id not in errors]
    for t in served:
        runs[t.run_id].finish(t.run_id, t.config_sha, (time.process_time() - cpu0) / len(served))
    outcomes = {t.run_id: "trained" for t in served}
    outcomes.update(
        {name: _fail(next(t for t in branches if t.run_id == name), runs[name], err) for name, err in errors.items()}
    )
    outcomes.update({t.run_id: _train_alone(t, runs[t.run_id], True) for t in branches if t.run_id in unserved})
    return outcomes


def _fail(task: RunTask, run: StudyRunDir, error: str) -> str:
    """Record a failed run (``failed.json``), unless it has a valid result after all."""
    if run.valid_result() is not None:
        return "trained"
    run.fail(task.run_id, error)
    return f"failed: {error}"
