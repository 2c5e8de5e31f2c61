"""Scaling-law studies: isoFLOP sweeps of a DiT family, from spec to laws, backtest and report.

::

    from ditscale.study import load_spec, current_plan, run_study, predict_study

    spec = load_spec("quickstart")                  # a preset name or a YAML path
    print(current_plan(spec).table())               # runs, params, tokens, steps, exact vs 6ND FLOPs
    run_study(spec, "runs/quickstart")              # trains (resumable), writes runs.csv, laws.json, report.html
    predict_study("runs/quickstart", 1e21)          # N_opt, D_opt, loss with 90% intervals; nearest model

Nothing here imports torch until a run trains. See ``docs/studies.md``.
"""

from ditscale.study.analyze import analyze_study, compare_studies, fit_study, predict_study  # noqa: F401
from ditscale.study.locks import RunLock  # noqa: F401
from ditscale.study.plan import Plan, PlannedRun, make_plan  # noqa: F401
from ditscale.study.run import StudyOutcome, collect_runs, current_plan, execute_run, run_study  # noqa: F401
from ditscale.study.spec import PAPER_LAWS, StudySpec, load_spec, preset_names, spec_from_dict  # noqa: F401
