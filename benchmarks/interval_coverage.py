"""Do the 90% intervals of the N_opt exponent cover the truth, and are they as wide as the estimate's spread?

Usage::

    python benchmarks/interval_coverage.py                          # Approach 2, case and residual bootstrap
    python benchmarks/interval_coverage.py --approach3 --sweeps 40  # also Approach 3 (slow: a fit per resample)
    python benchmarks/interval_coverage.py --sizes 3 --sweeps 300   # 3 sizes per budget: no parabola residuals

Simulated isoFLOP sweeps of a known ``L(N, D)`` (:mod:`ditscale.laws.simulate`: 11 budgets over 32x,
5 sizes per budget over 8x, centred grids and grids drifting to 2x the optimum, 1% and 2% noise).
Each sweep is fitted and bootstrapped; the table gives, per estimator, bootstrap, noise and grid, the
fraction of sweeps whose 90% interval holds the true exponent ``beta / (alpha + beta)`` (nominal 0.90,
binomial standard error ``sqrt(0.09 / n)``), the median interval width over the 5-95% spread of the
point estimates (1.0: as wide as the truth), the median bias of the point estimate and n sweeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from ditscale.laws import bootstrap, fit_isoflop, fit_parametric
from ditscale.laws.simulate import QUICKSTART_LAW, interval_coverage, simulated_sweep


def isoflop_estimator(kind: str, resamples: int):
    def estimate(runs, seed):
        # without the saturating L_opt law, refitted per resample by a solver and no input to N_opt: 50x faster
        fit = dataclasses.replace(fit_isoflop(runs), loss_law_saturating=None)
        return fit.params_law.exponent, bootstrap(runs, fit, resamples, seed, kind=kind).ci90("params_law.exponent")

    return estimate


def parametric_estimator(resamples: int):
    def estimate(runs, seed):
        fit = fit_parametric(runs)
        return fit.n_opt_law.exponent, bootstrap(runs, fit, resamples, seed).ci90("n_opt_law.exponent")

    return estimate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=200, help="simulated sweeps per row")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per sweep (Approach 3: half)")
    ap.add_argument("--approach3", action="store_true", help="also Approach 3 (case bootstrap)")
    ap.add_argument("--only-approach3", action="store_true", help="Approach 3 alone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, default=5, help="model sizes per budget (3: no parabola residuals)")
    ap.add_argument("--budgets", type=int, default=11, help="budgets per sweep (over 32x)")
    args = ap.parse_args()
    law = QUICKSTART_LAW
    estimators = [(f"Approach 2, {k}", isoflop_estimator(k, args.resamples)) for k in ("case", "residual")]
    if args.only_approach3:
        estimators = []
    if args.approach3 or args.only_approach3:
        estimators.append(("Approach 3, case", parametric_estimator(max(args.resamples // 2, 2))))
    print(f"truth: N_opt exponent {law.n_opt_exponent:.4f} ({law})")
    print("| estimator, bootstrap | noise | grid | coverage | width / spread | bias | n | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, estimate in estimators:
        for noise in (0.01, 0.02):
            for grid, drift in (("centred", 1.0), ("drifting 2x", 2.0)):
                t = time.perf_counter()
                c = interval_coverage(
                    estimate,
                    law.n_opt_exponent,
                    lambda rng, noise=noise, drift=drift: simulated_sweep(
                        law, rng, noise=noise, drift=drift, sizes=args.sizes, budgets=args.budgets
                    ),
                    args.sweeps,
                    args.seed,
                )
                print(
                    f"| {name} | {noise:.0%} | {grid} | {c.coverage:.3f} | {c.width_ratio:.2f} | {c.bias:+.4f} | "
                    f"{c.n} | {time.perf_counter() - t:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
