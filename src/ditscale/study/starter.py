"""A starting study spec for a folder of the user's own images (``ditscale study init``).

:func:`starter_spec` lists ``root/<class>/<image>`` (no pixels read; PIL reads the headers of a few
images for their size) and writes a commented YAML spec that ``study plan`` and ``study run`` take
as it is. Its settings are the quickstart preset's, tuned on a 2-core CPU (docs/studies.md), made
to fit the data:

- ``data.image_size``: 32, or 16 / 8 when the smallest image side found is smaller; patch 4 at 32
  px (64 tokens, as the quickstart), else 2.
- ``budgets``: the quickstart's 1.6e11 .. 2.56e12 (x2 apart) times the ratio of this data's FLOPs per
  image to the quickstart's (the family's middle rung on each), so every run takes about as many
  optimizer steps as the quickstart's.
- ``prior``: :func:`ditscale.study.prior.suggest_prior` of that draft, so the grids start inside
  the family's ladder.

:func:`piloted_starter_spec` (``study init --pilot``) writes that spec, runs a pilot of it
(:func:`ditscale.study.pilot.run_pilot`) and writes it again with the ``rungs`` and ``prior`` the
pilot placed from its losses (:mod:`ditscale.study.placement`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ditscale.config import parse_yaml
from ditscale.data.listing import list_image_folder
from ditscale.study.pilot import PilotOutcome, run_pilot
from ditscale.study.plan import ladder_sizes, plan_study
from ditscale.study.prior import prior_line, suggest_prior
from ditscale.study.spec import PriorConfig, load_spec, spec_from_dict

RUNGS = [[2, 64, 2], [2, 96, 3], [2, 128, 4], [2, 160, 5], [2, 192, 6], [2, 224, 7], [2, 256, 8]]  # the quickstart's
BUDGETS = [1.6e11, 3.2e11, 6.4e11, 1.28e12, 2.56e12]  # quickstart budgets (64 tokens of 4x4x3), x2 apart
SIDES = (32, 16, 8)  # image sides on offer: the largest not above the smallest image side found
SIZE_PROBES = 64  # images whose headers are read for their size
NOTES = (  # the comments above `rungs` and `prior` of a spec written without a pilot
    "# depth 2, widths 64..256, every head 32 wide: the quickstart's ladder;",
    (
        "# Grid centres N_opt = coefficient x C^exponent: the default exponent (Liang et al.), the coefficient\n"
        "# putting the middle budget's optimum at the middle of the rungs it trains (`study plan` suggests another if it misses)."
    ),
)
HPARAMS = (
    "{lr: 8.0e-3, base_width: 32, width_rule: inverse, warmup_steps: 30, schedule: wsd, cooldown_frac: 0.2, "
    "cooldown_shape: 1-sqrt, min_lr_ratio: 0.0, ema_fraction: 0.1, ema_window: 0.3, batch_size: 8, grad_clip: 1.0}"
)


@dataclass(frozen=True)
class FolderFacts:
    """What :func:`starter_spec` reads of a folder: images, class names, the smallest side (pixels)."""

    path: str
    images: int
    classes: tuple[str, ...]
    smallest_side: int


def folder_facts(path: str) -> FolderFacts:
    """Images and classes of ``path`` (``root/<class>/<image>``) and the smallest side of up to
    :data:`SIZE_PROBES` of them, spread over the listing."""
    from PIL import Image  # lazy: only `study init` reads image headers

    _, classes, files, _ = list_image_folder(path)
    step = max(1, len(files) // SIZE_PROBES)
    sides = []
    for f in files[::step][:SIZE_PROBES]:
        with Image.open(f) as im:
            sides.append(min(im.size))
    return FolderFacts(path, len(files), tuple(classes), min(sides))


def draft(facts: FolderFacts, name: str) -> dict:
    """The spec (a mapping) of the folder before its budgets are scaled and its prior suggested."""
    side = next((s for s in SIDES if s <= facts.smallest_side), SIDES[-1])
    patch = 4 if side >= 32 else 2
    return {
        "name": name,
        "data": {"name": "folder", "path": facts.path, "image_size": side, "channels": 3},
        "diffusion": {"kind": "flow"},
        "family": {
            "rungs": RUNGS,
            "model": {"patch_size": patch, "block": "in_context", "conditioning": "class", "learn_sigma": False},
        },
        "budgets": BUDGETS,
        "models_per_budget": 5,
        "span": 6,
        "min_steps": 50,
        "hparams": {"batch_size": 8},
    }


def starter_spec(path: str, name: str | None = None) -> str:
    """The commented YAML text of a starting spec for the image folder ``path`` (see the module)."""
    facts, spec, ratio = _starter(path, name)
    return _text(facts, spec, ratio, suggest_prior(spec_from_dict(spec)))


def piloted_starter_spec(path: str, name: str | None, pilot_dir: str, **options) -> tuple[str, PilotOutcome]:
    """The starting spec of :func:`starter_spec` with its ``rungs`` and ``prior`` placed by a pilot
    (:func:`ditscale.study.pilot.run_pilot` of that spec, in ``pilot_dir``; ``options`` go to it):
    ``(its YAML text, the pilot's outcome)``."""
    facts, spec, ratio = _starter(path, name)
    text = _text(facts, spec, ratio, suggest_prior(spec_from_dict(spec)))
    outcome = run_pilot(spec_from_dict(parse_yaml(text, "the starting spec")), pilot_dir, **options)
    spec["family"]["rungs"] = [list(r) for r in outcome.placement.rungs]
    notes = _pilot_notes(spec, outcome, pilot_dir)
    return _text(facts, spec, ratio, outcome.placement.prior, notes), outcome


def _text(facts: FolderFacts, spec: dict, ratio: float, prior: PriorConfig, notes: tuple[str, str] = NOTES) -> str:
    """The YAML text of the draft ``spec`` with ``prior`` (:func:`_render`, its use of the data from
    :func:`_use`)."""
    return _render(facts, spec, prior_line(prior), ratio, _use(facts, spec, prior), notes)


def _starter(path: str, name: str | None) -> tuple[FolderFacts, dict, float]:
    """The folder's facts, the draft spec with its budgets scaled, and the scale (this data's FLOPs
    per image over the quickstart's, on the middle rung)."""
    facts = folder_facts(path)
    name = name or Path(path).expanduser().resolve().name or "own-data"
    spec = draft(facts, name)
    middle = len(RUNGS) // 2
    ratio = ladder_sizes(spec_from_dict(spec))[middle].macs / ladder_sizes(load_spec("quickstart"))[middle].macs
    spec["budgets"] = [float(f"{b * ratio:.3g}") for b in BUDGETS]
    return facts, spec, ratio


def _use(facts: FolderFacts, spec: dict, prior: PriorConfig) -> tuple[float, int]:
    """``(epochs of the run that sees the most images, train images)`` of the draft ``spec`` planned
    with ``prior``."""
    prior_dict = {"coefficient": prior.coefficient, "exponent": prior.exponent}
    images = max(r.images for r in plan_study(spec_from_dict({**spec, "prior": prior_dict})).runs)
    train_images = facts.images - max(1, round(0.1 * facts.images))  # the val split: 10% (data.val_fraction)
    return images / max(train_images, 1), train_images


def _pilot_notes(spec: dict, outcome: PilotOutcome, pilot_dir: str) -> tuple[str, str]:
    """The comments above ``rungs`` and ``prior`` of a piloted spec."""
    rungs = spec["family"]["rungs"]
    optima = ", ".join(f"N={o.n_opt:.3g} at {o.budget:.3g}" for o in outcome.placement.optima)
    family = (
        f"# depth {rungs[0][0]}, widths {rungs[0][1]}..{rungs[-1][1]}: the quickstart's ladder and narrower rungs, cut by\n"
        f"  # the pilot ({pilot_dir}) to the sizes the grids of the prior below reach;"
    )
    if outcome.placement.exponent_source == "pilot":
        how = "the exponent measured between its two budgets"
    else:
        how = "the default exponent (Liang et al.): an optimum was a bound"
    prior = (
        f"# Grid centres N_opt = coefficient x C^exponent through the pilot's optima, {how}:\n"
        f"# {optima} FLOPs. The pilot's {outcome.flops:.3g} training FLOPs are {outcome.share:.0%} of "
        f"this study's {outcome.study_flops:.3g}."
    )
    return family, prior


def _render(
    facts: FolderFacts, spec: dict, prior: str, ratio: float, use: tuple[float, int], notes: tuple[str, str] = NOTES
) -> str:
    """The YAML text of ``spec`` with a comment on every field (``use``: epochs of the largest
    budget's smallest model, train images; ``notes``: the comments above ``rungs`` and ``prior``)."""
    data, model, budgets = spec["data"], spec["family"]["model"], spec["budgets"]
    tokens = (data["image_size"] // model["patch_size"]) ** 2
    shown = ", ".join(facts.classes[:8]) + (", ..." if len(facts.classes) > 8 else "")
    return f"""\
# A starting isoFLOP study of your own images, written by `ditscale study init --data folder`.
# {facts.images} images in {len(facts.classes)} class folders ({shown}); smallest side seen {facts.smallest_side} px.
# The settings are the quickstart preset's (tuned on a 2-core CPU, docs/studies.md), fitted to this data.
# Check each line, then:  ditscale study plan THIS.yaml          (the runs and their cost, nothing trained)
#                         ditscale study run THIS.yaml --out runs/{spec["name"]}
name: {json.dumps(spec["name"]):<30}# the study's name: laws.json, the report, the default runs/ folder
data:
  name: folder                      # an ImageNet-layout folder: root/<class>/<image>; class names become labels
  path: {json.dumps(data["path"]):<28}# the folder of class sub-folders (relative to where you run ditscale)
  image_size: {data["image_size"]:<22}# images are resized and centre-cropped to this side (pixels)
  channels: 3                       # RGB (1: grey)
  val_fraction: 0.1                 # 10% of the images (by file-name hash) held out for the validation loss
diffusion: {{kind: flow}}             # rectified flow, velocity loss (Liang et al.)
family:
  {notes[0]} {tokens} tokens of
  # {model["patch_size"]}x{model["patch_size"]}x3 pixel values per image. Add rungs if `study plan` warns a grid is off the ladder.
  rungs: {json.dumps(spec["family"]["rungs"]).replace(" ", "")}
  model: {{patch_size: {model["patch_size"]}, block: in_context, conditioning: class, learn_sigma: false}}  # Liang et al.'s in-context blocks
# Training FLOPs (exact: 3 x forward MACs x 2 per image), 2x apart: the quickstart's budgets x {ratio:.3g}
# (this data's FLOPs per image over the quickstart's). The run that sees the most images makes
# about {use[0]:.3g} epochs of the ~{use[1]} train images.
budgets: [{", ".join(f"{b:.3g}" for b in budgets)}]
models_per_budget: 5                # model sizes per isoFLOP curve: two each side of the optimum
span: 6                             # each grid spans 6x in N around the predicted optimum
{notes[1]}
{prior}
adaptive: false                     # every grid planned up front, so all trunks train in parallel
share_trunks: true                  # each model trained once; each run branches off it for its own cooldown
min_steps: 50                       # runs with fewer optimizer steps are dropped from the plan
# The quickstart's optimizer: lr 8e-3 at width 32 (x 32/width), 30 warmup steps, constant lr then a
# 1-sqrt cooldown over each run's last 20%, the EMA of the last 10% evaluated, batch 8.
hparams: {HPARAMS}
laws:                               # the quickstart's fits (docs/laws.md)
  loss_law: auto                    # the L_opt form chosen by an inner backtest on the fitted budgets
  exclude_edge: allocation          # a budget whose optimum lies beyond its smallest model fits no N_opt law
  bootstrap_kind: residual          # intervals from resampled parabola residuals (calibrated on simulated sweeps)
val: {{num_images: 256, num_timesteps: 8, batch_size: 256, buckets: 4, weights: ema, both: false}}   # the first 256 val images (fewer if the split is smaller), fixed noise
train: {{log_every: 50}}              # a progress line every 50 steps in each run's train.log
seed: 0                             # every run's training seed: its initialisation and each step's random draws
repeat: {{budgets: 1, seeds: [1]}}    # the smallest budget's grid again with seed 1: the noise floor of the intervals
holdout: 1                          # the backtest refits without the largest budget and predicts it
workers: 2                          # parallel training processes, one thread each
target_flops: {f"{budgets[-1] * 10:.3g}":<22}# 10x the largest budget: where `study predict` extrapolates by default
"""
