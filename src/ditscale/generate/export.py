"""A trained model for other tools: a diffusers pipeline folder, or ditscale's plain safetensors.

:func:`export_model` writes, for a class-conditional adaLN-Zero Gaussian latent model with a null
class and at most 1000 classes (``format="diffusers"``)::

    DIR/model_index.json        DiTPipeline (transformer, vae, scheduler, id2label of the run's classes)
    DIR/transformer/            DiTTransformer2DModel: config.json + diffusion_pytorch_model.safetensors
    DIR/scheduler/              DDIMScheduler on the run's betas (scheduler_config.json)
    DIR/vae/                    the AutoencoderKL the run's latents were encoded with (or the one named)
    DIR/ditscale.json           where it came from: source weights, model and diffusion configs, VAE

so ``DiffusionPipeline.from_pretrained(DIR)`` loads it offline and samples at DiTPipeline's defaults
(its null class sits at label 1000, where DiTPipeline's guidance looks). A latent one whose VAE is
unknown gets ``transformer/`` and ``scheduler/`` only. Every other model (rectified flow, pixel
space, in-context, cross-attention or adaLN blocks, text or no conditioning, no null class) gets a
``DitscalePipeline`` folder (:mod:`ditscale.models.diffusers_custom`: the layout, and why it loads
with ``trust_remote_code=True``). A text model whose encoder is not a trained word encoder gets the
plain format instead (``format="safetensors"``: :func:`ditscale.models.io.write_plain_folder`),
with a note saying so. The folder is assembled in a
temporary sibling and renamed into place (:func:`ditscale.io.staged_folder`), so an interrupted export
leaves no half-written DIR. Run folders belong to :mod:`ditscale.train`: the caller passes their VAE
and class names as plain values.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from ditscale.data.text import read_word_encoder_spec
from ditscale.diffusion.config import resolve_diffusion_config
from ditscale.errors import CheckpointError
from ditscale.generate.load import PIXEL_CHANNELS, checked_size
from ditscale.io import atomic_write_json, staged_folder
from ditscale.models.config import DiTConfig
from ditscale.models.diffusers_custom import (
    custom_pipeline_index,
    custom_scheduler_config,
    save_custom_transformer,
    text_encoder_config,
    write_pipeline_code,
)
from ditscale.models.diffusers_io import (
    pipeline_index,
    pipeline_notes,
    save_transformer,
    scheduler_config,
    unsupported_reason,
)
from ditscale.models.dit import DiT
from ditscale.models.io import load_model, read_metadata, text_encoder_beside, vae_for, write_plain_folder

Format = Literal["diffusers", "safetensors"]
CUSTOM_LOAD = "trust_remote_code=True"  # the one argument a DitscalePipeline folder needs (diffusers_custom)


@dataclass(frozen=True)
class ExportSource:
    """The model to export, loaded from ``weights``, and ``info``: where it came from (``source``) and
    its ``model`` and ``diffusion`` configs as dicts (``ditscale.json``, ``config.json``)."""

    weights: Path
    model: DiT
    info: dict[str, Any]


def load_export_source(weights: Path) -> ExportSource:
    """The model of ``weights``, which must carry its config (ditscale or diffusers metadata), and its
    diffusion config (DiT's default process when the metadata has none)."""
    meta = read_metadata(weights)
    if "model" not in meta:
        raise CheckpointError(
            f"{weights} carries no model config (an official or plain .pt); "
            "save it with ditscale first, or sample it with ditscale sample --model"
        )
    config = checked_size(DiTConfig.from_dict(meta["model"]))  # sizes bounded before anything is built
    diffusion = resolve_diffusion_config(meta.get("diffusion", {"learn_sigma": config.learn_sigma}))
    model = load_model(weights, config)
    return ExportSource(
        weights, model, {"source": str(weights), "model": model.config.to_dict(), "diffusion": diffusion.to_dict()}
    )


@dataclass(frozen=True)
class Exported:
    """What :func:`export_model` wrote (``what``, a phrase for the summary line) and ``notes`` for the
    user, one line each."""

    what: str
    notes: tuple[str, ...] = ()


def _save_vae(name: str, in_channels: int, folder: Path) -> None:
    from ditscale.data.vae import save_vae_folder  # lazy: diffusers (seconds to import), only when a VAE is exported

    save_vae_folder(name, in_channels, folder)


def write_diffusers_folder(
    source: ExportSource, folder: Path, *, vae: str | None = None, class_names: Sequence[str] | None = None
) -> Exported:
    """``transformer/`` and ``scheduler/`` in ``folder``, and with a VAE (``vae``, a latent model's
    VAE folder or hub id) the whole DiTPipeline: ``vae/`` and ``model_index.json`` (``id2label`` from
    ``class_names``); then ``ditscale.json`` (``source.info`` and the VAE)."""
    model, config = source.model, source.model.config
    save_transformer(model.state_dict(), config, folder / "transformer")
    atomic_write_json(folder / "scheduler" / "scheduler_config.json", scheduler_config(source.info["diffusion"]))
    pixel = config.in_channels in PIXEL_CHANNELS
    info = {**source.info, "vae": vae or ("pixel-space" if pixel else None)}
    if vae is None:
        why = "a pixel-space model" if pixel else "a latent model whose VAE is unknown (pass --vae PATH_OR_ID)"
        note = (
            f"{why}: wrote transformer/ and scheduler/ only, DiTPipeline needs a VAE; load the transformer with "
            "DiTTransformer2DModel.from_pretrained(OUT, subfolder='transformer')"
        )
        atomic_write_json(folder / "ditscale.json", info)
        return Exported("transformer/ and scheduler/", (note,))
    _save_vae(vae, config.in_channels, folder / "vae")
    atomic_write_json(folder / "model_index.json", pipeline_index(config, class_names))
    atomic_write_json(folder / "ditscale.json", info)
    return Exported("a DiTPipeline (transformer/, scheduler/, vae/, model_index.json)", tuple(pipeline_notes(config)))


def write_custom_folder(
    source: ExportSource,
    folder: Path,
    *,
    vae: str | None = None,
    text_encoder: Path | None = None,
    class_names: Sequence[str] | None = None,
) -> Exported:
    """A DitscalePipeline folder: ``transformer/``, ``scheduler/``, the pipeline file and
    ``model_index.json``, with ``text_encoder/`` (the trained word encoder file ``text_encoder``,
    copied) and ``vae/`` (a latent model's ``vae``) when given; then ``ditscale.json``."""
    config, diffusion = source.model.config, source.info["diffusion"]
    save_custom_transformer(source.model.state_dict(), source.info, folder / "transformer")
    atomic_write_json(folder / "scheduler" / "scheduler_config.json", custom_scheduler_config(diffusion))
    if text_encoder is not None:
        atomic_write_json(
            folder / "text_encoder" / "config.json", text_encoder_config(read_word_encoder_spec(text_encoder))
        )
        shutil.copyfile(text_encoder, folder / "text_encoder" / "diffusion_pytorch_model.safetensors")
    pixel = config.in_channels in PIXEL_CHANNELS
    if vae is not None:
        _save_vae(vae, config.in_channels, folder / "vae")
    write_pipeline_code(folder)
    index = custom_pipeline_index(
        diffusion, vae=vae is not None, text_encoder=text_encoder is not None, class_names=class_names
    )
    atomic_write_json(folder / "model_index.json", index)
    atomic_write_json(folder / "ditscale.json", {**source.info, "vae": vae or ("pixel-space" if pixel else None)})
    notes = [f"load it with DiffusionPipeline.from_pretrained(OUT, {CUSTOM_LOAD}) (ditscale installed)"]
    if vae is None and not pixel:
        notes.append(
            "a latent model whose VAE is unknown: pass vae=AutoencoderKL.from_pretrained(...) to from_pretrained"
        )
    return Exported(
        "a DitscalePipeline (transformer/, scheduler/, model_index.json, pipeline_ditscale.py)", tuple(notes)
    )


def _text_encoder(source: ExportSource) -> tuple[Path | None, str | None]:
    """A text model's trained word encoder file, or why the model cannot be a DitscalePipeline."""
    if source.model.config.conditioning != "text":
        return None, None
    found = text_encoder_beside(source.weights)
    if found is None:
        return None, "no trained word encoder beside its weights (a Hugging Face text encoder is not exported)"
    return found, None


def export_model(
    source: ExportSource,
    out: Path,
    *,
    format: Format = "diffusers",
    vae: str | None = None,
    run_vae: str | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Exported:
    """Write ``source`` to the folder ``out`` in ``format`` (the plain format when diffusers has no
    equivalent, with a note). A latent model's VAE is ``vae``, else its weights'
    (:func:`ditscale.models.io.vae_for`: a diffusers folder's ``vae/``, else ``run_vae``)."""
    config = source.model.config
    reason = unsupported_reason(config, source.info["diffusion"]) if format == "diffusers" else None
    encoder, no_pipeline = _text_encoder(source) if reason else (None, None)
    name = None if config.in_channels in PIXEL_CHANNELS else vae or vae_for(source.weights, run_vae)
    with staged_folder(out, overwrite=overwrite) as folder:
        if format == "safetensors" or no_pipeline:
            note = f"{no_pipeline}: writing the ditscale safetensors format instead"
            return Exported(
                write_plain_folder(source.model, source.info, source.weights, folder), (note,) if no_pipeline else ()
            )
        if reason:
            written = write_custom_folder(source, folder, vae=name, text_encoder=encoder, class_names=class_names)
            return Exported(written.what, (f"{reason}: exported as a DitscalePipeline",) + written.notes)
        return write_diffusers_folder(source, folder, vae=name, class_names=class_names)
