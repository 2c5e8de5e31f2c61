"""Run locks: one process per run folder, safe on a shared filesystem (pure Python).

Used by ``ditscale train`` (:mod:`ditscale.train.claim`: one training process per ``--out``) and
by studies (:mod:`ditscale.study.executor`: one worker per run or trunk), which re-export it as
``ditscale.study.locks``.

A lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and NFSv3+)
holding ``{"pid", "host", "time"}``. The holder refreshes its mtime (a heartbeat) while it works.
A lock is stale, and may be broken, when its holder is on this host and its pid is gone (or a
zombie), or when its heartbeat is older than ``stale_after`` seconds (a holder on another host
that died). A lock file that holds no valid holder (empty or cut short: what SIGKILL leaves between
its creation and its write; a pid that is no process id, such as 0, -1 or a 20-digit number; not a
regular file) is damaged, and stale once :data:`DAMAGED_AFTER` seconds old.
Breaking is serialised by a second O_EXCL file so two workers cannot both break and re-take it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from ditscale.errors import DitscaleError
from ditscale.io import PID_MAX, is_no_space, no_space_error, pid_alive, read_bytes

# A lock file is written right after it is created: one still without a valid holder after this many
# seconds was left by a writer killed in between (or damaged), and is broken.
DAMAGED_AFTER = 10.0

# Lock files this process holds (resolved paths): a training run started by a study worker that
# already holds its run folder's lock takes it over instead of refusing itself.
_HELD: set[str] = set()


def held_here(path: str | os.PathLike) -> bool:
    """True when this process holds the lock file ``path`` (through a :class:`RunLock`)."""
    return str(Path(path).resolve()) in _HELD


def valid_holder(info: dict | None) -> bool:
    """True when ``info`` names a holder: a positive pid a kernel could give (``pid_alive``'s range) and a host."""
    if not info:
        return False
    pid = info.get("pid")
    return (
        isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid <= PID_MAX and isinstance(info.get("host"), str)
    )


class RunLock:
    """An exclusive lock file for one run.

    Use ``lock.acquire()`` (True when taken, False when another live worker holds it) and
    ``lock.release()``, or ``with RunLock(path) as got:``. While held, a daemon thread touches
    the file every ``heartbeat`` seconds.
    """

    def __init__(self, path: str | os.PathLike, *, stale_after: float = 600.0, heartbeat: float = 30.0):
        self.path = Path(path)
        self.stale_after = float(stale_after)
        self.heartbeat = float(heartbeat)
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state of the file on disk ----------------------------------------------------------------
    def owner(self) -> dict | None:
        """The holder's ``{"pid", "host", "time"}``, or None when unlocked (or unreadable: being written)."""
        try:
            data = json.loads(read_bytes(self.path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, DitscaleError):  # not JSON, or not a regular file (a FIFO never blocks)
            return {}
        return data if isinstance(data, dict) else {}

    def holder(self) -> str:
        """Who holds the lock, for messages: ``"pid 123 on host h since 2026-11-26 06:30:00 UTC"``."""
        info = self.owner() or {}
        if not valid_holder(info):
            return f"a damaged lock file without a valid holder (broken once {DAMAGED_AFTER:g} s old)"
        when = info.get("time")
        since = ""
        if isinstance(when, (int, float)):
            since = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
        return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{since}"

    def is_stale(self) -> bool:
        """True when the lock exists and its holder is dead (same host) or silent for ``stale_after`` s,
        or when it names no valid holder (:func:`valid_holder`) and is :data:`DAMAGED_AFTER` s old."""
        try:
            age = time.time() - self.path.lstat().st_mtime
        except FileNotFoundError:
            return False
        info = self.owner()
        if info is None:
            return False
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if not pid_alive(info["pid"]):  # gone, a zombie, or no process id at all (0, -1, 20 digits)
                return True
        if not valid_holder(info):
            return age > DAMAGED_AFTER
        return age > self.stale_after

    # -- acquire / release ------------------------------------------------------------------------
    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise no_space_error(self.path, err) if is_no_space(err) else err from None
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, fh)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:  # e.g. a full disk: leave no empty lock behind
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise no_space_error(self.path, err) if is_no_space(err) else err from None
        return True

    def _break_stale(self) -> None:
        guard = RunLock(self.path.with_name(self.path.name + ".break"), stale_after=60.0)
        if not guard._create():
            if guard.is_stale():  # a breaker died inside the window below
                guard.path.unlink(missing_ok=True)
            return
        try:
            if self.is_stale():  # re-check under the guard: someone may have re-taken it already
                self.path.unlink(missing_ok=True)
        finally:
            guard.path.unlink(missing_ok=True)

    def acquire(self) -> bool:
        """Take the lock if free or stale; False if a live worker holds it. Never blocks."""
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            if not self.is_stale():
                return False
            self._break_stale()
            if not self._create():
                return False
        self.held = True
        _HELD.add(str(self.path.resolve()))
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{self.path.name}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Give the lock back (removes the file if this process holds it)."""
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = self.owner()
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        _HELD.discard(str(self.path.resolve()))
        self.held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
