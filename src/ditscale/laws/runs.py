"""The table of training runs that scaling laws are fitted to, and its CSV reader.

One row per run (or per logged point of a training curve): training compute ``flops`` (FLOPs),
``params`` N (parameters), ``tokens`` D (image tokens seen), final ``loss``; optionally the
nominal isoFLOP ``budget`` (FLOPs) the run belongs to, a ``run_id`` and a ``seed``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ditscale.errors import DataError
from ditscale.io import csv_errors, read_text

REQUIRED = ("flops", "params", "tokens", "loss")
FIELDS = REQUIRED + ("budget", "run_id", "seed", "weight")
RUN_ID_ALIASES = ("run_id", "run", "model")  # first one present names the run (or training curve)


@dataclass(frozen=True)
class Runs:
    """Columns of a runs table as float64 numpy arrays of equal length (validated on creation).

    Attributes:
        flops: training compute per run, FLOPs (not MACs).
        params: N, model parameters.
        tokens: D, training tokens seen (image tokens, not images).
        loss: final (or logged) loss of the run.
        budget: nominal isoFLOP budget of each run in FLOPs, or None (then budgets are found by
            grouping ``flops``, see :meth:`budgets`).
        run_id: name of each run (rows sharing a run_id are points of one training curve), or None.
        seed: training seed of each run, or None; with seeds, the seed replicates of one
            configuration (same params and tokens) are resampled together by the bootstrap.
        weight: optional positive weight of each run in the isoFLOP parabolas and the parametric
            objective (e.g. the inverse variance of its loss), or None for equal weights.
    """

    flops: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    budget: np.ndarray | None = None
    run_id: np.ndarray | None = None
    seed: np.ndarray | None = None
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = None
        for name in REQUIRED + ("budget", "weight"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value, dtype=np.float64).reshape(-1)
            if n is not None and len(arr) != n:
                raise DataError(f"column '{name}' has {len(arr)} values but 'flops' has {n}; give equal-length columns")
            n = len(arr)
            bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
            if len(bad):
                raise DataError(
                    f"column '{name}' row {bad[0]} is {float(arr[bad[0]])!r}; every {name} value must be a positive finite number"
                )
            object.__setattr__(self, name, arr)
        if n == 0:
            raise DataError("the runs table is empty; give at least one run")
        for name in ("run_id", "seed"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(value).reshape(-1)
                if len(arr) != n:
                    raise DataError(
                        f"column '{name}' has {len(arr)} values but 'flops' has {n}; give equal-length columns"
                    )
                object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.flops)

    def take(self, index: np.ndarray) -> "Runs":
        """The rows ``index`` (integer indices or a boolean mask) as a new table."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Runs(*(pick(getattr(self, f)) for f in FIELDS))

    def budgets(self, rtol: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Group runs into isoFLOP budgets.

        Returns ``(label, budget_flops)``: ``label[i]`` indexes ``budget_flops`` (ascending, FLOPs).
        With a ``budget`` column its distinct values are the budgets. Without one, runs are sorted
        by ``flops`` and a new budget starts wherever the next run has more than ``(1 + rtol)``
        times the FLOPs of the previous one; a budget's FLOPs is the median of its runs'.
        """
        if self.budget is not None:
            values, label = np.unique(self.budget, return_inverse=True)
            return label, values
        order = np.argsort(self.flops, kind="stable")
        logf = np.log(self.flops[order])
        starts = np.concatenate([[True], np.diff(logf) > math.log1p(rtol)])
        sorted_label = np.cumsum(starts) - 1
        label = np.empty(len(self), dtype=np.int64)
        label[order] = sorted_label
        bounds = np.flatnonzero(np.concatenate([starts, [True]]))
        flops = self.flops[order]
        return label, np.array([np.median(flops[i:j]) for i, j in zip(bounds[:-1], bounds[1:])])

    def points(self) -> np.ndarray:
        """Integer label of each row's (params, tokens) point: rows with equal N and D to 6
        significant digits (1e-6 in log) share one."""
        keys = np.stack([np.round(np.log(self.params), 6), np.round(np.log(self.tokens), 6)], axis=1)
        return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)

    def duplicates(self) -> list[np.ndarray]:
        """Rows that repeat one (params, tokens) point, as arrays of row indices (ascending, by first
        row): the same run listed twice, e.g. logged in two units. With ``seed``, rows of one point
        and one seed (seed replicates, other seeds at one point, are no duplicates)."""
        key = self.points() if self.seed is None else np.stack([self.points(), self.seed], axis=1)
        _, label, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        label = label.reshape(-1)
        sets = [np.flatnonzero(label == k) for k in np.flatnonzero(counts > 1)]
        return sorted(sets, key=lambda rows: rows[0])

    def groups(self) -> np.ndarray:
        """Resampling unit of each row for the bootstrap, as integer labels 0..G-1.

        With ``seed``: rows with the same params and tokens (to 6 significant digits, :meth:`points`),
        i.e. one configuration's seed replicates; else with ``run_id``: rows sharing a run_id (one run
        or training curve), and runs that share a (params, tokens) point (:meth:`duplicates`: the same
        run listed twice) are tied into one unit, so that a resample draws all copies of a point or
        none (drawn apart, copies that disagree, e.g. a loss logged in two units, make the resamples
        disagree far more than the runs do); else each row is its own unit (:meth:`tied` ties them).
        """
        if self.seed is not None:
            return self.points()
        if self.run_id is not None:
            return _tie(np.unique(self.run_id.astype(str), return_inverse=True)[1].reshape(-1), self.points())
        return np.arange(len(self))

    def tied(self) -> Runs:
        """These runs as the bootstrap should draw them: without ``seed`` and ``run_id`` and with
        :meth:`duplicates`, each row gets its row number as ``run_id``, so that :meth:`groups` ties the
        copies of a point; else the runs themselves (their groups already tie them)."""
        if self.seed is not None or self.run_id is not None or not self.duplicates():
            return self
        width = len(str(len(self) - 1))
        return replace(self, run_id=np.array([f"{i:0{width}d}" for i in range(len(self))]))  # sorts as rows


def _tie(base: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Labels 0..G-1 joining the units ``base`` (labels 0..U-1) that share a ``point`` (connected
    components, each labelled by its lowest ``base`` label, so ``base`` comes back unchanged when
    nothing is joined)."""
    label = base.copy()
    while True:
        at_point = np.full(point.max() + 1, label.max())
        np.minimum.at(at_point, point, label)
        joined = np.full(base.max() + 1, label.max())
        np.minimum.at(joined, base, at_point[point])
        if np.array_equal(joined[base], label):
            return np.unique(label, return_inverse=True)[1].reshape(-1)
        label = joined[base]


def read_runs_csv(path: str | Path) -> Runs:
    """Read a runs CSV with columns ``flops, params, tokens, loss`` (FLOPs, parameters, tokens, loss).

    Optional columns: ``budget`` (nominal isoFLOP budget, FLOPs), ``run_id`` (or ``run`` or
    ``model``: rows sharing it are points of one training curve), ``seed``, ``weight``. Other columns are
    ignored. Raises :class:`DataError` naming the file, column and line of any missing column,
    non-numeric, NaN, infinite, zero or negative value.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"runs file {str(path)!r} does not exist; give a CSV with columns flops, params, tokens, loss")
    reader = csv.reader(io.StringIO(read_text(path), newline=""))  # a folder or a FIFO: refused, one line
    with csv_errors(str(path)):
        header = [h.strip() for h in next(reader, [])]
        rows = [r for r in reader if any(cell.strip() for cell in r)]
    return _runs_table(header, rows, path)


def runs_from_rows(rows: list[dict[str, str]], path: str | Path) -> Runs:
    """:func:`read_runs_csv` of a runs CSV already read as rows of text cells (``csv.DictReader``'s, e.g.
    a study's checked runs.csv), with the same checks (a short row's missing cells, None there, and a
    long row's extra ones, under the key None, count as in the file); ``path`` names the file in the errors."""
    header = [h.strip() for h in rows[0] if h is not None] if rows else []
    cells = [[v for k, v in r.items() if k is not None and v is not None] + list(r.get(None) or []) for r in rows]
    return _runs_table(header, [c for c in cells if any(cell.strip() for cell in c)], Path(path))


def _runs_table(header: list[str], rows: list[list[str]], path: Path) -> Runs:
    """The :class:`Runs` of a CSV's ``header`` and data ``rows`` (text cells), checked (see :func:`read_runs_csv`)."""
    for name in REQUIRED:
        if name not in header:
            raise DataError(f"{path.name} has no column '{name}'; need flops, params, tokens, loss")
    if not rows:
        raise DataError(f"{path.name} has no data rows; add one row per training run")
    numeric = [c for c in REQUIRED + ("budget", "weight") if c in header]
    columns: dict[str, list] = {c: [] for c in numeric}
    where = {c: header.index(c) for c in header}
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(
                f"{path.name} line {line} has {len(row)} fields but the header has {len(header)}; fix that row"
            )
        for name in numeric:
            text = row[where[name]].strip()
            try:
                value = float(text)
            except ValueError:
                raise DataError(
                    f"{path.name} line {line}: column '{name}' is {text!r}, not a number; fix or remove that row"
                ) from None
            if not (math.isfinite(value) and value > 0):
                raise DataError(
                    f"{path.name} line {line}: column '{name}' is {text!r}; {name} must be a positive finite number"
                )
            columns[name].append(value)
    id_col = next((c for c in RUN_ID_ALIASES if c in header), None)
    run_id = np.array([r[where[id_col]].strip() for r in rows]) if id_col else None
    seed = None
    if "seed" in header:
        try:
            seed = np.array([int(float(r[where["seed"]])) for r in rows])
        except ValueError:
            raise DataError(f"{path.name}: column 'seed' must hold integers; fix or remove it") from None
    return Runs(
        flops=np.array(columns["flops"]),
        params=np.array(columns["params"]),
        tokens=np.array(columns["tokens"]),
        loss=np.array(columns["loss"]),
        budget=np.array(columns["budget"]) if "budget" in columns else None,
        run_id=run_id,
        seed=seed,
        weight=np.array(columns["weight"]) if "weight" in columns else None,
    )
