"""``ditscale study plan|run|predict|compare|verify|report|quality-steps``: isoFLOP scaling studies from the command line.

::

    ditscale study init --data folder --path IMAGES --out SPEC.yaml [--pilot [--pilot-dir DIR]]
    ditscale study plan --preset quickstart [--out DIR] [--json | --csv]
    ditscale study run --preset quickstart --out DIR [--workers 2] [--launcher local|slurm] [--max-runs K]
    ditscale study predict DIR --flops 1e21 [--json]
    ditscale study compare DIR_A DIR_B [--flops 1e21] [--json]
    ditscale study verify DIR --flops 5e13 [--sizes 1|3] [--json]
    ditscale study report DIR
    ditscale study quality-steps DIR [--steps 5 10 25 50]

A spec is a YAML path (positional) or a built-in preset (``--preset NAME``); ``--set key.path=value``
overrides any spec key (repeatable).
"""

from __future__ import annotations

import argparse
import json
import sys

from ditscale.cli.args import add_threads_argument, count, examples, finite_float
from ditscale.errors import WARNING, ConfigError
from ditscale.io import atomic_write_text, check_apart, check_output_dir, check_output_file

RAW = argparse.RawDescriptionHelpFormatter  # keeps the examples' layout
# `study run` left runs unfinished (held elsewhere, or to be retried): neither a bug (1) nor a user error (2)
EXIT_UNFINISHED = 3


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="study spec YAML file")
    p.add_argument("--preset", help="built-in study preset (e.g. quickstart) instead of a YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. --set hparams.lr=2e-3 (repeatable)",
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "study",
        help="plan, run, predict and compare scaling-law studies",
        description="IsoFLOP scaling studies of a DiT family: plan the runs, train them "
        "(resumable, parallel, Slurm), fit laws with intervals, backtest, report.",
        epilog=examples(
            "ditscale study plan --preset quickstart                 # the table of runs, before spending compute",
            "ditscale study run --preset quickstart --out runs/qs    # train (2 workers), fit, backtest, report",
            "ditscale study predict runs/qs --flops 1e13             # N_opt, D_opt, loss with 90% intervals",
            "ditscale study compare runs/a runs/b                    # exponents side by side",
        ),
        formatter_class=RAW,
    )
    sub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    q = sub.add_parser(
        "init",
        help="write a starting study spec for a folder of your own images",
        formatter_class=RAW,
        epilog=examples(
            "ditscale study init --data folder --path my_images --out my_study.yaml   # root/<class>/<image>",
            "ditscale study init --data folder --path my_images --out my_study.yaml --pilot   # grids placed by a pilot",
            "ditscale study plan my_study.yaml                                         # check it: runs, cost, prior",
        ),
    )
    q.add_argument("--data", choices=("folder",), required=True, help="the kind of data: folder (root/<class>/<image>)")
    q.add_argument("--path", required=True, help="the image folder (one sub-folder per class)")
    q.add_argument("--out", required=True, help="spec YAML file to write (refused if it exists, unless --force)")
    q.add_argument("--name", default=None, help="the study's name (default: the folder's name)")
    q.add_argument("--force", action="store_true", help="overwrite --out")
    q.add_argument(
        "--pilot",
        action="store_true",
        help="train a tiny pilot (a few sizes at the two smallest budgets) and place the rungs and prior from its losses",
    )
    q.add_argument(
        "--pilot-dir", default=None, help="the pilot's folder (default: --out without .yaml, plus -pilot); it resumes"
    )
    q.add_argument(
        "--workers", type=count(0, 1024), default=None, help="the pilot's worker processes (default: the spec's, 2)"
    )
    add_threads_argument(q, STUDY_THREADS_HELP)
    q.add_argument("--no-progress", action="store_true", help="no progress bar for the pilot")

    q = sub.add_parser(
        "plan",
        help="print the table of runs of a study",
        formatter_class=RAW,
        epilog=examples(
            "ditscale study plan --preset quickstart                 # N, tokens, images, steps, exact FLOPs vs 6ND",
            "ditscale study plan --preset quickstart --csv --set hparams.lr=2e-3",
            "ditscale study plan --preset quickstart --gpu A100 --json",
            "ditscale study plan --preset quickstart --out runs/qs   # a running study's plan: started budgets frozen",
        ),
    )
    _spec_args(q)
    q.add_argument("--out", help="study folder: use its finished budgets to centre the remaining grids")
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the plan as JSON (runs, dropped, warnings)")
    fmt.add_argument("--csv", action="store_true", help="print the plan as CSV")
    q.add_argument(
        "--gpu",
        default=None,
        help="GPU of the GPU-hour estimate (a name of the dense bf16 peak table, "
        "e.g. 'H100 SXM', 'A100', 'B200'; default H100 SXM)",
    )
    q.add_argument(
        "--mfu",
        type=finite_float(0.0, 1.0, above=True),
        default=None,
        help="model FLOPs utilisation assumed (default 0.35: measured for DiT-XL/2 on an H100, docs/benchmarks.md)",
    )
    q.add_argument(
        "--gpus-per-run",
        type=count(1, 1 << 16),
        default=8,
        help="GPUs per run job of the printed Slurm command (default 8)",
    )

    q = sub.add_parser(
        "run",
        help="run (or continue) a study, then fit and report",
        description=(
            "Run (or continue) a study, then fit and report. Exit status: 0 done (or --max-runs reached); "
            f"{EXIT_UNFINISHED} runs remain unfinished (held by other processes, or failed and to be retried): "
            "run the same command again; 2 a user error; 1 a bug."
        ),
        formatter_class=RAW,
        epilog=examples(
            "ditscale study run --preset quickstart --out runs/qs    # train (2 workers), fit, backtest, report",
            "ditscale study run --preset quickstart --out runs/qs --workers 4 --max-runs 3",
            "ditscale study run --preset liang2024 --set data.path=latents/laion256 --set train.text_encoder=models/clip-vit-large-patch14 \\",
            "    --out runs/liang2024 --launcher slurm --slurm-gpus-per-node 8 --slurm-tasks-per-node 8 --slurm-time 70",
        ),
    )
    _spec_args(q)
    q.add_argument("--out", required=True, help="study folder (created; running again continues it)")
    q.add_argument(
        "--workers", type=count(0, 1024), default=None, help="parallel local worker processes (default: the spec's)"
    )
    q.add_argument("--launcher", choices=("local", "slurm"), default="local", help="where runs execute (default local)")
    q.add_argument("--max-runs", type=count(0), default=None, help="train at most this many runs now, then stop")
    q.add_argument("--retry-failed", action="store_true", help="train again runs that failed before")
    add_threads_argument(q, STUDY_THREADS_HELP)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument(
        "--slurm-cluster",
        default=None,
        choices=("slurm", "local", "debug"),
        help="submitit cluster (default: Slurm when available; local: subprocesses, for testing)",
    )
    q.add_argument("--slurm-partition", default=None, help="Slurm partition")
    q.add_argument("--slurm-time", type=count(1, 10**6), default=60, help="minutes per run job (default 60)")
    q.add_argument("--slurm-gpus-per-node", type=count(0, 1024), default=0, help="GPUs per run job (default 0)")
    q.add_argument(
        "--slurm-tasks-per-node",
        type=count(1, 1024),
        default=1,
        help="processes per run job; >1 runs each run distributed, one process per GPU (torchrun-style)",
    )
    q.add_argument("--slurm-cpus-per-task", type=count(1, 4096), default=2, help="CPUs per process (default 2)")
    q.add_argument("--slurm-mem-gb", type=finite_float(0.0, above=True), default=None, help="memory per job, GB")
    q.add_argument(
        "--slurm-array-parallelism", type=count(1, 10**6), default=64, help="most jobs running at once (default 64)"
    )

    q = sub.add_parser(
        "predict",
        help="compute-optimal N, D and loss at a budget, from a finished study",
        formatter_class=RAW,
        epilog=examples(
            "ditscale study predict runs/qs --flops 1e13     # N_opt, D_opt, loss with 90% intervals; nearest model",
            "ditscale study predict runs/qs --json           # at the spec's target_flops, as JSON",
        ),
    )
    q.add_argument("dir", help="study folder")
    q.add_argument(
        "--flops",
        type=finite_float(0.0, above=True),
        default=None,
        help="target training compute in FLOPs (default: the spec's target_flops)",
    )
    q.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser(
        "compare",
        help="two studies' laws side by side, with intervals",
        formatter_class=RAW,
        epilog=examples(
            "ditscale study compare runs/a runs/b                # exponents side by side, differences resolved or not",
            "ditscale study compare runs/qs runs/other --flops 1e13 --json",
        ),
    )
    q.add_argument("dir_a", help="first study folder")
    q.add_argument("dir_b", help="second study folder")
    q.add_argument(
        "--flops",
        type=finite_float(0.0, above=True),
        default=None,
        help="also compare the losses both predict at this compute",
    )
    q.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser(
        "verify",
        help="train the predicted compute-optimal model at a budget and compare its loss with the prediction",
        formatter_class=RAW,
        epilog=examples(
            "ditscale study verify runs/qs --flops 5.12e13            # N_opt's nearest model at 10x the sweep",
            "ditscale study verify runs/qs --flops 5.12e13 --sizes 3  # also N_opt/2 and 2 N_opt: which is best?",
        ),
    )
    q.add_argument("dir", help="finished study folder (the runs train in DIR/verify/, resumable)")
    q.add_argument(
        "--flops",
        type=finite_float(0.0, above=True),
        required=True,
        help="training compute in FLOPs, at least the study's largest budget",
    )
    q.add_argument(
        "--sizes", type=int, choices=(1, 3), default=1, help="models to train: N_opt, or N_opt/2, N_opt, 2 N_opt"
    )
    q.add_argument(
        "--workers", type=count(0, 1024), default=None, help="parallel local worker processes (default: the spec's)"
    )
    q.add_argument(
        "--max-hours",
        type=finite_float(0.0, above=True),
        default=None,
        help="refuse when the estimated training time (the study's measured FLOP/s) is longer",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_argument(q, STUDY_THREADS_HELP)
    q.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser(
        "report",
        help="refit a finished study and rewrite laws.json, the figures and report.html",
        formatter_class=RAW,
        epilog=examples(
            "ditscale study report runs/qs           # refit and redraw (e.g. after changing laws options)",
            "ditscale study report runs/liang2024    # rewrites laws.json, the figures and report.html",
            "ditscale study report runs/qs --reuse-draws   # keep bootstrap.npz's draws: the same intervals on any CPU",
        ),
    )
    q.add_argument("dir", help="study folder")
    q.add_argument(
        "--reuse-draws",
        action="store_true",
        help="reuse the bootstrap draws stored in DIR/bootstrap.npz where they were drawn from the same "
        "runs.csv rows and laws options (the same intervals on any CPU, and faster); by default every "
        "bootstrap is drawn afresh",
    )

    q = sub.add_parser(
        "quality-steps",
        help="score each budget's best model at several sampler step counts (sampling vs model compute)",
        description="Sample and score the models the quality stage picks at each step count (its other "
        "quality settings), write quality_steps.csv (sampling FLOPs per image, scores) and redraw the "
        "report with quality against sampling FLOPs per image, one line per model. Resumable: a pair "
        "scored with the same settings is not scored again.",
        formatter_class=RAW,
        epilog=examples(
            "ditscale study quality-steps runs/qs                      # 5, 10, 25 and 50 steps",
            "ditscale study quality-steps runs/qs --steps 10 100       # then: quality_steps.png in report.html",
        ),
    )
    q.add_argument("dir", help="finished study folder with a quality section")
    q.add_argument(
        "--steps",
        type=count(1, 100_000),
        nargs="+",
        default=[5, 10, 25, 50],
        help="sampler step counts (default 5 10 25 50)",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


STUDY_THREADS_HELP = (
    "torch threads of each local run (default: the cores this process may use, divided among the workers)"
)
STUDY_INTERRUPTED = (
    "finished runs are kept in {0} and each unfinished run keeps its newest checkpoint (if it wrote one); "
    "run the same command again to continue"
)


def _load(args):
    from ditscale.study import load_spec  # lazy: start-up (`ditscale --help` loads every command)

    if bool(args.spec) == bool(args.preset):
        raise ConfigError("give a study spec YAML file or --preset NAME (exactly one)")
    return load_spec(args.preset or args.spec, args.overrides)


def _interval(ci, fmt=".4g") -> str:
    return "" if not ci else f"  90% [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


CPU_SIZED_GPU_HOURS = 0.1  # a plan under 6 GPU-minutes is sized for a CPU: no GPU-hours or Slurm command unless --gpu


def _plan(args) -> int:
    from ditscale.study import current_plan  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.study.plan import interval_warning  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.study.cost import plan_cost  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.study.epochs import plan_epochs  # lazy: start-up (`ditscale --help` loads every command)

    spec = _load(args)
    plan = current_plan(spec, args.out)
    cost = plan_cost(plan, gpu=args.gpu, mfu=args.mfu, gpus_per_run=args.gpus_per_run)
    source = [args.spec] if args.spec else ["--preset", args.preset]
    source += [w for o in args.overrides for w in ("--set", o)]
    command = cost.slurm_command(source, args.out or f"runs/{spec.name}")
    epochs = plan_epochs(spec, plan)
    warnings = [*map(str, plan.warnings), *filter(None, [interval_warning(spec), epochs and epochs.warning])]
    inputs, prior = _plan_inputs(spec)
    if args.json:
        out = {**plan.to_json(), "warnings": warnings, "cost": {**cost.to_json(), "slurm_command": command}}
        out.update(inputs=[i.to_json() for i in inputs], prior_suggestion=prior)
        out.update({"epochs": epochs.to_json()} if epochs else {})
        print(json.dumps(out, indent=2))
    elif args.csv:
        sys.stdout.write(plan.to_csv())
    elif args.gpu is None and cost.gpu_hours < CPU_SIZED_GPU_HOURS:
        print(plan.table())
        if epochs:
            print(epochs.line())
        print(
            f"\n{cost.flops:.3g} exact training FLOPs in all: {cost.gpu_hours * 3600:.2g} GPU-seconds on {cost.gpu}, "
            f"a study sized for a CPU; run it here with `ditscale study run ... --out DIR` (--gpu NAME prints "
            "its GPU-hours and a Slurm command)"
        )
    else:
        print(plan.table())
        if epochs:
            print(epochs.line())
        print(
            f"\n{cost.table()}\n\nrun it on Slurm, one job per run ({cost.gpus_per_run} GPU(s) each; "
            f"add --slurm-partition P if your cluster needs one):\n  {command}"
        )
    if not args.json:
        _print_inputs(inputs, sys.stderr if args.csv else sys.stdout)  # --csv: stdout holds the CSV alone
        for w in warnings:
            print(f"{WARNING} {w}", file=sys.stderr)
        if prior:
            print(f"{PRIOR_MISSES}\n{prior}", file=sys.stderr)
    return 0


PRIOR_MISSES = (
    f"{WARNING} the spec's prior puts every budget's optimum outside the family's ladder; a prior centred on "
    "the ladder (the spec's exponent, the middle budget's optimum at the middle of the rungs it trains; it "
    "knows nothing of the data: for a folder of images `ditscale study init --data folder --path DIR --out SPEC "
    "--pilot` measures one), to paste into the spec:"
)


def _plan_inputs(spec):
    """``(inputs a real run needs, the prior line to paste or None)`` of ``study plan``: the list is
    empty for built-in data; the line is given only when the prior misses the ladder at every budget."""
    from ditscale.study.inputs import study_inputs  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.study.prior import prior_line, prior_misses_ladder, suggest_prior  # lazy: start-up

    inputs = study_inputs(spec)
    if spec.data.get("name") not in ("folder", "captions", "latents") and len(inputs) == 1:
        inputs = ()
    return inputs, (prior_line(suggest_prior(spec)) if prior_misses_ladder(spec) else None)


def _print_inputs(inputs, file) -> None:
    """The inputs a real run needs, each ready, missing or unchecked (to ``file``, after the plan)."""
    if not inputs:
        return
    missing = sum(i.status == "missing" for i in inputs)
    print(
        f"\ninputs a real run needs ({missing} missing{'; this plan counts the declared shapes' if missing else ''}):",
        file=file,
    )
    for i in inputs:
        print(f"  {i.line()}", file=file)


def _init(args) -> int:
    from ditscale.study.starter import starter_spec  # lazy: start-up (`ditscale --help` loads every command)

    out = check_output_file(args.out, "--out")
    if out.exists() and not args.force:
        raise ConfigError(f"--out {args.out} exists; choose another file or add --force to overwrite it")
    if args.pilot:
        text = _piloted(args, out)
    else:
        text = starter_spec(args.path, args.name)
    atomic_write_text(out, text)
    print(f"wrote {out}; check it with `ditscale study plan {out}`, then `ditscale study run {out} --out DIR`")
    return 0


def _piloted(args, out) -> str:
    """The spec text of ``study init --pilot``; the pilot's outcome printed."""
    from ditscale.study.starter import piloted_starter_spec  # lazy: start-up (`ditscale --help` loads every command)

    pilot_dir = args.pilot_dir or str(out.with_suffix("")) + "-pilot"
    check_output_dir(pilot_dir, "--pilot-dir")
    check_apart({"--pilot-dir": pilot_dir}, {"--path": args.path})
    args._interrupted = lambda: STUDY_INTERRUPTED.format(pilot_dir)
    echo = lambda m: print(m, file=sys.stderr)
    text, pilot = piloted_starter_spec(
        args.path,
        args.name,
        pilot_dir,
        workers=args.workers,
        threads=args.threads,
        progress=not args.no_progress,
        echo=echo,
    )
    print("\n".join(pilot.lines()))
    for w in pilot.warnings():
        echo(f"{WARNING} {w}")
    return text


def _run(args) -> int:
    from ditscale.study import run_study  # lazy: start-up (`ditscale --help` loads every command)
    from ditscale.study.launchers import SlurmOptions  # lazy: start-up (`ditscale --help` loads every command)

    spec = _load(args)
    check_output_dir(args.out, "--out")
    check_apart({"--out": args.out}, {"data.path": spec.data.get("path")})  # a spec may live in --out: it resumes
    args._interrupted = lambda: STUDY_INTERRUPTED.format(args.out)
    slurm = None
    if args.launcher == "slurm":
        slurm = SlurmOptions(
            cluster=args.slurm_cluster,
            partition=args.slurm_partition,
            time_min=args.slurm_time,
            gpus_per_node=args.slurm_gpus_per_node,
            tasks_per_node=args.slurm_tasks_per_node,
            cpus_per_task=args.slurm_cpus_per_task,
            mem_gb=args.slurm_mem_gb,
            array_parallelism=args.slurm_array_parallelism,
        )
    out = run_study(
        spec,
        args.out,
        workers=args.workers,
        launcher=args.launcher,
        slurm=slurm,
        max_runs=args.max_runs,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        echo=lambda m: print(m, file=sys.stderr),
        threads=args.threads,
    )
    print(
        f"{len(out.trained)} run(s) trained, {len(out.skipped)} already done, {len(out.failed)} failed, "
        f"{len(out.busy)} taken by other workers; {out.wall_s:.0f} s"
    )
    if out.laws:
        _print_laws_summary(out.laws, args.out)
    return 0 if out.complete or args.max_runs is not None else EXIT_UNFINISHED


def _print_laws_summary(laws, out_dir) -> None:
    """The laws with exponent intervals (Approach 3's beside them; an interval the bootstrap withheld
    says so), the backtest (loss and N_opt), the isoFLOP point checks and every other warning of
    laws.json (its dict or record) and of its prediction (degenerate fits among them)."""
    from ditscale.laws.results import LawsSummary  # lazy: CLI start-up (scipy)

    view = LawsSummary.of(laws, where=f"{out_dir}/laws.json")
    par = view.parametric
    approach3 = {"params_law": par and par.n_opt_law, "tokens_law": par and par.d_opt_law}
    withheld = "  90% interval withheld (see the warning below)" if view.bootstrap else ""
    for law, name in (("params_law", "N_opt (params)"), ("tokens_law", "D_opt (tokens)"), ("loss_law", "L_opt")):
        f = view.law(law)
        ci = f.interval("exponent")
        line = f"  {name:15s} = {f.coefficient:.4g} * C^{f.exponent:.4f}{_interval(ci, '.4f') if ci else withheld}"
        other = approach3.get(law)
        if other is not None and other.exponent is not None:
            line += f"   | Approach 3: C^{other.exponent:.4f}{_interval(other.interval('exponent'), '.4f')}"
            line += " (degenerate)" if _degenerate(view.prediction, "parametric") else ""
        print(line)
    _print_backtest(view.backtest)
    for row in (view.parametric.backtest or ()) if view.parametric is not None else ():
        _print_n_opt_backtest(row, "Approach 3's N_opt")
    _print_quality(view.quality)
    shown = {c.message for c in view.checks} | {e.message for e in view.exponents if e.message}
    for check in view.checks:
        print(f"  check {check.kind}: {check.message}")
    if view.residual_structure is not None and view.residual_structure.message:
        shown.add(view.residual_structure.message)
        print(f"  check residual_structure: {view.residual_structure.message}")
    for e in view.exponents:
        if e.message:
            print(f"  {e.message}")
    for w in dict.fromkeys((*view.warnings, *(view.prediction.warnings if view.prediction else ()))):
        if w not in shown:
            print(f"{WARNING} {w}", file=sys.stderr)
    print(f"  report: {out_dir}/report.html")


def _degenerate(pred, form: str) -> tuple[str, ...]:
    """Why the prediction's loss ``form`` is degenerate (laws.json's ``prediction.forms``; () when it is
    not, or the file predates the rule)."""
    return next((f.degenerate or () for f in (pred.forms or ()) if f.form == form), ()) if pred else ()


def _print_quality(q) -> None:
    """The quality law in compute (beside the paper's exponent) and its backtest, when the study scored samples."""
    if q is None or q.law is None:
        return
    paper = q.paper.exponent
    print(
        f"  {q.metric:15s} = {q.law.coefficient:.4g} * C^{q.law.exponent:.4f}"
        f"{_interval(q.law.interval('exponent'), '.4f')}   (paper, FID: C^{paper})"
    )
    bt = q.backtest
    if bt is not None:
        print(
            f"  quality backtest at {bt.flops:.3g} FLOPs: predicted {q.metric} {bt.predicted:.4g}"
            f"{_interval(bt.predicted_ci90)}, actual {bt.actual:.4g}, error {bt.relative_error:+.2%}"
        )


def _print_backtest(rows) -> None:
    """The backtest rows of record: L* by the study's loss law, every form's error, and N_opt."""
    from ditscale.laws.fit import loss_law_name  # lazy: start-up (`ditscale --help` loads every command)

    for row in rows or ():
        form = f" ({loss_law_name(row.loss_law)})" if row.loss_law else ""
        print(
            f"  backtest: refit without {row.flops:.3g} FLOPs predicts L* {row.predicted_loss:.4f}"
            f"{_interval(row.predicted_ci90, '.4f')}{form}, actual {row.actual_loss:.4f}, "
            f"error {row.relative_error:+.2%}"
        )
        if len(row.forms or {}) > 1:
            print(
                "    every form: "
                + ", ".join(f"{loss_law_name(k)} {f.relative_error:+.2%}" for k, f in row.forms.items())
            )
        _print_n_opt_backtest(row)


def _print_n_opt_backtest(row, label: str = "N_opt") -> None:
    if row.predicted_n_opt is not None:
        actual = "edge/degenerate" if row.actual_n_opt is None else f"{row.actual_n_opt:.4g}"
        print(f"    {label} predicted {row.predicted_n_opt:.4g}{_interval(row.predicted_n_opt_ci90)}, actual {actual}")


def _predict(args) -> int:
    from ditscale.study.analyze import load_study_spec, study_prediction  # lazy: CLI start-up (scipy)
    from ditscale.study.verified import PredictAnswer  # lazy: CLI start-up

    spec = load_study_spec(args.dir) if args.flops is None else None  # --flops is checked before the folder
    flops = args.flops if args.flops is not None else spec.target_flops
    pred = study_prediction(args.dir, flops, spec=spec)
    verified = _verifications(args.dir)
    if args.json:
        print(json.dumps(PredictAnswer(pred, tuple(verified)).to_dict(), indent=2))
        return 0
    _print_prediction(pred)
    _print_verifications(verified, args.dir)
    return 0


def _verifications(out_dir) -> list:
    """The study's verifications (``study verify``'s kept answers); a damaged one is a warning, not an
    error: it does not change the prediction."""
    from ditscale.study.verified import read_verifications  # lazy: CLI start-up

    verified, damaged = read_verifications(out_dir)
    for line in damaged:
        print(f"{WARNING} {line}", file=sys.stderr)
    return verified


def _print_verifications(verified, out_dir) -> None:
    """Each prediction of this study that was checked by training it (``study verify``): the prediction
    of record then, the trained loss, the error and whether the interval held; which size was best."""
    if verified:
        print(f"  verified by training (`ditscale study verify`, {out_dir}/verify):")
    for v in verified:
        near = next(s for s in v.sizes if s.role == "n_opt")
        best = min(v.sizes, key=lambda s: (s.loss, s.params))
        inside, form = _verdict(v)
        print(
            f"    at {v.flops:.4g} FLOPs ({v.factor:.3g}x the largest budget): predicted {v.predicted_loss:.4f}"
            f"{_interval(v.predicted_ci90, '.4f')}{form}, trained {near.name} {v.actual_loss:.4f}: error "
            f"{v.relative_error:+.1%}, {inside} the 90% interval"
            + (f"; best of {len(v.sizes)} sizes: {best.name} {best.loss:.4f}" if len(v.sizes) > 1 else "")
        )


def _print_prediction(pred) -> None:
    """``study predict``'s text: N, D (tokens and images), loss with intervals, nearest model, backtest."""
    from ditscale.laws.fit import loss_law_name  # lazy: start-up (`ditscale --help` loads every command)

    near = pred.nearest
    print(f"compute-optimal at C = {pred.flops:.4g} training FLOPs:")
    print(f"  N_opt  {pred.n_opt.value:.4g} non-embedding params{_interval(pred.n_opt.ci90)}")
    print(f"  D_opt  {pred.d_opt.value:.4g} tokens{_interval(pred.d_opt.ci90)}")
    if pred.images_opt.value is not None:
        print(
            f"         {pred.images_opt.value:.4g} images ({pred.tokens_per_image} tokens each)"
            f"{_interval(pred.images_opt.ci90)}"
        )
    if pred.epochs_opt is not None:
        print(
            f"         {pred.epochs_opt.value:.3g} epochs of the {pred.train_images:,} train images"
            f"{_interval(pred.epochs_opt.ci90, '.3g')}"
        )
    form = f" ({loss_law_name(pred.loss_law)})" if pred.loss_law else ""
    print(f"  L_opt  {pred.loss_opt.value:.4f}{_interval(pred.loss_opt.ci90, '.4f')}{form}")
    where = "" if near.in_ladder else " (beyond the trained ladder, by the family rule)"
    if near.outside_ladder:
        where += f" -- N_opt is {pred.n_opt.value / near.params:.2g}x its size: outside the family's ladder"
    print(
        f"  nearest family model: {near.name} (depth {near.depth}, width {near.hidden_size}, "
        f"{near.num_heads} heads; {near.params:,} non-embedding / {near.params_total:,} params){where}"
    )
    if pred.extrapolation is not None:
        print(
            f"  extrapolation: {pred.extrapolation:.3g}x the largest trained budget ({pred.largest_budget:.3g} FLOPs)"
        )
    _print_forms(pred.forms)  # the exponents' words and the residual test's warning are among the warnings
    rs = pred.residual_structure
    if rs is not None and rs.p_value is not None:
        print(
            f"  residual structure by model size: F = {rs.statistic:.3g}, p = {rs.p_value:.2g}"
            f" ({'warns' if rs.warn else 'none'} below p < {rs.threshold:g})"
        )
    _print_backtest(pred.backtest)
    _print_measured_error(pred.measured_error, pred.loss_law)
    _print_noise_floor(pred.noise_floor)
    for w in pred.warnings:
        print(f"{WARNING} {w}", file=sys.stderr)
    for n in pred.notes:
        print(f"note: {n}", file=sys.stderr)


def _print_measured_error(measured, of_record: str | None) -> None:
    """The study's measured backtest L* error at the distance nearest this prediction's (laws.json's
    ``extrapolation``), one line per form (``of_record``: the prediction's form, marked), and whether
    this C lies beyond every distance measured."""
    from ditscale.laws.fit import loss_law_name  # lazy: start-up (`ditscale --help` loads every command)

    if measured is None:
        return
    where = "beyond every distance the study measured" if measured.beyond else "the nearest distance measured"
    print(
        f"  measured backtest error at {measured.measured_factor:.3g}x (this C is {measured.factor:.3g}x the "
        f"largest budget, {where}):"
    )
    for e in measured.forms:
        spread = "" if e.rows == 1 else f" [{e.low:+.1%}, {e.high:+.1%}]"
        print(
            f"    {loss_law_name(e.form):24s} {e.median:+.1%}{spread} ({e.rows} row{'s' * (e.rows != 1)}; "
            f"{e.within_ci90} inside the 90% interval, {e.within_2pct} within 2%)"
            + ("  <- this prediction's form" if e.form == of_record else "")
        )


def _print_noise_floor(frame) -> None:
    """What noise alone would cost this prediction if its form is right (``study predict``'s
    ``noise_floor``): the 90% band of its error against one run."""
    from ditscale.laws.fit import loss_law_name  # lazy: start-up

    if frame is None:
        return
    run = f" against one run (seed spread {frame.actual_sd:.1%})" if frame.actual_sd else ""
    print(
        f"  noise alone: a right {loss_law_name(frame.form)} whose L* scatter as this study's do "
        f"(sd {frame.sigma:.2%}) misses this C by [{frame.low:+.1%}, {frame.high:+.1%}]{run} in 90% of "
        f"{frame.draws} draws; a verified miss far outside it is the form's, not noise"
    )


def _print_forms(forms) -> None:
    """Every fitted form at the target, one line each: N_opt and L_opt with their 90% intervals."""
    if forms:
        print("  every fitted form at this C:")
    for f in forms:
        print(
            f"    {f.name:24s} N_opt {f.n_opt.value:.4g}{_interval(f.n_opt.ci90)}   "
            f"L_opt {f.loss_opt.value:.4f}{_interval(f.loss_opt.ci90, '.4f')}"
            + ("   DEGENERATE: " + "; ".join(f.degenerate) if f.degenerate else "")
        )


def _compare(args) -> int:
    from ditscale.study.analyze import study_comparison  # lazy: CLI start-up (scipy)

    comp = study_comparison(args.dir_a, args.dir_b, flops=args.flops)
    if args.json:
        print(json.dumps(comp.to_dict(), indent=2))
        return 0
    _print_comparison(comp)
    return 0


def _print_comparison(comp) -> None:
    """``study compare``'s text: one row per shared value (A, B, A - B with intervals), then the losses."""
    from ditscale.laws.fit import loss_law_name  # lazy: start-up (`ditscale --help` loads every command)

    def cell(value: float, interval, sign: str = "") -> str:
        text = f"{value:{sign}.4g}"
        return text if not interval else f"{text} [{interval[0]:.4g}, {interval[1]:.4g}]"

    print(f"A = {comp.a.study} ({comp.a.dir}), B = {comp.b.study} ({comp.b.dir})")
    print(f"{'value':28s} {'A (90% interval)':>30s} {'B (90% interval)':>30s} {'A - B (90% interval)':>32s}  resolved")
    for d in comp.differences:
        res = {True: "yes", False: "no", None: "-"}[d.resolved]
        a, b, diff = cell(d.a, d.a_ci90), cell(d.b, d.b_ci90), cell(d.difference, d.ci90, "+")
        print(f"{d.name:28s} {a:>30s} {b:>30s} {diff:>32s}  {res}")
    if comp.flops is not None:
        for k, est, law in (("A", comp.loss_a, comp.loss_a_law), ("B", comp.loss_b, comp.loss_b_law)):
            form = loss_law_name(law)
            print(f"loss at {comp.flops:.3g} FLOPs, {k}: {est.value:.4f}{_interval(est.ci90, '.4f')} ({form})")
    for n in comp.notes:
        print(f"note: {n}", file=sys.stderr)


def _verify(args) -> int:
    from ditscale.study.analyze import analyze_study, load_draws  # lazy: CLI start-up (scipy, matplotlib)
    from ditscale.study.verify import verify_study  # lazy: CLI start-up (scipy, the study loop)

    args._interrupted = lambda: STUDY_INTERRUPTED.format(f"{args.dir}/verify")
    answer = verify_study(
        args.dir,
        args.flops,
        sizes=args.sizes,
        workers=args.workers,
        max_hours=args.max_hours,
        progress=not args.no_progress,
        echo=lambda m: print(m, file=sys.stderr),
        threads=args.threads,
    )
    analyze_study(args.dir, draws=load_draws(args.dir))  # the report stars the trained loss (stored draws)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
        return 0
    _print_verification(answer, args.dir)
    print(f"  {args.dir}/report.html (redrawn: the trained loss starred on laws.png's loss panel)")
    return 0


def _verdict(v) -> tuple[str, str]:
    """A verification's interval word ("inside", "outside", "no") and its form of record, " (name)"."""
    from ditscale.laws.fit import loss_law_name  # lazy: start-up (`ditscale --help` loads every command)

    inside = {True: "inside", False: "outside", None: "no"}[v.within_ci90]
    return inside, f" ({loss_law_name(v.loss_law)})" if v.loss_law else ""


def _print_verification(v, out_dir) -> None:
    """``study verify``'s text: the prediction against the trained model, and each size's loss."""

    inside, form = _verdict(v)
    print(f"verified at C = {v.flops:.4g} training FLOPs, {v.factor:.3g}x the largest budget ({v.largest_budget:.4g}):")
    print(f"  predicted L_opt {v.predicted_loss:.4f}{_interval(v.predicted_ci90, '.4f')}{form}")
    print(f"  actual loss     {v.actual_loss:.4f}, error {v.relative_error:+.2%}, {inside} the 90% interval")
    print(f"  predicted N_opt {v.predicted_n_opt:.4g}{_interval(v.predicted_n_opt_ci90)}")
    for s in v.sizes:
        best = "  <- best" if s.params == v.best_params else ""
        print(f"    {s.name:14s} ({s.role:6s}) N {s.params:>12,}  loss {s.loss:.4f}{best}")
    if v.n_opt_gap == 0 and len(v.sizes) > 1:
        print(f"  the predicted size is the best of {len(v.sizes)}")
    elif v.within_seed_noise is not None:
        where = "within" if v.within_seed_noise else "beyond"
        print(
            f"  N_opt's model is {v.n_opt_gap:.2%} (log) above the best, {where} seed noise "
            f"(90% band of two runs: 1.645 x sqrt(2) x {v.seed_spread:.3g})"
        )
    for n in v.notes:
        print(f"note: {n}", file=sys.stderr)
    from ditscale.study.verified import verify_file  # lazy: CLI start-up

    print(f"  {verify_file(out_dir, v.flops)} (and verify.json beside it: the latest)")


def _report(args) -> int:
    from ditscale.study.analyze import analyze_study, draws_note, load_draws  # lazy: start-up (scipy, matplotlib)

    draws = load_draws(args.dir) if args.reuse_draws else None
    laws = analyze_study(args.dir, draws=draws)
    _print_laws_summary(laws, args.dir)
    note = draws_note(args.dir, draws, stored=True) if draws is not None else None
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _quality_steps(args) -> int:
    from ditscale.study.analyze import analyze_study, load_draws  # lazy: CLI start-up (scipy, matplotlib)
    from ditscale.study.quality import run_quality_steps, steps_points  # lazy: CLI start-up

    check_output_dir(args.dir, "study folder")
    new = run_quality_steps(
        args.dir, args.steps, progress=not args.no_progress, echo=lambda m: print(m, file=sys.stderr)
    )
    analyze_study(args.dir, draws=load_draws(args.dir))
    print(f"{'budget':>10}  {'params':>10}  {'steps':>6}  {'sampling FLOPs/image':>20}  value")
    for p in steps_points(args.dir):
        print(
            f"{p.budget:>10.3g}  {p.params:>10.4g}  {p.steps:>6}  {p.sampling_flops:>20.4g}  {p.metric} {p.value:.4g}"
        )
    print(f"{new} (model, steps) pair(s) scored now; {args.dir}/quality_steps.csv, {args.dir}/report.html")
    return 0


def run(args: argparse.Namespace) -> int:
    commands = {
        "init": _init,
        "plan": _plan,
        "run": _run,
        "predict": _predict,
        "compare": _compare,
        "report": _report,
        "verify": _verify,
        "quality-steps": _quality_steps,
    }
    return commands[args.study_command](args)
