"""Feature statistics and the Fréchet distance between two Gaussians (FID, sFID, the shapes FD).

``d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))`` (Dowson & Landau 1982), computed as
ADM's evaluator and pytorch-fid do: ``scipy.linalg.sqrtm`` of the product, with their safeguards (an
``eps * I`` retry when the product's square root is not finite, and a tolerance on the imaginary part
that rounding leaves). :func:`frechet_distance_eig` is an independent eigenvalue form of the same
quantity, robust to singular covariances, used to cross-check the first.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from ditscale.errors import ConfigError, DataError

# Largest |imaginary part| on the diagonal of sqrtm(S1 S2) accepted as rounding (ADM / pytorch-fid use 1e-3).
IMAG_TOLERANCE = 1e-3


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (``np.cov``, unbiased, rows are samples) of features ``(N, D)``,
    in float64. Needs N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"features must be a 2-D array (N, D), got shape {x.shape}")
    if x.shape[0] < 2:
        raise DataError(f"a covariance needs at least 2 images, got {x.shape[0]}; evaluate more images")
    if not np.isfinite(x).all():
        raise DataError("the features contain NaN or inf; check the images and the feature network's weights")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _checked(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, ...]:
    """The four statistics as float64 arrays, after checking that their shapes agree: mu (D,), sigma (D, D)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ConfigError(
            f"the means must be vectors of one length, got shapes {mu1.shape} and {mu2.shape}; "
            "compare statistics of the same features"
        )
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ConfigError(
                f"{name} has shape {sigma.shape} but the means have length {d}; covariances must be ({d}, {d})"
            )
    if not all(np.isfinite(a).all() for a in (mu1, sigma1, mu2, sigma2)):
        raise DataError("the statistics contain NaN or inf; recompute them from valid features")
    return mu1, sigma1, mu2, sigma2


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its singular-matrix warning (the caller checks finiteness itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        with np.errstate(all="ignore"):
            return linalg.sqrtm(matrix)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): mu (D,), sigma (D, D).

    If ``sqrtm(sigma1 @ sigma2)`` is not finite (a near-singular product), it is retried with ``eps * I``
    added to both covariances (a warning says so). A result whose imaginary diagonal exceeds 1e-3 raises
    :class:`DataError`; a smaller imaginary part is rounding and is dropped.
    """
    mu1, sigma1, mu2, sigma2 = _checked(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"the covariance product is singular; adding {eps} to the covariances' diagonal",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise DataError(
                "the Fréchet distance is not finite even with eps added to the covariances; "
                "use more images or pass a larger eps"
            )
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > IMAG_TOLERANCE:
            raise DataError(
                f"sqrtm(sigma1 @ sigma2) has an imaginary component {imag:.3g} > {IMAG_TOLERANCE}: "
                "the covariances are not valid; recompute them from more images"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance (D, D) by ``eigh``, negative rounding eigenvalues clipped to 0."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_eig(mu1, sigma1, mu2, sigma2) -> float:
    """The same distance as :func:`frechet_distance` by eigenvalues: ``tr sqrtm(S1 S2)`` is the sum of the
    square roots of the eigenvalues of the symmetric PSD matrix ``sqrt(S1) S2 sqrt(S1)`` (which has the
    eigenvalues of ``S1 S2``), clipped at 0. Needs no ``eps`` for singular covariances."""
    mu1, sigma1, mu2, sigma2 = _checked(mu1, sigma1, mu2, sigma2)
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    tr_covmean = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
