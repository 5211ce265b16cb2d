"""Fourier shell correlation between two volumes, with the resolution axis in 1/Å."""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

import numpy as np

from tomocare.io.atomic import write_atomic

THRESHOLDS = (0.5, 0.143)


@dataclass(frozen=True)
class FSC:
    frequency: np.ndarray  # shell centres, 1/Å
    correlation: np.ndarray
    n_voxels: np.ndarray  # Fourier voxels per shell (for the noise band: 3/sqrt(n)); summed over sub-volumes
    method: str = "whole volume"  # or "mean of K sub-volumes of edge E"
    n_subvolumes: int = 1

    def crossing(self, threshold: float) -> float | None:
        """Resolution (Å) where the curve first falls below ``threshold``; None if it never does."""
        below = np.nonzero(self.correlation < threshold)[0]
        below = below[below > 0]
        if below.size == 0:
            return None
        i = int(below[0])
        f0, f1 = self.frequency[i - 1], self.frequency[i]
        c0, c1 = self.correlation[i - 1], self.correlation[i]
        f = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1) if c0 != c1 else f1
        return float(1.0 / f) if f > 0 else None

    def resolutions(self) -> dict[str, float | None]:
        """Crossings of 0.5 and 0.143 in Å (None: the curve stays above it up to Nyquist)."""
        return {f"{t:g}": self.crossing(t) for t in THRESHOLDS}

    def noise_band(self, n_sigma: float = 3.0) -> np.ndarray:
        """``n_sigma / sqrt(n_voxels)`` per shell: where the FSC of unrelated volumes lies."""
        return n_sigma / np.sqrt(np.maximum(self.n_voxels, 1))


def resolution_text(resolution: float | None, spec: str = ".1f", unit: str = " Å") -> str:
    """A crossing as text, ``12.3 Å``; ``Nyquist`` where there is none (None: the curve stays
    above the threshold up to Nyquist). Tables pass ``spec=".2f", unit=""``."""
    return f"{resolution:{spec}}{unit}" if resolution else "Nyquist"


TAPER = 8  # voxels of the soft box edge applied before every FSC


def soft_edges(volume: np.ndarray, width: int = TAPER) -> np.ndarray:
    """Mean-subtracted, faded to zero over ``width`` voxels at every face by a cosine ramp.

    Without it the step at the box edges, which the FFT wraps around, is shared by both halves
    and correlates the high-frequency shells: smoothed volumes then read as resolved to Nyquist.
    """
    out = volume.astype(np.float64) - volume.mean()
    for axis, n in enumerate(volume.shape):
        w = min(width, n // 4)
        if w < 1:
            continue
        ramp = np.ones(n)
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(w) + 0.5) / w)
        ramp[:w], ramp[n - w:] = edge, edge[::-1]
        out *= ramp.reshape([-1 if i == axis else 1 for i in range(volume.ndim)])
    return out


def fsc(a: np.ndarray, b: np.ndarray, voxel_size: float, n_shells: int | None = None, *, taper: int = TAPER) -> FSC:
    """FSC of two equally shaped volumes (cubic or not), shells up to Nyquist, after
    :func:`soft_edges` (``taper=0``: only the means removed)."""
    if a.shape != b.shape:
        raise ValueError(f"FSC needs equal shapes, got {a.shape} and {b.shape}")
    fa = np.fft.rfftn(soft_edges(a, taper))
    fb = np.fft.rfftn(soft_edges(b, taper))
    freqs = np.meshgrid(
        *[np.fft.fftfreq(n) for n in a.shape[:-1]], np.fft.rfftfreq(a.shape[-1]), indexing="ij"
    )
    radius = np.sqrt(sum(f**2 for f in freqs))  # cycles per voxel
    n_shells = n_shells or min(a.shape) // 2
    shell = np.minimum((radius * 2 * n_shells).astype(int), n_shells)  # shell n_shells: beyond Nyquist
    # rfft stores half the spectrum; the other half is the conjugate and adds the same sums.
    num = np.bincount(shell.ravel(), (fa * np.conj(fb)).real.ravel(), n_shells + 1)[:n_shells]
    pa = np.bincount(shell.ravel(), (np.abs(fa) ** 2).ravel(), n_shells + 1)[:n_shells]
    pb = np.bincount(shell.ravel(), (np.abs(fb) ** 2).ravel(), n_shells + 1)[:n_shells]
    count = np.bincount(shell.ravel(), minlength=n_shells + 1)[:n_shells]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(pa * pb > 0, num / np.sqrt(pa * pb), 0.0)
    centres = (np.arange(n_shells) + 0.5) / (2 * n_shells) / voxel_size
    return FSC(centres, corr, count)


def fsc_subvolumes(
    a, b, voxel_size: float, *, size: int = 128, count: int = 8, n_shells: int | None = None
) -> FSC:
    """FSC for volumes too large to transform whole: the mean over ``count`` cubes of edge ``size``.

    ``a`` and ``b`` are array-likes (read lazily: one cube of each in memory at a time). The
    cubes sit on a regular lattice spread through the volume (:func:`subvolume_corners`); the
    correlations are averaged shell by shell and ``n_voxels`` is summed over the cubes (the
    noise band of the mean). The result is labelled in ``method``; it measures the same
    resolution as a whole-volume FSC but at the cubes' frequency sampling.
    """
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"FSC needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    corners, edge = subvolume_corners(tuple(a.shape), size, count)
    curves = []
    for corner in corners:
        sl = tuple(slice(c, c + edge) for c in corner)
        curves.append(fsc(np.asarray(a[sl]), np.asarray(b[sl]), voxel_size, n_shells))
    corr = np.mean([c.correlation for c in curves], axis=0)
    count_sum = np.sum([c.n_voxels for c in curves], axis=0)
    return FSC(curves[0].frequency, corr, count_sum, f"mean of {len(curves)} sub-volumes of edge {edge}", len(curves))


def subvolume_corners(shape: tuple[int, ...], size: int, count: int) -> tuple[list[tuple[int, ...]], int]:
    """Up to ``count`` corners of cubes of edge ``min(size, shape)`` on a lattice spanning the volume."""
    edge = min(int(size), *shape)
    edge -= edge % 2
    per_axis = max(1, math.ceil(count ** (1 / len(shape))))
    axes = [sorted({int(round(v)) for v in np.linspace(0, n - edge, per_axis if n > edge else 1)}) for n in shape]
    corners = list(itertools.product(*axes))
    if len(corners) > count:
        corners = [corners[int(i)] for i in np.linspace(0, len(corners) - 1, count).round()]
    return corners, edge


def write_fsc_csv(curves: dict[str, FSC], path: str | os.PathLike) -> None:
    """One row per shell: frequency (1/Å), resolution (Å), then each curve and the 3σ band."""
    names = list(curves)
    first = curves[names[0]]
    lines = ["frequency_per_A,resolution_A," + ",".join(f"fsc_{n}" for n in names)
             + "," + ",".join(f"noise3sigma_{n}" for n in names)]
    for i, fr in enumerate(first.frequency):
        cells = [f"{fr:.6g}", f"{1 / fr:.4g}"]
        cells += [f"{curves[n].correlation[i]:.6f}" for n in names]
        cells += [f"{curves[n].noise_band()[i]:.6f}" for n in names]
        lines.append(",".join(cells))
    write_atomic(path, "".join(line + "\n" for line in lines))
