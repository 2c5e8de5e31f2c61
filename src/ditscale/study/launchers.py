"""Where a study's runs execute: local worker processes or Slurm jobs through submitit.

A launcher gets a list of tasks (:class:`~ditscale.study.executor.RunTask` or ``TrunkTask``; locally
also the ``QualityTask`` objects ``more()`` hands it while the training runs) and
calls ``on_done(task, outcome)`` as each finishes, where ``outcome`` is what
:func:`ditscale.study.executor.execute_task` returned: "trained", "done", "busy" or
"failed: <message>" for a run, ``{run_id: outcome}`` for a trunk (a failed trunk job: one string).
Each launcher decides the torch threads of its runs (``launcher.threads``); the study puts that
number into every task.

- :class:`LocalLauncher`: ``workers`` spawned processes on this machine, each with
  ``cores // workers`` threads so they do not oversubscribe the CPU (``workers=0``: in this process,
  threads left alone). The workers die with the process that started them, even when it is killed
  with SIGKILL (:func:`die_with_parent`), so a killed ``study run`` leaves no run training.
- :class:`SlurmLauncher`: one submitit job per run (``submitit.AutoExecutor``; ``cluster="local"``
  runs the jobs as local subprocesses, which is how it is tested), ``cpus_per_task`` threads each.
  With ``tasks_per_node > 1`` each job is a distributed run: submitit starts one task per GPU and
  every task exports the ``torchrun`` variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
  MASTER_PORT) before training.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import dataclasses
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
import os
import pickle
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ditscale.errors import ConfigError
from ditscale.study.executor import RunTask, TrunkTask, execute_run, execute_task
from ditscale.train.threads import available_cores

__all__ = ["LocalLauncher", "RunTask", "SlurmLauncher", "SlurmOptions", "make_launcher", "threads_per_worker"]


def threads_per_worker(workers: int) -> int:
    """torch threads for each of ``workers`` processes sharing this machine's cores."""
    return max(1, available_cores() // max(1, workers))


def _init_worker(threads: int, parent: int, formatwarning: Callable | None) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when the first run imports it
    if formatwarning is not None:  # a worker's warnings read as the parent's (the CLI: one line each)
        warnings.formatwarning = formatwarning
    die_with_parent(parent)


def _parent_formatwarning() -> Callable | None:
    """The parent's warning format, when a spawned worker can receive it (pickled by name: a module-level
    function; a lambda or closure cannot be, and the worker then keeps Python's default)."""
    try:
        pickle.dumps(warnings.formatwarning)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None
    return warnings.formatwarning


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this worker process when its parent ``parent`` (the ``study run`` process) dies, even by
    SIGKILL, so no orphan keeps training and holding a run's lock: on Linux the kernel sends SIGKILL
    (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread checks every ``poll_s`` seconds
    that the parent is still ours (an orphan is re-parented) and kills this process if not."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _local_entry(task: RunTask) -> str:
    return execute_task(task)


class LocalLauncher:
    """Run tasks in ``workers`` spawned processes (or in this process when ``workers`` is 0), each run on
    ``threads`` torch threads (None: the rule of :attr:`threads`)."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        self.workers = workers
        self._threads = threads
        self._pool: cf.ProcessPoolExecutor | None = None

    @property
    def threads(self) -> int:
        """torch threads of each run: as given, else the cores shared by the workers (0 in this process:
        left alone)."""
        if self._threads is not None:
            return self._threads
        return threads_per_worker(self.workers) if self.workers else 0

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(self.threads, os.getpid(), _parent_formatwarning()),
            )
        return self._pool

    def run(
        self,
        tasks: list[RunTask],
        on_done: Callable[[RunTask, str], None],
        more: Callable[[], list] | None = None,
        poll_s: float = 5.0,
    ) -> None:
        """Execute ``tasks``, calling ``on_done(task, outcome)`` as each finishes. ``more()``, asked every
        ``poll_s`` seconds and after each task while any is running, returns tasks to queue behind them
        (the quality jobs of finished budgets: :class:`~ditscale.study.quality.EarlyScoring`); with no
        worker processes it is not asked (nothing could run beside the training)."""
        if self.workers == 0:
            for task in tasks:
                on_done(task, _local_entry(task))
            return
        pool = self._ensure_pool()
        futures = {pool.submit(_local_entry, t): t for t in tasks}
        broken = False
        try:
            while futures:
                done, _ = cf.wait(futures, timeout=poll_s if more else None, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    task = futures.pop(fut)
                    try:
                        outcome = fut.result()
                    except Exception as err:  # a crashed worker process (BrokenProcessPool) or an unexpected bug
                        broken |= isinstance(err, BrokenProcessPool)
                        outcome = f"failed: {type(err).__name__}: {err}"
                    on_done(task, outcome)
                if more is not None and not broken:
                    futures.update({pool.submit(_local_entry, t): t for t in more()})
            if broken:  # a worker died (e.g. killed): the next call starts a fresh pool
                self.close(wait=False)
        except BaseException:
            for fut in futures:
                fut.cancel()
            self.close(wait=False)
            raise

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


def _slurm_entry(task: RunTask | TrunkTask) -> str | dict[str, str]:
    """Job body: export torchrun variables for multi-task jobs, then execute the run (a trunk
    trains in the job's first task only)."""
    import submitit  # lazy: ~30 ms of study start-up, for the Slurm launcher only

    env = submitit.JobEnvironment()
    if isinstance(task, TrunkTask):
        return execute_task(task) if env.global_rank == 0 else {}
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return execute_run(task, main_rank=env.global_rank == 0)


@dataclass
class SlurmOptions:
    """Slurm resources of each run's job (submitit parameter names without the ``slurm_`` prefix).

    ``cluster``: None picks Slurm when available, "slurm" forces it, "local" runs jobs as local
    subprocesses (testing), "debug" in this process.
    """

    cluster: str | None = None
    partition: str | None = None
    time_min: int = 60
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 2
    mem_gb: float | None = None
    array_parallelism: int = 64
    extra: dict = field(default_factory=dict)


class SlurmLauncher:
    """Submit one submitit job per run and wait for them (logs in ``folder``)."""

    def __init__(self, folder: str | Path, options: SlurmOptions | None = None, poll_s: float = 1.0):
        self.folder = Path(folder)
        self.options = options or SlurmOptions()
        self.poll_s = poll_s

    @property
    def threads(self) -> int:
        """torch threads of each run's process: its ``cpus_per_task``."""
        return self.options.cpus_per_task

    def executor(self):
        import submitit  # lazy: ~30 ms of study start-up, for the Slurm launcher only

        o = self.options
        ex = submitit.AutoExecutor(folder=str(self.folder), cluster=o.cluster)
        params = dict(
            timeout_min=o.time_min,
            tasks_per_node=o.tasks_per_node,
            cpus_per_task=o.cpus_per_task,
            gpus_per_node=o.gpus_per_node,
            name="ditscale-study",
        )
        if o.mem_gb is not None:
            params["mem_gb"] = o.mem_gb
        if ex.cluster == "slurm":
            params["slurm_array_parallelism"] = o.array_parallelism
            if o.partition:
                params["slurm_partition"] = o.partition
            params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in o.extra.items()})
        ex.update_parameters(**params)
        return ex

    def run(
        self, tasks: list[RunTask], on_done: Callable[[RunTask, str], None], more: Callable[[], list] | None = None
    ) -> None:
        """Submit ``tasks`` and wait for them; ``more`` is not asked (the quality stage runs after training)."""
        if not tasks:
            return
        ex = self.executor()
        tasks = [dataclasses.replace(t, threads=self.threads) for t in tasks]  # one thread per CPU of the job
        jobs = []
        with ex.batch():
            for t in tasks:
                jobs.append(ex.submit(_slurm_entry, t))
        pending = dict(zip(jobs, tasks))
        try:
            while pending:
                for job in [j for j in pending if j.done()]:
                    task = pending.pop(job)
                    try:
                        result = job.results()[0]  # rank 0's outcome
                    except Exception as err:  # submitit.core.utils.FailedJobError and friends
                        result = f"failed: job {job.job_id}: {str(err).strip().splitlines()[-1] if str(err).strip() else err}"
                    on_done(task, result)
                if pending:
                    time.sleep(self.poll_s)
        except BaseException:
            for job in pending:
                try:
                    job.cancel(check=False)
                except Exception:
                    pass
            raise

    def close(self, wait: bool = True) -> None:
        pass


def make_launcher(
    kind: str, workers: int, slurm: SlurmOptions | None, slurm_folder: str | Path, threads: int | None = None
):
    """The launcher ``kind`` ("local" with ``workers`` processes of ``threads`` torch threads each, or
    "slurm" logging to ``slurm_folder``, its runs on ``--slurm-cpus-per-task`` threads)."""
    if kind == "local":
        return LocalLauncher(workers, threads)
    if threads is not None:
        raise ConfigError("--threads is for the local launcher; a Slurm run uses --slurm-cpus-per-task threads")
    if kind == "slurm":
        return SlurmLauncher(slurm_folder, slurm)
    raise ConfigError(f"unknown launcher {kind!r}; choose local or slurm")
