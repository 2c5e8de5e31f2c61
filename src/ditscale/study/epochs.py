"""Epochs of a study on a finite dataset: how often its runs, and its predictions, repeat the train split.

A plan states the fewest and most epochs of its runs; a prediction states D_opt in epochs (laws.json's
``train_images`` and ``epochs_opt``). Past :data:`ditscale.data.epochs.EPOCHS_WARN` epochs either warns
(see :mod:`ditscale.data.epochs` for the threshold and its source). Procedural datasets (``shapes``)
have no epochs: nothing is said, and no key is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from ditscale.config import from_dict
from ditscale.data.config import DataConfig
from ditscale.data.epochs import epoch_count, epochs_warning
from ditscale.data.info import train_images
from ditscale.errors import DitscaleError
from ditscale.laws.results import EstimateSummary


def study_train_images(spec) -> int | None:
    """Train images of the study's dataset; None for procedural data or data not readable yet."""
    try:
        return train_images(from_dict(DataConfig, spec.data, where="data"))
    except DitscaleError:  # not extracted yet: the plan is made from the declared shapes, without epochs
        return None


@dataclass(frozen=True)
class PlanEpochs:
    """The epochs of a plan's runs over ``train_images`` images: the ``fewest`` and the ``most`` (of run
    ``most_run``), and the warning when the most are past the threshold."""

    train_images: int
    fewest: float
    most: float
    most_run: str
    warning: str | None

    def line(self) -> str:
        return (
            f"data: {self.train_images:,} train images; the runs make {self.fewest:.3g} to {self.most:.3g} "
            f"epochs over them (most: {self.most_run})"
        )

    def to_json(self) -> dict:
        return {"train_images": self.train_images, "fewest": self.fewest, "most": self.most, "most_run": self.most_run}


def plan_epochs(spec, plan) -> PlanEpochs | None:
    """The :class:`PlanEpochs` of ``plan`` (a study plan), or None for procedural or unreadable data."""
    n = study_train_images(spec)
    if n is None or not plan.runs:
        return None
    counts = {r.run_id: epoch_count(r.images, n) for r in plan.runs}
    most_run = max(counts, key=counts.__getitem__)
    most = counts[most_run]
    warning = epochs_warning(most, n, f"run {most_run}")
    return PlanEpochs(n, min(counts.values()), most, most_run, warning)


def prediction_epochs(images_opt: EstimateSummary | None, n: int | None, flops: float):
    """``(epochs_opt, warning)`` of a prediction's D_opt in images over ``n`` train images: an
    :class:`EstimateSummary` in epochs and the warning past the threshold; ``(None, None)`` when the data
    has no epochs or the prediction no images."""
    if n is None or images_opt is None or images_opt.value is None:
        return None, None
    ci = images_opt.ci90
    value = epoch_count(images_opt.value, n)
    out = EstimateSummary(value=value, ci90=None if ci is None else [epoch_count(c, n) for c in ci])
    return out, epochs_warning(value, n, f"D_opt at {flops:.3g} FLOPs")
