"""Measurement noise of a study: seed-to-seed spread vs the scatter of the isoFLOP parabolas.

Both are standard deviations of log(loss), i.e. relative spreads of the loss. A residual-to-seed
ratio near 1 means the isoFLOP curves scatter only as much as repeating a run with another seed does.
"""

from __future__ import annotations

import math

import numpy as np

from ditscale.laws.isoflop import fit_log_n_parabola
from ditscale.laws.runs import Runs

NOISE_UNITS = "standard deviation of log(loss), i.e. relative spread of the loss"


def noise_summary(runs: Runs) -> dict:
    """Seed-to-seed spread vs the spread of the isoFLOP residuals, both relative to the loss (laws.json ``noise``).

    ``seed_spread``: pooled standard deviation of log loss among seed replicates of one (budget, N)
    (None without replicates). ``residual_spread``: root-mean-square of log-loss residuals of the
    per-budget parabolas (loss vs log N), with 3 parameters per budget taken from the degrees of
    freedom. A ratio near 1 means the isoFLOP curves scatter only as much as the seeds do.

    Returns ``{seed_spread, seed_groups, seed_dof, residual_spread, residual_dof,
    residual_to_seed_ratio, per_budget: [{flops, residual_rms}], units}``.
    """
    label, budget_flops = runs.budgets()
    log_l = np.log(runs.loss)
    groups = _configurations(label, runs.params)
    seed_spread, seed_groups, seed_dof = _seed_spread(log_l, groups)
    residual_spread, residual_dof, per_budget = _residual_spread(log_l, groups, budget_flops)
    ratio = residual_spread / seed_spread if (seed_spread and residual_spread is not None) else None
    return {
        "seed_spread": seed_spread,
        "seed_groups": seed_groups,
        "seed_dof": seed_dof,
        "residual_spread": residual_spread,
        "residual_dof": residual_dof,
        "residual_to_seed_ratio": ratio,
        "per_budget": per_budget,
        "units": NOISE_UNITS,
    }


def log_loss_noise(runs: Runs, budget_rtol: float = 0.1) -> tuple[float | None, int]:
    """``(sigma, dof)``: the loss noise as a standard deviation of log loss, pooling the seed
    replicates' spread and the residuals of the budgets' parabolas (budgets with 4 or more sizes)
    by their degrees of freedom; ``(None, 0)`` when the runs hold neither."""
    label, budget_flops = runs.budgets(budget_rtol)
    log_l = np.log(runs.loss)
    groups = _configurations(label, runs.params)
    seed, _, seed_dof = _seed_spread(log_l, groups)
    resid, resid_dof, _ = _residual_spread(log_l, groups, budget_flops)
    dof = seed_dof + resid_dof
    if dof == 0:
        return None, 0
    ss = (seed or 0.0) ** 2 * seed_dof + (resid or 0.0) ** 2 * resid_dof
    return math.sqrt(ss / dof), dof


def _configurations(label: np.ndarray, params: np.ndarray) -> dict[tuple[int, float], list[int]]:
    """Run indices of each configuration (budget label, N), in order of first appearance."""
    groups: dict[tuple[int, float], list[int]] = {}
    for i in range(len(label)):
        groups.setdefault((int(label[i]), float(params[i])), []).append(i)
    return groups


def _seed_spread(log_l: np.ndarray, groups: dict) -> tuple[float | None, int, int]:
    """``(pooled std of log loss within replicated configurations or None, replicated groups, dof)``."""
    ss, dof, replicated = 0.0, 0, 0
    for idx in groups.values():
        if len(idx) > 1:
            v = log_l[idx]
            ss += float(((v - v.mean()) ** 2).sum())
            dof += len(idx) - 1
            replicated += 1
    return (math.sqrt(ss / dof) if dof else None), replicated, dof


def _residual_spread(log_l: np.ndarray, groups: dict, budget_flops: np.ndarray) -> tuple[float | None, int, list[dict]]:
    """``(rms log-loss residual of the parabolas or None, residual dof, per-budget rows)``.

    Each budget's parabola is fitted to the per-configuration mean log loss, so replicates do not
    count twice; a budget needs 4 configurations (one more than the parabola's 3 parameters).
    """
    res_ss, res_dof = 0.0, 0
    per_budget = []
    for b, c in enumerate(budget_flops):
        configs = [(p, np.mean(log_l[idx])) for (bb, p), idx in groups.items() if bb == b]
        if len(configs) < 4:
            per_budget.append({"flops": float(c), "residual_rms": None})
            continue
        log_n = np.log([p for p, _ in configs])
        y = np.array([v for _, v in configs])
        fitted = fit_log_n_parabola(log_n, np.exp(y))(log_n)[0]
        r = y - np.log(np.maximum(fitted, 1e-300))
        res_ss += float((r**2).sum())
        res_dof += len(log_n) - 3
        per_budget.append({"flops": float(c), "residual_rms": float(math.sqrt((r**2).sum() / (len(log_n) - 3)))})
    return (math.sqrt(res_ss / res_dof) if res_dof else None), res_dof, per_budget
