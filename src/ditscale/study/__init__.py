"""Scaling-law studies: isoFLOP sweeps of a DiT family, from spec to laws, backtest and report.

::

    from ditscale.study import load_spec, current_plan, run_study, predict_study

    spec = load_spec("quickstart")                  # a preset name or a YAML path
    print(current_plan(spec).table())               # runs, params, tokens, steps, exact vs 6ND FLOPs
    run_study(spec, "runs/quickstart")              # trains (resumable), writes runs.csv, laws.json, report.html
    predict_study("runs/quickstart", 1e21)          # N_opt, D_opt, loss with 90% intervals; nearest model
    verify_study("runs/quickstart", 5.12e13)        # train that model at C: predicted vs actual loss

Modules: ``spec`` (the YAML spec), ``plan`` (which runs: :func:`plan_study` -> :class:`StudyPlan`),
``folder`` (the study folder's files: :class:`StudyFolder`), ``replan`` (the plan of a folder
part-way through: :func:`current_plan`), ``analyze`` (fits, backtest, prediction, report),
``locks``, ``executor`` (one run, or a shared trunk and its branches: :func:`execute_task`),
``launchers`` (local processes or Slurm), ``run`` (the study loop: :func:`run_study`, which calls
``analyze`` when the study is complete), ``verify`` (train the predicted compute-optimal model at a
budget beyond the sweep: :func:`verify_study`), ``placement`` (a study's prior and rungs from a
pilot's losses, pure arithmetic), ``pilot`` (a tiny pilot run through ``run``: :func:`run_pilot`),
``starter`` (``study init``'s spec of a folder of images, placed by a pilot with ``--pilot``). Each
imports only modules listed before it.

Planning never imports torch; ``run_study`` imports it to measure the machine's matmul peak (laws.json
``compute``) and when a run trains. See ``docs/studies.md``.
"""

from ditscale.study.analyze import analyze_study, compare_studies, fit_study, predict_study  # noqa: F401
from ditscale.study.executor import RunTask, execute_run  # noqa: F401
from ditscale.study.folder import StudyFolder, StudyRunDir  # noqa: F401
from ditscale.study.locks import RunLock  # noqa: F401
from ditscale.study.plan import PlannedRun, PlanWarning, StudyPlan, plan_study  # noqa: F401
from ditscale.study.replan import current_plan  # noqa: F401
from ditscale.study.run import StudyOutcome, collect_runs, run_study  # noqa: F401
from ditscale.study.verify import Verification, verify_study  # noqa: F401
from ditscale.study.spec import PAPER_LAWS, StudySpec, load_spec, preset_names, spec_from_dict  # noqa: F401
