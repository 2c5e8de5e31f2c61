"""``ditscale train CONFIG --out DIR [...] [key.path=value ...]``: train (or resume) one run."""

from __future__ import annotations

import argparse
import json
import os


class _IntermixedParser(argparse.ArgumentParser):
    """Accepts ``key=value`` overrides before and after the flags (``parse_known_intermixed_args``)."""

    def parse_known_args(self, args=None, namespace=None):
        if getattr(self, "_intermixing", False):
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a DiT from a YAML config or preset",
        description=(
            "Train a DiT. Running the same command again with the same --out resumes from the newest "
            "valid checkpoint; launch under torchrun for multi-GPU (DDP, or FSDP2 with fsdp=true)."
        ),
    )
    p.add_argument("config", help="preset name (tiny, tiny-text, dit-s2) or a YAML file")
    p.add_argument("--out", required=True, help="run folder (config.yaml, metrics.jsonl, checkpoints/, result.json)")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (replaces flops)")
    p.add_argument("--flops", type=float, default=None, help="exact training-FLOP budget (replaces max_steps)")
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint every N steps")
    p.add_argument("--seed", type=int, default=None, help="seed of the init and of every per-step draw")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="resume even though the config differs from OUT/config.yaml (the new config is used from the checkpoint on)",
    )
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides, e.g. optim.lr=3e-4")
    p.__class__ = _IntermixedParser  # overrides may follow the flags
    return p


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The dotted overrides of the flags and positional ``key=value`` arguments, flags last."""
    out = list(args.overrides)
    if args.max_steps is not None:
        out += [f"max_steps={args.max_steps}", "flops=null"]
    if args.flops is not None:
        out += [f"flops={args.flops!r}", "max_steps=null"]
    if args.ckpt_every is not None:
        out.append(f"ckpt_every={args.ckpt_every}")
    if args.seed is not None:
        out.append(f"seed={args.seed}")
    return out


def run(args: argparse.Namespace) -> int:
    import warnings

    from ditscale.train.config import load_train_config

    warnings.formatwarning = lambda message, *_, **__: f"ditscale: warning: {message}\n"

    cfg = load_train_config(args.config, overrides_from_args(args))
    from ditscale.train.loop import train

    result = train(cfg, args.out, progress=False if args.no_progress else None, force=args.force)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        keys = ("status", "steps", "images", "flops_exact", "flops_6nd", "val_loss", "train_loss", "wall_time_s")
        print(json.dumps({k: result.get(k) for k in keys}))
    return 0
