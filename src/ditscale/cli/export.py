"""``ditscale export RUN --format diffusers --out DIR``: a trained model as a diffusers folder or plain safetensors.

RUN is anything ``ditscale sample`` takes (a run folder, a checkpoint folder, a ``.safetensors``
with metadata, a diffusers DiT folder). ``--format diffusers`` writes a DiTPipeline folder
(``transformer/``, ``scheduler/``, ``vae/``, ``model_index.json``, ``ditscale.json``) that
``DiffusionPipeline.from_pretrained(DIR)`` loads offline, or, for models DiTPipeline cannot sample
(flow, pixel, text, other blocks), a DitscalePipeline folder loaded with ``trust_remote_code=True``
(:mod:`ditscale.models.diffusers_custom` says why), with a one-line notice. ``--format safetensors`` writes ``DIR/model.safetensors``
(configs in its metadata), ``DIR/config.json`` and a text run's trained word encoder. The layouts and
rules are :mod:`ditscale.generate.export`'s; this module turns the arguments into its calls.
"""

from __future__ import annotations

import argparse
import sys

from ditscale.cli.args import examples
from ditscale.io import check_apart, check_new_dir
from ditscale.train.rundir import RunDir

EPILOG = examples(
    "ditscale export runs/xl2 --format diffusers --out exports/xl2-diffusers",
    "ditscale export runs/xl2 --format safetensors --weights model --out exports/xl2-raw",
    "python -c \"from diffusers import DiffusionPipeline; DiffusionPipeline.from_pretrained('exports/xl2-diffusers')\"",
    "ditscale sample exports/xl2-diffusers --classes 1,2",
)


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


def _print_notes(command: str, notes: tuple[str, ...]) -> None:
    for note in notes:
        print(f"ditscale {command}: {note}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ditscale.generate.export import export_model, load_export_source  # lazy: torch
    from ditscale.models.io import describe_config, resolve_weights  # lazy: torch

    out = check_new_dir(args.out, "--out", overwrite=args.overwrite)  # before any loading: fail fast
    check_apart({"--out": out}, {"RUN": args.run, "--vae": args.vae})  # --overwrite never replaces an input
    resolved = resolve_weights(
        args.run, ema=args.weights == "ema", run_checkpoints=lambda folder: RunDir(folder).checkpoint_folders()
    )
    source = load_export_source(resolved.path)
    _print_notes("export", resolved.notes)  # now that the model is accepted
    run_dir = RunDir.containing(resolved.path)
    run_inputs = {"RUN's weights": resolved.path, "RUN's run folder": run_dir.root if run_dir else None}
    check_apart({"--out": out}, {**run_inputs, "RUN's VAE": run_dir.vae() if run_dir else None})
    exported = export_model(
        source,
        out,
        format=args.format,
        vae=args.vae,
        run_vae=run_dir.vae() if run_dir is not None else None,
        class_names=run_dir.class_names(source.model.config) if run_dir is not None else None,
        overwrite=args.overwrite,
    )
    _print_notes("export", exported.notes)
    print(f"exported {describe_config(source.model.config)} from {resolved.path}: {exported.what} in {out}")
    return 0
