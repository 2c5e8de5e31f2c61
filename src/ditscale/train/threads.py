"""The torch threads of a compute command (``--threads``), and the count it uses when not given.

torch's own default is one thread per physical core. For a small model on CPU that is the wrong choice:
its matrix products are too small for threads to pay for their synchronisation, and on a machine shared
with other work every parallel region waits for its slowest thread, which the other work has descheduled.
Measured under load on a 2-core machine, ``train tiny`` (1.9M parameters) ran at 8-16 images/s with
torch's 2 threads and at 50-66 images/s with 1 (issue 23); see docs/training.md, "Threads".

So when ``--threads`` is not given:

* a model under :data:`SMALL_MODEL_PARAMS` parameters on CPU runs on 1 thread;
* any other model (or any GPU run) keeps torch's default, capped at the cores this process may use
  (``sched_getaffinity``: a container or ``taskset`` may allow fewer than the machine has).
"""

from __future__ import annotations

import os
import warnings

SMALL_MODEL_PARAMS = 10_000_000


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads(params: int, device: str, cores: int, torch_default: int) -> int:
    """The threads of a model of ``params`` parameters on ``device`` when ``--threads`` is not given."""
    if str(device).split(":")[0] == "cpu" and params < SMALL_MODEL_PARAMS:
        return 1
    return max(1, min(torch_default, cores))


def set_threads(n: int | None) -> None:
    """Set torch's intra-op and inter-op thread counts to ``n`` (None: leave torch's defaults).

    Called before any torch work: inter-op threads can only be set once, before they are first used
    (a second call in the same process keeps the first value, with a warning)."""
    if n is None:
        return
    import torch  # lazy: torch (`train --plan` and --help run without it)

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        warnings.warn(f"could not set {n} inter-op threads: torch already started its thread pool", stacklevel=2)


def model_params(model) -> int:
    """The parameters (scalars) of a torch module."""
    return sum(p.numel() for p in model.parameters())


def choose_threads(requested: int | None, params: int, device: str) -> int:
    """``requested``, else :func:`default_threads` for this machine; sets torch's threads and returns them."""
    import torch  # lazy: torch (`train --plan` and --help run without it)

    if requested is not None:
        set_threads(requested)
        return requested
    n = default_threads(params, device, available_cores(), torch.get_num_threads())
    torch.set_num_threads(n)  # intra-op only: the inter-op pool may have started while the model loaded
    return n
