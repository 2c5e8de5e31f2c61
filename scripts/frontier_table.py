"""How much compute draws a prompted shape: the T2I frontier run behind docs/quality.md (issue 22, goal 3).

One run of the ``tiny`` presets' recipe (depth 6, width 128, x0 prediction, logit-normal times,
batch 64, lr 3e-3, EMA 0.995; constant lr after warmup, so each checkpoint's EMA weights are a
model) on the T2I quickstart's data and conditioning (32 px, one captioned shape, in-context
blocks, the word encoder), scored at its checkpoints as the quality stage scores a study's best
models: 1000 samples prompted with the captions of val items 0-999, 25 Euler steps, against 1000
real images with those captions (``ditscale eval --json``). Its folder,
``tests/data/pilots/t2i-frontier/``, holds the config, ``PREREG.md`` (the question and the
frontier rule, written before it trained), ``metrics.jsonl``, ``result.json`` and
``scores/step{K}-cfg{S}.json``; the chance levels and the real-vs-real floor at 1000 images are
the T2I quickstart's (``tests/data/studies/quickstart-t2i/quality/frame.json``: the same data, the
same reference images). This script writes the table between ``<!-- t2i-frontier -->`` markers
(``tests/test_docs_numbers.py`` checks it) and draws the sample grid from the run's sample batches::

    python scripts/frontier_table.py                           # print the table
    python scripts/frontier_table.py --write docs/quality.md
    python scripts/frontier_table.py --grid DIR/samples/step10000-cfg1.npz ... --out docs/img/t2i-frontier-samples.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path


def _sibling(name: str):
    """The script ``scripts/{name}.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUICKSTART_TABLE = _sibling("quickstart_table")  # the goal's accuracies and the docs' block writer live there
ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "tests" / "data" / "pilots" / "t2i-frontier"
FRAME = ROOT / "tests" / "data" / "studies" / "quickstart-t2i" / "quality" / "frame.json"
TOP_BUDGET = 5.12e12  # training FLOPs of the T2I quickstart's largest budget
NAME = re.compile(r"step(\d+)-cfg([\d.]+)")  # a scored batch: its checkpoint's step, its guidance scale
# The attributes scored only where the prompted cell is found occupied (quickstart_table's, in the table's
# order), and those of them goal 3 asks at least 2x their chance for (given the position); FD <= 10x the floor.
GIVEN_POSITION = ("colour", "size", "shape")
assert {f"accuracy_{a}" for a in GIVEN_POSITION} == set(QUICKSTART_TABLE.ATTRIBUTES_GIVEN_POSITION)
GOALS = tuple(a for a in GIVEN_POSITION if f"accuracy_{a}" in QUICKSTART_TABLE.GOAL_ACCURACIES)


def scores(folder: Path = FOLDER) -> dict[tuple[int, float], dict]:
    """``{(step, cfg scale): ditscale eval --json}`` of every scored checkpoint."""
    found = {}
    for path in sorted((folder / "scores").glob("step*-cfg*.json")):
        step, cfg = NAME.fullmatch(path.stem).groups()
        found[int(step), float(cfg)] = json.loads(path.read_text())
    return found


def given_position(score: dict, attribute: str) -> float:
    """The attribute right where the position is right: its accuracy over the position's."""
    return score[f"accuracy_{attribute}"] / score["accuracy_position"]


def meets_goal(score: dict, chance: dict, floor: float) -> bool:
    """Goal 3's bars: FD within 10x the floor, colour and shape at least 2x their chance given the position."""
    return score["fd"] <= 10 * floor and all(given_position(score, a) >= 2 * given_position(chance, a) for a in GOALS)


def table(folder: Path = FOLDER, frame_path: Path = FRAME) -> str:
    """The docs' table: a row per scored batch (training compute from the run's own count per image,
    the logged EMA validation loss where one was logged, each score beside its frame) and the verdict
    of PREREG.md's rule (the first checkpoint meeting every bar without guidance)."""
    frame = json.loads(frame_path.read_text())
    chance, floor = frame["chance"], frame["floor"]["fd"]
    found = scores(folder)
    val = {
        m["step"]: m["val_loss_ema"] for m in map(json.loads, (folder / "metrics.jsonl").open()) if "val_loss_ema" in m
    }
    result = json.loads((folder / "result.json").read_text())
    per_image, batch = result["flops_per_image"], result["config"]["batch_size"]
    head = [
        "steps (images)",
        "training FLOPs (x the top budget)",
        "val loss (EMA)",
        "guidance",
        f"FD (x the floor {floor:.1f})",
        f"position (chance {chance['accuracy_position']:.3f})",
        *(f"{a} given the position (chance {given_position(chance, a):.3f})" for a in GIVEN_POSITION),
        "goal 3 met",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (step, cfg), s in sorted(found.items()):
        flops = step * batch * per_image
        loss = f"{val[step]:.4f}" if step in val else "-"
        compute = f"{flops:.3g}".replace("e+", "e")
        lines.append(
            f"| {step:,} ({step * batch:,}) | {compute} ({flops / TOP_BUDGET:.0f}x) | {loss} | "
            f"{'none' if cfg == 1 else f'{cfg:g}'} | {s['fd']:.1f} ({s['fd'] / floor:.1f}x) | "
            f"{s['accuracy_position']:.3f} | "
            + " | ".join(f"{given_position(s, a):.3f}" for a in GIVEN_POSITION)
            + f" | {'yes' if meets_goal(s, chance, floor) else 'no'} |"
        )
    first = [k for k, s in sorted(found.items()) if k[1] == 1 and meets_goal(s, chance, floor)]
    last = max(step for step, _ in found)
    verdict = (
        f"First checkpoint meeting every bar without guidance (the rule of PREREG.md): step {first[0][0]:,}."
        if first
        else f"No checkpoint meets every bar without guidance (the rule of PREREG.md) up to step {last:,} "
        f"({last * batch * per_image / TOP_BUDGET:.0f}x the top budget)."
    )
    return "\n".join(lines) + "\n\n" + verdict


def grid(npz_paths: list[Path], out: Path, folder: Path = FOLDER, per_row: int = 6) -> Path:
    """One captioned row of each batch's first ``per_row`` samples; a batch named ``step{K}-cfg{S}``
    is labelled with its checkpoint's steps and training compute."""
    import numpy as np

    from ditscale.report.quality import samples_figure

    result = json.loads((folder / "result.json").read_text())
    per_step = result["config"]["batch_size"] * result["flops_per_image"]
    rows = []
    for path in npz_paths:
        z = np.load(path)
        name = NAME.fullmatch(path.stem)
        label = path.stem
        if name:
            step, cfg = int(name[1]), float(name[2])
            label = f"{step:,} steps\n{step * per_step / TOP_BUDGET:.0f}x the top budget" + (
                f"\ncfg {cfg:g}" if cfg != 1 else ""
            )
        rows.append((label, z["arr_0"][:per_row], [str(c) for c in z["captions"][:per_row]]))
    return samples_figure(rows, out, per_row=per_row)


def write(doc: Path, body: str) -> None:
    """``doc`` with its ``<!-- t2i-frontier -->`` block's body replaced (quickstart_table's replace_block)."""
    doc.write_text(QUICKSTART_TABLE.replace_block(doc.read_text(), "t2i-frontier", body, str(doc)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", type=Path, nargs="*", default=[], help="docs to rewrite the block of")
    p.add_argument("--grid", type=Path, nargs="*", default=[], help="sample batches (.npz with captions)")
    p.add_argument("--out", type=Path, help="the grid's PNG")
    args = p.parse_args()
    if args.grid:
        if args.out is None:
            raise SystemExit("frontier_table: --grid needs --out FILE.png")
        print(f"wrote {grid(args.grid, args.out)}")
        return
    body = table()
    for doc in args.write:
        write(doc, body)
    if not args.write:
        print(body)


if __name__ == "__main__":
    main()
