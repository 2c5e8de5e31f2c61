"""``ditscale data export NAME --num N --out FILE.npz``: a dataset as an ADM-style reference batch.

FID and its relatives compare generated samples with real images. This command writes items
``0 .. N-1`` of one split of any image dataset (the data seed picks the stream) in the format of
the samples (``ditscale sample --num-samples``): ``arr_0`` uint8 (N, H, W, 3), converted exactly as
samples are, plus ``labels``, ``label_names`` and ``captions`` where the dataset has them. The
dataset comes from a NAME with ``--set key=value`` fields, or from the ``data:`` section of a
training config (``--config``) or preset (``--preset``), so a reference matches a run's data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ditscale.cli.args import count, examples, seed
from ditscale.config import apply_overrides, from_dict, load_preset_or_yaml, load_yaml
from ditscale.data.config import DataConfig
from ditscale.errors import ConfigError
from ditscale.io import check_apart, check_output_file
from ditscale.train.config import PRESET_DIR

EXPORTABLE = ("shapes", "digits", "folder", "captions")  # image datasets (a latent store holds latents)
EXPORT_EXAMPLES = examples(
    "ditscale data export --preset tiny --num 10000 --out ref.npz    # the reference batch of a training preset's data",
    "ditscale data export shapes --set image_size=32 --set shapes_objects=4 --num 10000 --out ref.npz",
    "ditscale data export --config runs/tiny/config.yaml --num 1000 --split train --out ref-train.npz",
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "data",
        help="export a dataset as an ADM-style reference batch (.npz)",
        description="Dataset tools. `ditscale data export` writes items 0..N-1 of a dataset split as an "
        ".npz reference batch (arr_0 uint8 (N, H, W, 3), labels, label_names, captions), the format of "
        "`ditscale sample --num-samples`, for FID and other sample-quality metrics.",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    e = actions.add_parser(
        "export",
        help="write N images of a dataset split as a reference batch (.npz)",
        description="Write items 0..N-1 of a dataset split as an ADM-style .npz.",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "name",
        nargs="?",
        default=None,
        metavar="NAME",
        help=f"dataset: {', '.join(EXPORTABLE)} (default: the name in --config/--preset)",
    )
    e.add_argument("--num", type=count(1, 10**9), required=True, help="number of images N (items 0..N-1 of the split)")
    e.add_argument("--out", required=True, help=".npz file to write (atomically)")
    e.add_argument("--seed", type=seed, default=None, help="data seed: picks the stream (default: the config's, 0)")
    e.add_argument(
        "--split",
        choices=("train", "val"),
        default="val",
        help="split to export (default: val, whose captions `ditscale sample` prompts with)",
    )
    e.add_argument(
        "--image-size", type=count(1, 8192), default=None, help="image side in pixels (overrides the config)"
    )
    e.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a data config field (repeatable), e.g. --set shapes_objects=4 or --set path=DIR; "
        "random flips are off unless --set random_flip=true",
    )
    source = e.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="take the data: section of this training config (or a data config YAML)",
    )
    source.add_argument("--preset", default=None, metavar="NAME", help="take the data: section of a training preset")
    e.add_argument("--batch-size", type=count(1, 1 << 20), default=256, help="images converted at once (default: 256)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _config_section(args: argparse.Namespace) -> dict:
    """The ``data:`` mapping of --config / --preset (a bare data YAML is taken whole), else {}."""
    if args.config is None and args.preset is None:
        return {}
    raw = (
        load_yaml(Path(args.config).expanduser())
        if args.config
        else load_preset_or_yaml(args.preset, PRESET_DIR, "training preset")
    )
    section = raw.get("data") if isinstance(raw.get("data"), dict) else raw
    section = dict(section)
    section.pop("random_flip", None)  # a training augmentation: a reference batch shows the images as they are
    return section


def data_config_from_args(args: argparse.Namespace):
    """The DataConfig to export: NAME or the config's ``data:``, then --set, --image-size and --seed."""
    raw = _config_section(args)
    if args.name is not None:
        if args.name == "latents":
            raise ConfigError(
                "'latents' is a store of VAE latents, not images; export the image dataset it was extracted from"
            )
        if args.name not in EXPORTABLE:
            raise ConfigError(
                f"unknown dataset {args.name!r}; give one of {', '.join(EXPORTABLE)}, or --config/--preset"
            )
        raw["name"] = args.name
    elif not raw:
        raise ConfigError(f"give a dataset NAME ({', '.join(EXPORTABLE)}) or --config FILE.yaml / --preset NAME")
    overrides = [text[len("data.") :] if text.startswith("data.") else text for text in args.set]
    overrides += [f"image_size={args.image_size}"] if args.image_size is not None else []
    overrides += [f"seed={args.seed}"] if args.seed is not None else []
    return from_dict(DataConfig, apply_overrides(raw, overrides), where="data")


def run(args: argparse.Namespace) -> int:
    from ditscale.generate import save_dataset_npz  # lazy: torch
    from ditscale.metrics.batch import npz_keys  # lazy: numpy (start-up time of --help)

    check_output_file(args.out, "--out")
    cfg = data_config_from_args(args)
    check_apart({"--out": args.out}, {"--config": args.config, "data.path": cfg.path})
    out = save_dataset_npz(
        cfg, args.out, num=args.num, split=args.split, batch_size=args.batch_size, progress=not args.quiet
    )
    keys = ", ".join(npz_keys(out))
    side = cfg.image_size
    print(
        f"wrote {args.num} images ({side}x{side} px) of {cfg.name}, {args.split} split, seed {cfg.seed} to {out} "
        f"(keys {keys})"
    )
    return 0
