"""The ``ditscale`` command line: thin commands over the library.

Each command lives in its own module of this package with two functions::

    def add_parser(subparsers) -> argparse.ArgumentParser   # declares the command's arguments
    def run(args: argparse.Namespace) -> int                 # does the work, returns an exit status

Modules are imported only when their command runs, so ``ditscale flops`` does not import torch.
A :class:`ditscale.errors.DitscaleError` or a usage error is printed as one line (``ditscale: error:
...``) with exit status 2 and no traceback; any other exception is a bug: its traceback is shown,
then a line saying so, with exit status 1. A full disk is one line wherever it strikes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from types import MappingProxyType

from ditscale import __version__
from ditscale.cli.args import OneLineParser
from ditscale.errors import WARNING, DitscaleError
from ditscale.io import is_no_space, no_space_error

# command name -> (module, one-line help); read-only, as every table of cli/ (tests/test_structure.py)
COMMANDS: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        "flops": ("ditscale.cli.flops", "analytic FLOPs and parameters of a DiT config"),
        "sample": ("ditscale.cli.sample", "sample an image grid from a checkpoint"),
        "train": ("ditscale.cli.train", "train a DiT from a YAML config or preset"),
        "extract-latents": ("ditscale.cli.extract_latents", "encode a dataset into a VAE latent store"),
        "fit": ("ditscale.cli.fit", "fit scaling laws to a CSV of runs (flops, params, tokens, loss)"),
        "study": ("ditscale.cli.study", "plan, run, predict and compare scaling-law studies"),
        "data": ("ditscale.cli.data", "export a dataset as an ADM-style reference batch (.npz)"),
        "eval": (
            "ditscale.cli.eval",
            "FID/sFID/IS/precision/recall or the shapes evaluator's scores of a sample batch",
        ),
        "export": ("ditscale.cli.export", "export a model as a diffusers DiTPipeline folder or plain safetensors"),
    }
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ditscale",
        description="Train diffusion transformers and predict how they scale with compute.",
    )
    parser.add_argument("--version", action="version", version=f"ditscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("ditscale.cli"):
                continue  # command not available in this build
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def _one_line_warning(message, *_args, **_kwargs) -> str:
    """Warnings as the commands' other messages: ``ditscale: warning: ...``, one line, no source line."""
    return f"{WARNING} {message}\n"


def _interrupted_note(args: argparse.Namespace) -> str:
    """What an interrupted command kept: its own account (``args._interrupted``, set once it knows where it
    writes), else that nothing is promised."""
    note = getattr(args, "_interrupted", None)
    if note is None:
        return "this command keeps no partial work; run it again to redo it"
    try:
        return note()
    except OSError as err:  # the account of what was saved must not hide the interrupt
        return f"could not tell what was saved ({type(err).__name__}: {err})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _one_line_warning
    # Import only the module of the command being run (fast start, no torch for `flops`).
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed in one line
        return int(stop.code or 0)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args._run(args) or 0)
    except DitscaleError as err:
        print(f"ditscale: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ditscale flops ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"ditscale: interrupted; {_interrupted_note(args)}", file=sys.stderr)
        return 130
    except Exception as err:  # not the user's input: a bug, reported with its traceback
        if is_no_space(err):  # a full disk or quota, on a write path ditscale.io does not cover: one line too
            print(f"ditscale: error: {no_space_error(getattr(err, 'filename', None), err)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            "ditscale: internal error (a bug, not a problem with your input); please report it with the "
            "traceback above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
