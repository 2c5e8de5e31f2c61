"""``ditscale train CONFIG --out DIR [...] [key.path=value ...]``: train (or resume) one run."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ditscale.cli.args import OneLineParser, add_threads_argument, count, examples, finite_float, seed
from ditscale.errors import ConfigError
from ditscale.flops import param_counts
from ditscale.io import check_apart, check_output_dir
from ditscale.train.config import load_train_config
from ditscale.train.plan import plan_text, plan_training
from ditscale.train.rundir import RunDir
from ditscale.train.threads import choose_threads


class _IntermixedParser(OneLineParser):
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
        epilog=examples(
            "ditscale train tiny --out runs/tiny                     # a preset; resumes if runs/tiny has checkpoints",
            "ditscale train tiny --out runs/t2 --max-steps 500 optim.lr=3e-4 val.every=100",
            "ditscale train dit-xl2 data.path=latents/in256 --plan   # steps, FLOPs, GPU-hours, launch commands",
            "torchrun --standalone --nproc_per_node 8 -m ditscale train dit-xl2 --out runs/dit-xl2 data.path=latents/in256",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="preset name (tiny, tiny-text, dit-s2, dit-xl2) or a YAML file")
    p.add_argument(
        "--out",
        default=None,
        help="run folder (config.yaml, metrics.jsonl, checkpoints/, result.json); required unless --plan",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=count(1), default=None, help="optimizer steps (replaces flops)")
    length.add_argument(
        "--flops",
        type=finite_float(0.0, above=True),
        default=None,
        help="exact training-FLOP budget (replaces max_steps)",
    )
    p.add_argument("--ckpt-every", type=count(0), default=None, help="checkpoint every N steps")
    p.add_argument("--seed", type=seed, default=None, help="seed of the init and of every per-step draw")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no progress lines on stdout")
    p.add_argument(
        "--progress-every",
        type=finite_float(0.0),
        default=30.0,
        metavar="SECONDS",
        help="when stdout is not a terminal (nohup, a pipe), print a progress line (step, loss, images/s, ETA) "
        "every SECONDS (default 30); OUT/train.log gets the same lines",
    )
    add_threads_argument(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="resume even though the config differs from OUT/config.yaml (the new config is used from the checkpoint on)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the run's steps, images, training FLOPs, GPU-hours and "
        "torchrun/Slurm commands, then exit without training or writing anything",
    )
    p.add_argument("--gpu", default=None, help="--plan: GPU of the estimate (default H100 SXM, 989 TFLOP/s dense bf16)")
    p.add_argument(
        "--mfu",
        type=finite_float(0.0, 1.0, above=True),
        default=None,
        help="--plan: model FLOPs utilisation assumed (default 0.35)",
    )
    p.add_argument(
        "--nodes", type=count(1, 100_000), default=1, help="--plan: nodes of the launch commands (default 1)"
    )
    p.add_argument("--gpus-per-node", type=count(1, 1024), default=8, help="--plan: GPUs per node (default 8)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides, e.g. optim.lr=3e-4")
    p.__class__ = _IntermixedParser  # overrides may follow the flags
    return p


def interrupted_note(out: str | Path, ckpt_every: int) -> str:
    """What an interrupted ``train --out OUT`` kept: its newest checkpoint's step, or that it kept nothing."""
    from ditscale.train.checkpoint import list_checkpoints  # lazy: torch

    found = list_checkpoints(RunDir(out).checkpoints)
    if found:
        step, path = found[0]
        return f"the newest checkpoint is step {step:,} ({path}); run the same command again to resume from it"
    first = f"the first comes at step {ckpt_every:,}" if ckpt_every else "ckpt_every=0 writes one only at the end"
    return (
        f"nothing was saved: no checkpoint in {RunDir(out).checkpoints} yet ({first}); "
        "running the same command again starts from step 0"
    )


def _threads(args: argparse.Namespace, cfg) -> int:
    """--threads, else the default for this model on this run's device (see ditscale.train.threads)."""
    import torch  # lazy: torch (`train --plan` and --help run without it)

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return choose_threads(args.threads, param_counts(_sized_model(cfg)).total, device)


def _sized_model(cfg) -> dict:
    """The run's ``model`` section with its text width and tokens, for the thread default: a word
    encoder's are known before it is built; a frozen encoder's only once it is loaded, so it counts as
    64 wide and 1 token (its cross-attention inputs are a small part of any DiT's parameters)."""
    frozen = {"conditioning": "text", "context_dim": 64, "context_len": 1} if cfg.text_encoder else {}
    return {**frozen, **cfg.word_text_sizes(), **cfg.model}


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


def _print_plan(args: argparse.Namespace, cfg) -> int:
    """``--plan``: the run's length, compute, GPU-hours and launch commands (no torch, nothing written)."""
    plan = plan_training(cfg, gpu=args.gpu, mfu=args.mfu, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    out = args.out or f"runs/{Path(args.config).stem}"
    print(plan_text(plan, args.config, overrides_from_args(args), out))
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config, overrides_from_args(args))
    if args.plan:
        return _print_plan(args, cfg)
    if not args.out:
        raise ConfigError("--out is required (the run folder); or give --plan to print the run's plan without training")
    check_output_dir(args.out, "--out")
    check_apart({"--out": args.out}, {"data.path": cfg.data.get("path")})  # the config may live in --out: it resumes
    _threads(args, cfg)
    args._interrupted = lambda: interrupted_note(args.out, cfg.ckpt_every)
    from ditscale.train.loop import train  # lazy: torch (`train --plan` and --help run without it)

    result = train(
        cfg,
        args.out,
        progress=False if args.no_progress else None,
        force=args.force,
        progress_every=args.progress_every,
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        keys = ("status", "steps", "images", "flops_exact", "flops_6nd", "val_loss", "train_loss", "wall_time_s")
        print(json.dumps({k: result.get(k) for k in keys}))
    return 0
