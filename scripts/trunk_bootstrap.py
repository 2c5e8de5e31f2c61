"""Run-level versus trunk-level bootstrap of a shared-trunk study's isoFLOP laws.

A study's bootstrap (``ditscale.laws.bootstrap``) resamples runs, stratified by budget, as if they
were independent. With shared trunks the runs of one model (and seed) at several budgets are
prefixes of one training run, so their errors are correlated. This script measures what that
does to the intervals: it also resamples whole trunks, the (model size, seed) clusters, with
replacement, giving each run its trunk's multiplicity and redrawing any resample that leaves a
budget with fewer than 3 sizes, then refits the same parabolas and power laws. docs/studies.md
quotes its output for the quickstart::

    python scripts/trunk_bootstrap.py tests/data/studies/quickstart/runs.csv --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from ditscale.laws import bootstrap, fit_isoflop, read_runs_csv
from ditscale.laws.bootstrap import interval90
from ditscale.laws.isoflop import budget_optima, laws_from_optima

LAWS = ("params_law.coefficient", "params_law.exponent", "tokens_law.exponent", "loss_law.exponent")


def trunk_weights(runs, label: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n_runs) weights: each run gets the multiplicity of its (params, seed) trunk in a draw of
    all trunks with replacement; draws leaving a budget with fewer than 3 sizes are redrawn."""
    seeds = runs.seed if runs.seed is not None else np.zeros(len(runs))
    _, trunk = np.unique(np.stack([runs.params, seeds], axis=1), axis=0, return_inverse=True)
    trunk = trunk.ravel()
    k = trunk.max() + 1
    out = []
    while len(out) < n:
        w = np.bincount(rng.integers(0, k, k), minlength=k).astype(np.float64)[trunk]
        if all(len(np.unique(runs.params[(label == b) & (w > 0)])) >= 3 for b in np.unique(label)):
            out.append(w)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="a study's runs.csv")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    runs = read_runs_csv(args.runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_isoflop(runs)
        boot = bootstrap(runs, fit, args.resamples, args.seeds[0])
    label, budget_flops = runs.budgets(fit.options["budget_rtol"])
    for name in LAWS:
        print(f"{name:24s} run-level (seed {args.seeds[0]}): {np.round(boot.ci90(name), 3).tolist()}")
    for seed in args.seeds:
        w = trunk_weights(runs, label, args.resamples, np.random.default_rng(seed))
        laws = laws_from_optima(
            budget_flops, budget_optima(runs, label, budget_flops, w), np.ones((len(w), len(budget_flops)), bool)
        )
        for name in LAWS:
            print(f"{name:24s} trunk-level (seed {seed}): {np.round(interval90(laws[name]), 3).tolist()}")


if __name__ == "__main__":
    main()
