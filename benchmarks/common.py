"""Helpers shared by the benchmark scripts: the measured matmul peak and interleaved timing.

Every benchmark reports speed as a fraction of a matmul peak measured in the same run, because the
development machine is shared and its speed varies with load: a ratio taken minutes apart is only
as good as the load was steady, so the scripts measure the peak before and after, interleave the
variants they compare (A, B, A, B, ...) and take medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of an ``n x n x n`` fp32 ``torch.mm`` (2 n^3 FLOPs) at the current threads.

    Best-of-N (as ``benchmarks/model_throughput.py``): the fastest repeat is the least disturbed by
    other processes, which is what a peak should be.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each call of each function, measured round-robin (A, B, C, A, B, C, ...).

    Interleaving spreads a change of load over every variant instead of the one that ran during it.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> float:
    """1-minute load average of the machine (for the record: other processes share the cores)."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:  # pragma: no cover - not Linux
        return float("nan")
