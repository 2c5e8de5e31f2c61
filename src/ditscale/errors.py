"""User-facing errors and warnings.

Every error a user can cause (bad config, bad checkpoint, bad data, bad CSV) is raised as a
:class:`DitscaleError` whose message is one line: what was wrong, and what to do. The CLI prints
that line and exits with status 2, without a traceback. A warning is one line too, and every
command prints it after :data:`WARNING` (Python's warnings through the CLI's format, the
commands' and a study's own lines alike).
"""

from __future__ import annotations

WARNING = "ditscale: warning:"  # the start of every warning line (as errors start "ditscale: error:")


class DitscaleError(Exception):
    """An error caused by the user's input. ``str(err)`` is a one-line explanation and remedy."""


class ConfigError(DitscaleError, ValueError):
    """A config, preset, spec or command-line override is invalid."""


class CheckpointError(DitscaleError):
    """A checkpoint or weights file cannot be used (missing, corrupt, wrong keys/shapes, unsafe)."""


class DataError(DitscaleError):
    """A dataset, image folder, latent store or CSV is missing, empty or malformed."""


class TrainingError(DitscaleError):
    """A training run cannot continue (e.g. the loss became NaN); earlier checkpoints are kept."""


class WriteError(DitscaleError):
    """A file cannot be written: the disk is full or a quota is exhausted (the work done so far is kept)."""
