"""Bootstrap refits on worker processes give the serial loop's floats (laws/parallel.py)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from ditscale.errors import ConfigError
from ditscale.laws import fit_isoflop, fit_parametric
from ditscale.laws.bootstrap import bootstrap
from ditscale.laws.parallel import WORKERS_ENV, at_most, fit_workers, map_tasks
from ditscale.laws.simulate import QUICKSTART_LAW, simulated_sweep


def worker_pid(_: int) -> int:
    return os.getpid()


def test_map_tasks_runs_on_other_processes_in_order():
    assert map_tasks(abs, [-3, 2, -1] * 8, workers=2) == [3, 2, 1] * 8
    pids = set(map_tasks(worker_pid, list(range(32)), workers=2))
    assert os.getpid() not in pids and len(pids) >= 1
    assert map_tasks(worker_pid, list(range(15)), workers=2) == [os.getpid()] * 15  # under 8 per worker: serial


@pytest.fixture(scope="module")
def sweep():
    return simulated_sweep(QUICKSTART_LAW, np.random.default_rng(3), noise=0.02, budgets=6)


@pytest.mark.parametrize("method", ["parametric", "isoflop"])
def test_bootstrap_is_bit_identical_on_one_and_two_workers(sweep, method, monkeypatch):
    fit = fit_parametric(sweep) if method == "parametric" else fit_isoflop(sweep)
    draws = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        draws[workers] = bootstrap(sweep, fit, n=40, seed=5).samples
    names = [k for k in draws["1"] if np.isfinite(draws["1"][k]).any()]
    assert names and sorted(draws["1"]) == sorted(draws["2"])
    for k in draws["1"]:
        np.testing.assert_array_equal(draws["1"][k], draws["2"][k])  # the same floats, not merely close
    if method == "isoflop":
        assert np.isfinite(draws["1"]["loss_law_saturating.E"]).all()  # the per-resample saturating refits ran


def test_fit_workers_reads_the_environment(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert fit_workers() == 3
    monkeypatch.delenv(WORKERS_ENV)
    assert 1 <= fit_workers() <= 8
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(ConfigError, match=WORKERS_ENV):
            fit_workers()


def test_at_most_caps_one_thread_only(monkeypatch):
    """The fits made beside the scoring (study run's FitAhead) run serially in their thread; another
    thread keeps every worker, and the cap goes when the block ends."""
    monkeypatch.setenv(WORKERS_ENV, "3")
    seen = {}
    with at_most(1):
        seen["capped"] = fit_workers()
        other = threading.Thread(target=lambda: seen.update(other=fit_workers()))
        other.start()
        other.join()
        with at_most(5):
            seen["looser"] = fit_workers()  # a cap never raises the configured number
    assert seen == {"capped": 1, "other": 3, "looser": 3} and fit_workers() == 3


UNGUARDED = "from ditscale.laws.parallel import map_tasks\nprint(sum(map_tasks(abs, list(range(-40, 0)), workers=2)))\n"


def test_a_script_without_a_main_guard_gets_one_line_that_says_so(tmp_path):
    """docs/laws.md's snippet run as a plain script: every worker imports the script again and dies;
    the caller gets what happened and both ways out, the guarded script the sum."""
    import subprocess
    import sys

    script = tmp_path / "fit.py"
    script.write_text(UNGUARDED)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    last = next(line for line in proc.stderr.splitlines() if line.startswith("ditscale.errors.DitscaleError: "))
    assert proc.returncode == 1 and 'must do it under `if __name__ == "__main__":`' in last
    assert f"Set {WORKERS_ENV}=1 to fit in this process" in last
    script.write_text(UNGUARDED.replace("print(", 'if __name__ == "__main__":\n    print('))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "820"
