"""Weighted back-projection (compute only): single tilt axis along y, aligned projections.

Geometry. A tomogram is indexed (z, y, x) and a tilt series (tilt, y, x), with the tilt axis
along y through the centre of each image. With centred coordinates x_c = x - (nx - 1)/2 and
z_c = z - (nz - 1)/2, the image at angle θ holds the line integrals

    p_θ(x') = ∫ f(z, x) along the line  x' = x_c cos θ + z_c sin θ   (x' centred likewise),

i.e. the specimen rotated by +θ about +y with z towards the electron source, which is the
sign convention we understand IMOD's ``tilt`` to use for a ``.tlt`` file: negating all the
angles mirrors the tomogram in z (its handedness), nothing else. ``tomocare.simulate``
projects with exactly this formula.

Reconstruction. Each image row (one y) is filtered along x by the discrete ramp (Ram-Lak)
filter built in real space (exact zero at DC, no offset), optionally apodised (cosine or
Hamming window), after padding with edge values (the specimen extends beyond the field of
view). Filtered rows are smeared back along their lines, each tilt weighted by its share of
the angular range (half the gap to each neighbour, in radians). The result approximates the
density in the same units as the projections' line integrals (per voxel). Every y-row is an
independent 2-D problem, so a slab of rows reconstructs on its own.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Window = Literal["ramp", "cosine", "hamming"]
WINDOWS: tuple[str, ...] = ("ramp", "cosine", "hamming")


def padded_length(n: int) -> int:
    """FFT length for rows of ``n`` pixels: a power of two at least 2n (no wrap-around)."""
    return 1 << int(np.ceil(np.log2(max(2 * n, 2))))


def ramp_filter(length: int, window: Window = "ramp") -> np.ndarray:
    """Frequency response (``numpy.fft.rfftfreq`` order) of the discrete ramp filter, apodised."""
    n = np.arange(-(length // 2), length - length // 2)
    kernel = np.zeros(length)
    kernel[n == 0] = 0.25
    odd = n % 2 == 1
    kernel[odd] = -1.0 / (np.pi * n[odd]) ** 2
    response = np.fft.rfft(np.fft.ifftshift(kernel)).real
    f = np.fft.rfftfreq(length)  # cycles per pixel, 0..0.5
    if window == "cosine":
        response *= np.cos(np.pi * f)
    elif window == "hamming":
        response *= 0.54 + 0.46 * np.cos(2 * np.pi * f)
    elif window != "ramp":
        raise ValueError(f"unknown filter window {window!r} (use {', '.join(WINDOWS)})")
    return response


def filter_rows(images: np.ndarray, window: Window = "ramp") -> np.ndarray:
    """Ramp-filter the rows (last axis) of ``images``, padded with their edge values."""
    nx = images.shape[-1]
    length = padded_length(nx)
    left = (length - nx) // 2
    pad = [(0, 0)] * (images.ndim - 1) + [(left, length - nx - left)]
    padded = np.pad(images.astype(np.float64, copy=False), pad, mode="edge")
    spectrum = np.fft.rfft(padded, axis=-1) * ramp_filter(length, window)
    return np.fft.irfft(spectrum, n=length, axis=-1)[..., left : left + nx]


def angle_weights(angles_deg: np.ndarray) -> np.ndarray:
    """Angular share of each tilt in radians: half the gap to each neighbour (ends: the full gap)."""
    angles = np.radians(np.asarray(angles_deg, dtype=np.float64))
    if len(angles) == 1:
        return np.array([np.pi])
    order = np.argsort(angles)
    a = angles[order]
    gaps = np.diff(a)
    share = np.empty_like(a)
    share[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    share[0], share[-1] = gaps[0], gaps[-1]
    weights = np.empty_like(share)
    weights[order] = share
    return weights


def backproject(filtered: np.ndarray, angles_deg: np.ndarray, weights: np.ndarray, thickness: int) -> np.ndarray:
    """Back-project filtered images (tilt, y, x) into a slab (thickness, y, x), float32."""
    n_tilts, ny, nx = filtered.shape
    z_c = np.arange(thickness, dtype=np.float64)[:, None] - (thickness - 1) / 2
    x_c = np.arange(nx, dtype=np.float64)[None, :] - (nx - 1) / 2
    out = np.zeros((ny, thickness, nx), dtype=np.float64)
    for image, theta, w in zip(filtered, np.radians(angles_deg), weights):
        pos = np.clip(x_c * np.cos(theta) + z_c * np.sin(theta) + (nx - 1) / 2, 0, nx - 1)
        i0 = np.minimum(np.floor(pos).astype(np.int64), nx - 2) if nx > 1 else np.zeros(pos.shape, np.int64)
        frac = pos - i0
        lo = image[:, i0]  # (y, z, x)
        hi = image[:, np.minimum(i0 + 1, nx - 1)]
        out += w * (lo + frac * (hi - lo))
    return np.ascontiguousarray(out.transpose(1, 0, 2), dtype=np.float32)


def reconstruct_slab(
    images: np.ndarray, angles_deg: np.ndarray, thickness: int, window: Window = "ramp"
) -> np.ndarray:
    """Weighted back-projection of a slab of a tilt series (tilt, y, x) → (thickness, y, x)."""
    angles_deg = np.asarray(angles_deg, dtype=np.float64)
    if images.shape[0] != len(angles_deg):
        raise ValueError(f"{images.shape[0]} images but {len(angles_deg)} angles")
    filtered = filter_rows(np.asarray(images, dtype=np.float64), window)
    return backproject(filtered, angles_deg, angle_weights(angles_deg), thickness)


def project_slab(volume: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Line integrals of a slab (z, y, x) at each angle → (tilt, y, x), float32, per voxel.

    The forward model of :func:`reconstruct_slab`: for every plane z, x' = x_c cos θ + z_c sin θ,
    so the ray through x' meets the plane at x_c = (x' - z_c sin θ) / cos θ, where the plane is
    sampled by linear interpolation and weighted by the path length 1 / cos θ. Outside the
    field of view the edge columns continue (a specimen wider than the image).
    """
    nz, ny, nx = volume.shape
    volume = np.asarray(volume, dtype=np.float64)
    z_c = np.arange(nz, dtype=np.float64)[:, None] - (nz - 1) / 2
    xp = np.arange(nx, dtype=np.float64)[None, :] - (nx - 1) / 2
    out = np.empty((len(angles_deg), ny, nx), dtype=np.float32)
    for t, theta in enumerate(np.radians(np.asarray(angles_deg, dtype=np.float64))):
        c, s = np.cos(theta), np.sin(theta)
        pos = np.clip((xp - z_c * s) / c + (nx - 1) / 2, 0, nx - 1)  # (z, x')
        i0 = np.minimum(np.floor(pos).astype(np.int64), max(nx - 2, 0))
        frac = pos - i0
        i1 = np.minimum(i0 + 1, nx - 1)
        zi = np.arange(nz)[:, None]
        lo = volume[zi, :, i0]  # (z, x', y)
        hi = volume[zi, :, i1]
        total = (lo + frac[..., None] * (hi - lo)).sum(axis=0)  # (x', y)
        out[t] = (total.T / c).astype(np.float32)
    return out
