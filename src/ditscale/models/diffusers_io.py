"""Diffusers interop: our DiT <-> diffusers ``DiTTransformer2DModel`` (keys, configs, scheduler configs).

The class-conditional adaLN-Zero DiT has the same computation as diffusers' ``DiTTransformer2DModel``
(the model inside ``DiTPipeline`` and ``facebook/DiT-XL-2-256``); only the parameter names and a few
layouts differ. :func:`key_rules` is the whole mapping, as a table that runs both ways:

- the fused ``attn.qkv`` is diffusers' ``to_q``, ``to_k``, ``to_v`` stacked on dim 0;
- diffusers keeps a copy of the timestep MLP and the class table in *every* block
  (``transformer_blocks.i.norm1.emb``); exporting repeats ours, importing requires the copies equal;
- ``pos_embed`` (our frozen sin-cos table) is not stored by diffusers, which recomputes the same table.

One deviation is diffusers' own: its timestep features use the frequencies ``10000 ** (-i / 127)``
(``downscale_freq_shift=1``) where the reference DiT uses ``10000 ** (-i / 128)``. The weights map
exactly; stock diffusers outputs differ from ours (and the reference's) by that embedding.

The scheduler config (:func:`scheduler_config`) is a ``DDIMScheduler`` on the run's betas, as the
hub's ``facebook/DiT-XL-2-256``; :func:`diffusion_from_scheduler` reads it back. Everything here
works on plain dicts and state dicts: no diffusers import.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file

from ditscale.config import from_dict
from ditscale.errors import CheckpointError, ConfigError
from ditscale.io import atomic_path, atomic_write_json
from ditscale.models.config import DiTConfig
from ditscale.models.dit import DiT, sincos_pos_embed_2d

TRANSFORMER_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")  # current and older (hub) class names
DITSCALE_TRANSFORMER = "DitscaleTransformer"  # any ditscale DiT, in a DitscalePipeline folder (diffusers_custom)
DITSCALE_PREFIX = "dit."  # its weights: our own keys under this prefix (the module holds our DiT as .dit)
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SHARD_INDEX = "diffusion_pytorch_model.safetensors.index.json"
CLASS_TABLE = "y_embedder.embedding_table.weight"
FIXED_KEYS = ("pos_embed",)  # ours only: diffusers recomputes the fixed sin-cos table
NORM_EPS = 1e-6  # our LayerNorms' eps (diffusers' config default 1e-5 applies to its second block norm)
PREDICTIONS = {"epsilon": "epsilon", "x0": "sample", "v": "v_prediction"}  # ours -> diffusers prediction_type
MAX_NAMED = 3
PIXEL_CHANNELS = (1, 3)  # in_channels of pixel-space models; anything else works in a VAE's latent space
NULL_CLASS = 1000  # DiTPipeline feeds this label as the unconditional class when guidance_scale > 1
NUM_CLASSES_KEY = "_ditscale_num_classes"  # our class count in a padded table (diffusers skips "_" config keys)


@dataclass(frozen=True)
class KeyRule:
    """One of our tensors and where diffusers keeps it.

    ``theirs`` are concatenated on dim 0 into ``ours`` (one key: a rename; three: the fused qkv);
    ``copies`` hold the same tensor as ``theirs[0]`` again (diffusers' per-block embedders).
    """

    ours: str
    theirs: tuple[str, ...]
    copies: tuple[str, ...] = ()


def _linear(ours: str, theirs: str) -> list[KeyRule]:
    return [KeyRule(f"{ours}.{p}", (f"{theirs}.{p}",)) for p in ("weight", "bias")]


def _block_rules(i: int) -> list[KeyRule]:
    a, b = f"blocks.{i}", f"transformer_blocks.{i}"
    qkv = [KeyRule(f"{a}.attn.qkv.{p}", tuple(f"{b}.attn1.to_{n}.{p}" for n in "qkv")) for p in ("weight", "bias")]
    return qkv + [
        *_linear(f"{a}.attn.proj", f"{b}.attn1.to_out.0"),
        *_linear(f"{a}.mlp.fc1", f"{b}.ff.net.0.proj"),
        *_linear(f"{a}.mlp.fc2", f"{b}.ff.net.2"),
        *_linear(f"{a}.adaLN_modulation.1", f"{b}.norm1.linear"),
    ]


def _shared_rules(depth: int) -> list[KeyRule]:
    """The embedders diffusers repeats in every block: the timestep MLP and the class table."""
    pairs = [
        (f"t_embedder.mlp.{j}.{p}", f"timestep_embedder.linear_{k}.{p}")
        for j, k in ((0, 1), (2, 2))
        for p in ("weight", "bias")
    ]
    pairs.append(("y_embedder.embedding_table.weight", "class_embedder.embedding_table.weight"))
    return [
        KeyRule(
            ours,
            (f"transformer_blocks.0.norm1.emb.{theirs}",),
            tuple(f"transformer_blocks.{i}.norm1.emb.{theirs}" for i in range(1, depth)),
        )
        for ours, theirs in pairs
    ]


def key_rules(depth: int) -> list[KeyRule]:
    """The complete key mapping of a class-conditional adaLN-Zero DiT of ``depth`` blocks.

    Every key of our state dict except :data:`FIXED_KEYS` is the ``ours`` of exactly one rule, and
    every key of the diffusers state dict is in exactly one rule's ``theirs`` or ``copies``.
    """
    rules = _linear("x_embedder.proj", "pos_embed.proj") + _shared_rules(depth)
    for i in range(depth):
        rules += _block_rules(i)
    return rules + _linear("final_layer.adaLN_modulation.1", "proj_out_1") + _linear("final_layer.linear", "proj_out_2")


# Configs ------------------------------------------------------------------------------------------
def unsupported_reason(config: DiTConfig, diffusion: dict[str, Any] | None = None) -> str | None:
    """Why diffusers' DiT cannot hold this model (one line), or None when it can.

    With ``diffusion`` (the export's question) also why the stock ``DiTPipeline`` cannot sample it
    at its defaults: a rectified flow, pixels (it always decodes through a VAE), no null class (it
    guides at ``guidance_scale=4`` with label :data:`NULL_CLASS`), or more than 1000 classes (label
    1000 would be a real class). Those export as a :data:`CUSTOM_PIPELINE` instead."""
    if config.block != "adaln_zero":
        return f"diffusers' DiTTransformer2DModel has only adaLN-Zero blocks; this model uses {config.block!r} blocks"
    if config.conditioning != "class":
        return (
            f"diffusers' DiTTransformer2DModel is class-conditional only; "
            f"this model has {config.conditioning!r} conditioning"
        )
    if config.mlp_ratio != 4.0:
        return f"diffusers' DiTTransformer2DModel fixes the MLP ratio at 4; this model has {config.mlp_ratio}"
    if config.out_conv:
        return "diffusers' DiTTransformer2DModel ends in its linear decoder; this model has an output conv head"
    if diffusion is None:
        return None
    if diffusion.get("kind", "gaussian") != "gaussian":
        return "diffusers' DiTPipeline and its schedulers run Gaussian diffusion; this is a rectified-flow model"
    if config.in_channels in PIXEL_CHANNELS:
        return "diffusers' DiTPipeline always decodes through a VAE; this is a pixel-space model"
    if config.class_dropout_prob == 0:
        return "diffusers' DiTPipeline guides by default (guidance_scale 4) and this model has no null class"
    if config.num_classes > NULL_CLASS:
        return f"diffusers' DiTPipeline takes label {NULL_CLASS} as the null class; this model has {config.num_classes}"
    return None


def diffusers_version() -> str:
    try:
        return version("diffusers")
    except PackageNotFoundError:
        return "0.30.0"


def transformer_config(config: DiTConfig) -> dict[str, Any]:
    """The ``config.json`` of the ``DiTTransformer2DModel`` equal to our class-conditional adaLN-Zero DiT."""
    reason = unsupported_reason(config)
    if reason:
        raise CheckpointError(f"{reason}; export it in the safetensors format instead")
    return {
        "_class_name": "DiTTransformer2DModel",
        "_diffusers_version": diffusers_version(),
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.hidden_size // config.num_heads,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "num_layers": config.depth,
        "dropout": 0.0,
        "norm_num_groups": 32,
        "attention_bias": True,
        "sample_size": config.input_size,
        "patch_size": config.patch_size,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": max(config.num_classes, NULL_CLASS),
        "upcast_attention": False,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": NORM_EPS,
        NUM_CLASSES_KEY: config.num_classes,
    }


# what a transformer config must hold for our DiT to compute the same function (key -> required value)
REQUIRED = {
    "norm_type": "ada_norm_zero",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "cross_attention_dim": None,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "double_self_attention": False,
    "norm_elementwise_affine": False,
}


def dit_config(transformer: dict[str, Any], where: str = "transformer config") -> DiTConfig:
    """Our :class:`DiTConfig` of a diffusers DiT ``config.json`` (label dropout 0.1: diffusers' fixed null row)."""
    wrong = [f"{k}={transformer.get(k)!r}" for k, v in REQUIRED.items() if transformer.get(k, v) != v]
    if transformer.get("_class_name") not in TRANSFORMER_CLASSES or transformer.get("patch_size") is None or wrong:
        raise CheckpointError(
            f"{where} is not a class-conditional adaLN-Zero DiT ({', '.join(wrong) or transformer.get('_class_name')}); "
            "only DiTTransformer2DModel folders (as facebook/DiT-XL-2-256) load into ditscale"
        )
    sizes = _typed(TransformerSizes, transformer, where)
    in_ch = sizes.in_channels
    out_ch = sizes.out_channels or in_ch
    if out_ch not in (in_ch, 2 * in_ch):
        raise CheckpointError(
            f"{where} has out_channels {out_ch}, neither in_channels {in_ch} nor twice it; ditscale cannot map it"
        )
    _check_table_rows(sizes, where)
    return DiTConfig(
        input_size=sizes.sample_size,
        patch_size=sizes.patch_size,
        in_channels=in_ch,
        hidden_size=sizes.num_attention_heads * sizes.attention_head_dim,
        depth=sizes.num_layers,
        num_heads=sizes.num_attention_heads,
        mlp_ratio=4.0,
        num_classes=sizes._ditscale_num_classes or sizes.num_embeds_ada_norm or 1000,
        class_dropout_prob=0.1,
        learn_sigma=out_ch == 2 * in_ch,
    )


def _check_table_rows(sizes: "TransformerSizes", where: str) -> None:
    """A folder we exported names its class count (:data:`NUM_CLASSES_KEY`) beside the padded table's
    ``num_embeds_ada_norm`` (:func:`transformer_config`: ``max(classes, NULL_CLASS)``): the two must agree."""
    classes, rows = sizes._ditscale_num_classes, sizes.num_embeds_ada_norm
    if classes is not None and rows != max(classes, NULL_CLASS):
        raise CheckpointError(
            f"{where} has num_embeds_ada_norm {rows} but {NUM_CLASSES_KEY} {classes} (the exported table has "
            f"max(classes, {NULL_CLASS}) rows): the two do not match; re-export the folder"
        )


@dataclass(frozen=True)
class TransformerSizes:
    """The sizes of a DiT ``config.json`` (diffusers' defaults where a key is absent), each an integer
    (a word, NaN, Infinity or a fraction is refused; :class:`DiTConfig` refuses those below 1)."""

    patch_size: int
    num_attention_heads: int = 16
    attention_head_dim: int = 72
    in_channels: int = 4
    out_channels: int | None = None
    num_layers: int = 28
    sample_size: int = 32
    num_embeds_ada_norm: int | None = 1000
    _ditscale_num_classes: int | None = None  # NUM_CLASSES_KEY: our class count when the table is padded


@dataclass(frozen=True)
class SchedulerFields:
    """The fields of a diffusers scheduler config that ditscale reads, typed (diffusers' defaults)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    trained_betas: Any = None


def _typed(cls: type, data: dict[str, Any], where: str) -> Any:
    """``cls`` built from the keys of ``data`` it has (the rest of a diffusers config is not ours),
    each checked for its type: a one-line :class:`CheckpointError` naming ``where`` and the key."""
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return from_dict(cls, {k: v for k, v in data.items() if k in names}, where=where)
    except ConfigError as err:
        raise CheckpointError(f"{err}; fix or re-export the folder") from None


def scheduler_config(diffusion: dict[str, Any]) -> dict[str, Any]:
    """A ``DDIMScheduler`` config on the betas of a full Gaussian ``DiffusionConfig`` dict.

    ``linear`` is Ho et al.'s 1e-4..0.02 scaled by 1000 / T (diffusers ``"linear"``), ``cosine`` is
    diffusers' ``"squaredcos_cap_v2"``; no x0 clipping, as DiT's sampler. Learned sigma needs no
    field: ``DiTPipeline`` drops the variance channels before the scheduler step.
    """
    steps = int(diffusion["diffusion_steps"])
    scale = 1000 / steps
    betas = {
        "linear": {"beta_schedule": "linear", "beta_start": 0.0001 * scale, "beta_end": 0.02 * scale},
        "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    }[diffusion["noise_schedule"]]
    return {
        "_class_name": "DDIMScheduler",
        "_diffusers_version": diffusers_version(),
        "num_train_timesteps": steps,
        **betas,
        "trained_betas": None,
        "clip_sample": False,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": PREDICTIONS[diffusion["predict"]],
    }


def pipeline_index(config: DiTConfig, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``model_index.json`` of a DiTPipeline folder (transformer, scheduler, vae), with ``id2label``
    (``{"0": name, ...}``) when the classes have ``class_names``."""
    index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": transformer_config(config)["_diffusers_version"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if class_names:
        index["id2label"] = {str(i): name for i, name in enumerate(class_names)}
    return index


def pipeline_notes(config: DiTConfig) -> list[str]:
    """What a DiTPipeline user must know about this model, one line each: its labels (the null class
    sits at label :data:`NULL_CLASS`, where DiTPipeline looks) and diffusers' timestep embedding."""
    notes = []
    if config.class_dropout_prob == 0:
        notes.append(
            "the model was trained without label dropout: its null class row is zeros; call DiTPipeline "
            "with guidance_scale=1"
        )
    elif config.num_classes < NULL_CLASS:
        notes.append(
            f"this model has {config.num_classes} classes (labels 0..{config.num_classes - 1}); its null class "
            f"is stored at label {NULL_CLASS}, where DiTPipeline's guidance looks for it"
        )
    notes.append(
        "diffusers' DiT embeds timesteps with frequencies 10000^(-i/127), the reference 10000^(-i/128): "
        "the weights are exact, diffusers' outputs differ slightly (`ditscale sample OUT` is exact)"
    )
    return notes


def diffusion_from_scheduler(
    scheduler: dict[str, Any], learn_sigma: bool, where: str = "scheduler config"
) -> dict[str, Any]:
    """The ``DiffusionConfig`` fields of a diffusers scheduler config (the inverse of :func:`scheduler_config`),
    each field type-checked (``where`` names the file in errors); ``DiffusionConfig`` bounds the steps."""
    fields = _typed(SchedulerFields, scheduler, where)
    steps = fields.num_train_timesteps
    if steps < 1:
        raise CheckpointError(f"{where}.num_train_timesteps must be >= 1, got {steps}; fix or re-export the folder")
    schedule, scale = fields.beta_schedule, 1000 / steps
    ends = (fields.beta_start, fields.beta_end)
    linear = schedule == "linear" and all(math.isclose(a, b * scale, rel_tol=1e-6) for a, b in zip(ends, (1e-4, 0.02)))
    if fields.trained_betas is not None or not (linear or schedule == "squaredcos_cap_v2"):
        raise CheckpointError(
            f"scheduler betas ({schedule} {ends[0]}..{ends[1]}) are neither DiT's linear nor the cosine schedule; "
            "ditscale cannot sample this process"
        )
    predict = {v: k for k, v in PREDICTIONS.items()}.get(fields.prediction_type)
    if predict is None:
        raise CheckpointError(
            f"scheduler prediction_type {fields.prediction_type!r} is not epsilon, "
            "sample or v_prediction; ditscale cannot sample this process"
        )
    return {
        "kind": "gaussian",
        "noise_schedule": "linear" if linear else "cosine",
        "diffusion_steps": steps,
        "predict": predict,
        "learn_sigma": learn_sigma,
    }


# State dicts --------------------------------------------------------------------------------------
def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - MAX_NAMED} more)" if len(keys) > MAX_NAMED else ""
    return ", ".join(keys[:MAX_NAMED]) + more


def to_diffusers(state_dict: dict[str, torch.Tensor], config: DiTConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> the ``DiTTransformer2DModel`` state dict (new contiguous tensors; none shared).

    Label tables without the null row (``class_dropout_prob == 0``) get a zero row ``num_classes``,
    as diffusers always has one. Raises :class:`CheckpointError` if a key is missing or extra.
    """
    rules = key_rules(config.depth)
    missing = [r.ours for r in rules if r.ours not in state_dict]
    extra = [k for k in state_dict if k not in {r.ours for r in rules} | set(FIXED_KEYS)]
    if missing or extra:
        raise CheckpointError(
            f"state dict is not a DiT of depth {config.depth}: missing {_listing(missing) or 'none'}, "
            f"unexpected {_listing(extra) or 'none'}; pass the model's own state_dict()"
        )
    _check_pos_embed(state_dict, config)
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        tensor = state_dict[rule.ours]
        tensor = _with_null_row(tensor, config) if rule.ours == CLASS_TABLE else tensor
        for key, part in zip(rule.theirs, tensor.chunk(len(rule.theirs), dim=0)):
            out[key] = part.detach().to("cpu").contiguous().clone()
        out.update({key: out[rule.theirs[0]].clone() for key in rule.copies})
    return out


def _check_pos_embed(state_dict: dict[str, torch.Tensor], config: DiTConfig) -> None:
    """Diffusers recomputes the sin-cos position table, so ours must be exactly that table."""
    fixed = sincos_pos_embed_2d(config.hidden_size, config.grid_size).unsqueeze(0)
    pos = state_dict.get("pos_embed")
    if pos is not None and (pos.shape != fixed.shape or not torch.allclose(pos.float().cpu(), fixed, atol=1e-6)):
        raise CheckpointError(
            "pos_embed is not the fixed 2-D sin-cos table that diffusers recomputes; "
            "this model cannot be exported to diffusers (use --format safetensors)"
        )


def _with_null_row(table: torch.Tensor, config: DiTConfig) -> torch.Tensor:
    """The class table as DiTPipeline indexes it: our classes, then our null row (zeros when the model
    was trained without label dropout) at row :data:`NULL_CLASS`; with fewer classes the rows between
    repeat the null row, so ``DiTPipeline``'s default guidance (label 1000 as the null class) works."""
    null = table[config.num_classes :] if table.shape[0] > config.num_classes else table.new_zeros(1, table.shape[1])
    pad = null.expand(max(NULL_CLASS - config.num_classes, 0), -1)
    return torch.cat([table[: config.num_classes], pad, null])


def _without_padding(table: torch.Tensor, config: DiTConfig) -> torch.Tensor:
    """Our class table (classes and null row) of a diffusers one, padded by :func:`_with_null_row` or not."""
    return torch.cat([table[: config.num_classes], table[-1:]]) if table.shape[0] > config.num_classes + 1 else table


def from_diffusers(theirs: dict[str, torch.Tensor], config: DiTConfig) -> dict[str, torch.Tensor]:
    """A ``DiTTransformer2DModel`` state dict -> ours, strictly: every key mapped, shapes checked, the
    per-block embedder copies equal; ``pos_embed`` is the fixed sin-cos table. One-line
    :class:`CheckpointError` naming the offending keys otherwise."""
    rules = key_rules(config.depth)
    known = {k for r in rules for k in r.theirs + r.copies}
    missing = [k for k in sorted(known) if k not in theirs]
    unexpected = [k for k in theirs if k not in known]
    if missing or unexpected:
        raise CheckpointError(
            f"diffusers weights do not match the {config.depth}-block DiT of their config: missing "
            f"{_listing(missing) or 'none'}; unexpected {_listing(unexpected) or 'none'}"
        )
    _check_copies(theirs, rules)
    ours = {
        r.ours: torch.cat([theirs[k] for k in r.theirs], dim=0) if len(r.theirs) > 1 else theirs[r.theirs[0]]
        for r in rules
    }
    ours[CLASS_TABLE] = _without_padding(ours[CLASS_TABLE], config)
    ours["pos_embed"] = sincos_pos_embed_2d(config.hidden_size, config.grid_size).unsqueeze(0)
    _check_shapes(ours, config, rules)
    return ours


def _check_copies(theirs: dict[str, torch.Tensor], rules: list[KeyRule]) -> None:
    for rule in rules:
        for key in rule.copies:
            if not torch.equal(theirs[key], theirs[rule.theirs[0]]):
                raise CheckpointError(
                    f"diffusers weight {key} differs from {rule.theirs[0]}; our DiT shares one "
                    "timestep/class embedder across blocks, so this model cannot be loaded"
                )


def _check_shapes(ours: dict[str, torch.Tensor], config: DiTConfig, rules: list[KeyRule]) -> None:
    """Each mapped tensor has the shape our DiT of ``config`` needs (named by its diffusers key)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in DiT(config).state_dict().items()}
    for rule in rules:
        if tuple(ours[rule.ours].shape) != expected[rule.ours]:
            raise CheckpointError(
                f"diffusers weight {'+'.join(rule.theirs)} has shape {tuple(ours[rule.ours].shape)} but its config "
                f"needs {expected[rule.ours]} (our {rule.ours}); the weights do not belong to this config.json"
            )


# Folders ------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a config; re-export the folder") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({err}); re-export the folder") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; re-export the folder")
    return data


def transformer_dir(path: str | Path) -> Path | None:
    """The folder holding the DiT ``config.json`` of a diffusers folder: ``PATH/transformer`` (the
    pipeline layout of ``facebook/DiT-XL-2-256``) or ``PATH`` itself (a lone transformer folder);
    None when ``path`` is neither."""
    p = Path(path)
    for candidate in (p / "transformer", p):
        if (candidate / "config.json").is_file():
            cls = _read_json(candidate / "config.json").get("_class_name")
            if cls in (*TRANSFORMER_CLASSES, DITSCALE_TRANSFORMER):
                return candidate
    return None


def is_ditscale_transformer(folder: Path) -> bool:
    """Whether the transformer folder ``folder`` holds a ``DitscaleTransformer`` (our keys, our configs)."""
    return _read_json(folder / "config.json").get("_class_name") == DITSCALE_TRANSFORMER


def _shard_names(index: Path) -> list[str]:
    """The shard files a safetensors index names (its ``weight_map`` values), each a plain file name
    inside the index's folder: not a path (``/``, ``\\``), not ``.`` or ``..``, a string; a one-line
    :class:`CheckpointError` otherwise, so a folder never reads weights outside itself."""
    weight_map = _read_json(index).get("weight_map", {})
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: weight_map must be an object (tensor name -> file name); re-export the folder")
    names = sorted({v for v in weight_map.values() if isinstance(v, str)})
    bad = [v for v in weight_map.values() if not isinstance(v, str)] + [
        v for v in names if v in ("", ".", "..") or "/" in v or "\\" in v or "\0" in v
    ]
    if bad:
        raise CheckpointError(
            f"{index}: weight_map names {reprlib.repr(bad[0])}, not a file name inside {index.parent}; "
            "a shard must be a plain file name beside the index: re-export the folder"
        )
    return names


def weight_files(folder: Path) -> list[Path]:
    """The weights files of a diffusers model folder: one file, or the shards of a safetensors index."""
    if (folder / SHARD_INDEX).is_file():
        return [folder / name for name in _shard_names(folder / SHARD_INDEX)]
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(f"{folder} has no {' or '.join(WEIGHT_NAMES)}; download or re-export the weights")


def read_folder_metadata(path: str | Path) -> dict[str, Any]:
    """``{"model": DiTConfig dict, "diffusion": DiffusionConfig fields}`` of a diffusers DiT folder
    (the diffusion from ``scheduler/scheduler_config.json`` when present, else DiT's default process;
    a ``DitscaleTransformer`` carries both in its own config)."""
    folder = transformer_dir(path)
    if folder is None:
        raise CheckpointError(f"{path} is not a diffusers DiT folder (no transformer/config.json); check the path")
    if is_ditscale_transformer(folder):
        own = _read_json(folder / "config.json")
        if not isinstance(own.get("model"), dict) or not isinstance(own.get("diffusion"), dict):
            raise CheckpointError(f"{folder / 'config.json'} lacks its model or diffusion config; re-export the folder")
        return {"model": DiTConfig.from_dict(own["model"]).to_dict(), "diffusion": own["diffusion"]}
    config = dit_config(_read_json(folder / "config.json"), where=str(folder / "config.json"))
    sched = Path(path) / "scheduler" / "scheduler_config.json"
    diffusion = (
        diffusion_from_scheduler(_read_json(sched), config.learn_sigma, where=str(sched))
        if sched.is_file()
        else {"learn_sigma": config.learn_sigma}
    )
    return {"model": config.to_dict(), "diffusion": diffusion}


def save_transformer(state_dict: dict[str, torch.Tensor], config: DiTConfig, folder: str | Path) -> Path:
    """Write ``folder/config.json`` and ``folder/diffusion_pytorch_model.safetensors`` (atomically):
    a folder ``DiTTransformer2DModel.from_pretrained`` loads. Returns ``folder``."""
    folder = Path(folder)
    tensors = to_diffusers(state_dict, config)
    atomic_write_json(folder / "config.json", transformer_config(config))
    with atomic_path(folder / WEIGHT_NAMES[0]) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return folder
