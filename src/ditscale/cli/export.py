"""``ditscale export RUN --format diffusers --out DIR``: a trained model as a diffusers folder or plain safetensors.

RUN is anything ``ditscale sample`` takes (a run folder, a checkpoint folder, a ``.safetensors``
with metadata, a diffusers DiT folder). ``--format diffusers`` writes, for a class-conditional
adaLN-Zero Gaussian model::

    DIR/model_index.json        DiTPipeline (transformer, vae, scheduler, id2label of the run's classes)
    DIR/transformer/            DiTTransformer2DModel: config.json + diffusion_pytorch_model.safetensors
    DIR/scheduler/              DDIMScheduler on the run's betas (scheduler_config.json)
    DIR/vae/                    the AutoencoderKL the run's latents were encoded with (or --vae)
    DIR/ditscale.json           where it came from: source weights, model and diffusion configs, VAE

so ``DiTPipeline.from_pretrained(DIR)`` loads offline. A pixel-space model (or a latent one whose
VAE is unknown) gets ``transformer/`` and ``scheduler/`` only: DiTPipeline always decodes through
a VAE. Models diffusers has no equivalent for (in-context, cross-attention or adaLN blocks, text or
no conditioning, rectified flow) get the plain format instead, with a one-line notice:
``--format safetensors`` writes ``DIR/model.safetensors`` (configs in its metadata, as
``save_model``), ``DIR/config.json`` and a text run's trained word encoder
(``text_encoder.safetensors``). The folder is assembled in a temporary sibling and renamed into
place, so an interrupted export leaves no half-written DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

from ditscale.cli.args import examples
from ditscale.diffusion.config import resolve_diffusion_config
from ditscale.errors import CheckpointError, ConfigError
from ditscale.io import atomic_write_json, check_output_dir
from ditscale.train.rundir import RunDir

EPILOG = examples(
    "ditscale export runs/xl2 --format diffusers --out exports/xl2-diffusers",
    "ditscale export runs/xl2 --format safetensors --weights model --out exports/xl2-raw",
    "python -c \"from diffusers import DiTPipeline; DiTPipeline.from_pretrained('exports/xl2-diffusers')\"",
    "ditscale sample exports/xl2-diffusers --classes 1,2",
)
PIXEL_CHANNELS = (1, 3)  # in_channels of pixel-space models; anything else works in a VAE's latent space
NULL_CLASS = 1000  # DiTPipeline feeds this label as the unconditional class when guidance_scale > 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a model as a diffusers DiTPipeline folder or plain safetensors",
        description="Export a trained model (run folder, checkpoint folder, weights file or diffusers folder)\n"
        "as a diffusers folder (DiTPipeline: transformer, scheduler, VAE) or as plain safetensors + config.\n"
        "Models diffusers has no equivalent for are written in the plain format, with a notice.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run", metavar="RUN", help="training run folder, checkpoint folder, weights file or diffusers folder"
    )
    p.add_argument(
        "--format",
        choices=("diffusers", "safetensors"),
        default="diffusers",
        help="diffusers (DiTPipeline folder; default) or safetensors (ditscale's own format)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist, unless --overwrite)")
    p.add_argument(
        "--weights",
        choices=("ema", "model"),
        default="ema",
        help="the EMA (default) or the raw weights of a training checkpoint",
    )
    p.add_argument(
        "--vae",
        default=None,
        metavar="PATH_OR_ID",
        help="VAE to put in the pipeline (default: the one the run's latent store was encoded with)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    return p


def _note(text: str) -> None:
    print(f"ditscale export: {text}", file=sys.stderr)


@contextlib.contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh temporary sibling of ``out`` to fill; renamed to ``out`` on success, removed on failure."""
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists; pick a new folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = out.parent / f".{out.name}.old-{os.getpid()}.tmp"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_plain(model, info: dict[str, Any], weights: Path, folder: Path) -> str:
    """ditscale's own format: ``model.safetensors`` (configs in its metadata) and ``config.json``, with
    the trained word encoder of a text run beside them (``text_encoder.safetensors``, as ``ditscale sample`` reads)."""
    from ditscale.models.io import save_model, text_encoder_beside  # lazy: torch

    save_model(model, folder / "model.safetensors", {"diffusion": info["diffusion"]})
    atomic_write_json(folder / "config.json", {"format": "ditscale", **info})
    encoder = text_encoder_beside(weights) if weights.is_file() else None
    if encoder is not None:
        shutil.copyfile(encoder, folder / "text_encoder.safetensors")
        return "model.safetensors, text_encoder.safetensors and config.json (ditscale format)"
    return "model.safetensors and config.json (ditscale format)"


def _pipeline_notes(config) -> None:
    """What a DiTPipeline user must know about this model (one line each)."""
    if config.class_dropout_prob == 0:
        _note(
            "the model was trained without label dropout: its null class row is zeros; call DiTPipeline "
            "with guidance_scale=1"
        )
    elif config.num_classes != NULL_CLASS:
        _note(
            f"DiTPipeline uses label {NULL_CLASS} as the null class, this model has {config.num_classes} classes: "
            f"call it with guidance_scale=1, or sample guided with `ditscale sample OUT`"
        )
    _note(
        "diffusers' DiT embeds timesteps with frequencies 10000^(-i/127), the reference 10000^(-i/128): "
        "the weights are exact, diffusers' outputs differ slightly (`ditscale sample OUT` is exact)"
    )


def _vae_name(args: argparse.Namespace, weights: Path, config) -> str | None:
    """The VAE of a latent model: --vae, the source diffusers folder's vae/, or the run's latent store's."""
    from ditscale.models.io import vae_beside  # lazy: torch

    if config.in_channels in PIXEL_CHANNELS:
        return None
    if args.vae:
        return args.vae
    run = RunDir.containing(weights)
    return vae_beside(weights) or (run.vae() if run is not None else None)


def _save_vae(name: str, config, folder: Path) -> None:
    """Load the VAE ``name`` (offline) and save it under ``folder``, its scaling factor the latents' scale."""
    from ditscale.data.vae import VAE_SCALE, load_vae  # lazy: diffusers, imported only when a VAE is exported

    vae = load_vae(name)
    if int(vae.config.latent_channels) != config.in_channels:
        raise ConfigError(
            f"VAE {name} has {vae.config.latent_channels} latent channels but the model takes "
            f"{config.in_channels}; pass the --vae the run's latents were encoded with"
        )
    if vae.config.scaling_factor != VAE_SCALE:
        vae.register_to_config(scaling_factor=VAE_SCALE)  # ditscale latents are always scaled by VAE_SCALE
    vae.save_pretrained(str(folder), safe_serialization=True)


def _model_index(args: argparse.Namespace, weights: Path, config) -> dict[str, Any]:
    """The DiTPipeline ``model_index.json``, with ``id2label`` when the run names its classes."""
    from ditscale.models.diffusers_io import transformer_config  # lazy: torch

    version = transformer_config(config)["_diffusers_version"]
    index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": version,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    run = RunDir.containing(weights)
    names = run.class_names(config) if run is not None else None
    if names:
        index["id2label"] = {str(i): name for i, name in enumerate(names)}
    return index


def _write_diffusers(args: argparse.Namespace, model, info: dict[str, Any], weights: Path, folder: Path) -> str:
    """transformer/ and scheduler/, and with a VAE the whole DiTPipeline folder; returns what was written."""
    from ditscale.models.diffusers_io import save_transformer, scheduler_config  # lazy: torch

    config = model.config
    save_transformer(model.state_dict(), config, folder / "transformer")
    atomic_write_json(folder / "scheduler" / "scheduler_config.json", scheduler_config(info["diffusion"]))
    vae = _vae_name(args, weights, config)
    info["vae"] = vae or ("pixel-space" if config.in_channels in PIXEL_CHANNELS else None)
    if vae is None:
        why = (
            "a pixel-space model"
            if config.in_channels in PIXEL_CHANNELS
            else "a latent model whose VAE is unknown (pass --vae PATH_OR_ID)"
        )
        _note(
            f"{why}: wrote transformer/ and scheduler/ only, DiTPipeline needs a VAE; load the transformer with "
            "DiTTransformer2DModel.from_pretrained(OUT, subfolder='transformer')"
        )
        return "transformer/ and scheduler/"
    _save_vae(vae, config, folder / "vae")
    atomic_write_json(folder / "model_index.json", _model_index(args, weights, config))
    _pipeline_notes(config)
    return "a DiTPipeline (transformer/, scheduler/, vae/, model_index.json)"


def run(args: argparse.Namespace) -> int:
    from ditscale.models.diffusers_io import unsupported_reason  # lazy: torch
    from ditscale.models.io import describe_config, load_model, read_metadata, resolve_weights  # lazy: torch

    out = Path(args.out).expanduser()
    if out.exists() and not args.overwrite:  # before any loading: fail fast
        raise ConfigError(f"--out {out} already exists; pick a new folder or pass --overwrite")
    check_output_dir(out, "--out")
    resolved = resolve_weights(
        args.run, ema=args.weights == "ema", run_checkpoints=lambda folder: RunDir(folder).checkpoint_folders()
    )
    weights = resolved.path
    meta = read_metadata(weights)
    if "model" not in meta:
        raise CheckpointError(
            f"{weights} carries no model config (an official or plain .pt); "
            "save it with ditscale first, or sample it with ditscale sample --model"
        )
    model = load_model(weights)
    for note in resolved.notes:  # now that the model is accepted; worded as `ditscale sample` prints them
        print(f"ditscale sample: {note}", file=sys.stderr)
    diffusion = resolve_diffusion_config(meta.get("diffusion", {"learn_sigma": model.config.learn_sigma}))
    info = {"source": str(weights), "model": model.config.to_dict(), "diffusion": diffusion.to_dict()}
    reason = unsupported_reason(model.config, info["diffusion"]) if args.format == "diffusers" else None
    if reason:
        _note(f"{reason}: diffusers has no equivalent, writing the ditscale safetensors format instead")
    with staged_folder(out, args.overwrite) as folder:
        if args.format == "safetensors" or reason:
            what = _write_plain(model, info, weights, folder)
        else:
            what = _write_diffusers(args, model, info, weights, folder)
            atomic_write_json(folder / "ditscale.json", info)
    print(f"exported {describe_config(model.config)} from {weights}: {what} in {out}")
    return 0
