"""Shared trunks: one model trained once, branching off into the runs of several budgets.

Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"):
with a learning rate that does not depend on the run's length before its cooldown (schedule
"constant", or "wsd" with warmup in steps), the same seed and batch, the first steps of every run
of one model are identical, whatever its budget. A trunk trains them once.

Each branch is an ordinary run in its own folder. At its **branch point** (the last step with a
full batch, or the first step of its cooldown, :func:`branch_point`) the trunk writes into the
branch's folder exactly the checkpoint the branch would have written itself after that many
steps: weights, optimizer, RNG states, data position, and the branch's own EMA (its decay, and
its window: ``ema_start``) and loss sums (its own last-10% window); also its ``config.yaml`` and
the metrics lines so far. The branch then resumes from it like any interrupted run
(:func:`ditscale.train.train`) and trains its last steps, validates and writes ``result.json``:
the same numbers as a run trained alone.

The trunk trains with the loop of every run (:func:`ditscale.train.loop.train_steps`); what it adds
for its branches runs after each step, as the loop's hook (:class:`ServedBranches`).

The trunk's own folder holds its checkpoints (weights, optimizer, the branch EMAs and sums), so a
killed trunk resumes; ``trunk.json`` says which branches it serves, and ``train.log`` holds its
progress lines (a run's, :mod:`ditscale.train.progress`: one every 30 s, and a line per call at
its start and end), so a long trunk can be followed with ``tail -f``. A branch whose EMA window
starts before the trunk's newest checkpoint, and that the trunk did not track, cannot branch off
any more: :func:`train_trunk` returns it and it trains alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ditscale.config import to_dict
from ditscale.errors import ConfigError, DitscaleError
from ditscale.io import atomic_write_json, atomic_write_text
from ditscale.train import checkpoint as ckpt
from ditscale.train import loop
from ditscale.train.budget import RunLength, run_length
from ditscale.train.conditioning import word_encoder_spec
from ditscale.train.config import TrainConfig, ValConfig, check_config
from ditscale.train.distributed import DistInfo, pick_device
from ditscale.train.ema import EMA
from ditscale.train.metrics import LossSums, peak_flops, read_metrics, tail_start
from ditscale.train.progress import PROGRESS_EVERY
from ditscale.train.rundir import RunDir, weight_relevant
from ditscale.train.schedules import COOLDOWN_KEYS, SHAREABLE_SCHEDULES, cooldown_start, is_shareable, stable_phase
from ditscale.train.validate import Validator, validate_raw_and_ema

# What may differ between the runs of one shared trunk: their length, EMA and cooldown.
BRANCH_KEYS = ("flops", "max_steps", "ema_decay", "ema_start", *(f"optim.{key}" for key in COOLDOWN_KEYS))


# Where a run branches off ---------------------------------------------------------------------------
def trunk_key(cfg: TrainConfig) -> str:
    """SHA-256 of what the runs of one shared trunk must have in common: the weight-relevant config
    without :data:`BRANCH_KEYS` and validation. Runs with equal keys can branch off one trunk."""
    kept = {k: v for k, v in weight_relevant(to_dict(cfg)).items() if k not in BRANCH_KEYS and not k.startswith("val.")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def branch_point(cfg: TrainConfig, length: RunLength) -> int:
    """Steps a run shares with its trunk: its full-batch steps, up to the first step of its cooldown."""
    return min(length.total_images // length.batch_size, cooldown_start(length.total_steps, cfg.optim))


@dataclass
class Branch:
    """One run branching off a trunk: its own config and folder, and (set by the trunk) its
    length, branch point, EMA and loss sums."""

    cfg: TrainConfig
    out: RunDir
    length: RunLength | None = None
    point: int = 0
    ema: EMA | None = None  # created when the run's EMA window starts (before that it equals the weights)
    sums: LossSums = field(default_factory=LossSums)
    val_lines: list[dict] = field(default_factory=list)  # its mid-run validations (val.every) before the branch point
    error: str | None = None  # why finishing it failed (the other branches go on)

    @property
    def name(self) -> str:
        return self.out.root.name

    @property
    def config_sha(self) -> str:
        """What its saved trunk state belongs to: the branch's weight-relevant config."""
        return hashlib.sha256(
            json.dumps(weight_relevant(to_dict(self.cfg)), sort_keys=True, default=str).encode()
        ).hexdigest()

    def has_checkpoint(self) -> bool:
        """Whether the branch's folder already holds a verified checkpoint at or past its branch point."""
        found = ckpt.latest_checkpoint(self.out.checkpoints)
        return found is not None and int(found[1]["step"]) >= self.point

    def add_step(self, done: int, loss: float, model: torch.nn.Module) -> None:
        """Take trunk step ``done`` (1-based) into the branch's EMA and loss sums, exactly as its own run would."""
        if self.ema is not None:
            self.ema.update(model)
        self.sums.add(loss, tail=done - 1 >= tail_start(self.length.total_steps))
        if done % self.cfg.log_every == 0:
            self.sums.reset_log()


def check_branches(branches: list[Branch]) -> TrainConfig:
    """The trunk's config: the first branch's, with a constant lr (the stable phase every branch
    shares), no validation and no checkpoints of its own cadence. ConfigError if the branches
    cannot share one trunk."""
    if not branches:
        raise ConfigError("a trunk needs at least one branch")
    key = trunk_key(branches[0].cfg)
    for b in branches:
        if trunk_key(b.cfg) != key:
            raise ConfigError(
                f"run {b.name} cannot share a trunk with {branches[0].name}: their configs differ "
                "beyond length, EMA and cooldown"
            )
        if not is_shareable(b.cfg.optim):
            raise ConfigError(
                f"run {b.name} uses schedule {b.cfg.optim.schedule!r}, whose lr depends on the run's "
                f"length from the start; shared trunks need {' or '.join(map(repr, SHAREABLE_SCHEDULES))}"
            )
    first = branches[0].cfg
    return first.replace(val=ValConfig(num_images=0), ema_start=0, optim=stable_phase(first.optim))


# The trunk -----------------------------------------------------------------------------------------
def train_trunk(out_dir: str | Path, branches: list[Branch], *, progress: bool | None = False) -> list[Branch]:
    """Train the trunk of ``branches`` in ``out_dir``, write each branch's checkpoint at its branch
    point, and finish every branch that is not done (:func:`ditscale.train.train`).

    Single process. Resumable: a killed trunk continues from its newest checkpoint; branches that
    already have their checkpoint or result are not redone. Returns the branches it could not
    serve (branch point 0, or an EMA or loss window that started before the trunk's newest
    checkpoint without being tracked): train those alone. A branch that fails to finish keeps its
    error in ``branch.error`` and the others go on; a failure of the trunk itself raises.
    """
    out = RunDir(out_dir)
    base = check_branches(branches)
    check_config(base)
    unfinished = [b for b in branches if not _done(b)]
    if not unfinished:
        return []
    for b in unfinished:  # a folder holding another run is refused now, before any trunk compute is spent
        loop.prepare_run_dir(b.out, b.cfg, force=False)
    run = _build_trunk(out, base, unfinished)
    for b in unfinished:  # every branch has the trunk's model (equal trunk keys)
        b.length = run_length(b.cfg.batch_size, run.model_config, max_steps=b.cfg.max_steps, flops=b.cfg.flops)
        b.point = branch_point(b.cfg, b.length)
    to_serve = [b for b in unfinished if b.point > 0 and not b.has_checkpoint()]
    unserved = [b for b in unfinished if b.point == 0]
    if to_serve:
        unserved += _run_trunk(run, base, to_serve, progress)
    run.log.close()
    del run  # free the trunk before the branches build their own models
    for b in unfinished:
        if b not in unserved:
            _finish_branch(b)
    return unserved


def _done(b: Branch) -> bool:
    result = b.out.read_result()
    return result is not None and result.get("status") == "done"


def _build_trunk(out: RunDir, base: TrainConfig, unfinished: list[Branch]) -> loop.Run:
    """The trunk's folder, config and built run (data, model, diffusion and optimizer). Its length
    waits for its model (the branch points): :func:`_run_trunk` sets it (``trunk.json`` keeps the
    config as claimed here: steps of the longest ``max_steps`` branch, no checkpoint cadence)."""
    longest = max(b.cfg.max_steps or 0 for b in unfinished)
    cfg = base.replace(max_steps=max(longest, 1), flops=None, ckpt_every=0)
    _claim_folder(out, cfg)
    info = DistInfo()
    return loop.build_run(cfg, out, info, pick_device(cfg.device, info))


def _run_trunk(built: loop.Run, base: TrainConfig, to_serve: list[Branch], progress: bool | None) -> list[Branch]:
    """Resume the trunk and train it to the last branch point; returns the branches it cannot serve."""
    run = built.with_steps(max(b.point for b in to_serve))
    start, sums, unserved = _resume_trunk(run, to_serve)
    serving = [b for b in to_serve if b not in unserved]
    if serving:
        _train_trunk_steps(run, start, sums, ServedBranches(run, serving, base.ckpt_every), progress)
    return unserved


def _claim_folder(out: RunDir, cfg: TrainConfig) -> None:
    """Create the trunk folder with ``trunk.json``; ConfigError if it holds another trunk."""
    path = out.root / "trunk.json"
    key = trunk_key(cfg)
    if path.is_file() and json.loads(path.read_text()).get("trunk_key") != key:
        raise ConfigError(
            f"{out.root} holds the trunk of other runs (its config differs); delete it or use another folder"
        )
    out.root.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_json(path, {**old, "trunk_key": key, "config": to_dict(cfg)})


def _resume_trunk(run: loop.Run, to_serve: list[Branch]) -> tuple[int, LossSums, list[Branch]]:
    """Load the trunk's newest checkpoint (weights, optimizer, its loss sums, branch EMAs and sums).

    Returns its step, the trunk's loss sums, and the branches that can no longer branch off: a new
    branch whose EMA window or last-10% loss window started before that step, or whose branch point
    is behind it.
    """
    found = loop.find_checkpoint(run.out, run.info)
    start = 0
    if found is not None:
        path, state = found
        start = ckpt.load_training(path, state, run.trainable, run.ema, run.opt, joint=run.joint)
    run.log.truncate_after(start)
    sums = LossSums(**state["accumulators"]) if found else LossSums()
    saved = state.get("branches", {}) if found else {}
    emas = _branch_emas(found[0]) if found else {}
    unserved = []
    for b in to_serve:
        tracked = saved.get(b.name, {}).get("config_sha") == b.config_sha  # state saved for this very run
        if start > 0 and b.point <= start:
            unserved.append(b)  # the trunk is past its branch point and its checkpoint is gone
        elif tracked:
            b.sums = LossSums(**saved[b.name]["sums"])
            b.val_lines = saved[b.name].get("val_lines", [])
            if saved[b.name]["ema"]:
                b.ema = EMA(run.trainable, b.cfg.ema_decay)
                b.ema.load_state_dict(ckpt.strip_prefix(emas, f"{b.name}{ckpt.SEP}"))
        elif start > 0 and min(b.point, b.cfg.ema_start, tail_start(b.length.total_steps)) < start:
            unserved.append(b)
        else:  # joins now: the loss since the last log line is the trunk's
            b.sums = LossSums(log_sum=sums.log_sum, log_steps=sums.log_steps)
    return start, sums, unserved


def _branch_emas(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_tensors(path, "branch_emas") if (path / "branch_emas.safetensors").is_file() else {}


def _train_trunk_steps(
    run: loop.Run, start: int, sums: LossSums, served: ServedBranches, progress: bool | None
) -> None:
    """Trunk steps ``start .. last branch point - 1``: a run's steps and logs (its ``train.log``
    included; no metrics line off the ``log_every`` cadence), with ``served`` after each step."""
    peak = peak_flops(run.device, run.cfg.peak_flops)
    run.open_progress(start, every=PROGRESS_EVERY, echo=False)  # TRUNK/train.log: what a run's own log says
    run.start_clock(sums.wall_time)
    served.open_ema_windows(start)
    loop.train_steps(run, start, sums, peak, progress, hook=served.after_step, desc="trunk", log_last=False)
    end = run.length.total_steps
    run.progress.end(f"trunk done at step {end}: {len(served.branches)} branch(es) served")


# What the trunk does for its branches after each step ---------------------------------------------
@dataclass
class ServedBranches:
    """The branches a trunk serves while it trains (``branches``), and what it does for them after
    each of its steps: :meth:`after_step`, the hook of :func:`ditscale.train.loop.train_steps`.
    ``ckpt_every``: the trunk's own checkpoint cadence (the branches')."""

    run: loop.Run
    branches: list[Branch]
    ckpt_every: int
    validators: dict[str, Validator] = field(default_factory=dict)  # one fixed validation set per val config

    def after_step(self, done: int, result: loop.StepResult, sums: LossSums) -> None:
        """After trunk step ``done``: each branch before its branch point takes the step (its EMA and
        loss sums) and validates when its own run would; EMA windows starting now open; then the
        branch checkpoints due now, and the trunk's own (``sums``: the trunk's loss sums)."""
        for b in self.branches:
            if done <= b.point:
                b.add_step(done, result.loss, self.run.trainable)
                self._maybe_validate(done, b)
        self.open_ema_windows(done)
        self._branch_off(done, result, sums)

    def open_ema_windows(self, done: int) -> None:
        """Create the EMA of each branch whose window starts after ``done`` steps (before its branch point)."""
        for b in self.branches:
            if b.ema is None and done == b.cfg.ema_start and done < b.point:
                b.ema = EMA(self.run.trainable, b.cfg.ema_decay)

    def _maybe_validate(self, done: int, b: Branch) -> None:
        """The mid-run validation a branch's own run makes every ``val.every`` steps (kept for its metrics)."""
        run, val = self.run, b.cfg.val
        if not (val.every and val.num_images and done % val.every == 0 and done < b.length.total_steps):
            return
        key = json.dumps(to_dict(val), sort_keys=True)
        if key not in self.validators:
            self.validators[key] = loop.build_validator(run, val)
        ema = b.ema if b.ema is not None else EMA(run.trainable, b.cfg.ema_decay)
        record = validate_raw_and_ema(self.validators[key], run.net, run.trainable, ema, val)
        b.val_lines.append({"step": done, **b.length.counters(done), **record})

    def _branch_off(self, done: int, result: loop.StepResult, sums: LossSums) -> None:
        """Write the checkpoint of every branch whose branch point is ``done`` steps (and note in
        ``trunk.json`` what it took from the trunk); checkpoint the trunk then, and every ``ckpt_every``
        steps. ``result``: the step just made (its lr and grad norm)."""
        run = self.run
        due = [b for b in self.branches if b.point == done]
        for b in due:
            _write_branch(run, done, b, result)
        if due:
            _record(run, due, done)
        if due or (self.ckpt_every and done % self.ckpt_every == 0 and done < run.length.total_steps):
            _save_trunk(run, done, sums, self.branches)


def _write_branch(run: loop.Run, step: int, b: Branch, result: loop.StepResult) -> None:
    """The checkpoint, ``config.yaml`` and metrics lines of branch ``b`` after ``step`` steps."""
    loop.prepare_run_dir(b.out, b.cfg, force=False)
    records = [r for r in read_metrics(run.out.root) if r.get("step", 0) <= step] + b.val_lines
    if step == b.length.total_steps and step % b.cfg.log_every:  # its last step, full: its own run logs it
        records.append(loop.metrics_line(b.length, step, result, b.sums))  # the timings are the trunk's: null
        b.sums.reset_log()  # as in the run's own checkpoint
    lines = [
        json.dumps(r) for r in sorted(records, key=lambda r: r["step"])
    ]  # stable: a log line before its validation
    atomic_write_text(b.out.metrics, "".join(line + "\n" for line in lines))
    ema = b.ema if b.ema is not None else EMA(run.trainable, b.cfg.ema_decay)  # before its window: the weights
    b.sums.wall_time = run.wall_time()
    state = ckpt.run_state(to_dict(b.cfg), b.length, step, b.sums, trunk=str(run.out.root))
    ckpt.save_training(
        b.out.checkpoints,
        step,
        run.trainable,
        ema,
        run.opt,
        weights_meta=run.weights_meta,
        state=state,
        text_spec=_text_spec(run),
        keep=b.cfg.keep_checkpoints,
        write=True,
    )


def _record(run: loop.Run, served: list[Branch], done: int) -> None:
    """Note in ``trunk.json`` how far the trunk has trained (steps, images, exact FLOPs) and the FLOPs
    each branch just served took from it, so a study counts the compute it really spent."""
    path = run.out.root / "trunk.json"
    data = json.loads(path.read_text())
    steps = max(done, int((data.get("trained") or {}).get("steps", 0)))
    images = steps * run.length.batch_size  # every trunk step has a full batch
    data["trained"] = {"steps": steps, "images": images, "flops": images * run.length.flops_per_image}
    data.setdefault("shared_flops", {}).update({b.name: b.length.counters(b.point)["flops"] for b in served})
    atomic_write_json(path, data)


def _save_trunk(run: loop.Run, step: int, sums: LossSums, branches: list[Branch]) -> None:
    """The trunk's own checkpoint: weights, optimizer, its loss sums, and every branch's EMA and sums."""
    sums.wall_time = run.wall_time()
    tensors = {
        f"{b.name}{ckpt.SEP}{k}": v for b in branches if b.ema is not None for k, v in b.ema.state_dict().items()
    }
    state = ckpt.run_state(
        to_dict(run.cfg),
        run.length,
        step,
        sums,
        branches={
            b.name: {
                "config_sha": b.config_sha,
                "sums": dict(b.sums.__dict__),
                "ema": b.ema is not None,
                "val_lines": b.val_lines,
            }
            for b in branches
        },
    )
    ckpt.save_training(
        run.out.checkpoints,
        step,
        run.trainable,
        run.ema,
        run.opt,
        weights_meta=run.weights_meta,
        state=state,
        text_spec=_text_spec(run),
        keep=1,
        write=True,
        extra_files={"branch_emas": (tensors, None)} if tensors else None,
    )


def _text_spec(run: loop.Run) -> dict | None:
    """The metadata of a word encoder trained with the model (None for other runs)."""
    return word_encoder_spec(run.text) if run.joint else None


def _finish_branch(b: Branch) -> dict[str, Any]:
    """Resume the branch from its checkpoint and finish it (last steps, validation, result.json);
    this process's RNG states are kept as they were, so later branches see the trunk's."""
    saved = ckpt.rng_state()
    try:
        return loop.train(b.cfg, b.out.root, progress=False)
    except DitscaleError as err:
        b.error = str(err)
        return {}
    finally:
        ckpt.set_rng_state(saved)
