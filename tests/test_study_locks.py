"""Run locks: exclusive creation, stale-lock detection by pid/host/age, races between processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time

from ditscale.study.locks import RunLock

DEAD_PID = 2**22 + 12_345  # above Linux's largest pid_max: never a live process


def test_acquire_release_and_owner(tmp_path):
    path = tmp_path / "run" / "run.lock"
    a, b = RunLock(path), RunLock(path)
    assert a.acquire()
    assert a.owner()["pid"] == os.getpid() and a.owner()["host"] == socket.gethostname()
    assert not b.acquire()  # held by a live process (this one)
    assert not b.is_stale()
    a.release()
    assert not path.exists()
    assert b.acquire()
    b.release()
    with RunLock(path) as got:
        assert got and path.exists()
    assert not path.exists()


def test_stale_locks_are_broken(tmp_path):
    path = tmp_path / "run.lock"
    # a dead process on this host
    path.write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname(), "time": time.time()}))
    lock = RunLock(path)
    assert lock.is_stale() and lock.acquire()
    assert lock.owner()["pid"] == os.getpid()
    lock.release()
    # a silent holder on another host: stale only once its heartbeat is older than stale_after
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": 0}))
    assert not RunLock(path, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    lock = RunLock(path, stale_after=60)
    assert lock.is_stale() and lock.acquire()
    lock.release()
    # a live process on this host is never stale, however old its file
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": 0}))
    os.utime(path, (old, old))
    assert RunLock(path, stale_after=3600).is_stale() is False
    path.unlink()


def _contend(path, barrier, results, everyone_tried):
    barrier.wait()
    lock = RunLock(path)
    got = lock.acquire()
    results.put((os.getpid(), got))
    if got:
        everyone_tried.wait(60)  # hold it until every contender has tried
        lock.release()


def test_processes_racing_for_a_lock_exactly_one_wins(tmp_path):
    for stale in (False, True):
        path = tmp_path / f"race-{stale}.lock"
        if stale:  # all contenders see the same stale lock and race to break it
            path.write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname(), "time": 0}))
        ctx = mp.get_context("fork")
        n = 6
        barrier, results, everyone_tried = ctx.Barrier(n), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_contend, args=(path, barrier, results, everyone_tried)) for _ in range(n)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in range(n)]
        everyone_tried.set()
        for p in procs:
            p.join(timeout=60)
        assert sum(got for _, got in outcomes) == 1
        assert not path.exists()


def test_a_damaged_lock_file_is_broken_and_no_pid_counts_as_alive(tmp_path):
    """Issue 24: an empty or cut-short run.lock (SIGKILL between its creation and its write) held the
    folder for 10 minutes as "pid ? on host ?"; pid 0 or -1 counted as alive; a 20-digit pid raised."""
    path, host = tmp_path / "run.lock", socket.gethostname()
    old = time.time() - 30  # past DAMAGED_AFTER (10 s), far below stale_after (600 s)
    for body in ("", '{"pid": 12', "[1, 2]", json.dumps({"pid": 0, "host": "elsewhere", "time": 0})):
        path.write_text(body)
        lock = RunLock(path)
        assert not lock.is_stale() and not lock.acquire()  # a fresh one may be being written right now
        assert "damaged lock file" in lock.holder()
        os.utime(path, (old, old))
        assert lock.is_stale() and lock.acquire(), body
        assert lock.owner()["pid"] == os.getpid()
        lock.release()
    for pid in (0, -1, 10**19, True):  # on this host: no such process, whatever the file's age
        path.write_text(json.dumps({"pid": pid, "host": host, "time": time.time()}))
        lock = RunLock(path)
        assert lock.is_stale() and lock.acquire(), pid
        lock.release()
    assert not path.exists()
