"""A study folder: which file lives where, and how each is read and written (torch-free).

Layout of ``DIR``::

    spec.yaml            the spec, as run; its last line ``# end of spec.yaml`` shows it is whole
    plan.csv             the planned runs; a budget's rows are frozen once it starts (run ids checked)
    runs/<run_id>/       one training run folder each (:class:`ditscale.train.rundir.RunDir`:
                         config.yaml, metrics.jsonl, checkpoints/, result.json), plus
        study.json       the SHA-256 of its TrainConfig (resume-safe keys left out) and its CPU seconds
        run.lock         held while a worker trains it (see :mod:`ditscale.study.locks`)
        failed.json      why it failed (a later ``study run --retry-failed`` tries again)
    runs.csv             one row per finished run (:data:`RUNS_CSV_COLUMNS`); derived: checked against
                         the runs' result.json on read, rebuilt when out of date or damaged
    quality/, quality.csv   samples and scores of the quality stage (:mod:`ditscale.study.quality`)
    quality_steps.csv    the quality stage's models at several sampler step counts (``study quality-steps``)
    wall.json            wall seconds of every ``study run`` call
    laws.json, report.html, *.png   the fit and its report (:mod:`ditscale.study.analyze`)
    trunks/<trunk_id>/   shared trunks (``share_trunks``): trunk.json, checkpoints, metrics.jsonl
    slurm/               submitit logs of the Slurm launcher

Nothing is created until a writer needs it. Every write is atomic (:mod:`ditscale.io`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from ditscale.config import parse_yaml
from ditscale.errors import ConfigError, DataError
from ditscale.io import atomic_write_json, atomic_write_text, csv_errors, parse_json, read_bytes, read_text
from ditscale.laws import Runs, read_runs_csv
from ditscale.laws.results import LawsSummary
from ditscale.study.plan import PlannedRun, check_run_id, plan_csv, read_plan_csv
from ditscale.study.spec import StudySpec, spec_from_dict
from ditscale.train.rundir import RunDir

# runs.csv: params is the non-embedding N, tokens D are image tokens, flops exact training FLOPs,
# loss the run's validation loss, wall_s its training wall time and cpu_s the CPU seconds of the
# worker process while it trained (seconds).
RUNS_CSV_COLUMNS = [
    "run_id",
    "budget",
    "seed",
    "role",
    "depth",
    "hidden_size",
    "num_heads",
    "params",
    "params_total",
    "tokens",
    "images",
    "steps",
    "flops",
    "flops_6nd",
    "loss",
    "wall_s",
    "cpu_s",
]


# -- one run of a study ---------------------------------------------------------------------------
class StudyRunDir(RunDir):
    """A study's training run folder ``DIR/runs/<run_id>/``: the trainer's files plus the study's own."""

    @property
    def study_json(self) -> Path:
        return self.root / "study.json"

    @property
    def failed_json(self) -> Path:
        return self.root / "failed.json"

    @property
    def lock_path(self) -> Path:
        return self.lock

    def valid_result(self) -> dict | None:
        """``result.json`` if the run is done with a finite ``val_loss`` and positive ``flops_exact``, else None."""
        res = self.read_result()
        if res is None or res.get("status", "done") != "done":
            return None
        loss, flops = res.get("val_loss"), res.get("flops_exact")
        if (
            not isinstance(loss, (int, float))
            or not math.isfinite(loss)
            or not isinstance(flops, (int, float))
            or flops <= 0
        ):
            return None
        return res

    def failed(self) -> bool:
        """True when the run failed and was not retried since (``failed.json``)."""
        return self.failed_json.exists()

    def read_study(self) -> dict | None:
        """``study.json`` (``run_id``, ``config_sha`` and, once trained, ``cpu_s``), or None."""
        try:
            return json.loads(read_bytes(self.study_json))
        except (OSError, ValueError, DataError):  # DataError: not a regular file (a FIFO is never read)
            return None

    def check_config(self, run_id: str, config_sha: str) -> None:
        """Raise :class:`ConfigError` if this folder belongs to a run planned with another config."""
        old = self.read_study()
        if old is not None and old.get("config_sha") != config_sha:
            raise ConfigError(
                f"run {run_id} in {self.root.parent.parent} was trained with a different config (the spec changed); "
                f"use a new --out folder or delete {self.root}"
            )

    def start(self, run_id: str, config_sha: str) -> None:
        """Claim the folder for the run with ``config_sha`` and forget an earlier failure."""
        atomic_write_json(self.study_json, {"run_id": run_id, "config_sha": config_sha})
        self.failed_json.unlink(missing_ok=True)

    def finish(self, run_id: str, config_sha: str, cpu_s: float) -> None:
        """Record the CPU seconds (all threads) of the call that finished the run."""
        atomic_write_json(self.study_json, {"run_id": run_id, "config_sha": config_sha, "cpu_s": round(cpu_s, 3)})

    def fail(self, run_id: str, error: str) -> None:
        """Record why the run failed (``failed.json``)."""
        atomic_write_json(self.failed_json, {"run_id": run_id, "error": error, "time": time.time()})


# -- the study folder -----------------------------------------------------------------------------
class StudyFolder:
    """The files of the study folder ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def spec_yaml(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def plan_csv(self) -> Path:
        return self.root / "plan.csv"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def runs_csv(self) -> Path:
        return self.root / "runs.csv"

    @property
    def wall_json(self) -> Path:
        return self.root / "wall.json"

    @property
    def laws_json(self) -> Path:
        return self.root / "laws.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def slurm_dir(self) -> Path:
        return self.root / "slurm"

    def run(self, run_id: str) -> StudyRunDir:
        """The folder of run ``run_id`` (a safe name, :func:`~ditscale.study.plan.check_run_id`)."""
        return StudyRunDir(self.runs_dir / check_run_id(run_id, str(self.plan_csv)))

    @property
    def trunks_dir(self) -> Path:
        return self.root / "trunks"

    def trunk_dir(self, trunk_id: str) -> Path:
        """The folder of shared trunk ``trunk_id`` (``share_trunks``; :mod:`ditscale.train.trunk`)."""
        return self.trunks_dir / trunk_id

    def create(self) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    # -- spec ---------------------------------------------------------------------------------------
    def write_spec(self, spec: StudySpec) -> None:
        """Write ``spec.yaml`` between :data:`SPEC_HEADER` and :data:`SPEC_END` (so a cut file is seen)."""
        atomic_write_text(self.spec_yaml, SPEC_HEADER + yaml.safe_dump(spec.to_dict(), sort_keys=False) + SPEC_END)

    def read_spec(self) -> StudySpec:
        """The spec the study was run with. One-line errors naming the file: :class:`DataError` when
        this is not a study folder or spec.yaml was cut short; :class:`ConfigError` when it is not
        plain YAML data (tags such as ``!!python/object`` refused) or a key or value is invalid."""
        if not self.spec_yaml.is_file():
            raise DataError(
                f"{self.root} is not a study folder (no spec.yaml); give the --out folder of `ditscale study run`"
            )
        data = parse_spec_yaml(read_text(self.spec_yaml), self.spec_yaml)
        try:
            return spec_from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{self.spec_yaml}: {err}") from None

    # -- plan ---------------------------------------------------------------------------------------
    def read_plan(self) -> dict[float, list[PlannedRun]]:
        """The frozen rows of ``plan.csv`` by budget, in file order ({} before the study starts)."""
        if not self.plan_csv.is_file():
            return {}
        out: dict[float, list[PlannedRun]] = {}
        for run in read_plan_csv(read_text(self.plan_csv), where=str(self.plan_csv)):
            out.setdefault(run.budget, []).append(run)
        return out

    def write_plan(self, runs: list[PlannedRun]) -> None:
        atomic_write_text(self.plan_csv, plan_csv(runs))

    # -- results ------------------------------------------------------------------------------------
    def finished_rows(self, planned: Iterable[PlannedRun]) -> list[dict]:
        """``runs.csv`` rows (:data:`RUNS_CSV_COLUMNS`) of the ``planned`` runs that finished, in
        their order; the result's own numbers win over the plan's. Reads, writes nothing."""
        rows = []
        for run in planned:
            folder = self.run(run.run_id)
            res = folder.valid_result()
            if res is None:
                continue
            cpu = (folder.read_study() or {}).get("cpu_s", "")
            rows.append(
                {
                    "run_id": run.run_id,
                    "budget": run.budget,
                    "seed": run.seed,
                    "role": run.role,
                    "depth": run.depth,
                    "hidden_size": run.hidden_size,
                    "num_heads": run.num_heads,
                    "params": res.get("params_non_embedding", run.params_non_embedding),
                    "params_total": res.get("params", run.params),
                    "tokens": res.get("tokens", run.tokens),
                    "images": res.get("images", run.images),
                    "steps": res.get("steps", run.steps),
                    "flops": res["flops_exact"],
                    "flops_6nd": res.get("flops_6nd", run.flops_6nd),
                    "loss": res["val_loss"],
                    "wall_s": res.get("wall_time_s", ""),
                    "cpu_s": cpu,
                }
            )
        return rows

    def failed_run_ids(self) -> set[str]:
        """Runs that failed for good (a ``failed.json`` in their folder)."""
        return {p.parent.name for p in self.runs_dir.glob("*/failed.json")}

    def write_runs_csv(self, rows: list[dict]) -> None:
        write_csv(self.runs_csv, RUNS_CSV_COLUMNS, rows)

    def read_runs_rows(self) -> list[dict[str, str]]:
        """``runs.csv`` as rows of text cells ([] when it does not exist), checked against the runs.

        runs.csv is derived: in a study folder (one with ``plan.csv``) it is rebuilt from the finished
        runs' own ``result.json`` whenever it is out of date, and a row that disagrees with its run
        (an edited or damaged file) is reported with a warning naming the run and the value; the
        run folders are never touched. A row whose run has no folder here (a study shipped without
        its run folders, or a run folder deleted to train it again) is kept as recorded, with a
        warning, until its run finishes again: runs.csv is then its only record, and a rebuild never
        drops it. A runs.csv without plan.csv (written by hand) is read as is.
        """
        rows = read_csv(self.runs_csv)
        if not self.plan_csv.is_file():
            return rows
        planned = [r for runs in self.read_plan().values() for r in runs]
        absent = {r.run_id for r in planned if not (self.runs_dir / r.run_id).is_dir()}
        kept = [r for r in rows if r.get("run_id") in absent]
        if kept:
            warnings.warn(
                f"{self.runs_csv}: {len(kept)} run(s) have no folder in {self.runs_dir}; their rows are kept as recorded",
                stacklevel=2,
            )
        mine = [r for r in rows if r.get("run_id") not in absent]
        true = self.finished_rows([r for r in planned if r.run_id not in absent])
        problem = runs_csv_problem(mine, true)
        if problem is None and len(mine) == len(true):
            return rows
        if problem is not None:
            warnings.warn(f"{self.runs_csv}: {problem}; rebuilt it from the runs' result.json", stacklevel=2)
        order = {r.run_id: i for i, r in enumerate(planned)}
        merged = sorted([*true, *kept], key=lambda r: order.get(r["run_id"], len(order)))
        try:
            self.write_runs_csv(merged)
        except OSError:  # a read-only folder: use the rebuilt rows all the same
            return [{k: "" if r.get(k) is None else str(r.get(k)) for k in RUNS_CSV_COLUMNS} for r in merged]
        return read_csv(self.runs_csv)

    def read_runs(self, budgets: list[float] | None = None):
        """``runs.csv`` (checked and brought up to date: :meth:`read_runs_rows`) as a
        :class:`ditscale.laws.Runs` (optionally only some budgets, FLOPs)."""
        self.read_runs_rows()
        if not self.runs_csv.is_file():
            raise DataError(f"{self.root} has no runs.csv yet; run `ditscale study run` to finish the study first")
        return _only_budgets(read_runs_csv(self.runs_csv), budgets)

    # -- wall time and laws -------------------------------------------------------------------------
    def read_wall(self) -> dict:
        """``wall.json``: ``calls`` (wall_s, host, time of each ``study run`` call) and ``total_s``; {} if none."""
        try:
            return json.loads(read_bytes(self.wall_json))
        except (OSError, ValueError, DataError):  # DataError: not a regular file (a FIFO is never read)
            return {}

    def add_wall(self, seconds: float, matmul_peak_flops: float | None = None, quality_s: float = 0.0) -> None:
        """Add one ``study run`` call of ``seconds`` wall time to ``wall.json`` (with the machine's
        matmul peak measured in that call, FLOP/s, and the seconds of it spent sampling and scoring
        models: the quality stage)."""
        data = self.read_wall() or {"calls": []}
        call = {"wall_s": round(seconds, 3), "host": os.uname().nodename, "time": time.time()}
        if matmul_peak_flops:
            call["matmul_peak_flops"] = matmul_peak_flops
        if quality_s:
            call["quality_s"] = round(quality_s, 3)
        data["calls"].append(call)
        data["total_s"] = round(sum(c["wall_s"] for c in data["calls"]), 3)
        atomic_write_json(self.wall_json, data)

    def trunk_flops(self) -> tuple[float, dict[str, float]]:
        """Training FLOPs spent in shared trunks (``trunks/*/trunk.json``), and by run id the FLOPs
        each branch took from its trunk instead of training them itself."""
        trained, shared = 0.0, {}
        for path in sorted(self.trunks_dir.glob("*/trunk.json")):
            data = json.loads(path.read_text())
            trained += float((data.get("trained") or {}).get("flops", 0.0))
            shared.update(data.get("shared_flops", {}))
        return trained, shared

    def write_laws(self, laws: dict) -> None:
        atomic_write_json(self.laws_json, laws)

    def read_laws(self) -> dict:
        """``laws.json``, checked against its schema (:meth:`LawsSummary.from_dict`); a one-line
        :class:`DataError` when it is damaged or of the wrong shape (it is derived: ``study report``
        rewrites it)."""
        try:
            data = parse_json(read_bytes(self.laws_json))  # a FIFO: a one-line DataError, never a read
        except (OSError, ValueError) as err:
            raise DataError(
                f"{self.laws_json} is damaged or missing ({type(err).__name__}); "
                f"run `ditscale study report {self.root}` to rebuild it from the runs"
            ) from None
        LawsSummary.from_dict(data, where=str(self.laws_json))  # the wrong shape: a one-line SchemaError
        return data


# spec.yaml starts with SPEC_HEADER and ends with SPEC_END: a file cut anywhere lacks its last line.
SPEC_HEADER = "# ditscale study spec, as run (a file that does not end with the line below was cut short)\n"
SPEC_END = "# end of spec.yaml\n"
_SPEC_REMEDY = "restore it, or run `ditscale study run` with the study's spec and this --out again to rewrite it"


def parse_spec_yaml(text: str, path: Path) -> dict:
    """The mapping of a ``spec.yaml`` text: a one-line :class:`DataError` naming ``path`` when it
    was cut short (written with :data:`SPEC_HEADER` but not ending with :data:`SPEC_END`), and
    :func:`ditscale.config.parse_yaml`'s one-line :class:`ConfigError` when it is not plain YAML
    data (bad syntax, a duplicate key, a tag such as ``!!python/object``, not a mapping). Files
    written before the end marker existed have no header and are only parsed."""
    if text.startswith(SPEC_HEADER) and not text.endswith(SPEC_END):
        raise DataError(f"{path} is truncated (it does not end with the line {SPEC_END.strip()!r}); {_SPEC_REMEDY}")
    return parse_yaml(text, str(path))


# Columns of runs.csv that must equal the run's own result (the rest are bookkeeping: wall and CPU time).
CHECKED_COLUMNS = (
    "budget",
    "seed",
    "params",
    "params_total",
    "tokens",
    "images",
    "steps",
    "flops",
    "flops_6nd",
    "loss",
)


def runs_csv_problem(rows: list[dict[str, str]], true: list[dict]) -> str | None:
    """What is wrong with runs.csv's ``rows`` (text cells) against ``true`` (:meth:`StudyFolder.finished_rows`),
    or None when every row it holds agrees (it may still lack runs that finished since it was written)."""
    by_id = {str(r["run_id"]): r for r in true}
    for i, row in enumerate(rows, start=2):
        run_id = row.get("run_id")
        if run_id not in by_id:
            return f"line {i} names run {run_id!r}, which has no finished result in the study"
        for col in CHECKED_COLUMNS:
            text, want = row.get(col), by_id[run_id][col]
            try:
                same = float(text) == float(want)
            except (TypeError, ValueError):
                same = False
            if not same:
                return f"run {run_id} has {col} {text!r}, but its result.json gives {want!r}"
    if len({r.get("run_id") for r in rows}) != len(rows):
        return "a run appears twice"
    return None


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` as CSV with ``columns`` (other keys left out), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file as rows of text cells ([] when it does not exist)."""
    try:
        text = read_text(path)
    except OSError:
        return []
    with csv_errors(str(path)):
        return list(csv.DictReader(io.StringIO(text, newline="")))


def runs_table(rows: list[dict], budgets: list[float] | None = None):
    """:func:`StudyFolder.finished_rows` as a :class:`ditscale.laws.Runs`, exactly as
    ``read_runs_csv`` reads them back from ``runs.csv`` (optionally only some budgets, FLOPs)."""
    if not rows:
        raise DataError("the study has no finished runs yet; run `ditscale study run` first")
    col = lambda name: np.array([float(r[name]) for r in rows])  # noqa: E731
    runs = Runs(
        flops=col("flops"),
        params=col("params"),
        tokens=col("tokens"),
        loss=col("loss"),
        budget=col("budget"),
        run_id=np.array([str(r["run_id"]) for r in rows]),
        seed=np.array([int(float(r["seed"])) for r in rows]),
    )
    return _only_budgets(runs, budgets)


def _only_budgets(runs, budgets: list[float] | None):
    return runs if budgets is None else runs.take(np.isin(runs.budget, budgets))
