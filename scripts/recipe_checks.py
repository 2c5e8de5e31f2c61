"""Single runs of a study's recipe at any budget: learning-rate multipliers, seeds, EMA vs raw weights.

A study trains each model once per budget on one seed, with one learning-rate rule. When its laws
bend or miss, the first questions are about single runs: how far apart are two seeds of the same
run, would another learning rate have done better, what does a run past the largest budget give?
This script trains the run a study of ``SPEC`` would train for a model of width ``W`` at ``C``
training FLOPs (the plan's own builders: images, steps, batch, lr rule, warmup, schedule, EMA,
validation), alone (no shared trunk; a shared-trunk study's runs are bit-identical to these, so
``x1`` at seed 0 reproduces its runs.csv loss exactly), with the peak lr times ``MULT`` and the
training seed ``SEED``, and scores both the EMA and the raw weights. docs/studies.md quotes it::

    python scripts/recipe_checks.py --preset quickstart --out runs/checks 5.12e12:96 5.12e12:128:2 5.12e12:96:1:1

Each run is ``C:W[:MULT[:SEED]]`` (MULT 1, SEED 0 by default); one folder per run under ``--out``
(killed, the same command resumes each run from its last checkpoint; a finished run is read, not
trained again). ``--workers`` runs in parallel (one thread each). One JSON line per run on stdout,
in the order given: ``flops``, ``width``, ``mult``, ``seed``, ``steps``, ``lr``, ``loss`` (the
study's ``val.weights``), ``loss_ema``, ``loss_raw``.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One run: ``flops`` (training FLOPs), the rung of ``width``, peak lr x ``mult``, training ``seed``."""

    flops: float
    width: int
    mult: float = 1.0
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> Check:
        parts = text.split(":")
        try:
            if not 2 <= len(parts) <= 4:
                raise ValueError
            mult = float(parts[2]) if len(parts) > 2 else 1.0
            seed = int(parts[3]) if len(parts) > 3 else 0
            return cls(float(parts[0]), int(parts[1]), mult, seed)
        except ValueError:
            raise SystemExit(
                f"recipe_checks: error: run {text!r} is not C:W[:MULT[:SEED]], e.g. 5.12e12:96:2:1"
            ) from None

    @property
    def name(self) -> str:
        return f"c{self.flops:.4g}-w{self.width}-lr{self.mult:g}x-s{self.seed}"


def check_config(spec_name: str, overrides: list[str], check: Check):
    """``(TrainConfig, PlannedRun)`` of one :class:`Check`: the run ``spec`` plans for the rung of
    ``check.width`` at ``check.flops``, with its peak lr times ``check.mult`` and its seed."""
    from ditscale.config import from_dict
    from ditscale.errors import DitscaleError
    from ditscale.study import load_spec
    from ditscale.study.plan import ladder_sizes, planned_run, run_config
    from ditscale.train.config import TrainConfig

    try:
        spec = load_spec(spec_name, overrides)
    except DitscaleError as err:  # a bad spec or override: its one line, no traceback
        raise SystemExit(f"recipe_checks: error: {err}") from None
    sizes = [s for s in ladder_sizes(spec) if s.rung[1] == check.width]
    if not sizes:
        raise SystemExit(f"recipe_checks: error: no rung of width {check.width} in the study's family")
    batch = spec.hparams.batch_for(check.flops, spec.budgets[0])
    run = planned_run(spec, sizes[0], check.flops, batch, check.seed, 1.0, "prior")  # no grid: n_opt unused
    data = run_config(spec, run).to_dict()
    data["optim"]["lr"] *= check.mult
    data["val"]["both"] = True  # the EMA's loss and the raw weights'
    return from_dict(TrainConfig, data, where="check config"), run


def train_check(spec_name: str, overrides: list[str], out: str, check: Check) -> dict:
    """Train (or read) one :class:`Check` in ``out/<name>``; returns its JSON line's fields."""
    import torch

    from ditscale.train.loop import train

    torch.set_num_threads(1)
    cfg, run = check_config(spec_name, overrides, check)
    result = train(cfg, Path(out) / check.name, progress=False)
    return {
        "flops": check.flops,
        "width": check.width,
        "mult": check.mult,
        "seed": check.seed,
        "steps": run.steps,
        "lr": run.lr * check.mult,
        "loss": result["val_loss"],
        "loss_ema": result.get("val_loss_ema"),
        "loss_raw": result.get("val_loss_raw"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="C:W[:MULT[:SEED]], e.g. 5.12e12:128:2 (lr x2, seed 0)")
    parser.add_argument("--preset", default=None, help="a built-in study preset (e.g. quickstart)")
    parser.add_argument("--spec", default=None, help="a study spec file (instead of --preset)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec override")
    parser.add_argument("--out", required=True, help="folder of the runs (resumable)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if (args.preset is None) == (args.spec is None):
        parser.error("give one of --preset NAME or --spec FILE")
    checks = [Check.parse(r) for r in args.runs]
    for check in checks:  # every run's width and config checked before anything trains
        check_config(args.preset or args.spec, args.set, check)
    jobs = [(args.preset or args.spec, args.set, args.out, c) for c in checks]
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        for line in pool.map(train_check, *zip(*jobs)):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
