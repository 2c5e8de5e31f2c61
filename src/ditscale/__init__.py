"""ditscale: train diffusion transformers (DiT) faithfully and predict how they scale.

The package is laid out in the order the data flows:

    data -> models -> diffusion -> train -> study -> laws -> report

``ditscale.flops`` and ``ditscale.models.config`` are pure Python (no torch import), so
compute accounting and study planning work anywhere.
"""

__version__ = "0.1.0"

from ditscale.errors import DitscaleError  # noqa: F401
