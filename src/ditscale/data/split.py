"""How many items of a finite dataset the fixed "val" split holds out (torch-free, for planning).

Which items: :func:`ditscale.data.base.heldout_mask`, which uses this count.
"""

from __future__ import annotations


def heldout_count(n: int, fraction: float) -> int:
    """Items of ``n`` held out as the "val" split at ``fraction``: ``round(fraction * n)``, at least one
    and at most ``n - 1`` when ``fraction > 0`` and ``n >= 2``."""
    n_val = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return n_val


def train_count(n: int, fraction: float) -> int:
    """Items of ``n`` left in the "train" split at ``fraction``."""
    return n - heldout_count(n, fraction)
