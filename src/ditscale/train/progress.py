"""Progress as plain lines: ``OUT/train.log`` always, stdout when no terminal shows a bar.

A tqdm bar only helps in a terminal. Under ``nohup``, a scheduler or a pipe, :class:`ProgressLog`
writes one line every ``every`` seconds instead::

    2026-11-26T06:40:12Z step 120/3000 (4.0%) loss 0.1234 images/s 563.2 elapsed 0:00:14 eta 0:05:20

``loss`` is the mean training loss of the steps since the previous line, ``images/s`` the images of
those steps over the wall time between the lines (validation and checkpoints included), ``eta`` the
remaining steps at this call's mean wall time per step. The same lines, plus a ``start`` / ``resume``
line and a closing line, are appended to ``OUT/train.log`` by every call (so a resumed run's log
holds all its calls). Pure Python; appended through :func:`ditscale.io.append_text` (no symbolic
links followed, a full disk is one line).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ditscale.io import append_text

TRAIN_LOG = "train.log"  # in the run folder
PROGRESS_EVERY = 30.0  # seconds between progress lines, by default


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded), e.g. ``0:05:20``; ``?`` for a negative or non-finite value."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_text(done: int, total: int, loss: float | None, images_per_s: float, elapsed: float, eta: float) -> str:
    """One progress line without its time stamp (see the module docstring)."""
    pct = 100.0 * done / max(1, total)
    shown = "n/a" if loss is None else f"{loss:.4f}"
    return (
        f"step {done}/{total} ({pct:.1f}%) loss {shown} images/s {images_per_s:.1f} "
        f"elapsed {format_duration(elapsed)} eta {format_duration(eta)}"
    )


class ProgressLog:
    """Writes progress lines for steps ``start .. total`` of a run.

    Args:
        path: the log file lines are appended to (``OUT/train.log``); None: no file (other ranks).
        total: the run's total optimizer steps; start: the step this call starts at.
        every: seconds between lines (0: a line after every step).
        echo: also print each line to stdout (flushed).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        path: Path | None,
        total: int,
        start: int,
        *,
        every: float,
        echo: bool,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path, self.total, self.start, self.every, self.echo = path, total, start, every, echo
        self.clock = clock
        self.t0 = self.last = clock()
        self.done = start
        self.loss_sum, self.steps, self.images = 0.0, 0, 0

    def write(self, text: str) -> None:
        """Append ``text`` with a UTC time stamp to the log file, and echo it when asked."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = f"{stamp} {text}"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_text(self.path, line + "\n")  # never through a planted link; a full disk is one line
        if self.echo:
            print(line, flush=True)

    def begin(self) -> None:
        """The opening line: ``start at step 0/N`` or ``resume at step k/N``."""
        self.write(f"{'resume' if self.start else 'start'} at step {self.start}/{self.total}")

    def update(self, done: int, loss: float, images: int) -> None:
        """Record one finished step (``done`` steps so far); writes a line when ``every`` seconds passed."""
        self.done = done
        self.loss_sum, self.steps, self.images = self.loss_sum + loss, self.steps + 1, self.images + images
        if self.clock() - self.last >= self.every:
            self.report()

    def report(self) -> None:
        """Write a progress line for the steps since the previous one (and start a new interval)."""
        now = self.clock()
        elapsed, ran = now - self.t0, self.done - self.start
        eta = elapsed / ran * (self.total - self.done) if ran else float("nan")
        loss = self.loss_sum / self.steps if self.steps else None
        rate = self.images / max(now - self.last, 1e-9)
        self.write(progress_text(self.done, self.total, loss, rate, elapsed, eta))
        self.last, self.loss_sum, self.steps, self.images = now, 0.0, 0, 0

    def end(self, text: str) -> None:
        """Flush the last interval's line (if it has steps), then the closing ``text``."""
        if self.steps:
            self.report()
        self.write(text)
