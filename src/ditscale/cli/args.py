"""Argument types for the commands: numbers are checked where they enter, not deep inside torch.

``type=float`` accepts ``nan`` and ``inf`` and ``type=int`` accepts any size, so a bad value used to
surface as a traceback from numpy or torch. These types refuse it while parsing; argparse then
reports it through :class:`OneLineParser` as one line with exit status 2::

    p.add_argument("--cfg-scale", type=finite_float(minimum=0.0))
    p.add_argument("--num-samples", type=count(minimum=1, maximum=10**7))
    p.add_argument("--seed", type=seed)
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn

from ditscale.config import INT_LIMIT


def examples(*lines: str) -> str:
    """A parser's ``epilog``: ``examples:`` then each command line indented two spaces.

    Pass it with ``formatter_class=argparse.RawDescriptionHelpFormatter`` so the lines (and any aligned
    ``# comments``) keep their layout in ``--help``::

        subparsers.add_parser("flops", ..., epilog=examples(
            "ditscale flops DiT-XL/2      # 118.64 GMACs, 675M parameters",
        ), formatter_class=argparse.RawDescriptionHelpFormatter)
    """
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``ditscale: error: ...; see --help``, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"ditscale: error: {message}; see '{self.prog} --help'", file=sys.stderr)
        sys.exit(2)


def finite_float(
    minimum: float | None = None, maximum: float | None = None, *, above: bool = False
) -> Callable[[str], float]:
    """A float type that refuses NaN, inf and values outside ``[minimum, maximum]`` (``above``: > minimum)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def count(minimum: int = 0, maximum: int = INT_LIMIT) -> Callable[[str], int]:
    """An integer type within ``[minimum, maximum]`` (``1e6`` is read as 1000000)."""

    def parse(text: str) -> int:
        try:
            value = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
            value = int(value)
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum:,} and {maximum:,}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


THREADS_HELP = (
    "torch threads (default: 1 on CPU for a model under 10M parameters, such as the tiny presets; "
    "otherwise torch's default, one per core this process may use; see docs/training.md, Threads)"
)


def add_threads_argument(p: argparse.ArgumentParser, help_text: str = THREADS_HELP) -> None:
    """Declare ``--threads N`` on the parser of a compute command (``ditscale.train.threads`` applies it)."""
    p.add_argument("--threads", type=count(1, 4096), default=None, metavar="N", help=help_text)


# A seed: what numpy's and torch's generators accept (non-negative, below 2**63).
seed = count(0, INT_LIMIT)


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda`` or ``cuda:N`` (N < the visible GPUs), ``mps``."""
    import torch  # lazy: torch, only when a --device is given (args is imported by every command)

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use cpu")
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})")
        return text
    if dev.type == "mps" and torch.backends.mps.is_available():
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device this machine has; use cpu or cuda")
