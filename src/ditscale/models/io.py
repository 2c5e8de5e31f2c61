"""Model weights I/O: safetensors with the config in the metadata, safe ``.pt`` loading, strict key checks.

- :func:`save_model` writes ``model.safetensors`` atomically; the metadata key ``"ditscale"`` holds
  JSON ``{"model": DiTConfig dict, **metadata}`` so the model can be rebuilt without other files.
- :func:`load_state_dict_file` reads ``.safetensors``, or ``.pt``/``.pth``/``.bin`` with
  ``torch.load(weights_only=True)`` (nothing in the file is executed), including the reference
  training checkpoints ``{"model", "ema", "opt", "args"}`` (the EMA weights are taken).
- :func:`load_state_dict_strict` names missing, unexpected and shape-mismatched keys.
- :func:`load_model` rebuilds a :class:`~ditscale.models.dit.DiT` and loads its weights.
- A diffusers DiT folder (``model_index.json`` + ``transformer/``, or a lone transformer folder) is
  read like a weights file: its configs as metadata, its weights mapped by :mod:`.diffusers_io`.
- :func:`write_plain_folder` exports a model as ``model.safetensors`` + ``config.json``.
- :func:`resolve_weights` turns what a user names (a weights file, a diffusers folder, a checkpoint
  folder holding ``ema.safetensors``/``model.safetensors``, or a training run folder) into the file
  to load, with notes on what it chose. Run folders belong to :mod:`ditscale.train`, which this layer
  does not import: the caller passes their checkpoint listing (``RunDir.checkpoint_folders``).
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ditscale.errors import CheckpointError
from ditscale.io import atomic_path, atomic_write_json, pickled_global
from ditscale.models.config import MODEL_SIZES, DiTConfig, resolve_config
from ditscale.models.diffusers_io import (
    DITSCALE_PREFIX,
    from_diffusers,
    is_ditscale_transformer,
    read_folder_metadata,
    transformer_dir,
    weight_files,
)
from ditscale.models.dit import DiT

METADATA_KEY = "ditscale"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
STATE_DICT_KEYS = ("ema", "model", "state_dict")  # where training checkpoints keep weights, in preference order
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers
MAX_NAMED = 3  # keys named per category in a mismatch message
# The weights files of a checkpoint folder, in order of preference: EMA first (ema=True) or raw first.
WEIGHT_FILES = {True: ("ema.safetensors", "model.safetensors"), False: ("model.safetensors", "ema.safetensors")}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The underlying module of a DDP / torch.compile wrapper (the module itself when unwrapped)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        inner = inner if inner is not None else getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir() and transformer_dir(p) is not None:  # a diffusers DiT folder
        return p
    if p.is_dir():
        raise CheckpointError(
            f"{str(p)!r} is a folder but not a diffusers DiT folder (no transformer/config.json); "
            "pass a weights file or a diffusers folder"
        )
    if not p.is_file():
        raise CheckpointError(f"weights file {str(p)!r} does not exist; check the path")
    if p.suffix != ".safetensors" and p.suffix not in TORCH_SUFFIXES:
        raise CheckpointError(f"{p} has an unknown weights suffix {p.suffix!r}; use .safetensors, .pt, .pth or .bin")
    return p


def save_model(model: torch.nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the model's state_dict (all tensors, incl. ``pos_embed``) to a safetensors file, atomically.

    The safetensors metadata key ``"ditscale"`` holds JSON ``{"model": model.config.to_dict(), **metadata}``
    (``metadata`` must be JSON-serialisable, e.g. ``{"diffusion": DiffusionConfig dict, "step": 1000}``).
    Returns the path written.
    """
    model = unwrap(model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    info = {"model": model.config.to_dict(), **(metadata or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(info)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``"ditscale"`` metadata of a safetensors file as a dict (``{}`` for files without it, incl. ``.pt``)."""
    p = _existing(path)
    if p.is_dir():
        return read_folder_metadata(p)
    if p.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(p), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(METADATA_KEY)
    except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
        raise CheckpointError(
            f"{p} is not a readable safetensors file ({_first_line(err)}); re-save it or pick another file"
        ) from None
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{p} has corrupt '{METADATA_KEY}' metadata (not JSON); re-save the model") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _torch_load(p: Path) -> Any:
    try:
        # weights_only: tensors and plain containers only; argparse.Namespace for the reference "args".
        # sparse tensors are checked while loading (an index outside its declared size is refused).
        # torch's note on a pickle protocol it does not expect is not the user's business: the refusal says it all
        with (
            torch.serialization.safe_globals([argparse.Namespace]),
            torch.sparse.check_sparse_tensor_invariants(),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        name = found.group(1) if found else pickled_global(p)
        if name:
            raise CheckpointError(
                f"refusing to load {p}: it pickles {name}, not just tensors (unsafe to unpickle); "
                "re-save the weights with torch.save(model.state_dict(), path) or as safetensors"
            ) from None
        raise CheckpointError(
            f"{p} is not a readable PyTorch checkpoint (corrupt or not written by torch.save)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{p} is not a readable PyTorch checkpoint ({_first_line(err)}); re-download or re-save it"
        ) from None


def _pick_state_dict(obj: Any, key: str | None, p: Path) -> dict[str, torch.Tensor]:
    if key is None and _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        candidates = [key] if key is not None else [k for k in STATE_DICT_KEYS if k in obj]
        for k in candidates:
            if k not in obj:
                raise CheckpointError(
                    f"{p} has no {k!r} entry (it has {_listing([repr(x) for x in obj])}); pick one of those"
                )
            if _is_state_dict(obj[k]):
                return dict(obj[k])
    raise CheckpointError(
        f"{p} holds a {type(obj).__name__} that is not a state dict (names -> tensors) nor a checkpoint with "
        f"{'/'.join(STATE_DICT_KEYS)} state dicts; save model.state_dict() instead"
    )


def _strip_wrapper_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def load_state_dict_file(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict (CPU tensors) from ``.safetensors`` or ``.pt``/``.pth``/``.bin``.

    Torch files are read with ``weights_only=True`` (only ``argparse.Namespace`` is allowed besides
    tensors and containers); a file pickling anything else raises :class:`CheckpointError` without
    running it. A dict holding state dicts under ``"ema"``, ``"model"`` or ``"state_dict"`` (the
    reference training checkpoint) yields the first present, in that order, or the one named by
    ``key``. ``module.``/``_orig_mod.`` prefixes (DDP, torch.compile) are stripped. A diffusers
    DiT folder gives its weights in our key layout (:func:`ditscale.models.diffusers_io.from_diffusers`).
    """
    p = _existing(path)
    if p.is_dir():
        return _load_diffusers_folder(p, key)
    if p.suffix == ".safetensors":
        try:
            sd = load_file(str(p), device="cpu")
        except Exception as err:  # SafetensorError (corrupt/truncated) or OSError
            raise CheckpointError(
                f"{p} is not a readable safetensors file ({_first_line(err)}); re-save it or pick another file"
            ) from None
        if key is not None:
            raise CheckpointError(f"{p} is a safetensors file with a single state dict; drop key={key!r}")
    else:
        sd = _pick_state_dict(_torch_load(p), key, p)
    _check_dense(sd, p)
    return _strip_wrapper_prefixes(sd)


def _check_dense(sd: dict[str, torch.Tensor], p: Path) -> None:
    """Weights are dense (strided) tensors: a sparse or otherwise laid-out tensor (whose declared size
    can be any, and which loading into a parameter would densify) is refused naming it."""
    odd = [k for k, v in sd.items() if v.layout != torch.strided]
    if odd:
        raise CheckpointError(
            f"{p} holds {sd[odd[0]].layout} tensors ({_listing(odd)}), not dense weights; "
            "save the weights as dense tensors (tensor.to_dense()) and retry"
        )


def _load_diffusers_folder(p: Path, key: str | None) -> dict[str, torch.Tensor]:
    """Our state dict of a diffusers DiT folder (its weights files mapped strictly by ``diffusers_io``)."""
    if key is not None:
        raise CheckpointError(f"{p} is a diffusers folder with a single set of weights; drop key={key!r}")
    folder = transformer_dir(p)
    theirs: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        theirs.update(load_state_dict_file(file))
    if is_ditscale_transformer(folder):  # our own keys under "dit."; load_model checks them strictly
        return {k.removeprefix(DITSCALE_PREFIX): v for k, v in theirs.items()}
    config = DiTConfig.from_dict(read_folder_metadata(p)["model"])
    return from_diffusers(theirs, config)


# Resolving what the user named --------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedWeights:
    """The weights a user's CKPT names: ``path`` (a weights file or a diffusers folder, for
    :func:`load_model`) and ``notes``, one line each on what was chosen for them (the newest
    checkpoint of a run, the raw weights where the EMA ones are missing)."""

    path: Path
    notes: tuple[str, ...] = ()


def holds_weights(folder: Path, ema: bool = True) -> bool:
    """Whether ``folder`` is a checkpoint folder: it holds ``ema.safetensors`` or ``model.safetensors``."""
    return any((folder / name).is_file() for name in WEIGHT_FILES[ema])


def resolve_weights(
    ckpt: str | Path,
    ema: bool = True,
    *,
    run_checkpoints: Callable[[Path], list[Path] | None] = lambda folder: None,
) -> ResolvedWeights:
    """The weights file of CKPT: the file itself, a diffusers DiT folder itself, a checkpoint folder's
    EMA (``ema=True``, else raw) weights, or those of a run folder's newest checkpoint holding weights.

    ``run_checkpoints(folder)`` lists a run folder's checkpoint folders, newest first (None when
    ``folder`` is not a run folder); ``lambda f: RunDir(f).checkpoint_folders()`` from
    :mod:`ditscale.train.rundir`, which owns that layout.
    """
    path, notes = Path(ckpt).expanduser(), []
    if not path.exists():
        raise CheckpointError(
            f"checkpoint '{ckpt}' does not exist; pass a .safetensors/.pt file, a checkpoint folder or a run folder"
        )
    if path.is_file() or transformer_dir(path) is not None:  # a diffusers DiT folder is read whole
        return ResolvedWeights(path)
    checkpoints = None if holds_weights(path, ema) else run_checkpoints(path)
    if checkpoints is not None:
        found = [folder for folder in checkpoints if holds_weights(folder, ema)]
        if not found:
            raise CheckpointError(
                f"run folder '{ckpt}' has no checkpoint with weights yet; train longer or pass a weights file"
            )
        path = found[0]
        notes.append(f"newest checkpoint: {path}")
    for name in WEIGHT_FILES[ema]:
        if (path / name).is_file():
            if name != WEIGHT_FILES[ema][0]:
                notes.append(f"{WEIGHT_FILES[ema][0]} not found in {path}; using {name}")
            return ResolvedWeights(path / name, tuple(notes))
    raise CheckpointError(
        f"'{ckpt}' is a folder without ema.safetensors/model.safetensors or checkpoints/; "
        "pass a weights file, a checkpoint folder or a run folder"
    )


def text_encoder_beside(weights: Path) -> Path | None:
    """The trained word encoder saved beside checkpoint weights (``text_encoder.safetensors``; next to
    ``ema.safetensors`` its EMA, ``text_encoder_ema.safetensors``, when there is one), or the one of a
    DitscalePipeline folder (``text_encoder/``, the same file), or None."""
    if weights.is_dir():
        found = weights / "text_encoder" / "diffusion_pytorch_model.safetensors"
        return found if found.is_file() else None
    stems = ("text_encoder_ema", "text_encoder") if weights.name == "ema.safetensors" else ("text_encoder",)
    found = [weights.parent / f"{s}.safetensors" for s in stems if (weights.parent / f"{s}.safetensors").is_file()]
    return found[0] if found else None


def vae_beside(weights: Path) -> str | None:
    """The ``vae/`` of a diffusers pipeline folder (``model_index.json`` + ``transformer/`` + ``vae/``), or None."""
    return str(weights / "vae") if (weights / "vae" / "config.json").is_file() else None


def vae_for(weights: Path, run_vae: str | None = None) -> str | None:
    """The VAE that latent-space ``weights`` decode with: a diffusers pipeline folder's ``vae/``, else
    ``run_vae``, the one its run's latent store was encoded with (``RunDir.vae()``), else None."""
    return vae_beside(weights) or run_vae


def write_plain_folder(model: torch.nn.Module, info: dict[str, Any], weights: Path, folder: Path) -> str:
    """ditscale's own format in ``folder``: ``model.safetensors`` (configs in its metadata) and
    ``config.json`` (``{"format": "ditscale", **info}``), with the trained word encoder saved beside
    ``weights`` copied as ``text_encoder.safetensors`` (as ``ditscale sample`` reads it). ``info`` holds
    ``source``, ``model`` and ``diffusion``; returns what was written, for the user."""
    save_model(model, folder / "model.safetensors", {"diffusion": info["diffusion"]})
    atomic_write_json(folder / "config.json", {"format": "ditscale", **info})
    encoder = text_encoder_beside(weights) if weights.is_file() else None
    if encoder is not None:
        shutil.copyfile(encoder, folder / "text_encoder.safetensors")
        return "model.safetensors, text_encoder.safetensors and config.json (ditscale format)"
    return "model.safetensors and config.json (ditscale format)"


# Describing and loading ---------------------------------------------------------------------------
def describe_config(config: DiTConfig) -> str:
    """Short human name of a config, e.g. "DiT-S/2 (input_size 32)" or "DiT(depth=4, hidden_size=64, patch_size=2) (input_size 8)"."""
    size = next(
        (s for s, dims in MODEL_SIZES.items() if dims == (config.depth, config.hidden_size, config.num_heads)), None
    )
    name = (
        f"DiT-{size}/{config.patch_size}"
        if size
        else f"DiT(depth={config.depth}, hidden_size={config.hidden_size}, patch_size={config.patch_size})"
    )
    extra = "".join(
        f", {field} {getattr(config, field)}"
        for field, default in (("block", "adaln_zero"), ("conditioning", "class"))
        if getattr(config, field) != default
    )
    return f"{name} (input_size {config.input_size}{extra})"


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - MAX_NAMED} more)" if len(keys) > MAX_NAMED else ""
    return ", ".join(keys[:MAX_NAMED]) + more


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model`` requiring exactly the same keys and shapes.

    Raises :class:`CheckpointError` with one line naming (the first few) shape-mismatched keys with
    both shapes, missing keys and unexpected keys, and the model it was checked against.
    """
    model = unwrap(model)
    expected = model.state_dict()
    mismatched = [
        f"shape mismatch at {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = mismatched[:MAX_NAMED]
    if len(mismatched) > MAX_NAMED:
        problems.append(f"{len(mismatched) - MAX_NAMED} more shape mismatches")
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if problems:
        target = (
            describe_config(model.config)
            if isinstance(getattr(model, "config", None), DiTConfig)
            else type(model).__name__
        )
        raise CheckpointError(
            f"checkpoint does not match {target}: {'; '.join(problems)} — pass the right --model/--image-size"
        )
    model.load_state_dict(state_dict, strict=True)


def load_model(
    path: str | Path,
    model: "str | DiTConfig | dict | torch.nn.Module | None" = None,
    *,
    map_location: str | torch.device = "cpu",
    key: str | None = None,
    ema: bool = True,
    **overrides: Any,
):
    """Build a DiT and load weights from ``path`` strictly; returns it in eval mode on ``map_location``.

    The architecture comes from ``model`` when given (a paper name such as "DiT-XL/2", a
    :class:`DiTConfig`, a dict, or an existing module to load into), else from the file's
    ``"ditscale"`` metadata. ``overrides`` change config fields (e.g. ``input_size=64`` for the
    512x512 official checkpoint, ``gradient_checkpointing=True``). Official ``.pt`` files carry no
    config: ``load_model("DiT-XL-2-256x256.pt", "DiT-XL/2")``. A diffusers DiT folder (as
    ``facebook/DiT-XL-2-256``) carries its config: ``load_model("DiT-XL-2-256/")``. ``ema=False``
    takes the raw ``"model"`` weights of a reference training checkpoint ``{"model", "ema", ...}``
    (a file with one set of weights gives that set either way).
    """
    p = _existing(path)
    if isinstance(model, torch.nn.Module):
        if overrides:
            raise CheckpointError(
                f"config overrides {sorted(overrides)} cannot apply to an existing model; build it with them"
            )
        net = model
    else:
        if model is None:
            config = read_metadata(p).get("model")
            if config is None:
                raise CheckpointError(
                    f"{p} carries no model config (an official or plain .pt file); pass the model, "
                    "e.g. load_model(path, 'DiT-XL/2', input_size=32) or --model DiT-XL/2 --image-size 256"
                )
            model = config
        net = DiT(resolve_config(model, **overrides))
    load_state_dict_strict(net, _weights_to_load(p, key, ema))
    return net.to(map_location).eval()


def _weights_to_load(p: Path, key: str | None, ema: bool) -> dict[str, torch.Tensor]:
    """The state dict :func:`load_model` loads: ``key``'s, else with ``ema=False`` a torch
    checkpoint's ``"model"`` entry when it has one, else the file's (EMA first)."""
    if key is None and not ema and p.is_file() and p.suffix != ".safetensors":
        try:  # a reference training checkpoint {"model", "ema", ...}: take the raw weights
            return load_state_dict_file(p, key="model")
        except CheckpointError:  # a plain state dict: nothing to choose
            pass
    return load_state_dict_file(p, key=key)
