"""Fourier shell correlation between two volumes, with the resolution axis in 1/Å."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FSC:
    frequency: np.ndarray  # shell centres, 1/Å
    correlation: np.ndarray
    n_voxels: np.ndarray  # Fourier voxels per shell (for the noise band: 3/sqrt(n))

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


def fsc(a: np.ndarray, b: np.ndarray, voxel_size: float, n_shells: int | None = None) -> FSC:
    """FSC of two equally shaped volumes (cubic or not), shells up to Nyquist."""
    if a.shape != b.shape:
        raise ValueError(f"FSC needs equal shapes, got {a.shape} and {b.shape}")
    fa = np.fft.rfftn(a.astype(np.float64) - a.mean())
    fb = np.fft.rfftn(b.astype(np.float64) - b.mean())
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
