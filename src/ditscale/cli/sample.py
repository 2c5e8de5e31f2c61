"""``ditscale sample CKPT``: sample an image grid (and optionally an ``.npz``) from a checkpoint.

CKPT is a ``.safetensors`` with its configs in the metadata, an official ``.pt`` (with ``--model`` and
``--image-size``), a training checkpoint or run folder (EMA weights unless ``--no-ema``) or a diffusers
DiT folder. Class models take ``--classes`` / ``--num-images``, text models ``--prompt`` / ``--prompts``;
``--num-samples N --npz FILE`` samples at evaluation scale, as DiT's ``sample_ddp.py`` (resumable, split
across ``torchrun`` ranks). docs/sampling.md has the details; :mod:`ditscale.generate` (``load``,
``request``, ``sample``, ``npz``) does the work, this module turns the arguments into its calls.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ditscale.cli.args import add_threads_argument, count, device, examples, finite_float, seed
from ditscale.io import check_apart, check_output_file
from ditscale.train.rundir import RunDir
from ditscale.train.threads import choose_threads, model_params

if TYPE_CHECKING:  # type names only: `ditscale --help` stays torch-free
    from ditscale.generate.load import Sampler
    from ditscale.generate.request import SamplingSettings

# Images one grid may show: more is unreadable (write them with --num-samples and --npz instead).
MAX_GRID_IMAGES = 4096


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
    p.add_argument(
        "--out",
        default=None,
        help="image grid to write (default: sample.png; with --num-samples only when given, of the first images)",
    )
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
    add_threads_argument(p)
    return p


def _print_notes(notes: list[str]) -> None:
    """What was chosen for the user, printed once every input is accepted (a refused command prints its
    one-line error alone)."""
    if notes:
        print("\n".join(f"ditscale sample: {note}" for note in notes), file=sys.stderr)


def _device(args: argparse.Namespace) -> str:
    """--device, else this rank's GPU under torchrun (LOCAL_RANK), cuda, or cpu."""
    import torch  # lazy: torch

    from ditscale.generate.npz import torchrun_ranks  # lazy: torch

    if args.device:
        return args.device
    rank, world, local_rank = torchrun_ranks()
    if world > 1:
        from ditscale.train.distributed import DistInfo, pick_device  # lazy: torch.distributed, under torchrun only

        return str(pick_device("auto", DistInfo(rank, world, local_rank)))
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(args: argparse.Namespace) -> tuple[Sampler, list[str] | None, RunDir | None]:
    """The :class:`~ditscale.generate.load.Sampler` of CKPT, the prompts (checked against it) and its run."""
    from ditscale.generate.load import load_sampler, sampler_spec  # lazy: torch
    from ditscale.generate.request import check_prompts, read_prompts  # lazy: torch
    from ditscale.models.io import resolve_weights  # lazy: torch

    device = _device(args)
    resolved = resolve_weights(args.ckpt, args.ema, run_checkpoints=lambda folder: RunDir(folder).checkpoint_folders())
    run = RunDir.containing(resolved.path)
    spec = sampler_spec(
        resolved.path,
        model=args.model,
        image_size=args.image_size,
        num_classes=args.num_classes,
        model_opts=args.model_opt,
        vae=args.vae,
        device=device,
    )
    prompts = read_prompts(args.prompt, args.prompts)
    check_prompts(spec.config, prompts, optional=args.num_samples is not None)
    sampler = load_sampler(
        spec,
        ema=args.ema,
        run_vae=run.vae() if run is not None else None,
        notes=resolved.notes,
        encoder_name=args.text_encoder,
        run_encoder=run.text_encoder() if run is not None else None,
        progress=not args.quiet,
    )
    return sampler, prompts, run


def _write_grid(args: argparse.Namespace, images, captions: list[str] | None = None) -> None:
    """The --out grid of uint8 images (N, H, W, 3), its cells labelled with ``captions`` (also printed)."""
    from ditscale.generate.grid import grid_upscale, save_grid  # lazy: numpy, PIL (start-up time of --help)

    n, h, w, _ = images.shape
    upscale = grid_upscale(args.upscale, h, w)
    out = save_grid(images, args.out, nrow=args.nrow, upscale=upscale, captions=captions)
    print(f"wrote a grid of {n} images ({w}x{h} px{f', shown {upscale}x' if upscale > 1 else ''}) to {out}")
    if captions is not None:
        print("cells, row by row: " + "; ".join(captions))


def _sample_grid(
    args: argparse.Namespace,
    sampler: Sampler,
    settings: SamplingSettings,
    prompts: list[str] | None,
    names: list[str] | None,
) -> int:
    """Sample the grid's images (labels, random classes or prompts) into --out and --npz."""
    from ditscale.generate import sample_images, save_npz  # lazy: torch
    from ditscale.generate.request import grid_captions, plan_grid  # lazy: torch

    grid = {"classes": args.classes, "num_images": args.num_images, "nrow": args.nrow, "upscale": args.upscale}
    conditions = plan_grid(sampler, settings, prompts=prompts, **grid)
    _print_notes([*sampler.notes, sampler.about(settings.cfg_scale)])
    images = sample_images(
        sampler.model,
        sampler.diffusion,
        **conditions.kwargs(),
        **settings.kwargs(),
        vae=sampler.vae,
        device=sampler.device,
        progress=not args.quiet,
        batch_size=args.batch_size,
    )
    _write_grid(args, images, grid_captions(conditions, names))
    if args.npz:
        print(f"wrote {len(images)} images to {save_npz(images, args.npz)} (key arr_0)")
    return 0


def _sample_npz(
    args: argparse.Namespace,
    sampler: Sampler,
    settings: SamplingSettings,
    prompts: list[str] | None,
    run: RunDir | None,
) -> int:
    """Sample --num-samples images into --npz (this rank's chunks); rank 0 assembles it and writes the grid."""
    from ditscale.generate import sample_npz  # lazy: torch
    from ditscale.generate.npz import torchrun_ranks  # lazy: torch
    from ditscale.generate.request import GRID_IMAGES, exported_class_names, plan_npz  # lazy: torch
    from ditscale.metrics.batch import first_images, npz_keys  # lazy: numpy (start-up time of --help)

    rank, world, _ = torchrun_ranks()
    data = {"prompts": prompts, "data_config": run.data_config() if run is not None else None}
    plan = plan_npz(sampler, settings, num_samples=args.num_samples, **data, nrow=args.nrow, upscale=args.upscale)
    about = sampler.about(settings.cfg_scale) + (f", rank {rank} of {world}" if world > 1 else "")
    _print_notes([*sampler.notes, *plan.notes, about])
    out = sample_npz(
        sampler.model,
        sampler.diffusion,
        args.npz,
        num_samples=args.num_samples,
        **settings.kwargs(),
        captions=plan.captions,
        encode_captions=plan.encode_captions,
        label_names=run.class_names(sampler.config) if run is not None else exported_class_names(args.ckpt),
        vae=sampler.vae,
        device=sampler.device,
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
    if args.out is not None:  # the grid of the first images only when asked for
        _write_grid(args, first_images(out, GRID_IMAGES))
    return 0


def _outputs(args: argparse.Namespace) -> dict[str, str | None]:
    """The paths the command writes: the grid, the .npz and its folder of chunks."""
    return {"--out": args.out, "--npz": args.npz, "--npz's chunks": f"{args.npz}.parts" if args.npz else None}


def run(args: argparse.Namespace) -> int:
    from ditscale.generate.request import check_npz_request, exported_class_names, sampling_settings  # lazy: torch

    check_npz_request(args.num_samples, args.npz, classes=args.classes, num_images=args.num_images)
    if args.out is None and args.num_samples is None:
        args.out = "sample.png"
    if args.out is not None:
        check_output_file(args.out, "--out")  # before any model is loaded
    if args.npz:
        check_output_file(args.npz, "--npz")
    inputs = {"CKPT": args.ckpt, "--vae": args.vae, "--prompts": args.prompts, "--text-encoder": args.text_encoder}
    check_apart(_outputs(args), inputs)
    sampler, prompts, run_dir = _load(args)
    choose_threads(args.threads, model_params(sampler.model), str(sampler.device))
    check_apart(_outputs(args), {"CKPT's run folder": run_dir.root if run_dir is not None else None})
    settings = sampling_settings(
        sampler.config, args.seed, args.sampler, args.steps, args.cfg_scale, args.guided_channels
    )
    if args.num_samples is not None:
        args._interrupted = lambda: (
            f"finished chunks are kept in {args.npz}.parts; run the same command again to resume"
        )
        return _sample_npz(args, sampler, settings, prompts, run_dir)
    names = run_dir.class_names(sampler.config) if run_dir is not None else exported_class_names(args.ckpt)
    return _sample_grid(args, sampler, settings, prompts, names)
