"""Stored bootstrap draws: reuse the resamples of a fit instead of redrawing them.

A study's analysis (``study run``, ``study report``) bootstraps each fit once and stores every
resample's fitted values in ``DIR/bootstrap.npz``; ``study predict`` and ``study compare`` read them
back, so they answer in seconds and give exactly the intervals of laws.json. Each stored entry is
keyed by a SHA-256 of what its draws depend on: the rows of the runs they were drawn from (every
column of :class:`Runs`), the fit's method and options, the number of resamples, the seed, the
bootstrap's kind (only when not ``"case"``, so the keys of case draws stored before kinds existed
still match) and :data:`DRAWS_VERSION` (bumped whenever the resampling scheme changes). A key that does not match
(other runs, options, seed or code) is redrawn, never reused.

This module is numpy only: :meth:`DrawStore.to_arrays` / :meth:`DrawStore.from_arrays` give the
arrays of the ``.npz``; the study writes them with :func:`ditscale.io.atomic_write_npz`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field

import numpy as np

from ditscale.laws.bootstrap import Bootstrap, bootstrap
from ditscale.laws.powerlaw import FitWarning
from ditscale.laws.runs import FIELDS, Runs

DRAWS_VERSION = (
    3  # 2: budgets of 3 resampling units get the parametric draw; 3: runs at one (N, D) point tie (docs/laws.md)
)


def runs_digest(runs: Runs) -> str:
    """Hex SHA-256 of every column of ``runs`` (values, in row order; absent columns marked)."""
    h = hashlib.sha256()
    for name in FIELDS:
        col = getattr(runs, name)
        h.update(name.encode())
        if col is None:
            h.update(b"<none>")
        elif col.dtype.kind in "fiu":
            h.update(np.ascontiguousarray(col, dtype=np.float64).tobytes())
        else:
            h.update("\x1f".join(map(str, col)).encode())
    return h.hexdigest()


def draws_key(kind: str, runs: Runs, options: dict, n: int, seed: int, bootstrap_kind: str = "case") -> str:
    """The key of ``n`` resamples (seed ``seed``, :func:`bootstrap` kind ``bootstrap_kind``) of the fit
    ``kind`` with ``options`` to ``runs``."""
    head = {"kind": kind, "options": options, "n": int(n), "seed": int(seed), "version": DRAWS_VERSION}
    if bootstrap_kind != "case":
        head["bootstrap_kind"] = bootstrap_kind
    head = json.dumps(head, sort_keys=True, default=str)
    return hashlib.sha256((head + runs_digest(runs)).encode()).hexdigest()


@dataclass
class DrawStore:
    """Bootstrap draws by key (:func:`draws_key`), filled by :meth:`bootstrap`.

    Attributes:
        entries: key -> ``(kind, Bootstrap)``.
        loaded: the store was read from a file (so a redraw is news worth a line).
        redrawn: kinds that had to be drawn because no stored entry matched.
    """

    entries: dict[str, tuple[str, Bootstrap]] = field(default_factory=dict)
    loaded: bool = False
    redrawn: list[str] = field(default_factory=list)
    messages: dict[str, list[str]] = field(default_factory=dict)

    def bootstrap(
        self, kind: str, runs: Runs, fit, options: dict, n: int, seed: int, bootstrap_kind: str = "case"
    ) -> Bootstrap:
        """The stored draws of this fit when their key matches, else :func:`bootstrap` them (and keep
        them). The :class:`FitWarning` s of the draw (e.g. intervals withheld) are kept with them
        and raised again on every use, so a reused draw warns as a fresh one does."""
        key = draws_key(kind, runs, options, n, seed, bootstrap_kind)
        if key not in self.entries:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", FitWarning)
                boot = bootstrap(runs, fit, n, seed, bootstrap_kind)
            self.entries[key] = (kind, boot)
            self.messages[key] = [str(w.message) for w in caught if issubclass(w.category, FitWarning)]
            self.redrawn.append(kind)
        for message in self.messages.get(key, ()):
            warnings.warn(message, FitWarning, stacklevel=2)
        return self.entries[key][1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` arrays: ``meta`` (JSON: per entry its key, kind, method, names, seed, resamples,
        failed) and ``draws_<i>`` ``(resamples, names)`` float64."""
        meta, arrays = [], {}
        for i, (key, (kind, boot)) in enumerate(self.entries.items()):
            names = sorted(boot.samples)
            meta.append(
                {
                    "key": key,
                    "kind": kind,
                    "method": boot.method,
                    "names": names,
                    "seed": boot.seed,
                    "resamples": boot.n_resamples,
                    "failed": boot.n_failed,
                    "version": DRAWS_VERSION,
                    "bootstrap_kind": boot.kind,
                    "warnings": self.messages.get(key, []),
                }
            )
            arrays[f"draws_{i}"] = np.stack([boot.samples[k] for k in names], axis=1)
        return {"meta": np.array(json.dumps(meta)), **arrays}

    @classmethod
    def from_arrays(cls, arrays) -> "DrawStore":
        """The store written by :meth:`to_arrays` (``arrays``: a mapping such as ``np.load``'s)."""
        entries, messages = {}, {}
        for i, m in enumerate(json.loads(str(arrays["meta"]))):
            x = np.asarray(arrays[f"draws_{i}"], dtype=np.float64)
            samples = {name: x[:, j].copy() for j, name in enumerate(m["names"])}
            entries[m["key"]] = (
                m["kind"],
                Bootstrap(m["method"], samples, int(m["seed"]), int(m["failed"]), m.get("bootstrap_kind", "case")),
            )
            messages[m["key"]] = list(m.get("warnings", []))
        return cls(entries=entries, loaded=True, messages=messages)
