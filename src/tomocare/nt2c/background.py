"""Background patches: where an enhanced (coarse-denoised) image is flat, the raw voxels are noise.

NT2C (Li et al., Bioinformatics 2022) tiles the enhanced image in square patches of edge ``d``
(step ``d/2``), splits each into its 2^ndim sub-patches (4 in 2-D, the paper's N = 4; 8 octants
in 3-D) and declares the patch background when every pair of sub-patches is similar: SSIM at
least ``threshold`` (0.7). SSIM here is one window per sub-patch (means, variances and the
covariance of the aligned sub-patches), on the enhanced image mapped to [0, 1] by its robust
range, as the paper's 8-bit images are, so C1 = 0.01² and C2 = 0.03²: a sub-patch that holds an
edge of a particle has a variance far above C2, and its pairs fall below the threshold.

Out-of-core: one dask task per row of patches (all x positions of one (z, y) or (image, y)
start), which reads the band of the enhanced image the row covers and returns the patches'
second moments (a few numbers each) and the band's 0.1 and 99.9 percentiles; the driver maps
the moments to SSIM with the robust range (the median of the bands' percentiles) and decides.
Raw patches are then read one task each, only at the chosen corners.

The raw patches still sit on the ice: its level, and its slope where the ice thickens
(:func:`about_plane` takes both away), which belong to the signal, not to the noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from distributed import Client

from tomocare.errors import TomocareError
from tomocare.train.sampler import LazyArray

C1, C2 = 0.01**2, 0.03**2


@dataclass(frozen=True)
class Background:
    """The patch grid's verdicts: ``corners`` (n, ndim+1: image or 0, then the patch's first voxel along
    the ``ndim`` axes), each patch's smallest pairwise SSIM ``ssim`` (n,) and ``background`` (n,) bool."""

    corners: np.ndarray
    ssim: np.ndarray
    background: np.ndarray
    patch: int
    ndim: int
    value_range: tuple[float, float]

    @property
    def found(self) -> np.ndarray:
        return self.corners[self.background]


def starts(n: int, patch: int, step: int) -> list[int]:
    """Patch starts along an axis of ``n`` voxels: every ``step``, the last one flush with the end."""
    if n < patch:
        return []
    out = list(range(0, n - patch + 1, step))
    return out if out[-1] == n - patch else [*out, n - patch]


def sub_patches(patch: np.ndarray) -> list[np.ndarray]:
    """The 2^ndim sub-patches of a patch of even edge (halves along every axis), each flattened."""
    half = patch.shape[0] // 2
    return [patch[tuple(slice(i * half, (i + 1) * half) for i in idx)].ravel()
            for idx in itertools.product((0, 1), repeat=patch.ndim)]


def moments(patch: np.ndarray) -> np.ndarray:
    """[means (k), covariance matrix (k × k) flattened] of the k = 2^ndim sub-patches, float64."""
    subs = np.stack(sub_patches(np.asarray(patch, np.float64)))
    means = subs.mean(axis=1)
    dev = subs - means[:, None]
    cov = dev @ dev.T / dev.shape[1]
    return np.concatenate([means, cov.ravel()])


def min_ssim(stats: np.ndarray, low: float, high: float) -> np.ndarray:
    """The smallest pairwise single-window SSIM of each patch's sub-patches, from :func:`moments` rows,
    the image mapped to [0, 1] by (value - low) / (high - low)."""
    stats = np.atleast_2d(stats)
    k = int(round((np.sqrt(4 * stats.shape[1] + 1) - 1) / 2))  # k + k² values
    scale = max(high - low, 1e-30)
    mu = (stats[:, :k] - low) / scale
    cov = stats[:, k:].reshape(-1, k, k) / scale**2
    var = np.diagonal(cov, axis1=1, axis2=2)
    i, j = np.triu_indices(k, 1)
    lum = (2 * mu[:, i] * mu[:, j] + C1) / (mu[:, i] ** 2 + mu[:, j] ** 2 + C1)
    cs = (2 * cov[:, i, j] + C2) / (var[:, i] + var[:, j] + C2)
    return (lum * cs).min(axis=1)


def _row_moments(image: LazyArray, row: tuple[int, ...], xs: Sequence[int], patch: int, ndim: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One task: the moments of the patches of a row (image or z start, then y start for 3-D) and the band's
    0.1 / 99.9 percentiles."""
    if ndim == 3:
        z, y = row
        band = np.asarray(image[z : z + patch, y : y + patch, :], np.float32)
    else:
        i, y = row
        band = np.asarray(image[i : i + 1, y : y + patch, :], np.float32)[0]
    out = np.stack([moments(band[..., x : x + patch]) for x in xs])
    return out, np.percentile(band, [0.1, 99.9])


def find_background(client: Client, enhanced: LazyArray, *, patch: int, ndim: int, threshold: float = 0.7,
                    step: int | None = None) -> Background:
    """The background verdict of every patch of ``enhanced`` (z, y, x; for 2-D a stack (n, y, x))."""
    if patch < 4 or patch % 2:
        raise TomocareError(f"noise patch size {patch}: give an even number of at least 4")
    step = step or patch // 2
    shape = tuple(enhanced.shape)
    lead = starts(shape[0], patch, step) if ndim == 3 else list(range(shape[0]))
    ys, xs = starts(shape[-2], patch, step), starts(shape[-1], patch, step)
    if not (lead and ys and xs):
        raise TomocareError(f"an image of shape {shape} is smaller than one noise patch ({patch} voxels a side)")
    rows = list(itertools.product(lead, ys))
    futures = client.map(_row_moments, [enhanced] * len(rows), rows, [xs] * len(rows), [patch] * len(rows),
                         [ndim] * len(rows), pure=False)
    results = client.gather(futures)
    stats = np.concatenate([r[0] for r in results])
    bounds = np.array([r[1] for r in results])
    low, high = float(np.median(bounds[:, 0])), float(np.median(bounds[:, 1]))
    corners = np.array([(0, a, y, x) if ndim == 3 else (a, y, x) for a, y in rows for x in xs], np.int64)
    if ndim == 3:
        corners = corners[:, 1:]
    ssim = min_ssim(stats, low, high)
    return Background(corners, ssim, ssim >= threshold, patch, ndim, (low, high))


def read_patch(raw: LazyArray | np.ndarray, corner: tuple[int, ...], patch: int, ndim: int) -> np.ndarray:
    """The patch of edge ``patch`` at ``corner`` (z, y, x; 2-D: image, y, x), float32."""
    if ndim == 3:
        z, y, x = corner
        return np.asarray(raw[z : z + patch, y : y + patch, x : x + patch], np.float32)
    i, y, x = corner
    return np.asarray(raw[i : i + 1, y : y + patch, x : x + patch], np.float32)[0]


def read_patches(client: Client, raw: LazyArray, corners: np.ndarray, patch: int, ndim: int) -> list:
    """Futures of the raw patches at ``corners`` (one task each), in order."""
    return client.map(read_patch, [raw] * len(corners), [tuple(int(v) for v in c) for c in corners],
                      [patch] * len(corners), [ndim] * len(corners), pure=False)


def random_corners(shape: tuple[int, ...], patch: int, ndim: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` corners of patches of edge ``patch`` drawn uniformly inside ``shape`` (2-D: any image of the stack)."""
    if min(shape[-2:]) < patch or (ndim == 3 and shape[0] < patch):
        raise TomocareError(f"shape {tuple(shape)} is smaller than a patch of {patch}")
    lead = shape[0] - patch + 1 if ndim == 3 else shape[0]
    return np.stack([rng.integers(0, lead, n), *(rng.integers(0, m - patch + 1, n) for m in shape[1:])], axis=1)


def about_plane(patches: np.ndarray) -> np.ndarray:
    """Each patch of a stack (n, d, d) or (n, d, d, d) minus its least-squares plane (a + b·y + c·x [+ e·z]): the
    fluctuation about the local background level and slope, float32."""
    patches = np.asarray(patches, np.float64)
    n, shape = len(patches), patches.shape[1:]
    axes = np.meshgrid(*[np.arange(m) - (m - 1) / 2 for m in shape], indexing="ij")
    design = np.stack([np.ones(int(np.prod(shape))), *(a.ravel() for a in axes)], axis=1)
    flat = patches.reshape(n, -1)
    coefficients, *_ = np.linalg.lstsq(design, flat.T, rcond=None)
    return (flat - (design @ coefficients).T).reshape(patches.shape).astype(np.float32)


def choose(found: np.ndarray, most: int, seed: int) -> np.ndarray:
    """At most ``most`` of the ``found`` corners, drawn without replacement from ``seed``, in grid order."""
    if len(found) <= most:
        return found
    keep = np.sort(np.random.default_rng(seed).choice(len(found), most, replace=False))
    return found[keep]
