"""``ditscale fit isoflop|parametric|envelope CSV``: fit scaling laws to a CSV of runs.

Prints the laws with 90% bootstrap intervals and flags edge/degenerate budgets; ``--json`` prints
the laws.json shape instead (floats at full precision). Warnings (edge optima, the isoFLOP point
checks of ``ditscale.laws.checks``) go to stderr as one line each; with ``--json`` an isoflop fit
also carries its ``checks`` list.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ditscale.cli.args import count, examples, finite_float, seed
from ditscale.errors import WARNING
from ditscale.io import atomic_write_json, check_apart, check_output_file

# Resamples beyond this add no precision to a 90% interval (its Monte Carlo error is already ~0.3%)
# and their stored draws would take gigabytes.
MAX_BOOTSTRAP = 100_000


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit",
        help="fit scaling laws to a CSV of runs (flops, params, tokens, loss)",
        description="Fit scaling laws (Chinchilla Approaches 1-3) to a CSV with columns "
        "flops (FLOPs), params (N), tokens (D), loss; optional budget, run_id, seed, weight.",
        epilog=examples(
            "ditscale fit isoflop runs/qs/runs.csv --predict 1e21   # N_opt, D_opt, loss at 1e21 FLOPs",
            "ditscale fit parametric runs.csv --json               # L(N, D) = E + A/N^a + B/D^b",
            "ditscale fit envelope runs.csv --bootstrap 1000 --out laws.json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "method",
        choices=("isoflop", "parametric", "envelope"),
        help="isoflop: parabolas per budget (Approach 2); parametric: L(N,D) (Approach 3); "
        "envelope: best run per compute (Approach 1)",
    )
    p.add_argument("csv", help="runs CSV (e.g. a study's runs.csv)")
    p.add_argument("--json", action="store_true", help="print the fit as JSON (the laws.json shape)")
    p.add_argument("--out", metavar="PATH", help="also write the JSON to PATH (atomically)")
    p.add_argument(
        "--bootstrap",
        type=count(0, MAX_BOOTSTRAP),
        default=None,
        metavar="N",
        help="bootstrap resamples for 90%% intervals (default 1000; 200 for parametric; 0: none)",
    )
    p.add_argument("--seed", type=seed, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--predict",
        type=finite_float(0.0, above=True),
        metavar="FLOPS",
        help="predict the compute-optimal N, D, loss at this compute",
    )
    p.add_argument(
        "--tokens-per-image",
        type=finite_float(0.0, above=True),
        metavar="T",
        help="with --predict: also report D in images (D / T)",
    )
    p.add_argument("--robust", action="store_true", help="isoflop: Huber-robust parabolas")
    p.add_argument(
        "--method",
        dest="parametric_method",
        choices=("best", "lbfgs-grid", "varpro"),
        default="best",
        help="parametric: best (both below, the lower objective kept; default), lbfgs-grid (Epoch AI's grid "
        "of L-BFGS starts) or varpro (NNLS for E, A, B on an (alpha, beta) grid, then refined)",
    )
    p.add_argument("--saturating", action="store_true", help="predict the loss with E + k C^-gamma (isoflop, envelope)")
    p.add_argument(
        "--bins-per-decade", type=count(1, 1000), default=8, help="envelope: FLOP bins per decade (default 8)"
    )
    p.add_argument(
        "--min-runs-per-bin", type=count(1), default=2, help="envelope: runs a bin needs to count (default 2)"
    )
    p.add_argument(
        "--backtest",
        type=count(1, 1000),
        metavar="K",
        help="refit without the K largest budgets and report the prediction error of their compute-optimal loss",
    )
    return p


def _interval(ci, fmt="{:.4g}") -> str:
    return "" if ci is None else "[" + ", ".join(fmt.format(x) for x in ci) + "]"


def _format_compute_laws(d, boot) -> list[str]:
    """The three compute laws and the saturating loss law of ``d`` (a :class:`ComputeLawsSummary`), with
    intervals when bootstrapped."""
    lines = []
    for law, name in (("params_law", "N_opt (params)"), ("tokens_law", "D_opt (tokens)"), ("loss_law", "L_opt")):
        e = d.law(law)
        lines.append(
            f"  {name:15s} = {e.coefficient:.4g} * C^{e.exponent:.4f}"
            + (
                f"   exponent 90% {_interval(e.interval('exponent'), '{:.4f}')}, coefficient "
                f"{_interval(e.interval('coefficient'))}"
                if boot
                else ""
            )
        )
    s = d.loss_law_saturating
    if s is not None:
        lines.append(
            f"  {'L_opt':15s} = {s.E:.4g} + {s.k:.4g} * C^-{s.gamma:.4f}"
            + (f"   E {_interval(s.interval('E'))}, gamma {_interval(s.interval('gamma'), '{:.4f}')}" if boot else "")
        )
    return lines


def format_fit(fit, boot) -> str:
    """Human-readable summary of a fit and its bootstrap."""
    from ditscale.laws.results import EnvelopeSummary, FitSummary  # lazy: CLI start-up (scipy)

    how = f"; 90% intervals from {boot.n_resamples} bootstrap resamples (seed {boot.seed})" if boot else ""
    if fit.method == "parametric":
        return "\n".join(_format_parametric(fit, boot, how))
    d = (FitSummary if fit.method == "isoflop" else EnvelopeSummary).from_dict(fit.to_dict(boot))
    if fit.method == "isoflop":
        lines = [
            f"isoflop fit (Approach 2) of {fit.n_runs} runs in {len(fit.budgets)} budgets{how}",
            *_format_compute_laws(d, boot),
        ]
        lines.append(f"  {'budget (FLOPs)':>14s} {'runs':>5s} {'N* (params)':>12s} {'D* (tokens)':>12s} {'L*':>10s}")
        for b in fit.budgets:
            flag = (
                "  degenerate (not convex; left out)"
                if b.degenerate
                else "  edge (optimum at the edge of the runs)"
                if b.edge
                else ""
            )
            lines.append(f"  {b.flops:14.4g} {b.n_runs:5d} {b.n_opt:12.4g} {b.d_opt:12.4g} {b.loss_opt:10.5g}{flag}")
        return "\n".join(lines)
    lines = [
        f"envelope fit (Approach 1) of {fit.n_runs} points, {len(fit.envelope)} envelope points{how}",
        *_format_compute_laws(d, boot),
    ]
    lines.append(f"  {'C (FLOPs)':>14s} {'N (params)':>12s} {'D (tokens)':>12s} {'loss':>10s}  run")
    for p in fit.envelope:
        lines.append(f"  {p.flops:14.4g} {p.n_opt:12.4g} {p.d_opt:12.4g} {p.loss_opt:10.5g}  {p.run_id}")
    return "\n".join(lines)


def _format_parametric(fit, boot, how: str) -> list[str]:
    """Approach 3's five values (with intervals and standard errors) and its allocation laws."""
    from ditscale.laws.results import ParametricSummary  # lazy: CLI start-up (scipy)

    d = ParametricSummary.from_dict(fit.to_dict(boot))
    solver = fit.options.get("method", "lbfgs-grid")
    lines = [f"parametric fit (Approach 3, {solver}) of {fit.n_runs} runs: L(N, D) = E + A / N^alpha + B / D^beta{how}"]
    for k in ("E", "A", "B", "alpha", "beta"):
        lines.append(
            f"  {k:5s} = {getattr(d, k):.6g}" + (f"   90% {_interval(d.interval(k))}  se {d.se[k]:.3g}" if boot else "")
        )
    for law, name in (("n_opt_law", "N_opt (params)"), ("d_opt_law", "D_opt (tokens)")):
        e = getattr(d, law)
        lines.append(
            f"  {name:15s} = {e.coefficient:.4g} * C^{e.exponent:.4f}"
            + (
                f"   exponent 90% {_interval(e.interval('exponent'), '{:.4f}')}, coefficient "
                f"{_interval(e.interval('coefficient'))}"
                if boot
                else ""
            )
            + "   (C = 6ND)"
        )
    return lines


def _backtest(runs, cfg, args):
    """``--backtest K``: rows of :func:`ditscale.laws.backtest` with the fit's options (or None)."""
    from ditscale.laws import backtest  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.laws.powerlaw import FitWarning  # lazy: start-up (`ditscale --help` loads every command)

    if args.backtest is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)  # the refits' warnings are not about the user's fit
        opts = {k: v for k, v in cfg.fit_options().items() if k != "method"}
        return backtest(
            runs,
            args.backtest,
            method=args.method,
            saturating=args.saturating,
            parametric_method=cfg.parametric_method,
            **opts,
        )


def _print_warnings(messages) -> None:
    """Each distinct warning once, one line each, on stderr."""
    seen = set()
    for msg in messages:
        if msg not in seen:
            seen.add(msg)
            print(f"{WARNING} {msg}", file=sys.stderr)


def _print_text(fit, boot, pred, rows, k) -> None:
    """The human-readable output: the fit, the prediction and the backtest of ``k`` budgets."""
    print(format_fit(fit, boot))
    if pred is not None:

        def est(e, unit=""):
            return f"{e.value:.4g}" + (f" {unit}" if unit else "") + (f" {_interval(e.ci90)}" if e.ci90 else "")

        text = f"prediction at C = {pred.flops:.4g} FLOPs: N_opt = {est(pred.n_opt, 'params')}, D_opt = {est(pred.d_opt, 'tokens')}"
        if pred.images_opt is not None:
            text += f" = {est(pred.images_opt, 'images')}"
        print(text + f", L_opt = {est(pred.loss_opt)}")
    if rows is not None:
        print(f"backtest (refit without the {k} largest budgets):")
        for r in rows:
            n_act = "edge/degenerate" if r.actual_n_opt is None else f"{r.actual_n_opt:.4g}"
            print(
                f"  C = {r.flops:.4g} FLOPs: predicted L* {r.predicted_loss:.5g}, actual {r.actual_loss:.5g}, "
                f"relative error {r.relative_error:+.2%}; N_opt predicted {r.predicted_n_opt:.4g}, actual {n_act}"
            )


def run(args: argparse.Namespace) -> int:
    from ditscale.laws import (
        FitConfig,
        fit_runs,
        predict,
        read_runs_csv,
    )  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.laws.checks import isoflop_checks  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.laws.powerlaw import FitWarning  # lazy: start-up (`ditscale --help` loads every command)

    if args.out:
        check_output_file(args.out, "--out")
        check_apart({"--out": args.out}, {"CSV": args.csv})
    runs = read_runs_csv(args.csv)
    cfg = FitConfig(
        method=args.method,
        bootstrap=args.bootstrap,
        seed=args.seed,
        robust=args.robust,
        bins_per_decade=args.bins_per_decade,
        min_runs_per_bin=args.min_runs_per_bin,
        parametric_method=args.parametric_method,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        fit, boot = fit_runs(runs, cfg)
        pred = None
        if args.predict is not None:
            pred = predict(
                fit, args.predict, boot=boot, tokens_per_image=args.tokens_per_image, saturating=args.saturating
            )
    rows = _backtest(runs, cfg, args)
    loss_law = "saturating" if args.saturating else "power"
    checks = isoflop_checks(runs, fit, loss_law) if fit.method == "isoflop" else None
    _print_warnings(
        [str(w.message) for w in caught if issubclass(w.category, FitWarning)] + [c.message for c in checks or ()]
    )
    out = fit.to_dict(boot)
    if checks is not None:
        out["checks"] = [c.to_dict() for c in checks]
    if pred is not None:
        out["prediction"] = pred.to_dict()
    if rows is not None:
        out["backtest"] = [r.to_dict() for r in rows]
    if args.out:
        atomic_write_json(args.out, out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_text(fit, boot, pred, rows, args.backtest)
    return 0
