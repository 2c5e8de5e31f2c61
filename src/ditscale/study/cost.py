"""What a study plan costs on GPUs, and the Slurm command that runs it (pure Python, no torch).

Per run: GPU-hours = its exact training FLOPs (not MACs; ``PlannedRun.flops_exact``, at most its
budget) / (the GPU's dense bf16 peak FLOP/s x an assumed MFU) / 3600 (:func:`ditscale.flops.gpu_hours`,
where the peak table and the default GPU and MFU live), and wall-hours = GPU-hours / GPUs per run.
Totals per budget and overall. Validation, checkpoints, compilation and a frozen text encoder's
captions are not counted: they are time, not model FLOPs.

::

    cost = plan_cost(current_plan(spec), gpu="H100 SXM", mfu=0.35, gpus_per_run=8)
    print(cost.table())
    print(cost.slurm_command(["--preset", "liang2024", "--set", "data.path=/data/laion256"], "runs/liang2024"))
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from ditscale.errors import ConfigError
from ditscale.flops import DEFAULT_GPU, DEFAULT_MFU, gpu_hours, resolve_gpu
from ditscale.study.plan import StudyPlan
from ditscale.train.plan import CPUS_PER_GPU

# The time limit of each run job of `study run --launcher slurm`: the longest run's estimated wall time
# x SLURM_TIME_FACTOR + SLURM_TIME_EXTRA_MIN (start-up, compilation, validation, checkpoints), rounded
# up to 10 minutes. Each GPU process gets CPUS_PER_GPU cores (its DataLoader workers and threads).
SLURM_TIME_FACTOR = 1.5
SLURM_TIME_EXTRA_MIN = 15


def _hours(x: float) -> str:
    """Hours for a table: one decimal from 1 h up, two significant digits below (0.0012, 0.4)."""
    return f"{x:,.1f}" if x >= 1 else f"{x:.2g}"


@dataclass(frozen=True)
class RunCost:
    """One run's compute and time: ``flops`` (exact training FLOPs), ``gpu_hours``, ``wall_hours``
    (on ``gpus_per_run`` GPUs)."""

    run_id: str
    budget: float
    flops: float
    gpu_hours: float
    wall_hours: float


@dataclass(frozen=True)
class BudgetCost:
    """The runs of one budget together: ``runs`` count, ``flops`` (exact), ``gpu_hours``, and the
    longest run's ``wall_hours``."""

    budget: float
    runs: int
    flops: float
    gpu_hours: float
    longest_wall_hours: float


@dataclass(frozen=True)
class PlanCost:
    """GPU-hours of every run of a plan on ``gpu`` (dense bf16 ``peak_flops`` FLOP/s) at ``mfu``."""

    gpu: str
    peak_flops: float
    mfu: float
    gpus_per_run: int
    runs: tuple[RunCost, ...]

    @property
    def flops(self) -> float:
        """Exact training FLOPs of all runs."""
        return sum(r.flops for r in self.runs)

    @property
    def gpu_hours(self) -> float:
        """GPU-hours of all runs."""
        return sum(r.gpu_hours for r in self.runs)

    def by_budget(self) -> list[BudgetCost]:
        """Per-budget totals, budgets ascending."""
        out = []
        for b in sorted({r.budget for r in self.runs}):
            rows = [r for r in self.runs if r.budget == b]
            out.append(
                BudgetCost(
                    b,
                    len(rows),
                    sum(r.flops for r in rows),
                    sum(r.gpu_hours for r in rows),
                    max(r.wall_hours for r in rows),
                )
            )
        return out

    def slurm_time_min(self) -> int:
        """Minutes to ask Slurm for per run job: the longest run's wall time x SLURM_TIME_FACTOR +
        SLURM_TIME_EXTRA_MIN, rounded up to 10 minutes."""
        longest = max((r.wall_hours for r in self.runs), default=0.0) * 60
        return int(math.ceil((longest * SLURM_TIME_FACTOR + SLURM_TIME_EXTRA_MIN) / 10) * 10)

    def table(self) -> str:
        """The per-budget GPU-hours, the total, and the assumptions behind them."""
        head = f"{'budget':>8} {'runs':>4} {'exact FLOPs':>11} {'GPU-hours':>10} {'longest run (h)':>15}"
        lines = [
            f"GPU time at MFU {self.mfu:g} of {self.gpu} ({self.peak_flops / 1e12:g} TFLOP/s dense bf16), "
            f"{self.gpus_per_run} GPU(s) per run:",
            head,
            "-" * len(head),
        ]
        for b in self.by_budget():
            lines.append(
                f"{b.budget:>8.2g} {b.runs:>4} {b.flops:>11.3e} {_hours(b.gpu_hours):>10} "
                f"{_hours(b.longest_wall_hours):>15}"
            )
        lines.append(f"{'total':>8} {len(self.runs):>4} {self.flops:>11.3e} {_hours(self.gpu_hours):>10}")
        lines.append(
            "GPU-hours = exact training FLOPs / (peak x MFU) / 3600; validation, checkpoints, compilation "
            "and text encoding not included"
        )
        if self.mfu == DEFAULT_MFU:
            lines.append(
                f"MFU {DEFAULT_MFU:g} was measured for DiT-XL/2 at 128 images per GPU; smaller models ran "
                "well below it (DiT-S/2 at 64 per GPU: 0.08), so their hours are a lower bound"
            )
        return "\n".join(lines)

    def slurm_command(self, source: list[str], out: str) -> str:
        """The ``ditscale study run`` command that trains the plan with one Slurm job per run.

        ``source``: the spec arguments as typed (``["--preset", "NAME", "--set", "k=v", ...]`` or a
        YAML path first); ``out``: the study folder.
        """
        g = self.gpus_per_run
        words = [
            "ditscale",
            "study",
            "run",
            *source,
            "--out",
            out,
            "--launcher",
            "slurm",
            "--slurm-gpus-per-node",
            str(g),
            "--slurm-tasks-per-node",
            str(g),
            "--slurm-cpus-per-task",
            str(CPUS_PER_GPU),
            "--slurm-time",
            str(self.slurm_time_min()),
        ]
        return " ".join(shlex.quote(w) for w in words)

    def to_json(self) -> dict:
        """Plain data: the assumptions, per-run and per-budget figures, totals."""
        return {
            "gpu": self.gpu,
            "peak_flops": self.peak_flops,
            "mfu": self.mfu,
            "gpus_per_run": self.gpus_per_run,
            "runs": [vars(r) for r in self.runs],
            "budgets": [vars(b) for b in self.by_budget()],
            "flops": self.flops,
            "gpu_hours": self.gpu_hours,
            "slurm_time_min": self.slurm_time_min(),
        }


def plan_cost(plan: StudyPlan, gpu: str | None = None, mfu: float | None = None, gpus_per_run: int = 1) -> PlanCost:
    """GPU-hours of every run of ``plan`` on ``gpu`` (a name of :data:`ditscale.flops.GPU_BF16_PEAK_FLOPS`;
    default :data:`~ditscale.flops.DEFAULT_GPU`) at ``mfu`` (default :data:`~ditscale.flops.DEFAULT_MFU`),
    each run on ``gpus_per_run`` GPUs (its wall time; GPU-hours do not depend on it at a fixed MFU)."""
    name, peak = resolve_gpu(gpu or DEFAULT_GPU)
    mfu = DEFAULT_MFU if mfu is None else mfu
    if gpus_per_run < 1:
        raise ConfigError(f"GPUs per run must be >= 1, got {gpus_per_run}")
    runs = []
    for r in plan.runs:
        hours = gpu_hours(r.flops_exact, peak, mfu)
        runs.append(RunCost(r.run_id, r.budget, r.flops_exact, hours, hours / gpus_per_run))
    return PlanCost(name, peak, mfu, gpus_per_run, tuple(runs))
