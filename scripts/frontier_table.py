"""How much compute draws a shape: the frontier runs behind docs/quality.md (issue 22, goal 3).

Two runs of the ``tiny`` presets' recipe (depth 6, width 128, x0 prediction, logit-normal times,
batch 64, lr 3e-3, EMA 0.995; constant lr after warmup, so each checkpoint's EMA weights are a
model), one on each quickstart's data and conditioning, scored at their checkpoints as the quality
stage scores a study's best models (1000 samples, 25 Euler steps, against the study's 1000 real
reference images, ``ditscale eval --json``):

- ``t2i``: the T2I quickstart's (32 px, one captioned shape, in-context blocks, the word encoder),
  prompted with the captions of val items 0-999;
- ``class``: the class quickstart's (32 px, 1-4 shapes, the label the top shape's kind, in-context
  blocks), 1000 samples of uniform random classes.

Each folder, ``tests/data/pilots/{t2i,class}-frontier/``, holds the config, ``PREREG.md`` (the
question and the frontier rule, written before it trained), ``metrics.jsonl``, ``result.json`` and
``scores/step{K}-cfg{S}.json``; the chance levels and the real-vs-real floor at 1000 images are
the quickstart study's (``tests/data/studies/<study>/quality/frame.json``: the same data, the same
reference images). An ablation arm (:data:`ARMS`; ``t2i-v``: the T2I run with velocity prediction
instead of x0; ``t2i-depth2`` and ``class-depth2``: with depth 2 instead of 6, trained to the same
compute; each in ``tests/data/pilots/<arm>-frontier/``) changes one setting of a run and is set
beside it at equal training compute. The recipe table (:data:`RECIPE_RUNS`) sets the T2I study's own
run at 20x the top budget beside its arms (the study's recipe with one or two settings changed, each
trained by ``scripts/recipe_checks.py``) and the depth-2 arm's checkpoint at 20x, with each run's recipe.
The replicate table (:data:`REPLICATE_RUNS`) sets the depth-2 arm beside training seeds 1 to 4 and the
study's 30-step warmup, every 500 steps around 20x (seed 1 on to 41x), with their PREREG.md's verdicts.
This script writes each table between ``<!-- {t2i,class,t2i-v,t2i-depth2,class-depth2}-frontier -->``,
``<!-- t2i-recipe-arms -->`` and ``<!-- t2i-depth2-replicates -->`` markers (``tests/test_docs_numbers.py``
checks them) and draws a run's sample grid from its batches::

    python scripts/frontier_table.py                           # print the tables
    python scripts/frontier_table.py --write docs/quality.md
    python scripts/frontier_table.py --run t2i-recipe-arms      # the recipe table only
    python scripts/frontier_table.py --run t2i-depth2-replicates  # the replicate table only
    python scripts/frontier_table.py --run class --grid DIR/samples/step12500-cfg1.npz ... --out FILE.png
    python scripts/frontier_table.py --grid t2i=A/step7000-cfg1.npz t2i-depth2=B/step20500-cfg1.npz --out FILE.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import statistics
from pathlib import Path
from typing import NamedTuple


def _sibling(name: str):
    """The script ``scripts/{name}.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUICKSTART_TABLE = _sibling("quickstart_table")  # the goal's accuracies and the docs' block writer live there
ROOT = Path(__file__).resolve().parents[1]
PILOTS = ROOT / "tests" / "data" / "pilots"  # every measured run's folder
TOP_BUDGET = 5.12e12  # training FLOPs of each quickstart's largest budget
NAME = re.compile(r"step(\d+)-cfg([\d.]+)")  # a scored batch: its checkpoint's step, its guidance scale
# The attributes scored only where the prompted cell is found occupied (quickstart_table's, in the table's
# order), and those of them goal 3 asks at least 2x their chance for (given the position); FD <= 10x the floor.
GIVEN_POSITION = ("colour", "size", "shape")
assert {f"accuracy_{a}" for a in GIVEN_POSITION} == set(QUICKSTART_TABLE.ATTRIBUTES_GIVEN_POSITION)
GOALS = tuple(a for a in GIVEN_POSITION if f"accuracy_{a}" in QUICKSTART_TABLE.GOAL_ACCURACIES)
assert "accuracy_class" in QUICKSTART_TABLE.GOAL_ACCURACIES  # the class quickstart's bar


class Frontier(NamedTuple):
    """One frontier run: its folder, the study whose frame judges it, its docs block."""

    name: str  # "t2i", "class" or an arm's (ARMS); the folder and docs block are "<name>-frontier"
    study: str  # the quickstart study under tests/data/studies/ (its quality/frame.json)

    @property
    def folder(self) -> Path:
        return PILOTS / f"{self.name}-frontier"

    @property
    def frame(self) -> dict:
        return json.loads((ROOT / "tests" / "data" / "studies" / self.study / "quality" / "frame.json").read_text())

    @property
    def block(self) -> str:
        return f"{self.name}-frontier"


RUNS = {"t2i": Frontier("t2i", "quickstart-t2i"), "class": Frontier("class", "quickstart")}
T2I = RUNS["t2i"]
# Ablation arms: a frontier run with one setting changed, scored at some of its checkpoints; its docs block
# (the arm's name + "-frontier") sets each beside its base run's checkpoint of the nearest training compute.
ARMS = {name: (Frontier(name, "quickstart-t2i"), T2I) for name in ("t2i-v", "t2i-depth2")}
ARMS["class-depth2"] = (Frontier("class-depth2", "quickstart"), RUNS["class"])


def scores(run: Frontier = T2I) -> dict[tuple[int, float], dict]:
    """``{(step, cfg scale): ditscale eval --json}`` of every scored checkpoint of ``run``."""
    found = {}
    for path in sorted((run.folder / "scores").glob("step*-cfg*.json")):
        step, cfg = NAME.fullmatch(path.stem).groups()
        found[int(step), float(cfg)] = json.loads(path.read_text())
    return found


def result(run: Frontier) -> dict:
    """The run's ``result.json`` (its config, steps, training FLOPs per image)."""
    return json.loads((run.folder / "result.json").read_text())


def flops_per_step(run: Frontier) -> float:
    """Training FLOPs of one step: the batch times the run's own count per image."""
    done = result(run)
    return done["config"]["batch_size"] * done["flops_per_image"]


def _fd_cell(score: dict, floor: float) -> str:
    return f"{score['fd']:.1f} ({score['fd'] / floor:.1f}x)"


def ema_val_loss(run: Frontier | RecipeRun) -> dict[int, float]:
    """``{step: validation loss of the EMA weights}`` where the run logged one."""
    metrics = map(json.loads, (run.folder / "metrics.jsonl").open())
    return {m["step"]: m["val_loss_ema"] for m in metrics if "val_loss_ema" in m}


def given_position(score: dict, attribute: str) -> float:
    """The attribute right where the position is right: its accuracy over the position's."""
    return score[f"accuracy_{attribute}"] / score["accuracy_position"]


def meets_goal(score: dict, chance: dict, floor: float) -> bool:
    """Goal 3's bars: FD within 10x the floor, and the label followed: class accuracy at least 2x its
    chance (class models), or colour and shape at least 2x their chance given the position (captions)."""
    times = QUICKSTART_TABLE.CHANCE_TIMES
    if "accuracy_class" in chance:
        follows = score["accuracy_class"] >= times * chance["accuracy_class"]
    else:
        follows = all(given_position(score, a) >= times * given_position(chance, a) for a in GOALS)
    return score["fd"] <= QUICKSTART_TABLE.FLOOR_TIMES * floor and follows


def _score_columns(frame: dict, given: tuple[str, ...] = GIVEN_POSITION, with_sd: bool = False):
    """(heading, score -> cell) of the scores a table shows beside its FD, each with its frame: the class
    run's class accuracy, precision and recall, or the caption runs' position and the ``given`` attributes
    given the position (the shape with its binomial sd, :func:`shape_sd`, when ``with_sd``)."""
    chance = frame["chance"]
    if "accuracy_class" in chance:
        real = frame["floor"]
        return [
            (f"class accuracy (chance {chance['accuracy_class']:.3f})", lambda s: f"{s['accuracy_class']:.3f}"),
            (f"precision (real {real['precision']:.3f})", lambda s: f"{s['precision']:.3f}"),
            (f"recall (real {real['recall']:.3f})", lambda s: f"{s['recall']:.3f}"),
        ]

    def cell(s: dict, a: str) -> str:
        sd = f" ± {shape_sd(s):.3f}" if with_sd and a == "shape" else ""
        return f"{given_position(s, a):.3f}{sd}"

    position = [(f"position (chance {chance['accuracy_position']:.3f})", lambda s: f"{s['accuracy_position']:.3f}")]
    return position + [
        (f"{a} given the position (chance {given_position(chance, a):.3f})", lambda s, a=a: cell(s, a)) for a in given
    ]


def _heading(head: list[str]) -> list[str]:
    """A Markdown table's first two lines: the column headings and the rule under them."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def _score_cells(score: dict, columns: list, chance: dict, floor: float) -> str:
    """A row's last cells: the FD beside its floor, the ``columns`` of :func:`_score_columns`, goal 3 met."""
    cells = [_fd_cell(score, floor), *(cell(score) for _, cell in columns)]
    return " | ".join(cells) + f" | {'yes' if meets_goal(score, chance, floor) else 'no'} |"


def table(run: Frontier = T2I) -> str:
    """A run's docs table: a row per scored batch (training compute from the run's own count per image,
    the logged EMA validation loss where one was logged, each score beside its frame) and the verdict
    of PREREG.md's rule (the first checkpoint meeting every bar without guidance)."""
    frame = run.frame
    chance, floor = frame["chance"], frame["floor"]["fd"]
    found = scores(run)
    val, per_step, batch = ema_val_loss(run), flops_per_step(run), result(run)["config"]["batch_size"]
    columns = _score_columns(frame)
    head = ["steps (images)", "training FLOPs (x the top budget)", "val loss (EMA)", "guidance"]
    head += [f"FD (x the floor {floor:.1f})", *(h for h, _ in columns), "goal 3 met"]
    lines = _heading(head)
    for (step, cfg), s in sorted(found.items()):
        flops = step * per_step
        loss = f"{val[step]:.4f}" if step in val else "-"
        compute = f"{flops:.3g}".replace("e+", "e")
        lines.append(
            f"| {step:,} ({step * batch:,}) | {compute} ({flops / TOP_BUDGET:.0f}x) | {loss} | "
            f"{'none' if cfg == 1 else f'{cfg:g}'} | {_score_cells(s, columns, chance, floor)}"
        )
    first = [k for k, s in sorted(found.items()) if k[1] == 1 and meets_goal(s, chance, floor)]
    last = max(step for step, _ in found)
    verdict = (
        f"First checkpoint meeting every bar without guidance (the rule of PREREG.md): step {first[0][0]:,}."
        if first
        else f"No checkpoint meets every bar without guidance (the rule of PREREG.md) up to step {last:,} "
        f"({last * per_step / TOP_BUDGET:.0f}x the top budget)."
    )
    return "\n".join(lines) + "\n\n" + verdict


TRAINING_KEYS = ("batch_size", "ema_decay", "ema_start", "seed")  # a config's top-level keys that train differently


def changed(arm: Frontier, base: Frontier) -> dict[str, tuple]:
    """``{key: (base's value, arm's value)}`` of the training config keys the arm changed: ``section.key`` of
    the model, diffusion, data and optim sections, and the top-level :data:`TRAINING_KEYS`."""
    a, b = result(arm)["config"], result(base)["config"]
    found = {key: (b.get(key), a.get(key)) for key in TRAINING_KEYS if a.get(key) != b.get(key)}
    return found | {
        f"{section}.{key}": (b[section].get(key), a[section].get(key))
        for section in ("model", "diffusion", "data", "optim")
        for key in sorted(set(a[section]) | set(b[section]))
        if a[section].get(key) != b[section].get(key)
    }


def shape_sd(score: dict) -> float:
    """The binomial sd of the shape given the position: over the samples whose position was right."""
    p, n = given_position(score, "shape"), score["accuracy_position"] * score["num_samples"]
    return (p * (1 - p) / n) ** 0.5


def nearest_in_compute(flops: float, steps: list[int], per_step: float) -> int:
    """The step of ``steps`` whose training FLOPs (``per_step`` each) lie nearest ``flops``, in log."""
    return min(steps, key=lambda step: abs(math.log(step * per_step / flops)))


def arm_table(arm: Frontier, base: Frontier) -> str:
    """The arm's scored checkpoints (no guidance) and, for each, its base run's scored checkpoint nearest in
    training compute (the same step when a step costs the same), one row each in order of compute: EMA
    validation loss, FD, the scores of :func:`_score_columns` (colour and shape given the position, the shape
    with its sd) and whether goal 3's bars are met (:func:`meets_goal`)."""
    ((key, (was, now)),) = changed(arm, base).items()  # one setting changed, or it is no ablation
    frame, arms, bases = arm.frame, scores(arm), scores(base)
    chance, floor = frame["chance"], frame["floor"]["fd"]
    per_step = {base: flops_per_step(base), arm: flops_per_step(arm)}
    val = {base: ema_val_loss(base), arm: ema_val_loss(arm)}
    base_steps = [step for step, cfg in bases if cfg == 1]
    columns = _score_columns(frame, ("colour", "shape"), with_sd=True)
    head = ["steps (x the top budget)", key, "val loss (EMA)", f"FD (x the floor {floor:.1f})"]
    head += [h for h, _ in columns] + ["goal 3 met"]
    lines = _heading(head)
    mine = [step for step, cfg in arms if cfg == 1]
    rows = {(arm, step) for step in mine}  # a base checkpoint nearest two of the arm's is shown once
    rows |= {(base, nearest_in_compute(step * per_step[arm], base_steps, per_step[base])) for step in mine}
    for run, step in sorted(rows, key=lambda r: (r[1] * per_step[r[0]], r[0] == arm)):  # the base first at a tie
        value, s = (now, arms[step, 1.0]) if run == arm else (was, bases[step, 1.0])
        loss = f"{val[run][step]:.4f}" if step in val[run] else "-"
        lines.append(
            f"| {step:,} ({step * per_step[run] / TOP_BUDGET:.0f}x) | {value} | {loss} | "
            + _score_cells(s, columns, chance, floor)
        )
    return "\n".join(lines)


REPLICATES = "t2i-depth2-replicates"  # the replicate table's name (--run) and docs block
# The depth-2 arm and its replicates (one PREREG.md in each replicate's folder; the rules written before they
# trained): training seed 1, the study recipe's 30-step warmup, and (its addendum) seed 2, each scored every 500
# steps over REPLICATE_STEPS, and seed 1 further every 1,000 to 15,000. Rule 1: seed 1's checkpoint
# REPLICATE_AT (the arm's 20x pass) meets every bar. Rule 2: the warmup matters if the mean over WINDOW of
# (arm - warmup run) exceeds WARMUP_EFFECT and twice that of (arm - seed 1) in size. Seeds 3 and 4 (their own
# PREREG.md, before they trained) count the seeds passing at REPLICATE_AT and at 23x, and their spread at 20x.
REPLICATE_RUNS = tuple(
    Frontier(name, "quickstart-t2i")
    for name in (
        "t2i-depth2",
        "t2i-depth2-seed1",
        "t2i-depth2-warmup30",
        "t2i-depth2-seed2",
        "t2i-depth2-seed3",
        "t2i-depth2-seed4",
    )
)
REPLICATE_STEPS = range(5000, 8501, 500)
REPLICATE_LAST = 15000  # the table's last step (seed 1's continuation; the arm's second PREREG checkpoint)
REPLICATE_AT = 7500
WINDOW = range(6500, 8501, 500)
WARMUP_EFFECT = 0.04


class Replicates(NamedTuple):
    """The replicates' rules applied to their scores (shape given the position, per step)."""

    shape: dict[str, dict[int, float]]  # {run name: {step: shape given the position}} over REPLICATE_STEPS
    passes: dict[str, list[int]]  # {run name: its steps of REPLICATE_STEPS meeting every goal-3 bar}
    first: dict[str, int | None]  # {run name: its first scored step from 5,000 meeting every bar (None: none)}
    last: dict[str, int]  # {run name: its last scored step the table shows}
    seed_replicates: bool  # rule 1: seed 1 meets every bar at REPLICATE_AT
    both_from: int | None  # the first step of REPLICATE_STEPS at which seeds 0 and 1 meet every bar
    d_warmup: float  # mean over WINDOW of the arm's shape minus the warmup run's
    d_seed: float  # the same against seed 1's
    warmup_matters: bool  # rule 2
    seeds: tuple[str, ...]  # the runs that differ from the arm in the training seed alone, and the arm
    from_on: dict[str, int | None]  # {run name: the first scored step from which every later one meets every bar}
    k20: int  # seeds meeting every bar at REPLICATE_AT (20x)
    k23: int  # seeds meeting every bar at the last of REPLICATE_STEPS (23x)
    seed_shape: tuple[float, float, float]  # the seeds' shape given the position at REPLICATE_AT: mean, sd, and the
    # mean binomial sd of one score (shape_sd): the spread between seeds beside the evaluator's own


def replicate_scores(run: Frontier) -> dict[int, dict]:
    """``{step: eval}`` of the run's checkpoints the replicate table shows (no guidance, 5,000-15,000)."""
    return {k: s for (k, cfg), s in scores(run).items() if cfg == 1 and REPLICATE_STEPS[0] <= k <= REPLICATE_LAST}


def replicates(found: dict[str, dict[int, dict]] | None = None) -> Replicates:
    """:data:`REPLICATE_RUNS`' scores (``found``: ``{run name: replicate_scores(run)}``, read here if None) and
    the rules of their PREREG.md files: seed 1 and the warmup's two, then the seeds' count (:class:`Replicates`)."""
    frame = T2I.frame
    arm, seed, warmup = (run.name for run in REPLICATE_RUNS[:3])
    found = found or {run.name: replicate_scores(run) for run in REPLICATE_RUNS}
    seeds = tuple(run.name for run in REPLICATE_RUNS if set(changed(run, REPLICATE_RUNS[0])) <= {"seed"})
    ok = {
        name: [k for k, s in sorted(f.items()) if meets_goal(s, frame["chance"], frame["floor"]["fd"])]
        for name, f in found.items()
    }
    shape = {name: {k: given_position(found[name][k], "shape") for k in REPLICATE_STEPS} for name in found}
    passes = {name: [k for k in ok[name] if k in REPLICATE_STEPS] for name in found}
    both = [k for k in passes[arm] if k in passes[seed]]
    d_w, d_s = (sum(shape[arm][k] - shape[other][k] for k in WINDOW) / len(WINDOW) for other in (warmup, seed))
    at = [shape[name][REPLICATE_AT] for name in seeds]
    return Replicates(
        shape,
        passes,
        {name: (ok[name] or [None])[0] for name in found},
        {name: max(f) for name, f in found.items()},
        REPLICATE_AT in passes[seed],
        both[0] if both else None,
        d_w,
        d_s,
        abs(d_w) > WARMUP_EFFECT and abs(d_w) > 2 * abs(d_s),
        seeds,
        {name: _passes_from(sorted(f), ok[name]) for name, f in found.items()},
        sum(REPLICATE_AT in passes[name] for name in seeds),
        sum(REPLICATE_STEPS[-1] in passes[name] for name in seeds),
        (
            statistics.mean(at),
            statistics.stdev(at),
            statistics.mean(shape_sd(found[name][REPLICATE_AT]) for name in seeds),
        ),
    )


def _passes_from(steps: list[int], passing: list[int]) -> int | None:
    """The first of the scored ``steps`` from which every later one is in ``passing`` (None: the last is not)."""
    first = None
    for step in reversed(steps):
        if step not in passing:
            break
        first = step
    return first


def replicate_table() -> str:
    """:data:`REPLICATE_RUNS`' checkpoints from 5,000 to :data:`REPLICATE_LAST` steps, a row each in order of
    steps (what the run changed from the arm, the EMA validation loss where logged, FD, the scores of
    :func:`_score_columns`, goal 3), then the verdicts of the two rules and each run's first pass."""
    frame = T2I.frame
    chance, floor = frame["chance"], frame["floor"]["fd"]
    columns = _score_columns(frame, ("colour", "shape"), with_sd=True)
    arm, *others = REPLICATE_RUNS
    differs = {arm: "- (the arm)"} | {
        run: ", ".join(f"{key} {now}" for key, (_, now) in changed(run, arm).items()) for run in others
    }
    per_step = flops_per_step(arm)
    head = [
        "steps (x the top budget)",
        "run",
        "changed from the arm",
        "val loss (EMA)",
        f"FD (x the floor {floor:.1f})",
    ]
    head += [h for h, _ in columns] + ["goal 3 met"]
    lines = _heading(head)
    found = {run.name: replicate_scores(run) for run in REPLICATE_RUNS}
    val = {run: ema_val_loss(run) for run in REPLICATE_RUNS}
    for step, i in sorted((step, i) for i, run in enumerate(REPLICATE_RUNS) for step in found[run.name]):
        run = REPLICATE_RUNS[i]
        loss = val[run].get(step)
        lines.append(
            f"| {step:,} ({step * per_step / TOP_BUDGET:.1f}x) | {run.name} | {differs[run]} | "
            f"{'-' if loss is None else f'{loss:.4f}'} | " + _score_cells(found[run.name][step], columns, chance, floor)
        )
    return "\n".join(lines) + "\n\n" + replicate_verdicts(replicates(found), per_step)


def replicate_verdicts(r: Replicates, per_step: float) -> str:
    """The two rules' verdicts and each run's first pass, as the docs state them (``per_step``: the runs'
    training FLOPs per step)."""
    seed, warmup = (run.name for run in REPLICATE_RUNS[1:3])

    def x(step: int) -> str:
        return f"{step:,} steps ({step * per_step / TOP_BUDGET:.1f}x)"

    if r.seed_replicates:
        rule1 = f"{seed} meets every bar at {x(REPLICATE_AT)}: the 20x pass replicates on a second seed."
    else:
        rule1 = f"{seed} misses a bar at {x(REPLICATE_AT)}; " + (
            f"seeds 0 and 1 both meet every bar first at {x(r.both_from)}."
            if r.both_from
            else f"no checkpoint up to {x(REPLICATE_STEPS[-1])} meets every bar in both seeds."
        )
    which = "100 steps (the arm's)" if r.d_warmup > 0 else "30 steps"
    rule2 = (
        f"over {WINDOW[0]:,}-{WINDOW[-1]:,} steps the arm's shape given the position lies {r.d_warmup:+.3f} from "
        f"{warmup}'s and {r.d_seed:+.3f} from {seed}'s: "
        + (
            f"the warmup matters; {which} draw the shape better."
            if r.warmup_matters
            else "no warmup effect beyond what a second seed moves."
        )
    )

    def first(name: str) -> str:
        step, since = r.first[name], r.from_on[name]
        if step is None:
            return f"{name} none by {x(r.last[name])}"
        return f"{name} {x(step)}" + ("" if since == step else f", at every one from {since:,}")

    n, (mean, sd, score_sd) = len(r.seeds), r.seed_shape
    seeds = (
        f"- The seeds ({', '.join(r.seeds)}; the rules of the PREREG.md of seeds 3 and 4): "
        f"{r.k20} of {n} meet every bar at {x(REPLICATE_AT)} and {r.k23} of {n} at {x(REPLICATE_STEPS[-1])}; their shape given the position at "
        f"{x(REPLICATE_AT)} is {mean:.3f} on average, sd {sd:.3f} between seeds (one score's sd {score_sd:.3f})."
    )
    firsts = "; ".join(map(first, r.first))
    return (
        f"- Rule 1: {rule1}\n- Rule 2: {rule2}\n{seeds}\n"
        f"- First checkpoint meeting every bar (from 5,000 steps): {firsts}."
    )


class RecipeRun(NamedTuple):
    """One run of the T2I study's recipe comparison at 20x the top budget: its folder under
    ``tests/data/pilots/`` and the scored batch of its weights there (``score.json``: its last checkpoint's)."""

    name: str
    scored: str = "score.json"

    @property
    def folder(self) -> Path:
        return PILOTS / self.name


RECIPE = "t2i-recipe-arms"  # the recipe table's name (--run) and docs block
# The T2I study's own run at 20x (study verify), its arms (recipe_checks with --set changes; each PREREG.md),
# the two batch-64 arms again with training seed 1, and the `tiny` recipe's depth-2 arm at its checkpoint at 20x.
RECIPE_RUNS = (
    RecipeRun("t2i-study-20x"),
    RecipeRun("t2i-study-20x-logit"),
    RecipeRun("t2i-study-20x-logit-seed1"),
    RecipeRun("t2i-study-20x-logit-b64"),
    RecipeRun("t2i-study-20x-logit-const"),
    RecipeRun("t2i-study-20x-logit-x0"),
    RecipeRun("t2i-study-20x-logit-b64-const"),
    RecipeRun("t2i-study-20x-logit-b64-const-x0"),
    RecipeRun("t2i-study-20x-logit-b64-seed1"),
    RecipeRun("t2i-study-20x-logit-b64-const-seed1"),
    RecipeRun("t2i-depth2-frontier", "scores/step7500-cfg1.json"),
)


def scored(run: RecipeRun) -> tuple[dict, dict, int, float | None]:
    """``(result.json, the scored batch's eval, its step, the EMA validation loss there)``: a run's last step
    and final loss, or a longer run's checkpoint and the loss logged at it (None if none was)."""
    done = json.loads((run.folder / "result.json").read_text())
    score = json.loads((run.folder / run.scored).read_text())
    found = NAME.fullmatch(Path(run.scored).stem)
    if found:
        return done, score, int(found[1]), ema_val_loss(run).get(int(found[1]))
    return done, score, done["steps"], done["val_loss_ema"]


def recipe(config: dict) -> list[str]:
    """The cells of a run's recipe: the flow target, the times, the batch, the peak lr (after the width
    rule), the lr schedule, the EMA (decay, first step averaged), the warmup and the training seed."""
    from ditscale.config import from_dict
    from ditscale.diffusion.config import DiffusionConfig
    from ditscale.train.config import OptimConfig
    from ditscale.train.schedules import peak_lr

    optim = from_dict(OptimConfig, config["optim"], where="optim")
    diffusion = from_dict(DiffusionConfig, config["diffusion"], where="diffusion")  # its defaults: v, uniform
    lr = peak_lr(optim, config["model"]["hidden_size"])
    schedule = (
        f"wsd (cooldown {optim.cooldown_frac:g}, {optim.cooldown_shape})" if optim.schedule == "wsd" else optim.schedule
    )
    return [
        diffusion.flow_predict,
        diffusion.time_sampling,
        str(config["batch_size"]),
        f"{lr:.3g}",
        schedule,
        f"{config['ema_decay']:.5g} from step {config.get('ema_start', 0):,}",
        str(optim.warmup_steps),
        str(config["seed"]),
    ]


def recipe_table() -> str:
    """:data:`RECIPE_RUNS`, a row each: the recipe (:func:`recipe`), the steps and their training compute,
    the EMA validation loss at the scored step where one was logged, the FD and the scores of
    :func:`_score_columns` (colour and shape given the position, the shape with its sd), and goal 3."""
    frame = T2I.frame
    chance, floor = frame["chance"], frame["floor"]["fd"]
    columns = _score_columns(frame, ("colour", "shape"), with_sd=True)
    head = ["run", "target", "times", "batch", "peak lr", "lr schedule", "EMA", "warmup steps", "seed"]
    head += ["steps (x the top budget)", "val loss (EMA)", f"FD (x the floor {floor:.1f})"]
    head += [h for h, _ in columns] + ["goal 3 met"]
    lines = _heading(head)
    for run in RECIPE_RUNS:
        done, s, step, loss = scored(run)
        flops = step * done["config"]["batch_size"] * done["flops_per_image"]
        lines.append(
            f"| {run.name} | "
            + " | ".join(recipe(done["config"]))
            + f" | {step:,} ({flops / TOP_BUDGET:.0f}x) | {'-' if loss is None else f'{loss:.4f}'} | "
            + _score_cells(s, columns, chance, floor)
        )
    return "\n".join(lines)


def batch_label(path: Path, run: Frontier, named: bool = False) -> str:
    """A grid row's label: a batch named ``step{K}-cfg{S}`` gets its checkpoint's steps and training
    compute (and its guidance scale, if any), headed by the run's name when ``named``."""
    found = NAME.fullmatch(path.stem)
    if not found:
        return path.stem
    step, cfg = int(found[1]), float(found[2])
    label = f"{step:,} steps\n{step * flops_per_step(run) / TOP_BUDGET:.0f}x the top budget"
    label += f"\ncfg {cfg:g}" if cfg != 1 else ""
    return f"{run.name}\n{label}" if named else label


def grid(batches: list[tuple[Path, Frontier]], out: Path, per_row: int = 6) -> Path:
    """One row of each (batch, its run)'s first ``per_row`` samples, each cell captioned with its prompt
    (or its class's name) and each row labelled by :func:`batch_label` (named when runs are mixed)."""
    import numpy as np

    from ditscale.report.quality import samples_figure

    named = len({run for _, run in batches}) > 1
    rows = []
    for path, run in batches:
        z = np.load(path)
        prompts = z["captions"] if "captions" in z else z["label_names"][z["labels"]]
        rows.append((batch_label(path, run, named), z["arr_0"][:per_row], [str(c) for c in prompts[:per_row]]))
    return samples_figure(rows, out, per_row=per_row)


def write(doc: Path, block: str, body: str) -> None:
    """``doc`` with the body of its ``block`` replaced (quickstart_table's replace_block)."""
    doc.write_text(QUICKSTART_TABLE.replace_block(doc.read_text(), block, body, str(doc)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--run",
        choices=[*RUNS, *ARMS, RECIPE, REPLICATES],
        help="one run, arm, the recipe or the replicate table only (default: all; --grid: t2i)",
    )
    p.add_argument("--write", type=Path, nargs="*", default=[], help="docs to rewrite the blocks of")
    p.add_argument("--grid", nargs="*", default=[], help="sample batches (.npz), each PATH or RUN=PATH")
    p.add_argument("--out", type=Path, help="the grid's PNG")
    args = p.parse_args()
    if args.grid:
        if args.out is None:
            raise SystemExit("frontier_table: --grid needs --out FILE.png")
        every = {**RUNS, **{name: arm for name, (arm, _) in ARMS.items()}, **{r.name: r for r in REPLICATE_RUNS}}
        batches = []
        for spec in args.grid:  # PATH, or RUN=PATH to set runs side by side
            name, _, path = spec.partition("=") if "=" in spec else (args.run or "t2i", "", spec)
            if name not in every:
                raise SystemExit(f"frontier_table: unknown run {name!r} in {spec}; use one of {', '.join(every)}")
            batches.append((Path(path), every[name]))
        print(f"wrote {grid(batches, args.out)}")
        return
    blocks = [(run.block, table(run)) for name, run in RUNS.items() if args.run in (None, name)]
    blocks += [(arm.block, arm_table(arm, base)) for name, (arm, base) in ARMS.items() if args.run in (None, name)]
    blocks += [(RECIPE, recipe_table())] if args.run in (None, RECIPE) else []
    blocks += [(REPLICATES, replicate_table())] if args.run in (None, REPLICATES) else []
    for block, body in blocks:
        for doc in args.write:
            write(doc, block, body)
        if not args.write:
            print(f"{block}:\n{body}\n")


if __name__ == "__main__":
    main()
