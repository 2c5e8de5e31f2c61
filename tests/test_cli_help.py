"""Every command's ``--help`` ends with runnable examples (``examples:`` then ``  ditscale CMD ...`` lines)."""

from __future__ import annotations

import pytest

from ditscale.cli import COMMANDS, main
from ditscale.cli.args import examples

STUDY_ACTIONS = ("plan", "run", "predict", "compare", "report", "quality-steps")
DATA_ACTIONS = ("export",)

# every command (iterating COMMANDS: a new command without examples fails), then the subcommands
HELP_PATHS = [(cmd,) for cmd in COMMANDS] + [("study", a) for a in STUDY_ACTIONS] + [("data", a) for a in DATA_ACTIONS]


@pytest.mark.parametrize("path", HELP_PATHS, ids=" ".join)
def test_help_shows_examples(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "\nexamples:\n" in out, out
    prefix = "  ditscale " + " ".join(path)
    lines = out[out.index("\nexamples:\n") :].splitlines()
    assert any(line.startswith(prefix + " ") for line in lines), f"no example line starting {prefix!r}:\n{out}"


def test_examples_format():
    assert examples("ditscale flops tiny", "ditscale flops DiT-XL/2") == (
        "examples:\n  ditscale flops tiny\n  ditscale flops DiT-XL/2"
    )
