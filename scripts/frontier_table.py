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
This script writes each table between ``<!-- {t2i,class,t2i-v,t2i-depth2,class-depth2}-frontier -->``
and ``<!-- t2i-recipe-arms -->`` markers (``tests/test_docs_numbers.py`` checks them) and draws a run's
sample grid from its batches::

    python scripts/frontier_table.py                           # print the tables
    python scripts/frontier_table.py --write docs/quality.md
    python scripts/frontier_table.py --run t2i-recipe-arms      # the recipe table only
    python scripts/frontier_table.py --run class --grid DIR/samples/step12500-cfg1.npz ... --out FILE.png
    python scripts/frontier_table.py --grid t2i=A/step7000-cfg1.npz t2i-depth2=B/step20500-cfg1.npz --out FILE.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
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
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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


def changed(arm: Frontier, base: Frontier) -> dict[str, tuple]:
    """``{section.key: (base's value, arm's value)}`` of the training config keys the arm changed."""
    a, b = result(arm)["config"], result(base)["config"]
    return {
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
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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
# and the `tiny` recipe's depth-2 arm at its first checkpoint past 20x, the settings that draw the shape there.
RECIPE_RUNS = (
    RecipeRun("t2i-study-20x"),
    RecipeRun("t2i-study-20x-logit"),
    RecipeRun("t2i-study-20x-logit-seed1"),
    RecipeRun("t2i-study-20x-logit-b64"),
    RecipeRun("t2i-study-20x-logit-const"),
    RecipeRun("t2i-study-20x-logit-x0"),
    RecipeRun("t2i-study-20x-logit-b64-const"),
    RecipeRun("t2i-study-20x-logit-b64-const-x0"),
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
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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
        choices=[*RUNS, *ARMS, RECIPE],
        help="one run, arm or the recipe table only (default: all; --grid: t2i)",
    )
    p.add_argument("--write", type=Path, nargs="*", default=[], help="docs to rewrite the blocks of")
    p.add_argument("--grid", nargs="*", default=[], help="sample batches (.npz), each PATH or RUN=PATH")
    p.add_argument("--out", type=Path, help="the grid's PNG")
    args = p.parse_args()
    if args.grid:
        if args.out is None:
            raise SystemExit("frontier_table: --grid needs --out FILE.png")
        every = {**RUNS, **{name: arm for name, (arm, _) in ARMS.items()}}
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
    for block, body in blocks:
        for doc in args.write:
            write(doc, block, body)
        if not args.write:
            print(f"{block}:\n{body}\n")


if __name__ == "__main__":
    main()
