"""The GPU benchmark scripts keep working without a GPU: their dry runs exercise the same code path on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_train_dry_run_trains_resumes_and_reports(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_train.py", "--dry-run", "--json", str(out), "--root", str(tmp_path / "root")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["status"] == "ok" and row["model"] == "DiT-S/8" and row["images_per_s"] > 0
    check = data["resume_check"]  # stop at step 2, resume, finish: the same weights as uninterrupted runs
    assert check["status"] == "ok" and check["resumed_at"] == 2
    assert check["max_abs_diff_full_a_vs_split"] == 0.0 and check["max_abs_diff_full_a_vs_full_b"] == 0.0
    assert "| DiT-S/8 | 4 |" in proc.stdout  # the results table


def test_gpu_quality_dry_run_measures_every_case():
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_quality.py", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["device"] == "cpu"
    cases = {r["case"]: r for r in rows[1:]}
    assert set(cases) == {"inception", "sample-fp32", "sample-bf16", "sample-npz-split"}
    assert abs(cases["inception"]["fd_check"] - 2048 * 0.01**2) < 1e-5  # a mean shift of 0.01 in 2048 dimensions
    assert cases["sample-fp32"]["finite"] and cases["sample-npz-split"]["equal"]
