"""The frame of a quality score: what real data reaches (the floor) and what guessing reaches (chance).

A score means little alone: an FD of 258 is good or bad only beside the FD two batches of *real* images
reach at the same sample count, and an accuracy of 0.23 only beside what real images with *random*
labels score. :func:`evaluate_shapes` / :func:`evaluate_inception` (``frame=True``) add:

- **floor** (FD / FID / sFID, precision, recall): the reference's images are split into two disjoint
  random halves A and B of ``n`` images each (``split_halves``: a permutation drawn from the frame seed,
  A its first ``n`` entries, B the next ``n``, each sorted), and A is scored against B with the same
  metric code as the samples (A in the samples' role). ``n`` is the number of samples when the reference
  holds at least twice as many images; otherwise half the reference (a note says so: Fréchet distances
  of finite sets are biased upwards by about tr(Sigma)/n per set, so a floor at fewer images lies
  higher). Below ``MIN_HALF`` images per half there is no floor (``None``, with a note). The Inception
  path adds ``inception_score``: the IS of half A, the value real images reach at ``n``.
- **chance** (each accuracy): the evaluator's accuracy on *all* the reference's real images given the
  reference's own conditions (labels, or captions when the samples are captioned) randomly permuted
  (``shuffled``: one permutation drawn from the frame seed), i.e. "real images, random labels": a model
  that draws perfect images but ignores its label scores this. The permutation keeps how often each
  label or caption occurs.
- **ceiling** (each accuracy): the same images with their true labels or captions: what a model that
  draws indistinguishable-from-real images of its label scores.

Everything is deterministic given the seed (default 0), so a frame is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MIN_HALF = 10  # fewest images per half for a floor (precision/recall's k = 3 needs > 3, a covariance 2)
# Independent random streams of one frame seed: the reference's split, the permutation of its conditions.
SPLIT_STREAM, SHUFFLE_STREAM = 0, 1
FLOOR_NAMES = {"fd": "real-vs-real", "fid": "real-vs-real", "sfid": "real-vs-real", "inception_score": "real"}


@dataclass(frozen=True)
class QualityFrame:
    """The frame of a batch's scores (keys are the scores' JSON keys; see the module's docstring).

    Attributes:
        floor: real-vs-real value of each score (half A of the reference against half B), ``None`` when
            the reference cannot be split; a value is ``None`` where that score cannot be computed.
        floor_images: n, the images per half, or ``None`` without a floor.
        chance: each accuracy of real images with randomly permuted labels/captions (``None`` where the
            samples or the reference carry none); empty for evaluators without accuracies.
        ceiling: each accuracy of real images with their true labels/captions (``None`` likewise).
        notes: one line per caveat: a floor at fewer images than the samples, no floor, no chance level.
    """

    floor: dict[str, float | None] | None
    floor_images: int | None
    chance: dict[str, float | None]
    ceiling: dict[str, float | None]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready {"chance", "ceiling", "floor", "floor_images", "frame_notes"}."""
        return {
            "chance": dict(self.chance),
            "ceiling": dict(self.ceiling),
            "floor": None if self.floor is None else dict(self.floor),
            "floor_images": self.floor_images,
            "frame_notes": list(self.notes),
        }

    def beside(self, key: str) -> str:
        """The frame of score ``key`` in words, e.g. "(real-vs-real 26.1000 at 1,000 images)" or
        "(chance 0.1680, real 0.9800)"; "" when it has none."""
        if key in self.chance:
            parts = [
                f"{name} {value:.4f}"
                for name, value in (("chance", self.chance[key]), ("real", self.ceiling.get(key)))
                if value is not None
            ]
            return f"({', '.join(parts)})" if parts else ""
        if self.floor is None or self.floor.get(key) is None:
            return ""
        return f"({FLOOR_NAMES.get(key, 'real-vs-real')} {self.floor[key]:.4f} at {self.floor_images:,} images)"


def floor_size(num_reference: int, num_samples: int) -> tuple[int | None, str | None]:
    """(n, note): the images per half of the reference's split, and a one-line note when n is not the
    samples' count (or ``None`` with the reason when the reference is too small to split)."""
    if num_reference >= 2 * num_samples:
        return num_samples, None
    n = num_reference // 2
    if n < MIN_HALF:
        return None, (
            f"no real-vs-real floor: the reference holds {num_reference} images, fewer than the "
            f"2 x {MIN_HALF} two halves need; export more reference images"
        )
    return n, (
        f"the real-vs-real floor is at {n:,} images per half: the reference holds {num_reference:,}, fewer than "
        f"2 x {num_samples:,} samples; at fewer images FD lies higher, so export {2 * num_samples:,} for a floor "
        "at the samples' count"
    )


def split_halves(num_reference: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves (sorted int64 indices, ``n`` each) of ``num_reference`` images."""
    order = np.random.default_rng((seed, SPLIT_STREAM)).permutation(num_reference)
    return np.sort(order[:n]), np.sort(order[n : 2 * n])


def real_vs_real(
    num_reference: int,
    num_samples: int,
    score: Callable[[np.ndarray, np.ndarray], dict[str, float | None]],
    seed: int = 0,
) -> tuple[dict[str, float | None] | None, int | None, str | None]:
    """(floor, n, note): ``score(a, b)`` of half A's indices (the samples' role) against half B's,
    halves of :func:`floor_size`'s n from :func:`split_halves`; ``(None, None, note)`` when too small."""
    n, note = floor_size(num_reference, num_samples)
    if n is None:
        return None, None, note
    return score(*split_halves(num_reference, n, seed)), n, note


def shuffled(conditions: np.ndarray | tuple, seed: int = 0):
    """``conditions`` (labels or captions, one per image) in a random order drawn from ``seed``, of the
    same type: tuples stay tuples."""
    order = np.random.default_rng((seed, SHUFFLE_STREAM)).permutation(len(conditions))
    if isinstance(conditions, np.ndarray):
        return conditions[order]
    return tuple(conditions[i] for i in order)
