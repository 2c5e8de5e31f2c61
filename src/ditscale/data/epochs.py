"""Epochs of a finite dataset, and when a plan or prediction repeats it too often to trust.

Data-constrained scaling is its own regime. Muennighoff et al. 2023, "Scaling Data-Constrained Language
Models" (NeurIPS 2023), found that up to about 4 epochs repeated data is almost as good as new data and
that beyond about 16 the value of more passes decays fast: a law fitted where data is fresh then
overestimates what more compute buys. Diffusion models are routinely trained for many epochs (DiT-XL/2:
about 1,400 of ImageNet), so a few epochs are not flagged; past :data:`EPOCHS_WARN` a plan or prediction
says so. Procedural datasets (``shapes``) never repeat an image and have no epochs.
"""

from __future__ import annotations

EPOCHS_NEARLY_NEW = 4.0  # Muennighoff et al. 2023: up to ~4 epochs, repeated data is almost as good as new
EPOCHS_WARN = 16.0  # ... beyond ~16 the returns of more passes diminish fast: warned of

CITATION = 'Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"'


def epoch_count(images: float, train_images: int) -> float:
    """Passes over a train split of ``train_images`` images made by ``images`` training images."""
    return float(images) / train_images


def epochs_warning(count: float, train_images: int, what: str) -> str | None:
    """A warning when ``what`` (e.g. "run X", "D_opt at 1e13 FLOPs") repeats the ``train_images``-image
    train split more than :data:`EPOCHS_WARN` times; None otherwise."""
    if not count > EPOCHS_WARN:
        return None
    return (
        f"{what} is {count:.3g} epochs of the {train_images:,} train images, past {EPOCHS_WARN:g}: repeated data "
        f"is worth less than new data ({CITATION}: nearly as good up to ~{EPOCHS_NEARLY_NEW:g} epochs, returns "
        f"diminish fast beyond ~{EPOCHS_WARN:g}), so a law fitted on fewer passes overestimates this; "
        "add data or plan smaller budgets"
    )
