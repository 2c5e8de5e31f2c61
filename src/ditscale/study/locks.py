"""Run locks of a study's runs and trunks: :class:`ditscale.train.locks.RunLock` (its home, below
the study so that ``ditscale train`` takes the same lock on its run folder), re-exported here."""

from __future__ import annotations

from ditscale.train.locks import RunLock, held_here  # noqa: F401

__all__ = ["RunLock", "held_here"]
