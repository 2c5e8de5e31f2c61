"""Bootstrap refits spread over worker processes: the same floats as a serial loop, in ~1/W of the time.

Every resample of a bootstrap is refitted on its own (L-BFGS-B or ``curve_fit`` from the same warm
start), so the resamples may run in any order on any process and give bit-identical results; only
the wall time changes. A study's analysis is mostly such refits (Approach 3's and the saturating
law's, for the fit of record and for every extrapolation refit), and it runs after training, when
every core is free.

Workers are started by ``forkserver`` (forked from a clean server process that imported only this
module's numerical dependencies, never from a parent that holds torch's or a progress bar's
threads), or ``spawn`` where forkserver is missing. ``DITSCALE_FIT_WORKERS`` sets their number
(``1``: the serial loop in this process); the default is the CPUs this process may use, at most
:data:`MAX_WORKERS`; :func:`at_most` caps them for one thread (fits made beside other work). Small
jobs (fewer than :data:`MIN_TASKS_PER_WORKER` tasks per worker) stay serial: starting the workers
would cost more than it saves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import threading
from collections.abc import Iterator
from typing import Callable, Sequence, TypeVar

from ditscale.errors import ConfigError, DitscaleError

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "DITSCALE_FIT_WORKERS"
MAX_WORKERS = 8  # more rarely pays: a study's analysis holds a few hundred refits per bootstrap
MIN_TASKS_PER_WORKER = 8  # below this the worker start-up (~0.1 s each) outweighs the refits
CHUNKS_PER_WORKER = 4  # tasks go out in chunks; 4 per worker evens out refits of unequal length
PRELOAD = ["ditscale.laws.bootstrap"]  # what the fork server imports once (numpy, scipy, the fits)
_CAP = threading.local()  # at_most's cap, per thread


def fit_workers() -> int:
    """The worker processes for bootstrap refits: ``$DITSCALE_FIT_WORKERS``, else this process's
    CPUs (at most :data:`MAX_WORKERS`), and at most this thread's :func:`at_most` cap."""
    cap = getattr(_CAP, "workers", None)
    return _configured_workers() if cap is None else min(cap, _configured_workers())


@contextlib.contextmanager
def at_most(workers: int) -> Iterator[None]:
    """Fit with at most ``workers`` processes in this thread while the block runs (``1``: serially,
    in this thread): fits made beside other work use only the cores it leaves (the results are the
    same on any number of workers)."""
    before = getattr(_CAP, "workers", None)
    _CAP.workers = workers
    try:
        yield
    finally:
        _CAP.workers = before


def _configured_workers() -> int:
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"{WORKERS_ENV} must be a whole number >= 1, got {raw!r}; unset it to use every CPU")
        return int(raw)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def map_tasks(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, on ``workers`` processes (default :func:`fit_workers`) when there are
    enough items. ``fn`` and the items must pickle (a module-level function or a ``functools.partial``
    of one); ``fn`` must not raise for an expected failure (return a marker such as None instead)."""
    workers = fit_workers() if workers is None else workers
    workers = min(workers, len(items) // MIN_TASKS_PER_WORKER)
    if workers <= 1:
        return [fn(x) for x in items]
    chunk = max(1, math.ceil(len(items) / (workers * CHUNKS_PER_WORKER)))
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=_context()) as pool:
            return list(pool.map(fn, items, chunksize=chunk))
    except concurrent.futures.process.BrokenProcessPool:
        raise DitscaleError(
            "a worker process of the bootstrap refits died: each worker imports the main script, so a "
            'script that fits laws must do it under `if __name__ == "__main__":`; or it ran out of memory. '
            f"Set {WORKERS_ENV}=1 to fit in this process"
        ) from None
