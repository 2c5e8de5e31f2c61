"""Crash-safe training checkpoints.

Layout of ``OUT/checkpoints/step_XXXXXXXX/`` (step = optimizer steps completed)::

    model.safetensors      raw weights; metadata "ditscale" = {"model": DiTConfig, "diffusion": DiffusionConfig}
    ema.safetensors        EMA weights, same metadata (``ditscale sample`` loads either)
    optimizer.safetensors  optimizer state tensors, flattened as "<param name>::<state name>"
    [text_encoder.safetensors]      a trained text encoder, when there is one (raw weights) ...
    [text_encoder_ema.safetensors]  ... and its EMA, the partner of ema.safetensors
    state.json             step, data position, RNG states, accumulators, optimizer param groups,
                           config, counters, and the SHA-256 of every other file

A model trained jointly with its text encoder is one module whose keys carry the prefixes of
:data:`JOINT_PREFIXES` (``dit.``, ``text.``); the files hold each part under its own keys, so
``model.safetensors`` always has the plain DiT keys that ``ditscale sample`` loads. The optimizer
state keeps the joint parameter names. :func:`save_training` and :func:`load_training` are the
only writers and readers of this layout.

A checkpoint is written into a hidden temporary folder (every file fsynced), then renamed into
place and the parent folder fsynced, so a killed writer leaves either nothing or a complete
checkpoint. :func:`latest_checkpoint` returns the newest checkpoint whose checksums verify and
skips corrupt or truncated ones with a warning.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ditscale.errors import CheckpointError
from ditscale.io import _fsync_dir, sha256_file
from ditscale.models.io import METADATA_KEY

STEP_DIR = re.compile(r"^step_(\d{8,})$")
SEP = "::"
# File stem -> key prefix of that part inside a jointly trained model (JointTextModel's .dit / .text).
JOINT_PREFIXES = {"model": "dit.", "text_encoder": "text."}


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps (``step_00000100``)."""
    return f"step_{step:08d}"


# Optimizer state <-> flat tensors --------------------------------------------------------------
def flatten_optimizer_state(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict keyed by parameter name (``get_optimizer_state_dict``) into
    flat tensors ``{"<param>::<key>": tensor}`` and a JSON-ready remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pname, st in osd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pname}{SEP}{key}"] = val.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pname), {})[key] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[str, dict[str, Any]] = {}
    for flat, val in tensors.items():
        pname, key = flat.rsplit(SEP, 1)
        state.setdefault(pname, {})[key] = val
    for pname, st in meta.get("scalars", {}).items():
        state.setdefault(pname, {}).update(st)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# RNG states (a safety net: every per-step draw is seeded by (seed, step) anyway) ---------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python RNG states, JSON-ready."""
    np_state = np.random.get_state()
    out = {
        "torch": _b64(torch.get_rng_state()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states written by :func:`rng_state` (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        states = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# Writing ---------------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_checkpoint(
    root: str | Path,
    step: int,
    weights: dict[str, tuple[dict[str, torch.Tensor], dict[str, str] | None]],
    state: dict[str, Any],
    *,
    keep: int | None = None,
) -> Path:
    """Write ``root/step_XXXXXXXX`` atomically and return its path.

    ``weights`` maps a file stem ("model", "ema", "optimizer", ...) to (tensors, safetensors
    metadata); ``state`` (JSON-ready) goes to ``state.json`` with ``"step"`` and ``"files"``
    (name -> SHA-256) added. Then only the newest ``keep`` checkpoints are kept.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{step_dir_name(step)}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_files(tmp, step, weights, state)
    except (OSError, SafetensorError) as err:  # e.g. a full disk: the earlier checkpoints stay as they were
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not write checkpoint {final.name} in {root} ({err}); the earlier checkpoints "
            "are intact: free space and run the same command again to resume"
        ) from None
    if final.exists():  # e.g. a re-run of the same step after a crash between save and prune
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if keep is not None:
        prune_checkpoints(root, keep)
    return final


def _write_files(tmp: Path, step: int, weights: dict, state: dict[str, Any]) -> None:
    """The files of one checkpoint, each fsynced, in the new folder ``tmp``."""
    tmp.mkdir()
    files = {}
    for stem, (tensors, meta) in weights.items():
        path = tmp / f"{stem}.safetensors"
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
        _fsync_file(path)
        files[path.name] = sha256_file(path)
    body = {**state, "step": int(step), "files": files}
    path = tmp / "state.json"
    path.write_text(json.dumps(body, indent=1, allow_nan=False) + "\n")
    _fsync_file(path)
    _fsync_dir(tmp)


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``step_*`` folder under ``root``, newest first (not verified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found, reverse=True)


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and leftover temporary folders."""
    root = Path(root)
    for _, path in list_checkpoints(root)[keep:]:
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(".tmp_step_*"):
        shutil.rmtree(path, ignore_errors=True)


# Reading ---------------------------------------------------------------------------------------
def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """The parsed ``state.json`` of checkpoint ``path`` after checking every file's SHA-256.

    Raises :class:`CheckpointError` saying what is wrong (missing file, bad JSON, checksum mismatch).
    """
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        files = state["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path} has a missing or unreadable state.json") from None
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}")
        if sha256_file(f) != digest:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its SHA-256 (corrupt or truncated)")
    return state


def latest_checkpoint(root: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(path, state) of the newest checkpoint under ``root`` that verifies, or None.

    Checkpoints that fail verification are skipped with a warning naming them.
    """
    for _, path in list_checkpoints(root):
        try:
            return path, verify_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint: {err}; resuming from an older one", stacklevel=2)
    return None


def load_tensors(path: str | Path, stem: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of ``<checkpoint>/<stem>.safetensors``."""
    return load_file(str(Path(path) / f"{stem}.safetensors"), device=str(device))


# A training run's full state ---------------------------------------------------------------------
def run_state(config: dict, length, step: int, sums, **extra: Any) -> dict[str, Any]:
    """The JSON part of a run's checkpoint after ``step`` steps: its config (dict), data position and
    counters (from its ``RunLength``), loss sums (``LossSums``), the torch threads it ran on (a CPU
    matmul's summation order, hence its last bits, depends on them) and ``extra`` keys (a trunk's)."""
    counters = length.counters(step)
    return {
        "config": config,
        "data_position": counters["images"],
        "accumulators": dict(sums.__dict__),
        "counters": counters,
        "torch_threads": torch.get_num_threads(),
        **extra,
    }


def warn_thread_change(path: Path, state: dict) -> None:
    """Warn when a run resumes on another number of torch threads than its checkpoint was written on:
    a CPU run is bit-identical only at one thread count (its matrix products sum in another order at
    another, a last-bit difference that training then grows to about a seed's spread)."""
    then, now = state.get("torch_threads"), torch.get_num_threads()  # None: written before it was recorded
    if then is not None and then != now:
        warnings.warn(
            f"resuming {path.name} on {now} torch threads, written on {then}: the run goes on deterministically "
            f"but not bit-identical to an uninterrupted one; pass --threads {then} for that",
            stacklevel=3,
        )


def full_state_dicts(trainable: torch.nn.Module, opt: torch.optim.Optimizer):
    """Full model and optimizer state dicts on CPU (a collective under FSDP: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import (  # lazy: ~0.7 s to import; only a checkpoint save needs it
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(trainable, options=opts), get_optimizer_state_dict(trainable, opt, options=opts)


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``sd`` whose keys start with ``prefix``, keyed without it (one part of a joint state)."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _joined(parts: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{JOINT_PREFIXES[stem]}{k}": v for stem, sd in parts.items() for k, v in sd.items()}


def training_files(model_sd, ema_sd, opt_sd, *, weights_meta: dict, step: int, text_spec: dict | None):
    """The ``{stem: (tensors, metadata)}`` files of a checkpoint and the optimizer's JSON part.

    ``weights_meta`` ({"model": DiTConfig dict, "diffusion": ...}) goes into the weight files with
    the step and which weights they are; ``text_spec`` (a jointly trained word encoder's sizes and
    vocabulary) marks a joint model and goes into the text-encoder files.
    """
    opt_tensors, opt_meta = flatten_optimizer_state(opt_sd)

    def meta(kind: str) -> dict[str, str]:
        return {METADATA_KEY: json.dumps({**weights_meta, "step": step, "weights": kind})}

    if text_spec is None:
        return {
            "model": (model_sd, meta("raw")),
            "ema": (ema_sd, meta("ema")),
            "optimizer": (opt_tensors, None),
        }, opt_meta
    dit, text = JOINT_PREFIXES["model"], JOINT_PREFIXES["text_encoder"]
    spec = {METADATA_KEY: json.dumps(text_spec)}
    files = {
        "model": (strip_prefix(model_sd, dit), meta("raw")),
        "ema": (strip_prefix(ema_sd, dit), meta("ema")),
        "optimizer": (opt_tensors, None),
        "text_encoder": (strip_prefix(model_sd, text), spec),
        "text_encoder_ema": (strip_prefix(ema_sd, text), spec),
    }
    return files, opt_meta


def save_training(
    root: str | Path,
    step: int,
    trainable,
    ema,
    opt,
    *,
    weights_meta: dict,
    state: dict,
    text_spec: dict | None,
    keep: int,
    write: bool,
    extra_files: dict | None = None,
) -> Path | None:
    """Checkpoint a training run after ``step`` steps: weights, EMA, optimizer, RNG and ``state``
    (JSON: config, data position, accumulators, counters, and any further keys, e.g. a trunk's
    branches). ``extra_files``: more ``{stem: (tensors, metadata)}`` (a trunk's branch EMAs).
    Collective: every rank calls it, only the rank with ``write`` writes; returns the checkpoint
    path there (None elsewhere)."""
    model_sd, opt_sd = full_state_dicts(trainable, opt)
    ema_sd = ema.state_dict()
    if not write:
        return None
    files, opt_meta = training_files(
        model_sd, ema_sd, opt_sd, weights_meta=weights_meta, step=step, text_spec=text_spec
    )
    files.update(extra_files or {})
    body = {
        "config": state["config"],
        "data_position": state["data_position"],
        "optimizer": opt_meta,
        "accumulators": state["accumulators"],
        "rng": rng_state(),
        "counters": state["counters"],
        **{k: v for k, v in state.items() if k not in ("config", "data_position", "accumulators", "counters")},
    }
    return write_checkpoint(root, step, files, body, keep=keep)


def check_architecture(path: Path, sd: dict[str, torch.Tensor], trainable: torch.nn.Module) -> None:
    """Refuse (one-line CheckpointError) to load checkpoint ``path``'s weights ``sd`` into a model of
    another architecture (other keys or shapes; e.g. ``train --force`` after a width change), before
    anything is loaded or written."""
    want = {k: tuple(v.shape) for k, v in trainable.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in sd.items()}
    if want == have:
        return
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    shown = ", ".join(f"{k} {have.get(k, 'absent')} -> {want.get(k, 'absent')}" for k in diff[:2])
    raise CheckpointError(
        f"checkpoint {path} holds a model of another architecture than the config's ({shown}"
        f"{f' and {len(diff) - 2} more' if len(diff) > 2 else ''}); a run cannot continue with a changed "
        "architecture, not even with --force: train it in another --out"
    )


def load_training(path: str | Path, state: dict, trainable, ema, opt, *, joint: bool) -> int:
    """Restore weights, EMA, optimizer and RNG from the verified checkpoint ``path`` (``state``: its
    state.json); ``joint`` for a model trained with its text encoder. Returns the checkpoint's step."""
    from torch.distributed.checkpoint.state_dict import (  # lazy: ~0.7 s to import; only a resume needs it
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = Path(path)
    sd, ema_sd = load_tensors(path, "model"), load_tensors(path, "ema")
    if joint:
        text_sd = load_tensors(path, "text_encoder")
        text_ema = (
            load_tensors(path, "text_encoder_ema") if (path / "text_encoder_ema.safetensors").is_file() else text_sd
        )
        sd = _joined({"model": sd, "text_encoder": text_sd})
        ema_sd = _joined({"model": ema_sd, "text_encoder": text_ema})
    check_architecture(path, sd, trainable)
    set_model_state_dict(trainable, sd, options=StateDictOptions(full_state_dict=True, strict=True))
    ema.load_state_dict(ema_sd)
    osd = unflatten_optimizer_state(load_tensors(path, "optimizer"), state["optimizer"])
    set_optimizer_state_dict(trainable, opt, osd, options=StateDictOptions(full_state_dict=True))
    set_rng_state(state.get("rng", {}))
    warn_thread_change(path, state)
    return int(state["step"])
