"""Approach 1 (lower envelope): the best run at each compute, then power laws in C.

The input rows are points (flops, params, tokens, loss) of training curves: every logged step of
every run (rows sharing a ``run_id`` are one curve), or just the final point of each run. Compute is
cut into log-spaced bins, ``bins_per_decade`` per decade, centred on the powers of ten. In each bin
that holds points of at least ``min_runs_per_bin`` distinct runs, the lowest-loss point is an
envelope point (its own FLOPs, N, D tokens, loss). The power laws ``N_opt = a C^b``,
``D_opt = c C^d``, ``L_opt = e C^f`` (least squares in log-log) and the saturating
``L = E + k C^-gamma`` are fitted to the envelope points.

Requiring two runs per bin drops the top of the compute range where only the largest model has
points (there the "best" run is the only run, which biases N_opt upwards).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ditscale.errors import DataError
from ditscale.laws.compute_laws import ComputeLaws
from ditscale.laws.powerlaw import fit_power_law, fit_saturating
from ditscale.laws.runs import Runs


@dataclass(frozen=True)
class EnvelopePoint:
    """The best point of one FLOP bin: its FLOPs, N (params), D (tokens), loss and run."""

    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    run_id: str

    def to_dict(self) -> dict:
        return {
            "flops": self.flops,
            "n_opt": self.n_opt,
            "d_opt": self.d_opt,
            "loss_opt": self.loss_opt,
            "run_id": self.run_id,
        }


@dataclass(frozen=True)
class EnvelopeFit(ComputeLaws):
    """Approach 1 result: the envelope points and the compute laws fitted to them."""

    envelope: tuple[EnvelopePoint, ...] = ()
    n_runs: int = 0
    options: dict = field(default_factory=dict)
    method: str = "envelope"

    def to_dict(self, boot=None) -> dict:
        """JSON-ready summary (floats at full precision); with ``boot``, 90% intervals and standard errors."""
        return self.fit_dict(boot, "envelope", self.envelope)


def envelope_points(runs: Runs, bins_per_decade: int = 8, min_runs_per_bin: int = 2) -> np.ndarray:
    """Row indices of the lowest-loss point in each qualifying log-spaced FLOP bin, by increasing FLOPs."""
    run = runs.run_id.astype(str) if runs.run_id is not None else np.arange(len(runs)).astype(str)
    bins = np.floor(np.log10(runs.flops) * bins_per_decade + 0.5).astype(np.int64)
    best = []
    for b in np.unique(bins):
        idx = np.flatnonzero(bins == b)
        if len(np.unique(run[idx])) >= min_runs_per_bin:
            best.append(idx[np.argmin(runs.loss[idx])])
    return np.array(best, dtype=np.int64)


def fit_envelope(
    runs: Runs, *, bins_per_decade: int = 8, min_runs_per_bin: int = 2, flops_range: tuple[float, float] | None = None
) -> EnvelopeFit:
    """Approach 1: power laws in C (FLOPs) fitted to the lower envelope of the training curves (module doc).

    ``flops_range=(lo, hi)`` keeps only points with lo <= FLOPs <= hi: restrict the fit to the compute
    range where the models span the optimum (at the ends of the range the envelope is the smallest
    or the largest model whatever the true optimum).

    Returns an :class:`EnvelopeFit` (N in parameters, D in tokens). Raises :class:`DataError` when
    fewer than 2 bins qualify.
    """
    if flops_range is not None:
        keep = (runs.flops >= flops_range[0]) & (runs.flops <= flops_range[1])
        if not keep.any():
            raise DataError(f"no points within flops_range {flops_range[0]:.3g}..{flops_range[1]:.3g} FLOPs; widen it")
        runs = runs.take(keep)
    pick = envelope_points(runs, bins_per_decade, min_runs_per_bin)
    if len(pick) < 2:
        raise DataError(
            f"the lower envelope has {len(pick)} point(s) (bins of 1/{bins_per_decade} decade holding "
            f">= {min_runs_per_bin} runs); the laws need 2: add runs or lower min_runs_per_bin"
        )
    c, n, d, loss = (getattr(runs, k)[pick] for k in ("flops", "params", "tokens", "loss"))
    run = runs.run_id[pick].astype(str) if runs.run_id is not None else pick.astype(str)
    points = tuple(
        EnvelopePoint(float(c[i]), float(n[i]), float(d[i]), float(loss[i]), str(run[i])) for i in range(len(pick))
    )
    return EnvelopeFit(
        params_law=fit_power_law(c, n),
        tokens_law=fit_power_law(c, d),
        loss_law=fit_power_law(c, loss),
        loss_law_saturating=fit_saturating(c, loss),
        envelope=points,
        n_runs=len(runs),
        options={
            "bins_per_decade": bins_per_decade,
            "min_runs_per_bin": min_runs_per_bin,
            "flops_range": None if flops_range is None else [float(x) for x in flops_range],
        },
    )
