"""The end of ``study run``: the top budget's model scored, then the laws fitted, against both at once.

Usage::

    python benchmarks/fit_ahead.py STUDY_DIR                # a finished study folder with its run folders
    python benchmarks/fit_ahead.py STUDY_DIR --models 1 6 --pool

When the last run of a local study has trained, the worker processes (``workers: 2``, one torch thread
each) sample and score the models of the budgets that finished last (``EarlyScoring``: one, the top
budget's, when the others were scored while runs trained; five or six in a T2I draw, where both
workers train to the end); the analysis then fits the loss laws. ``study run`` now fits
them meanwhile, in a thread of its own process (``FitAhead``), and the analysis reuses the draws. This
script times that tail on fresh copies of a finished study (the K largest budgets' chosen models'
scores and the stored draws removed), for each K of ``--models``:

- ``after``: the models scored on a pool of 2 spawned workers, then ``analyze_study`` (its fits on a
  pool of fit workers: the analysis as it ran before ``FitAhead``);
- ``beside``: the workers score while ``prefit_study`` fits in this process with one fit worker
  (``at_most(1)``: what ``FitAhead``'s thread runs), then ``analyze_study`` reuses the draws;
- ``beside-pool`` (with ``--pool``): the same with a pool of fit workers.

Every variant's laws.json must equal the others' in every key but the timings and the copy's path, and
the scores but their timings must be the same (checked, the script fails otherwise). The matmul peak
(``benchmarks/common.py``) is measured before and after; this is CPU work that is mostly not matmuls,
so read the timings as A/B ratios on one machine in one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, matmul_peak  # noqa: E402

from ditscale.laws.draws import DrawStore  # noqa: E402
from ditscale.laws.parallel import at_most  # noqa: E402
from ditscale.study.analyze import analyze_study, prefit_study  # noqa: E402
from ditscale.study.executor import execute_task  # noqa: E402
from ditscale.study.folder import StudyFolder  # noqa: E402
from ditscale.study.quality import QualityFiles, QualityTask, chosen_runs, settings_sha  # noqa: E402

DIFFERENT = {"wall_time", "provenance", "warnings"}  # timings, versions, and the copy's own path in a warning


def last_models(study: Path, k: int) -> list[dict]:
    """The chosen runs of the ``k`` largest budgets (runs.csv rows with ``optimal``), largest last, as
    ``EarlyScoring`` queues them."""
    spec = StudyFolder(study).read_spec()
    with open(study / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return chosen_runs(rows, spec)[-k:]


def fresh_copy(study: Path, runs: list[dict], scratch: Path, tag: str) -> Path:
    """A copy of ``study`` without its stored draws, laws.json, and the ``runs``' scores and samples."""
    copy = scratch / tag
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("bootstrap.npz", "laws.json", "report.html"))
    for run in runs:
        for path in (copy / "quality").rglob(f"{run['run_id']}.*"):
            path.unlink()
        assert scores(copy, run) is None
    return copy


def scores(copy: Path, run: dict) -> dict | None:
    """The quality stage's score file of ``run`` in the study ``copy`` (None when not scored)."""
    spec = StudyFolder(copy).read_spec()
    sha = settings_sha(spec.quality, spec.data)
    return QualityFiles(StudyFolder(copy)).read_scores(run["run_id"], sha, spec.quality.metric)


def tail(study: Path, runs: list[dict], scratch: Path, variant: str) -> tuple[float, dict, list]:
    """Seconds from the scoring of ``runs`` to laws.json written, under ``variant``; laws.json; the scores."""
    copy = fresh_copy(study, runs, scratch, f"{variant}-{len(runs)}")
    store = DrawStore()
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(abs, [1, 2]))  # the workers started (as the study's pool is) before the clock
        t0 = time.perf_counter()
        scoring = [pool.submit(execute_task, QualityTask(str(copy), run, threads=1)) for run in runs]
        if variant != "after":  # here, while the pool scores (FitAhead's thread runs the same call)
            _prefit(copy, store, 1 if variant == "beside" else 8)
        outcomes = [f.result() for f in scoring]
    if not all(o.startswith("scored: ") for o in outcomes):
        sys.exit(f"scoring failed on {copy}: {outcomes}")
    laws = analyze_study(copy, report=False, draws=store if variant != "after" else None)
    seconds = time.perf_counter() - t0
    return seconds, laws, [_untimed(scores(copy, run)) for run in runs]


def _untimed(score: dict) -> dict:
    """A score file but its timings (``sample_s``, ``eval_s``), which differ from variant to variant."""
    return {k: v for k, v in score.items() if not k.endswith("_s")}


def _prefit(copy: Path, store: DrawStore, cap: int) -> None:
    with at_most(cap):
        prefit_study(copy, StudyFolder(copy).read_spec(), store)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a if k not in DIFFERENT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a finished study folder with its run folders (checkpoints)")
    parser.add_argument("--models", type=int, nargs="+", default=[1, 6], help="models left to score (default 1 6)")
    parser.add_argument("--pool", action="store_true", help="also time the fits ahead on a pool of fit workers")
    args = parser.parse_args()
    variants = ["after", "beside", *(["beside-pool"] if args.pool else [])]
    peaks, rows = [matmul_peak()], []
    with tempfile.TemporaryDirectory(prefix="fit-ahead-") as scratch:
        for k in args.models:
            runs = last_models(args.study, k)
            times, results = {}, {}
            for variant in variants:
                times[variant], laws, found = tail(args.study, runs, Path(scratch), variant)
                results[variant] = (laws, found)
                print(f"{k} model(s), {variant:12s} {times[variant]:7.1f} s  (load {load_average():.2f})", flush=True)
            for variant, (laws, found) in results.items():
                if not same(laws, results["after"][0]):
                    sys.exit(f"{variant}: laws.json differs from the scoring-then-fitting variant's")
                if found != results["after"][1]:
                    sys.exit(f"{variant}: the scores differ from the scoring-then-fitting variant's")
            rows += [(k, v, t, t / times["after"]) for v, t in times.items()]
    peaks.append(matmul_peak())
    print(f"\nstudy {args.study}; matmul peak {min(peaks) / 1e9:.0f}-{max(peaks) / 1e9:.0f} GFLOP/s")
    print("| models left to score | variant | seconds from the last run trained to laws.json | vs after |")
    print("|---|---|---|---|")
    for k, variant, seconds, ratio in rows:
        print(f"| {k} | {variant} | {seconds:.1f} | {ratio:.2f}x |")
    print("laws.json and the scores (but their timings): identical in every variant")


if __name__ == "__main__":
    main()
