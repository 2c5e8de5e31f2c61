"""``ditscale sample CKPT``: sample an image grid (and optionally an ``.npz``) from a checkpoint.

CKPT is one of:

- a ``.safetensors`` written by ``save_model`` or the trainer (model and diffusion configs in its metadata);
- an official / reference ``.pt`` state dict (``DiT-XL-2-256x256.pt``): pass ``--model DiT-XL/2
  --image-size 256`` (the latent side is image-size // 8);
- a training checkpoint folder ``RUN/checkpoints/step_XXXXXXXX/`` (EMA weights unless ``--no-ema``);
- a training run folder ``RUN/`` (its newest checkpoint);
- a diffusers DiT folder (``model_index.json`` + ``transformer/``, as ``facebook/DiT-XL-2-256`` or
  ``ditscale export --format diffusers``; its ``vae/`` decodes).

Class-conditional models take ``--classes`` or ``--num-images``; text-conditional ones take
``--prompt TEXT`` (repeatable) or ``--prompts FILE`` and encode them with the checkpoint's trained
``text_encoder.safetensors`` or the run's Hugging Face encoder (``--text-encoder`` overrides).

``--num-samples N --npz FILE`` samples at evaluation scale, as DiT's ``sample_ddp.py``: N images
with uniform random labels (class models) or captions (text models: ``--prompts`` cycled, by
default the captions of the run's own val split), saved with them in FILE; resumable chunk by chunk,
and split across ``torchrun`` ranks (rank 0 assembles FILE). The grid shows the first 64 images.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditscale.cli.args import count, device, examples, finite_float, seed
from ditscale.config import parse_override
from ditscale.errors import ConfigError
from ditscale.io import check_output_file, read_text
from ditscale.models.config import DiTConfig, named_config
from ditscale.train.rundir import RunDir

# Images one grid may show: more is unreadable (write them with --num-samples and --npz instead).
MAX_GRID_IMAGES = 4096

# Class labels of DiT's sample.py (ImageNet: 207 golden retriever, 360 otter, 387 red panda, ...).
DIT_DEMO_CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sample",
        help="sample an image grid from a checkpoint",
        description="Sample images from a DiT checkpoint (.safetensors, official .pt, checkpoint or run folder) "
        "and write them as a PNG grid and optionally an .npz (key arr_0, ADM's FID format).",
        epilog=examples(
            "ditscale sample runs/tiny --out tiny.png              # PNG grid from the newest checkpoint (EMA)",
            "ditscale sample runs/tiny --num-samples 10000 --npz samples.npz --steps 50 --cfg-scale 1.5",
            'ditscale sample runs/tiny-text --prompt "a large red circle at the center on a blue background"',
            "ditscale sample DiT-XL-2-256x256.pt --model DiT-XL/2 --image-size 256 --vae PATH_TO_SD_VAE --classes 207,360",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ckpt", metavar="CKPT", help="weights file, checkpoint folder or training run folder")
    p.add_argument("--out", default="sample.png", help="image grid to write (default: sample.png)")
    p.add_argument("--npz", default=None, help="also write the uint8 images (N, H, W, 3) to this .npz")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--classes", default=None, help="comma-separated class labels, one image each (e.g. 207,360)")
    which.add_argument(
        "--num-images", type=count(1, MAX_GRID_IMAGES), default=None, help="N images of random classes (seeded)"
    )
    which.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help="a caption for a text-conditional model, one image each (repeatable)",
    )
    which.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="a text file of captions, one per line, one image each (text-conditional models)",
    )
    p.add_argument(
        "--num-samples",
        type=count(1, 10**8),
        default=None,
        metavar="N",
        help="sample N images into --npz at evaluation scale (e.g. 50000, as DiT's sample_ddp.py): "
        "random classes or cycled captions saved beside them; resumable; split across torchrun ranks",
    )
    p.add_argument(
        "--chunk-size",
        type=count(1, 10**6),
        default=1000,
        help="with --num-samples: images per resumable chunk, FILE.parts/chunk_*.npz (default: 1000)",
    )
    p.add_argument(
        "--wait",
        type=finite_float(0.0),
        default=3600.0,
        metavar="SECONDS",
        help="with --num-samples under torchrun: how long rank 0 waits for the other ranks' chunks (default: 3600)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seeds labels and noise (default: 0)")
    p.add_argument(
        "--sampler",
        choices=("ddpm", "ddim", "euler", "heun"),
        default=None,
        help="ddpm/ddim for gaussian models (default ddpm), euler/heun for flow models (default euler)",
    )
    p.add_argument("--steps", default=None, help="sampling steps (default: 250 gaussian, as DiT; 50 flow)")
    p.add_argument(
        "--cfg-scale",
        type=finite_float(0.0),
        default=None,
        help="classifier-free guidance scale (default: 4.0 as DiT's sample.py when the model was trained with "
        "label/caption dropout, else 1)",
    )
    p.add_argument(
        "--guided-channels",
        type=count(1, 4096),
        default=None,
        help="channels guidance acts on (default: the diffusion config's, 3 as DiT)",
    )
    p.add_argument("--vae", default=None, help="diffusers AutoencoderKL folder or hub id, for latent models")
    p.add_argument(
        "--text-encoder",
        default=None,
        metavar="PATH_OR_ID",
        help="text encoder of a text-conditional model (default: the checkpoint's trained "
        "text_encoder.safetensors, else the run config's Hugging Face encoder)",
    )
    p.add_argument("--model", default=None, help="architecture for files without metadata, e.g. DiT-XL/2")
    p.add_argument(
        "--model-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a DiTConfig field (repeatable), e.g. --model-opt in_channels=3",
    )
    p.add_argument(
        "--image-size", type=count(8, 16384), default=None, help="image side in pixels, for files without metadata"
    )
    p.add_argument(
        "--num-classes", type=count(1, 1 << 24), default=None, help="classes, for files without metadata (default 1000)"
    )
    p.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use the EMA weights of a training checkpoint (default) or the raw ones (--no-ema)",
    )
    p.add_argument(
        "--nrow", type=count(1, MAX_GRID_IMAGES), default=None, help="images per grid row (default: ceil(sqrt(N)))"
    )
    p.add_argument(
        "--upscale",
        type=count(1, 64),
        default=None,
        help="enlarge each image in the grid K times, nearest neighbour (default: enough to make images "
        "at least 64 px, so 4 for 16 px images; 1 keeps the pixels as sampled; --npz is never scaled)",
    )
    p.add_argument("--batch-size", type=count(1, 1 << 20), default=32, help="images per sampler call (default: 32)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# Notes: what was chosen for the user. They are collected in a list and printed once every input is
# accepted, so a refused command prints its one-line error alone.
def _print_notes(notes: list[str]) -> None:
    if notes:
        print("\n".join(f"ditscale sample: {note}" for note in notes), file=sys.stderr)
        notes.clear()


def _model_config(args: argparse.Namespace, meta: dict, vae_factor: int) -> DiTConfig:
    """The DiTConfig from the flags (which win) or the file's metadata."""
    opts = {}
    for text in args.model_opt:
        key, value = parse_override(text)
        opts[".".join(key)] = value
    if "model" in meta and not (args.model or opts or args.image_size or args.num_classes):
        return DiTConfig.from_dict(meta["model"])
    if args.model:
        base = named_config(args.model).to_dict()
    elif "model" in meta or opts:
        base = DiTConfig.from_dict(meta.get("model", {})).to_dict()
    else:
        raise ConfigError(
            "this weights file carries no model config (an official or plain .pt): pass --model NAME and "
            "--image-size PX, e.g. --model DiT-XL/2 --image-size 256"
        )
    if args.num_classes is not None:
        base["num_classes"] = args.num_classes
    base.update(opts)
    if args.image_size is not None:
        latent = base["in_channels"] not in (1, 3) or args.vae is not None
        f = vae_factor if latent else 1
        if args.image_size % f:
            raise ConfigError(f"--image-size {args.image_size} is not divisible by the VAE's downsampling {f}")
        base["input_size"] = args.image_size // f
    elif "model" not in meta and "input_size" not in opts:
        raise ConfigError("pass --image-size PX (e.g. 256 for DiT-XL-2-256x256.pt) for a file without model config")
    return DiTConfig.from_dict(base)


def _load_vae(name: str, device: str):
    from ditscale.data.vae import load_vae  # lazy: diffusers, imported only when a VAE is needed

    return load_vae(name, device=device)


def _downsample(vae) -> int:
    from ditscale.data.vae import downsample_factor  # lazy: diffusers, imported only when a VAE is needed

    return downsample_factor(vae)


def _read_prompts(args: argparse.Namespace) -> list[str] | None:
    """The captions of --prompt / --prompts (None when neither is given)."""
    if args.prompts is None:
        return args.prompt
    path = Path(args.prompts).expanduser()
    if not path.is_file():
        raise ConfigError(f"--prompts file '{args.prompts}' does not exist; give a text file with one caption per line")
    prompts = [line.strip() for line in read_text(path, ConfigError).splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"--prompts file '{args.prompts}' holds no captions; write one caption per line")
    return prompts


def _text_encoder(args: argparse.Namespace, weights: Path, run: RunDir | None, config: DiTConfig, device: str):
    """--text-encoder, else the checkpoint's trained text encoder (its EMA next to EMA weights), else the run
    config's Hugging Face encoder."""
    from ditscale.data import text as T  # lazy: torch
    from ditscale.models.io import text_encoder_beside  # lazy: torch

    name = args.text_encoder
    if name is None:
        found = text_encoder_beside(weights)
        name = str(found) if found is not None else (run.text_encoder() if run is not None else None)
        if name == "word":
            raise ConfigError(
                f"the run trained a word encoder but {weights.parent / 'text_encoder.safetensors'} is missing; "
                "pass --text-encoder PATH/text_encoder.safetensors"
            )
    if not name:
        raise ConfigError(
            "this model is text-conditional and no text encoder was found next to its weights: pass --text-encoder "
            "(a text_encoder.safetensors, or a Hugging Face folder / hub id)"
        )
    if str(name).endswith(".safetensors"):
        encoder = T.load_word_encoder(name, device)
    else:
        if args.quiet:
            from transformers.utils import logging as hf_logging  # lazy: transformers, only for its encoders

            hf_logging.disable_progress_bar()
        encoder = T.HFTextEncoder(name, max_length=config.context_len, device=device)
    if encoder.context_dim != config.context_dim:
        raise ConfigError(
            f"text encoder '{name}' gives {encoder.context_dim}-wide embeddings but the model takes {config.context_dim}; "
            "pass the encoder the model was trained with"
        )
    return encoder


def _check_prompts(config: DiTConfig, prompts: list[str] | None, *, optional: bool = False) -> None:
    """Prompts go with text-conditional models, and only with them (``optional``: may be left out)."""
    if config.conditioning == "text" and prompts is None and not optional:
        raise ConfigError("this model is text-conditional: pass --prompt TEXT (repeatable) or --prompts FILE")
    if config.conditioning != "text" and prompts is not None:
        raise ConfigError(
            f"--prompt/--prompts are for text-conditional models; this one has conditioning={config.conditioning!r}: "
            "use --classes or --num-images"
        )


def _latent_vae(weights: Path, run: RunDir | None, config: DiTConfig, device: str, notes: list[str]):
    """The VAE of a latent-space model given no --vae: a diffusers folder's vae/, or the one its run's latent
    store was extracted with."""
    from ditscale.models.io import vae_beside  # lazy: torch

    name = vae_beside(weights) or (run.vae() if run is not None else None)
    if name is None:
        raise ConfigError(
            f"this model works in VAE latent space ({config.in_channels} channels): pass --vae PATH_OR_ID "
            "(a diffusers AutoencoderKL folder, or e.g. stabilityai/sd-vae-ft-ema)"
        )
    notes.append(f"using the run's VAE {name}")
    return _load_vae(name, device)


def _diffusion_for(meta: dict, config: DiTConfig):
    """The weights file's diffusion process (DiT's default without metadata), checked against the model."""
    from ditscale.diffusion import create_diffusion  # lazy: torch

    diffusion = create_diffusion(meta.get("diffusion") if "diffusion" in meta else {"learn_sigma": config.learn_sigma})
    if diffusion.model_out_channels(config.in_channels) != config.out_channels:
        raise ConfigError(
            f"the model outputs {config.out_channels} channels but its {type(diffusion).__name__} needs "
            f"{diffusion.model_out_channels(config.in_channels)}; check learn_sigma of the model and diffusion configs"
        )
    return diffusion


@dataclass
class _Job:
    """What ``run`` resolved before sampling: the model, its diffusion, VAE and run, the sampler settings
    and the notes not yet printed."""

    args: argparse.Namespace
    weights: Path
    run: RunDir | None
    config: DiTConfig
    model: Any
    diffusion: Any
    vae: Any
    device: str
    prompts: list[str] | None
    sampling: dict[str, Any]
    about: str
    notes: list[str]


def _conditions(job: _Job) -> dict:
    """What to draw: ``labels`` or ``num_images``, or ``context``/``context_mask`` of the prompts."""
    import torch  # lazy: torch

    args, config = job.args, job.config
    if job.prompts is not None:
        encoder = _text_encoder(args, job.weights, job.run, config, job.device)
        with torch.no_grad():
            context, context_mask = encoder.encode(job.prompts)
        return {"labels": None, "num_images": len(job.prompts), "context": context, "context_mask": context_mask}
    labels, num_images = None, args.num_images
    if args.classes is not None:
        try:
            labels = [int(c) for c in args.classes.replace(" ", "").split(",") if c]
        except ValueError:
            raise ConfigError(f"--classes must be comma-separated integers, got {args.classes!r}") from None
    elif num_images is None:
        num_images = len(DIT_DEMO_CLASSES)
        if config.conditioning == "class" and config.num_classes == 1000:
            labels = list(DIT_DEMO_CLASSES)
    if config.conditioning != "class" and labels is not None:
        raise ConfigError("this model is unconditional and takes no --classes; use --num-images N")
    return {
        "labels": labels,
        "num_images": None if labels is not None else num_images,
        "context": None,
        "context_mask": None,
    }


def _cfg_scale(args: argparse.Namespace, config: DiTConfig) -> float:
    """--cfg-scale, else 4.0 for a model trained with a null condition (DiT's demo), else 1.0 (no guidance)."""
    has_null = config.conditioning in ("class", "text") and config.class_dropout_prob > 0
    return args.cfg_scale if args.cfg_scale is not None else (4.0 if has_null else 1.0)


def _upscale(args: argparse.Namespace, h: int, w: int) -> int:
    """--upscale, else enough to show images of ``h x w`` pixels at least 64 px wide."""
    return args.upscale if args.upscale is not None else max(1, math.ceil(64 / min(h, w)))


def _check_grid(job: _Job, n: int) -> None:
    """The grid of ``n`` images fits (:func:`ditscale.generate.grid_shape`): checked before sampling."""
    from ditscale.generate import CAPTION_PX, grid_shape  # lazy: torch

    side = job.config.input_size * (_downsample(job.vae) if job.vae is not None else 1)
    grid_shape(n, side, side, job.args.nrow, upscale=_upscale(job.args, side, side), caption_px=CAPTION_PX)


def _write_grid(args: argparse.Namespace, images, captions: list[str] | None = None) -> None:
    """The --out grid of uint8 images (N, H, W, 3), enlarged so tiny images stay visible, each cell
    labelled with its ``captions`` entry (class or prompt), which are also printed."""
    from ditscale.generate import save_grid  # lazy: torch

    n, h, w, _ = images.shape
    upscale = _upscale(args, h, w)
    out = save_grid(images, args.out, nrow=args.nrow, upscale=upscale, captions=captions)
    shown = f", shown {upscale}x" if upscale > 1 else ""
    print(f"wrote a grid of {n} images ({w}x{h} px{shown}) to {out}")
    if captions is not None:
        print("cells, row by row: " + "; ".join(captions))


def _write_outputs(args: argparse.Namespace, images, captions: list[str] | None = None) -> None:
    from ditscale.generate import save_npz  # lazy: torch

    n = len(images)
    _write_grid(args, images, captions)
    if args.npz:
        print(f"wrote {n} images to {save_npz(images, args.npz)} (key arr_0)")


# --num-samples: evaluation-scale batches -----------------------------------------------------------
GRID_IMAGES = 64  # the grid of a --num-samples run shows this many of its first images


def _check_num_samples(args: argparse.Namespace) -> None:
    """--num-samples writes an .npz of random classes or cycled captions: it needs --npz, not --classes."""
    if args.num_samples is None:
        return
    if not args.npz:
        raise ConfigError("--num-samples needs --npz FILE to write the images to (the grid shows only the first 64)")
    if args.classes is not None or args.num_images is not None:
        raise ConfigError("--num-samples draws uniform random classes (as sample_ddp.py); drop --classes/--num-images")
    if args.num_samples < 1 or args.chunk_size < 1:
        raise ConfigError(f"--num-samples and --chunk-size must be >= 1, got {args.num_samples} and {args.chunk_size}")


def _check_outputs(args: argparse.Namespace) -> None:
    """--out and --npz name files that can be written (checked before any model is loaded)."""
    check_output_file(args.out, "--out")
    if args.npz:
        check_output_file(args.npz, "--npz")


def _ranks() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` of a torchrun launch, (0, 1, 0) otherwise."""
    try:
        return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def _device(args: argparse.Namespace) -> str:
    """--device, else this rank's GPU under torchrun (LOCAL_RANK), cuda, or cpu."""
    import torch  # lazy: torch

    if args.device:
        return args.device
    rank, world, local_rank = _ranks()
    if world > 1:
        from ditscale.train.distributed import DistInfo, pick_device  # lazy: torch.distributed, under torchrun only

        return str(pick_device("auto", DistInfo(rank, world, local_rank)))
    return "cuda" if torch.cuda.is_available() else "cpu"


def _npz_captions(job: _Job, data_config) -> dict:
    """``captions`` (the prompts, or the run's val captions 0..N-1) and their ``encode_captions``."""
    from ditscale.generate import dataset_captions  # lazy: torch

    args, prompts = job.args, job.prompts
    if prompts is None and data_config is None:
        raise ConfigError(
            "this text-conditional model has no run config to take captions from; "
            "pass --prompts FILE (cycled over the samples)"
        )
    encoder = _text_encoder(args, job.weights, job.run, job.config, job.device)
    if prompts is None:
        prompts = dataset_captions(data_config, args.num_samples, split="val")
        last = args.num_samples - 1
        job.notes.append(f"prompting with the captions of items 0..{last} of the run's {data_config.name} val split")
    return {"captions": prompts, "encode_captions": encoder.encode}


def _run_npz(job: _Job) -> int:
    """Sample --num-samples images into --npz (this rank's chunks); rank 0 assembles it and writes the grid."""
    from ditscale.generate import sample_npz  # lazy: torch
    from ditscale.metrics.batch import first_images, npz_keys  # lazy: numpy (start-up time of --help)

    args, config = job.args, job.config
    rank, world, _ = _ranks()
    data_config = job.run.data_config() if job.run is not None else None
    text = _npz_captions(job, data_config) if config.conditioning == "text" else {}
    job.notes.append(job.about + (f", rank {rank} of {world}" if world > 1 else ""))
    _print_notes(job.notes)
    out = sample_npz(
        job.model,
        job.diffusion,
        args.npz,
        num_samples=args.num_samples,
        **job.sampling,
        **text,
        label_names=job.run.class_names(config) if job.run is not None else None,
        vae=job.vae,
        device=job.device,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        rank=rank,
        world_size=world,
        progress=not args.quiet,
        wait_timeout_s=args.wait,
    )
    if out is None:  # another rank assembles the file
        return 0
    print(f"wrote {args.num_samples} images to {out} (keys {', '.join(npz_keys(out))})")
    _write_grid(args, first_images(out, GRID_IMAGES))
    return 0


def _prepare(args: argparse.Namespace) -> _Job:
    """Every input checked and the model loaded: the weights, the model config, what to condition on,
    the diffusion process and the sampler settings."""
    from ditscale.models.io import describe_config, load_model, read_metadata, resolve_weights  # lazy: torch

    _check_num_samples(args)
    _check_outputs(args)
    device = _device(args)
    resolved = resolve_weights(args.ckpt, args.ema, run_checkpoints=lambda folder: RunDir(folder).checkpoint_folders())
    weights, notes = resolved.path, list(resolved.notes)
    run = RunDir.containing(weights)
    meta = read_metadata(weights)
    vae = _load_vae(args.vae, device) if args.vae else None
    config = _model_config(args, meta, vae_factor=_downsample(vae) if vae is not None else 8)
    prompts = _read_prompts(args)
    _check_prompts(config, prompts, optional=args.num_samples is not None)
    if vae is None and config.in_channels not in (1, 3):
        vae = _latent_vae(weights, run, config, device, notes)
    model = load_model(weights, config, map_location=device, ema=args.ema)
    diffusion = _diffusion_for(meta, config)
    cfg_scale = _cfg_scale(args, config)
    steps = int(args.steps) if args.steps is not None and args.steps.isdigit() else args.steps
    sampling = {
        "seed": args.seed,
        "sampler": args.sampler,
        "steps": steps,
        "cfg_scale": cfg_scale,
        "guided_channels": "auto" if args.guided_channels is None else args.guided_channels,
    }
    about = f"{describe_config(config)} from {weights} on {device}, cfg-scale {cfg_scale}"
    return _Job(args, weights, run, config, model, diffusion, vae, device, prompts, sampling, about, notes)


def run(args: argparse.Namespace) -> int:
    from ditscale.generate import check_request, draw_labels, sample_images  # lazy: torch

    job = _prepare(args)
    sampling = job.sampling
    if args.num_samples is not None:
        _check_grid(job, min(args.num_samples, GRID_IMAGES))
        check_request(job.model, job.diffusion, **_request(sampling), conditions=False)
        return _run_npz(job)

    # Sample and write
    conditions = _conditions(job)
    if job.config.conditioning == "class" and conditions["labels"] is None:  # name the random classes drawn
        conditions["labels"] = draw_labels(job.model, conditions["num_images"], args.seed).tolist()
        conditions["num_images"] = None
    labels = conditions["labels"]
    _check_grid(job, len(labels) if labels is not None else conditions["num_images"])
    check_request(
        job.model,
        job.diffusion,
        **_request(sampling),
        labels=labels,
        num_images=conditions["num_images"],
        context=conditions["context"],
    )
    job.notes.append(job.about)
    _print_notes(job.notes)
    images = sample_images(
        job.model,
        job.diffusion,
        **conditions,
        **sampling,
        vae=job.vae,
        device=job.device,
        progress=not args.quiet,
        batch_size=args.batch_size,
    )
    _write_outputs(args, images, _captions(labels, job))
    return 0


def _request(sampling: dict[str, Any]) -> dict[str, Any]:
    """The sampler settings :func:`ditscale.generate.check_request` checks."""
    return {key: sampling[key] for key in ("sampler", "steps", "cfg_scale")}


def _captions(labels, job: _Job) -> list[str] | None:
    """Each image's caption in the grid: its prompt, or its class (``3 ring``, or the number alone
    when the run's class names are unknown); None for an unconditional model."""
    if job.prompts is not None:
        return list(job.prompts)
    if labels is None:
        return None
    names = job.run.class_names(job.config) if job.run is not None else None
    return [f"{y} {names[y]}" if names else str(y) for y in labels]
