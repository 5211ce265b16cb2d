"""Fourier model of a weighted back-projection (WBP) reconstruction, as compact kernels.

Geometry. Axes are (z, y, x) with z the beam axis; the tilt axis is y. Tilting the sample by
an angle t about y measures the central plane of Fourier space rotated by t about ky, i.e. the
plane holding ky and the direction at angle t from kx in the (kx, kz) plane. A tilt series over
[-tilt_range, +tilt_range] therefore measures every frequency whose (kx, kz) direction lies
within ``tilt_range`` of the kx axis, ``|kz| <= |kx| tan(tilt_range)``, and misses the wedge
around the kz axis. The ky axis (the tilt axis itself) and the origin are always measured. The
mask (:func:`wedge_transfer`) has a cosine edge ``WEDGE_EDGE_DEG`` wide.

Noise. Each projection carries white noise; back-projection samples Fourier space with density
∝ 1/|k| and the ramp filter weighs it by |k|, so the reconstructed noise has power ∝ |k| inside
the measured region (and none in the wedge), band-limited by a cosine roll-off to the Nyquist
sphere.

Compact kernels, exact blocks. The wedge's point-spread function decays slowly (its streaks
cross the whole volume), so filtering each block plus a finite halo with the exact mask would
leave visible seams. Instead each filter is the mask's point-spread function windowed to a
ball of ``radius`` voxels (:func:`kernel`). Convolving with a kernel of radius r, a block
padded by >= r on every side gives its core exactly (the FFT's wrap-around only touches the
padding), so blocks join without seams and the result does not depend on the chunking. The
price: the transfer is the mask smoothed over ~1/r cycles/voxel, so the wedge leaks a little
at the lowest frequencies and the streaks reach about r voxels from an object.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft

WEDGE_EDGE_DEG = 4.0
"""Width of the cosine edge of the missing-wedge mask, in degrees."""

NYQUIST_ROLLOFF = (0.85, 1.0)
"""The noise's cosine roll-off, from/to these fractions of the Nyquist frequency."""


def _cosine_step(t: np.ndarray) -> np.ndarray:
    """0 for t <= 0, 1 for t >= 1, a raised cosine in between."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def wedge_transfer(kz: np.ndarray, kx: np.ndarray, tilt_range: float) -> np.ndarray:
    """Transfer (0 to 1) of a ±``tilt_range``° tilt series about y at frequencies (kz, kx)."""
    kz, kx = np.broadcast_arrays(np.abs(kz), np.abs(kx))
    if tilt_range >= 90.0:
        return np.ones(kz.shape)
    angle = np.degrees(np.arctan2(kz, kx))  # 0 on the kx axis, 90 on kz
    angle[(kz == 0) & (kx == 0)] = 0.0  # the origin (and the ky axis) is measured
    start = tilt_range - WEDGE_EDGE_DEG / 2
    return 1.0 - _cosine_step((angle - start) / WEDGE_EDGE_DEG)


def noise_transfer(kz: np.ndarray, ky: np.ndarray, kx: np.ndarray, tilt_range: float) -> np.ndarray:
    """Amplitude (not power) spectrum of WBP noise: sqrt(|k|), wedge, roll-off at Nyquist."""
    k = np.sqrt(kz * kz + ky * ky + kx * kx) / 0.5  # in units of Nyquist
    lo, hi = NYQUIST_ROLLOFF
    return np.sqrt(k) * (1.0 - _cosine_step((k - lo) / (hi - lo))) * wedge_transfer(kz, kx, tilt_range)


@functools.lru_cache(maxsize=8)
def kernel(kind: str, tilt_range: float, radius: int) -> np.ndarray:
    """The real-space kernel of a filter, windowed to a ball of ``radius``, float64.

    ``kind`` "wedge": the missing wedge, (2r+1)² over (z, x) (it does not act along y, the
    tilt axis), scaled to unit sum (it keeps the mean).
    ``kind`` "noise": the WBP noise colouring, (2r+1)³, scaled to unit sum of squares (unit
    white noise in, unit variance out).
    """
    n = sfft.next_fast_len(4 * radius + 1, real=True)
    freq = sfft.fftfreq(n)
    shape: tuple[int, ...]
    if kind == "wedge":
        shape = (n, n)
        transfer = wedge_transfer(freq[:, None], sfft.rfftfreq(n)[None, :], tilt_range)
    else:
        shape = (n, n, n)
        transfer = noise_transfer(freq[:, None, None], freq[None, :, None], sfft.rfftfreq(n)[None, None, :], tilt_range)
    psf = sfft.fftshift(sfft.irfftn(transfer, s=shape))
    centre = n // 2
    psf = psf[(slice(centre - radius, centre + radius + 1),) * len(shape)]
    axis = np.arange(-radius, radius + 1, dtype=np.float64)
    rho = np.sqrt(sum(np.expand_dims(axis**2, [a for a in range(len(shape)) if a != d]) for d in range(len(shape))))
    psf = psf * (1.0 - _cosine_step((rho - radius / 2) / (radius / 2)))  # 1 to r/2, 0 from r
    if kind == "wedge":
        psf /= psf.sum()
    else:
        psf /= np.sqrt(np.sum(psf * psf))
    psf.flags.writeable = False
    return psf


@functools.lru_cache(maxsize=16)
def _kernel_spectrum(kind: str, tilt_range: float, radius: int, shape: tuple[int, ...]) -> np.ndarray:
    """``rfftn`` of the kernel centred on element 0 of a periodic box of ``shape``."""
    k = kernel(kind, tilt_range, radius)
    box = np.zeros(shape, np.float32)
    box[(slice(0, 2 * radius + 1),) * len(shape)] = k
    box = np.roll(box, (-radius,) * len(shape), axis=tuple(range(len(shape))))
    out = sfft.rfftn(box).astype(np.complex64)
    out.flags.writeable = False
    return out


def halo_padding(n: int, halo: int) -> tuple[int, int]:
    """Voxels to add before and after a block edge of ``n``: at least ``halo`` each, to a fast FFT size."""
    if halo == 0:
        return 0, 0
    extra = sfft.next_fast_len(n + 2 * halo, real=True) - n - 2 * halo
    return halo + extra // 2, halo + extra - extra // 2


def wedge_halo(radius: int) -> tuple[int, int, int]:
    """The halo (z, y, x) the wedge kernel of ``radius`` needs: none along the tilt axis."""
    return (radius, 0, radius)


def convolve(padded: np.ndarray, kind: str, tilt_range: float, radius: int) -> np.ndarray:
    """Circular convolution of ``padded`` with :func:`kernel`; exact >= ``radius`` from the edges.

    The wedge kernel convolves every (z, x) plane; the noise kernel the whole box.
    """
    axes = (0, 2) if kind == "wedge" else (0, 1, 2)
    box = tuple(padded.shape[a] for a in axes)
    if any(n < 2 * radius + 1 for n in box):
        raise ValueError(f"box {padded.shape} is smaller than a kernel of radius {radius}")
    spectrum = sfft.rfftn(padded.astype(np.float32, copy=False), axes=axes)
    transfer = _kernel_spectrum(kind, float(tilt_range), int(radius), box)
    spectrum *= transfer[:, None, :] if kind == "wedge" else transfer
    return sfft.irfftn(spectrum, s=box, axes=axes).astype(np.float32, copy=False)
