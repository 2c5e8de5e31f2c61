"""Where a finished study's after-training time goes, and what two bit-identical changes save.

Usage::

    python benchmarks/study_analysis.py                       # the committed T2I quickstart study
    python benchmarks/study_analysis.py --study tests/data/studies/quickstart --rounds 2

1. **Fits** (`ditscale.laws.parallel`): ``ditscale study report`` on a copy of a committed study
   without its stored bootstrap draws (so every bootstrap is drawn), once with
   ``DITSCALE_FIT_WORKERS=1`` (the serial loop) and once with 2 worker processes, interleaved over
   ``--rounds``; the two laws.json files must agree in every key but the timings and the copy's path
   (checked, the script fails otherwise).
2. **Scoring** (the quality stage's ``_score``): one model's 1000 samples against a 1000-image
   reference, as before (``evaluate_shapes`` computing the reference's features and predicting the
   scenes, then ``named_accuracies`` predicting them again) and as now (the reference's features
   computed once per stage, the scenes once per model); captioned val images stand in for samples
   (the evaluator's cost does not depend on what the images show). Interleaved, median of ``--rounds``
   x 3; the scores must be equal.

The matmul peak (``benchmarks/common.py``) is measured before and after, as every benchmark here
reports it; these timings are of CPU work that is mostly not matmuls, so read them as A/B ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_times, load_average, matmul_peak, median  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIFFERENT = {"wall_time", "provenance", "warnings"}  # timings, versions, and the copy's own path in a warning


def report_seconds(study: Path, workers: int, scratch: Path, tag: str) -> tuple[float, dict]:
    """Seconds of ``ditscale study report`` on a fresh copy of ``study`` (draws removed), and its laws.json."""
    copy = scratch / f"{tag}-w{workers}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(study, copy)
    (copy / "bootstrap.npz").unlink(missing_ok=True)
    env = {**os.environ, "DITSCALE_FIT_WORKERS": str(workers)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ditscale.cli", "study", "report", str(copy)], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"study report failed on {copy}: {proc.stderr[-2000:]}")
    return seconds, json.loads((copy / "laws.json").read_text())


def fits(study: Path, rounds: int, scratch: Path) -> dict[int, list[float]]:
    times: dict[int, list[float]] = {1: [], 2: []}
    laws = {}
    for r in range(rounds):
        for workers in (1, 2):
            seconds, laws[workers] = report_seconds(study, workers, scratch, f"r{r}")
            times[workers].append(seconds)
            print(f"  fits: round {r + 1}, {workers} worker(s): {seconds:.1f} s", flush=True)
    keys = set(laws[1]) | set(laws[2])
    differ = sorted(k for k in keys - DIFFERENT if laws[1].get(k) != laws[2].get(k))
    if differ:
        sys.exit(f"laws.json differs between 1 and 2 workers in {differ}: the parallel refits are not bit-identical")
    return times


def scoring(rounds: int, scratch: Path) -> dict[str, list[float]]:
    from ditscale.data.config import DataConfig
    from ditscale.generate import save_dataset_npz
    from ditscale.metrics.batch import load_batch
    from ditscale.metrics.evaluate import evaluate_shapes, named_accuracies, shapes_features
    from ditscale.metrics.shapes_evaluator import load_shapes_evaluator

    data = DataConfig(name="shapes", image_size=32, captions=True)
    samples = load_batch(save_dataset_npz(data, scratch / "samples.npz", num=1000, split="val", progress=False))
    ref = load_batch(save_dataset_npz(data, scratch / "ref.npz", num=1000, split="train", progress=False))
    net = load_shapes_evaluator()
    features = shapes_features(net, ref.images)
    out = {}

    def before():
        out["before"] = {**evaluate_shapes(samples, ref, net).to_dict(), **named_accuracies(samples, net)}

    def after():
        out["after"] = evaluate_shapes(samples, ref, net, reference_features=features).to_dict()

    times = interleaved_times({"before": before, "after": after}, rounds=3 * rounds, warmup=1)
    if out["before"] != out["after"]:
        sys.exit(f"the scores differ: {out['before']} vs {out['after']}")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default=str(ROOT / "tests/data/studies/quickstart-t2i"), help="a committed study folder")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of each variant")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # the quality stage's scoring and the fits' workers: one thread each
    peak_before = matmul_peak()
    print(f"matmul peak {peak_before / 1e9:.1f} GFLOP/s (1 thread), load average {load_average():.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        fit_times = fits(Path(args.study), args.rounds, scratch)
        score_times = scoring(args.rounds, scratch)
    peak_after = matmul_peak()
    print(f"\nmatmul peak {max(peak_before, peak_after) / 1e9:.1f} GFLOP/s (best of before and after, 1 thread)")
    print("\n| step | before | after | after / before |\n|---|---:|---:|---:|")
    f1, f2 = median(fit_times[1]), median(fit_times[2])
    print(
        f"| `study report` of {Path(args.study).name}, draws redrawn (1 vs 2 fit workers) | {f1:.1f} s | {f2:.1f} s | {f2 / f1:.2f} |"
    )
    s1, s2 = median(score_times["before"]), median(score_times["after"])
    print(f"| scoring one model's 1000 samples (shapes evaluator) | {s1:.2f} s | {s2:.2f} s | {s2 / s1:.2f} |")
    print("\nlaws.json and the scores are identical before and after (checked).")


if __name__ == "__main__":
    main()
