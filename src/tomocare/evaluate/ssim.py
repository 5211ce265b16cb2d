"""Structural similarity in 3-D, Gaussian-weighted as in Wang et al. (2004), with scipy."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # an 11-tap window for sigma 1.5, as in Wang et al. and scikit-image
K1, K2 = 0.01, 0.03


def ssim_radius(sigma: float = SSIM_SIGMA) -> int:
    """Half-width of the Gaussian window: voxels this close to a face are left out of the mean."""
    return int(SSIM_TRUNCATE * sigma + 0.5)


def ssim_map(x: np.ndarray, reference: np.ndarray, data_range: float, *, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Local SSIM at every voxel (float64), from Gaussian-weighted means, variances, covariance.

    Population (not sample) statistics; ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with ``L`` the
    data range. Values within :func:`ssim_radius` of a face depend on the padding (scipy's
    ``reflect``) and are not used by :func:`ssim`.
    """
    x = np.asarray(x, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=SSIM_TRUNCATE)

    ux, ur = smooth(x), smooth(r)
    vx = smooth(x * x) - ux * ux
    vr = smooth(r * r) - ur * ur
    cov = smooth(x * r) - ux * ur
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * ux * ur + c1) * (2 * cov + c2)) / ((ux**2 + ur**2 + c1) * (vx + vr + c2))


def ssim(x: np.ndarray, reference: np.ndarray, *, data_range: float | None = None, sigma: float = SSIM_SIGMA) -> float:
    """Mean SSIM over the voxels at least one window radius from every face.

    ``data_range`` defaults to the reference's ``max - min``. Agrees with
    ``skimage.metrics.structural_similarity(x, reference, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...)``.
    """
    if data_range is None:
        data_range = float(np.max(reference) - np.min(reference))
    pad = ssim_radius(sigma)
    if min(np.shape(x)) <= 2 * pad:
        raise ValueError(f"SSIM needs every side longer than {2 * pad} voxels, got {np.shape(x)}")
    inner = tuple(slice(pad, n - pad) for n in np.shape(x))
    return float(ssim_map(x, reference, data_range, sigma=sigma)[inner].mean())
