"""What produced a result: package, torch and Python versions, source commit, host and device.

Pure Python and cheap: torch is imported only inside :func:`versions` (for its version and the
device name), and the git commit comes from one ``git rev-parse HEAD`` in the package's folder
with a short timeout. Training writes this as the ``versions`` block of ``result.json``; studies
and reports can call :func:`versions` the same way.
"""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from ditscale import __version__

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def git_commit(path: str | Path = PACKAGE_DIR, timeout: float = 2.0) -> str | None:
    """The ``HEAD`` commit (40 hex digits) of the git checkout holding ``path``; None when ``path``
    is not in a checkout (e.g. an installed wheel), git is missing, or it does not answer in time."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=str(path), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and len(commit) == 40 else None


def git_dirty(path: str | Path = PACKAGE_DIR, timeout: float = 2.0) -> bool | None:
    """True when the checkout holding ``path`` has uncommitted changes to tracked files (so
    :func:`git_commit` alone does not name the code that ran); None when that cannot be told."""
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=str(path),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(proc.stdout.strip()) if proc.returncode == 0 else None


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else ``platform.processor()`` or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: Any = None) -> str:
    """A readable name of ``device`` (a ``torch.device`` or string): the GPU's name for CUDA, else the CPU's."""
    kind = getattr(device, "type", str(device or "cpu")).split(":")[0]
    if kind == "cuda":
        import torch  # lazy: torch; provenance loads torch-free (study imports it)

        return torch.cuda.get_device_name(device)
    return cpu_name()


def versions(device: Any = None) -> dict[str, Any]:
    """``{"ditscale", "torch", "python", "git_commit", "git_dirty", "hostname", "device"}``: versions as
    strings, ``git_commit`` (and ``git_dirty``) None outside a git checkout, ``device`` the name of
    ``device`` (default CPU)."""
    import torch  # lazy: torch; provenance loads torch-free (study imports it)

    return {
        "ditscale": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "hostname": socket.gethostname(),
        "device": device_name(device),
    }
