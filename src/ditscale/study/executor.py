"""Execute one run of a study: train it unless it is done or another worker holds it.

A :class:`RunTask` is all a worker needs (picklable: launchers send it to other processes and
hosts): the run's folder, its TrainConfig as a dict, the config's hash and the torch threads to use.
Torch and the training loop are imported only when a run actually trains.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from ditscale.errors import DitscaleError
from ditscale.study.folder import StudyRunDir
from ditscale.study.locks import RunLock
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
        return _train(task, run, main_rank)
    finally:
        if main_rank:
            lock.release()


def _train(task: RunTask, run: StudyRunDir, main_rank: bool) -> str:
    """Train the run in this process (resuming from its last checkpoint); record failure or CPU time."""
    import torch

    from ditscale.config import from_dict
    from ditscale.train import train
    from ditscale.train.config import TrainConfig

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
