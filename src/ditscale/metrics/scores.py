"""Inception Score and improved precision/recall, with the conventions of ADM's evaluator.

- Inception Score (Salimans et al. 2016) as ADM computes it: the classifier's softmax cut into splits of
  ``split_size`` consecutive images in order (the last one may be smaller), ``exp(mean_x KL(p(y|x) || p(y)))``
  per split with ``p(y)`` the split's mean, and the mean over splits.
- Improved precision and recall (Kynkäänniemi et al. 2019) as ADM's ``ManifoldEstimator`` with k = 3: each
  point's radius is the *squared* Euclidean distance to its k-th nearest neighbour in its own set (the
  (k+1)-th smallest distance, counting its zero distance to itself); a point is on the other set's manifold
  when its squared distance to some point of that set is ``<=`` that point's radius. Precision is the fraction
  of generated points on the real manifold, recall the fraction of real points on the generated manifold.

Pairwise distances are computed a block of rows at a time, so 50k x 50k distances never sit in memory.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy.special import logsumexp

from ditscale.errors import ConfigError, DataError

# Most pairwise distances held at once (2**24 float64 = 128 MiB): a block of rows times all columns.
MAX_BLOCK_ELEMENTS = 1 << 24


def inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    """Inception Score of classifier logits ``(N, K)`` (softmax taken here, in float64), ADM's splits of
    ``split_size`` consecutive rows; returns the mean of the per-split scores (1 <= IS <= K)."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ConfigError(f"logits must be a non-empty 2-D array (N, classes), got shape {x.shape}")
    if split_size < 1:
        raise ConfigError(f"split_size must be at least 1, got {split_size}")
    if not np.isfinite(x).all():
        raise DataError("the logits contain NaN or inf; check the images and the classifier's weights")
    log_p = x - logsumexp(x, axis=1, keepdims=True)  # log p(y|x), finite even where p underflows to 0
    scores = []
    for start in range(0, len(log_p), split_size):
        part = log_p[start : start + split_size]
        log_marginal = logsumexp(part, axis=0) - np.log(len(part))  # log p(y) of this split
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)  # KL(p(y|x) || p(y)) per image
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


def _as_features(features: np.ndarray, name: str, k: int, dtype) -> np.ndarray:
    x = np.asarray(features, dtype=dtype)
    if x.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array (N, D), got shape {x.shape}")
    if x.shape[0] <= k:
        raise DataError(f"precision/recall with k={k} needs more than {k} images per batch, got {x.shape[0]} {name}")
    if not np.isfinite(x).all():
        raise DataError(f"the {name} contain NaN or inf; check the images and the feature network")
    return x


def _distance_blocks(rows: np.ndarray, cols: np.ndarray, max_elements: int) -> Iterator[tuple[slice, np.ndarray]]:
    """(row slice, squared Euclidean distances of those rows to all ``cols``), a block of rows at a time;
    ``|u|^2 - 2 u.v + |v|^2`` clamped at 0 as ADM does."""
    step = max(1, max_elements // max(1, len(cols)))
    col_norms = np.einsum("ij,ij->i", cols, cols)
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        d = np.einsum("ij,ij->i", block, block)[:, None] - 2.0 * (block @ cols.T) + col_norms[None, :]
        yield slice(start, start + len(block)), np.maximum(d, 0.0, out=d)


def manifold_radii(features: np.ndarray, k: int = 3, *, max_elements: int = MAX_BLOCK_ELEMENTS) -> np.ndarray:
    """Squared distance ``(N,)`` of each of ``features`` ``(N, D)`` to its k-th nearest neighbour in the set
    (itself excluded: the (k+1)-th smallest squared distance, the zero to itself counted)."""
    radii = np.empty(len(features), dtype=features.dtype)
    for rows, d in _distance_blocks(features, features, max_elements):
        radii[rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def _on_manifold(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, max_elements: int) -> np.ndarray:
    """bool ``(len(points),)``: within (``<=``, squared) the radius of at least one of ``centres``."""
    inside = np.zeros(len(points), dtype=bool)
    for rows, d in _distance_blocks(points, centres, max_elements):
        inside[rows] = (d <= radii[None, :]).any(axis=1)
    return inside


def precision_recall(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    k: int = 3,
    *,
    dtype=np.float64,
    max_elements: int = MAX_BLOCK_ELEMENTS,
) -> tuple[float, float]:
    """Improved (precision, recall) in [0, 1] of generated features ``(M, D)`` against real ones ``(N, D)``
    with k-NN balls; distances in ``dtype`` (float64, or float32 for speed), at most ``max_elements`` at once."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    real = _as_features(real_features, "reference features", k, dtype)
    fake = _as_features(fake_features, "sample features", k, dtype)
    if real.shape[1] != fake.shape[1]:
        raise ConfigError(
            f"the features have different widths: {real.shape[1]} (reference) and {fake.shape[1]} "
            "(samples); compute both with the same network"
        )
    real_radii = manifold_radii(real, k, max_elements=max_elements)
    fake_radii = manifold_radii(fake, k, max_elements=max_elements)
    precision = _on_manifold(fake, real, real_radii, max_elements).mean()
    recall = _on_manifold(real, fake, fake_radii, max_elements).mean()
    return float(precision), float(recall)
