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
from dataclasses import dataclass, field, replace

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
        unreadable: why the file could not be used (empty when it was read or is missing).
        used: keys asked for since the store was made (drawn or reused), for :meth:`only_used`.
    """

    entries: dict[str, tuple[str, Bootstrap]] = field(default_factory=dict)
    loaded: bool = False
    redrawn: list[str] = field(default_factory=list)
    messages: dict[str, list[str]] = field(default_factory=dict)
    unreadable: str = ""
    used: set[str] = field(default_factory=set)

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
        self.used.add(key)
        for message in self.messages.get(key, ()):
            warnings.warn(message, FitWarning, stacklevel=2)
        return self.entries[key][1]

    def only_used(self) -> DrawStore:
        """The entries asked for since the store was made, in their order: what an analysis keeps, so
        draws of runs or options no longer in the study do not pile up in the file."""
        entries = {k: v for k, v in self.entries.items() if k in self.used}
        messages = {k: v for k, v in self.messages.items() if k in self.used}
        return replace(self, entries=entries, messages=messages)

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
    def from_arrays(cls, arrays) -> DrawStore:
        """The store written by :meth:`to_arrays` (``arrays``: a mapping such as ``np.load``'s), every
        field checked: ``meta`` a JSON list of entries of the right types, each ``draws_<i>`` a finite-
        or-failed ``(resamples, names)`` array. :class:`DrawsError` naming what is wrong otherwise (the
        caller redraws)."""
        entries, messages = {}, {}
        for i, m in enumerate(_read_meta(arrays)):
            x = _read_entry_draws(arrays, i, m)
            samples = {name: x[:, j].copy() for j, name in enumerate(m["names"])}
            entries[m["key"]] = (
                m["kind"],
                Bootstrap(m["method"], samples, m["seed"], m["failed"], m["bootstrap_kind"]),
            )
            messages[m["key"]] = list(m["warnings"])
        return cls(entries=entries, loaded=True, messages=messages)


class DrawsError(ValueError):
    """Stored draws that cannot be used (damaged or crafted): the caller redraws them."""


# the fields of a ``meta`` entry and their types (``bootstrap_kind`` and ``warnings`` may be absent)
_META_FIELDS = {"key": str, "kind": str, "method": str, "names": list, "seed": int, "failed": int}
_META_OPTIONAL = {"bootstrap_kind": (str, "case"), "warnings": (list, [])}


def _read_meta(arrays) -> list[dict]:
    """``meta``: a JSON list of entries whose fields have the types :meth:`DrawStore.to_arrays` writes."""
    if "meta" not in arrays:
        raise DrawsError("no 'meta' array")
    raw = np.asarray(arrays["meta"])
    if raw.shape != () or raw.dtype.kind != "U":
        raise DrawsError(f"'meta' is a {raw.dtype} array of shape {raw.shape}, not one JSON string")
    try:
        meta = json.loads(str(raw))
    except RecursionError as e:  # nested beyond the parser's depth: crafted
        raise DrawsError("'meta' is nested too deeply") from e
    if not isinstance(meta, list):
        raise DrawsError("'meta' is not a JSON list")
    out = []
    for i, m in enumerate(meta):
        if not isinstance(m, dict):
            raise DrawsError(f"meta entry {i} is not an object")
        for name, (kind, default) in _META_OPTIONAL.items():
            m.setdefault(name, default)
        for name, kind in {**_META_FIELDS, **{k: t for k, (t, _) in _META_OPTIONAL.items()}}.items():
            if not isinstance(m.get(name), kind) or isinstance(m.get(name), bool):
                raise DrawsError(f"meta entry {i}: '{name}' is not a {kind.__name__}")
        if not all(isinstance(x, str) for x in m["names"] + m["warnings"]) or len(set(m["names"])) != len(m["names"]):
            raise DrawsError(f"meta entry {i}: 'names' and 'warnings' must be lists of distinct strings")
        out.append(m)
    return out


def _read_entry_draws(arrays, i: int, m: dict) -> np.ndarray:
    """``draws_<i>``: a float ``(resamples, names)`` array, ``0 <= failed <= resamples``, and no more
    resamples without a single finite value than ``failed`` (a refit that failed is all NaN; a
    draw of NaN where the fits succeeded is damaged)."""
    name = f"draws_{i}"
    if name not in arrays:
        raise DrawsError(f"no '{name}' array")
    x = np.asarray(arrays[name])
    if x.dtype.kind not in "fiu" or x.ndim != 2 or x.shape[1] != len(m["names"]) or x.shape[0] < 1:
        raise DrawsError(f"'{name}' is a {x.dtype} array of shape {x.shape}, not (resamples, {len(m['names'])})")
    x = x.astype(np.float64)
    if not 0 <= m["failed"] <= x.shape[0]:
        raise DrawsError(f"meta entry {i}: failed {m['failed']} is not between 0 and {x.shape[0]}")
    empty = int((~np.isfinite(x)).all(axis=1).sum()) if x.shape[1] else 0
    if empty > m["failed"]:
        raise DrawsError(f"'{name}' has {empty} resamples without a finite value but {m['failed']} failed refits")
    return x
