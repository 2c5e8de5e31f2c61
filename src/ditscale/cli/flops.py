"""``ditscale flops MODEL``: MACs per forward pass, parameters and training FLOPs of a DiT config.

Pure Python (no torch import). Examples::

    ditscale flops DiT-XL/2                      # table: 118.64 GMACs, 675,129,632 parameters
    ditscale flops DiT-XL/2 --input-size 64      # 512x512 images: 524.61 GMACs
    ditscale flops custom --depth 8 --hidden-size 512 --num-heads 8 --patch-size 2 --json
    ditscale flops DiT-B/2 --flops 1e18          # images (and tokens) a 1e18-FLOP budget buys
    ditscale flops tiny                          # a training preset (or YAML): its model and the run's compute
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ditscale.cli.args import count, examples, finite_float
from ditscale.data.info import declared_info
from ditscale.errors import ConfigError
from ditscale.flops import (
    forward_macs,
    images_for_flops,
    param_counts,
    train_flops_6nd,
    train_flops_exact,
)
from ditscale.models.config import BLOCK_DESIGNS, CONDITIONINGS, MODEL_NAMES, DiTConfig, named_config
from ditscale.train.config import load_train_config, load_train_dict, preset_names

# DiTConfig fields settable from the command line (option --input-size sets input_size, ...)
CONFIG_FIELDS = (
    "input_size",
    "in_channels",
    "block",
    "conditioning",
    "context_dim",
    "context_len",
    "num_classes",
    "depth",
    "hidden_size",
    "num_heads",
    "patch_size",
    "mlp_ratio",
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "flops",
        help="analytic FLOPs and parameters of a DiT config",
        description="MACs of one forward pass of one image (the DiT paper's 'Gflops' are GMACs), "
        "parameters, and training FLOPs per image (exact: 6 x MACs; 6ND: 6 x non-embedding params x tokens).",
        epilog=examples(
            "ditscale flops DiT-XL/2                      # 118.64 GMACs, 675,129,632 parameters",
            "ditscale flops DiT-XL/2 --input-size 64      # 512x512 images: 524.61 GMACs",
            "ditscale flops DiT-B/2 --flops 1e18          # images (and tokens) a 1e18-FLOP budget buys",
            "ditscale flops tiny                          # a training preset: its model and the run's compute",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help=f"a paper config ({MODEL_NAMES[0]} ... {MODEL_NAMES[-1]}), 'custom', "
        "or a training preset / YAML config (its model, and the whole run's compute)",
    )
    p.add_argument(
        "--input-size", type=count(1, 4096), help="latent side (32 for 256x256 images, 64 for 512x512); default 32"
    )
    p.add_argument("--in-channels", type=count(1, 4096), help="input channels (4 for SD-VAE latents); default 4")
    p.add_argument("--block", choices=BLOCK_DESIGNS, help="block design; default adaln_zero")
    p.add_argument("--conditioning", choices=CONDITIONINGS, help="condition input; default class")
    p.add_argument("--context-dim", type=count(1, 1 << 16), help="text-token width (text conditioning)")
    p.add_argument("--context-len", type=count(1, 1 << 16), help="text tokens per image (text conditioning)")
    p.add_argument("--num-classes", type=count(0, 1 << 24), help="classes (class conditioning); default 1000")
    p.add_argument("--depth", type=count(1, 4096), help="blocks (custom ladder models)")
    p.add_argument("--hidden-size", type=count(1, 1 << 20), help="width d (custom ladder models)")
    p.add_argument("--num-heads", type=count(1, 1 << 16), help="attention heads (custom ladder models)")
    p.add_argument("--patch-size", type=count(1, 4096), help="patch side (custom ladder models)")
    p.add_argument("--mlp-ratio", type=finite_float(0.0, 1024.0, above=True), help="MLP width / d; default 4")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training config's key (with a preset or YAML MODEL), e.g. model.depth=8",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--images", type=finite_float(0.0), metavar="N", help="also give the training FLOPs of N images"
    )
    budget.add_argument(
        "--flops", type=finite_float(0.0), metavar="F", help="also give the images a budget of F training FLOPs buys"
    )
    return p


def is_training_config(model: str) -> bool:
    """True when MODEL names a training preset or a YAML file rather than a paper config or "custom"."""
    return model in preset_names() or Path(model).suffix in (".yaml", ".yml") or Path(model).is_file()


def build_config(args: argparse.Namespace) -> DiTConfig:
    """The :class:`DiTConfig` named by ``args.model`` ("custom" = the DiTConfig defaults) with the given options."""
    overrides = {f: getattr(args, f) for f in CONFIG_FIELDS if getattr(args, f) is not None}
    if args.model.strip().lower() == "custom":
        return DiTConfig.from_dict(overrides)
    return named_config(args.model, **overrides)


def training_run(args: argparse.Namespace):
    """The model of a training preset or YAML config (with ``--set`` and model options applied) and the
    images its run trains on (``max_steps x batch_size``; None for a FLOP budget, which ``--flops`` then gets)."""
    cli = [f"model.{f}={getattr(args, f)}" for f in CONFIG_FIELDS if getattr(args, f) is not None]
    data = load_train_dict(args.model, args.overrides).get("data") or {}
    if data.get("name") == "latents" and not data.get("path"):  # the store's declared shape is enough here
        cli.append("data.path=(not extracted)")
    cfg = load_train_config(args.model, [*args.overrides, *cli])
    info, _ = declared_info(cfg.data_config())
    if cfg.text_encoder and not {"context_dim", "context_len"} <= set(cfg.model):
        raise ConfigError(
            f"{args.model} conditions on a text encoder; give its width and length with --context-dim and --context-len"
        )
    images = None if cfg.max_steps is None else float(cfg.max_steps * cfg.batch_size)
    return cfg.model_config(info=info), images, cfg.flops


def report(name: str, cfg: DiTConfig, images: float | None = None, flops: float | None = None) -> dict[str, Any]:
    """Everything ``ditscale flops`` prints, as JSON-ready data (MACs and FLOPs per image unless named otherwise)."""
    macs = forward_macs(cfg)
    params = param_counts(cfg)
    out: dict[str, Any] = {
        "model": name,
        "config": cfg.to_dict(),
        "tokens_per_image": cfg.num_patches,
        "params": params.total,
        "trainable_params": params.trainable,
        "non_embedding_params": params.non_embedding,
        "param_components": params.components,
        "forward_macs": macs.total,
        "forward_gmacs": macs.total / 1e9,
        "forward_flops": 2 * macs.total,
        "components": macs.as_components(),
        "train_flops_per_image": {"exact": train_flops_exact(cfg, 1), "6nd": train_flops_6nd(cfg, 1)},
    }
    if images is not None:
        out["budget"] = {
            "images": images,
            "tokens": images * cfg.num_patches,
            "train_flops_exact": train_flops_exact(cfg, images),
            "train_flops_6nd": train_flops_6nd(cfg, images),
        }
    if flops is not None:
        exact, six = images_for_flops(cfg, flops), images_for_flops(cfg, flops, convention="6nd")
        out["budget"] = {
            "flops": flops,
            "images_exact": exact,
            "images_6nd": six,
            "tokens_exact": exact * cfg.num_patches,
            "tokens_6nd": six * cfg.num_patches,
        }
    return out


def format_table(r: dict[str, Any]) -> str:
    cfg = r["config"]
    lines = [
        f"{r['model']}: input {cfg['input_size']}x{cfg['input_size']}x{cfg['in_channels']}, patch {cfg['patch_size']}, "
        f"d {cfg['hidden_size']}, depth {cfg['depth']}, heads {cfg['num_heads']}, "
        f"block {cfg['block']}, conditioning {cfg['conditioning']}",
        f"tokens per image       {r['tokens_per_image']:,}",
        f"parameters             {r['params']:,} total, {r['trainable_params']:,} trainable, "
        f"{r['non_embedding_params']:,} non-embedding",
        "",
        "forward pass, one image      GMACs        %",
    ]
    total = r["forward_macs"]
    for name, value in r["components"].items():
        lines.append(f"  {name:<22} {value / 1e9:>11.4f} {100 * value / total:>8.2f}")
    lines += [
        f"  {'total':<22} {total / 1e9:>11.4f} {100.0:>8.2f}   (= {r['forward_flops'] / 1e9:.2f} GFLOPs)",
        "",
        "training FLOPs per image (forward + backward)",
        f"  exact, 6 x MACs        {r['train_flops_per_image']['exact']:.4e}",
        f"  6ND, 6 x N x tokens    {r['train_flops_per_image']['6nd']:.4e}",
    ]
    b = r.get("budget")
    if b and "images" in b:
        lines += [
            "",
            f"training on {b['images']:.6g} images ({b['tokens']:.4e} tokens)",
            f"  exact                  {b['train_flops_exact']:.4e} FLOPs",
            f"  6ND                    {b['train_flops_6nd']:.4e} FLOPs",
        ]
    elif b:
        lines += [
            "",
            f"a budget of {b['flops']:.4e} training FLOPs buys",
            f"  exact                  {b['images_exact']:.6g} images ({b['tokens_exact']:.4e} tokens)",
            f"  6ND                    {b['images_6nd']:.6g} images ({b['tokens_6nd']:.4e} tokens)",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    for opt in ("images", "flops"):
        value = getattr(args, opt)
        if value is not None and not value >= 0:
            raise ConfigError(f"--{opt} must be a non-negative number, got {value}")
    images, flops = args.images, args.flops
    if is_training_config(args.model):
        cfg, run_images, run_flops = training_run(args)
        if images is None and flops is None:  # the run's own length
            images, flops = run_images, run_flops
    elif args.overrides:
        raise ConfigError("--set applies to a training preset or YAML config; use the model options for a paper config")
    else:
        cfg = build_config(args)
    r = report(args.model, cfg, images=images, flops=flops)
    print(json.dumps(r, indent=2) if args.json else format_table(r))
    return 0
