"""``ditscale extract-latents DATA --vae PATH_OR_ID --out DIR``: encode a dataset into a latent store."""

from __future__ import annotations

import argparse
from pathlib import Path

from ditscale.cli.args import count, device, examples
from ditscale.config import apply_overrides, from_dict, load_yaml
from ditscale.data.config import DATASET_NAMES, DataConfig
from ditscale.errors import ConfigError
from ditscale.io import check_apart, check_output_dir


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract-latents",
        help="encode a dataset into a VAE latent store",
        description="Encode the train and val splits of an image dataset with a diffusers AutoencoderKL into "
        "sharded .npy files (posterior mean and std of each image and its mirror). Interrupted runs resume: "
        "run the same command again. Train on the store with data.name=latents data.path=DIR.",
        epilog=examples(
            "ditscale extract-latents /data/imagenet/train --image-size 256 --vae ./sd-vae-ft-ema --out latents/in256",
            "ditscale extract-latents data.yaml --vae stabilityai/sd-vae-ft-ema --out latents/in256 --workers 4",
            "ditscale extract-latents shapes --count 100000 --image-size 64 --vae ./tiny-vae --out latents/shapes64",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "data",
        help="a data YAML (a DataConfig, or a training config with a 'data:' section), "
        "a dataset name (shapes, digits) or an ImageNet-layout folder",
    )
    p.add_argument(
        "--vae", required=True, help="diffusers AutoencoderKL folder or hub id (e.g. stabilityai/sd-vae-ft-ema)"
    )
    p.add_argument("--out", required=True, help="latent store folder to write (or resume)")
    p.add_argument("--batch-size", type=count(1, 1 << 20), default=32, help="images per VAE call (default 32)")
    p.add_argument(
        "--workers",
        type=count(1, 1024),
        default=1,
        help="processes, each encoding whole shards (default 1); on CPU each uses 1 torch thread, so the store's "
        "bytes do not depend on the count: use --workers for more cores",
    )
    p.add_argument("--shard-size", type=count(1, 1 << 24), default=4096, help="images per shard file (default 4096)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage dtype (default float16)")
    p.add_argument("--image-size", type=count(8, 8192), help="image side in pixels (overrides the data config)")
    p.add_argument("--count", type=count(1), help="encode at most N train images (required for shapes)")
    p.add_argument("--val-count", type=count(0), help="encode at most N val images (shapes: default count // 10)")
    p.add_argument("--device", type=device, help="device for the VAE (default cuda if available, else cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a data config field")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def data_config_from_arg(text: str, overrides: list[str]):
    """A DataConfig from a YAML file, a dataset name or a folder, with ``key=value`` overrides applied."""
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
        raw = load_yaml(path)
        raw = raw["data"] if isinstance(raw.get("data"), dict) else raw
    elif text in DATASET_NAMES:
        raw = {"name": text}
    elif path.is_dir():
        raw = {"name": "folder", "path": str(path)}
    else:
        raise ConfigError(
            f"'{text}' is not a data YAML, a dataset name ({', '.join(DATASET_NAMES)}) or an existing folder"
        )
    return from_dict(DataConfig, apply_overrides(raw, overrides), where="data")


def run(args: argparse.Namespace) -> int:
    from ditscale.data.latents import extract_latents  # lazy: torch

    check_output_dir(args.out, "--out")
    overrides = list(args.set) + ([f"image_size={args.image_size}"] if args.image_size else [])
    cfg = data_config_from_arg(args.data, overrides)
    check_apart({"--out": args.out}, {"DATA": args.data, "data.path": cfg.path, "--vae": args.vae})
    args._interrupted = lambda: f"finished shards are kept in {args.out}; run the same command again to resume"
    meta = extract_latents(
        cfg,
        args.vae,
        args.out,
        batch_size=args.batch_size,
        workers=args.workers,
        shard_size=args.shard_size,
        dtype=args.dtype,
        count=args.count,
        val_count=args.val_count,
        device=args.device,
        progress=not args.no_progress,
    )
    c, h, w = meta["shape"]
    print(
        f"latent store {args.out}: {meta['splits']['train']} train + {meta['splits']['val']} val images, "
        f"latents {c}x{h}x{w} {meta['dtype']}, {len(meta['shards'])} shards "
        f"({meta['shards_written']} written, {meta['shards_skipped']} already done)"
    )
    print(f"train on it with: data.name=latents data.path={args.out} data.channels={c} data.image_size={h}")
    return 0
