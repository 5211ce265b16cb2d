"""The ice slab and its faint low-frequency background, raw and after the missing wedge.

The background is ``s(z) * (ICE_DENSITY + BACKGROUND_AMPLITUDE * sum_j a_j cos(k_j·r + p_j))``
with ``s`` the slab's soft profile along z. Every term is a z-profile times a plane wave in
(y, x), so the missing wedge acts on it along z only, and it is filtered with the exact
(unwindowed) mask, for the whole volume, by 1-D FFTs of the profiles. The slab's step from
vacuum to ice lies entirely in the missing wedge (on the kz axis): after the wedge the slab
is a constant (its mean over the volume, as a whole-volume FFT filter gives) plus the
filtered waves. The compact wedge kernel used for the objects would instead leak a blurred
slab edge through its smoothed low frequencies.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from tomocare.simulate.fourier import wedge_transfer
from tomocare.simulate.objects import BACKGROUND_AMPLITUDE, ICE_DENSITY, Slab

_F32 = np.float32


def _separable(fz: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """Re(sum_j fz[z, j] fy[y, j] fx[x, j]) as float32, by one real matrix product.

    The product is an ``einsum`` rather than BLAS: BLAS sums in an order that depends on its
    thread count, and the same seed must give the same bytes in any process.
    """
    zy = fz[:, None, :] * fy[None, :, :]
    zy = zy.reshape(-1, fz.shape[1])
    left = np.concatenate([zy.real, -zy.imag], axis=1)
    right = np.concatenate([fx.real, fx.imag], axis=1)
    return np.einsum("ij,kj->ik", left, right).astype(_F32).reshape(len(fz), len(fy), len(fx))


def _axes(slab: Slab, origin, shape):
    z, y, x = (np.arange(n, dtype=np.float64) + o for n, o in zip(shape, origin))
    fy, fx = np.exp(1j * np.outer(y, slab.waves[:, 1])), np.exp(1j * np.outer(x, slab.waves[:, 2]))
    amplitude = BACKGROUND_AMPLITUDE * np.sqrt(2.0 / len(slab.phases)) * np.exp(1j * slab.phases)
    return z, fy, fx, amplitude


def background(slab: Slab, origin, shape) -> np.ndarray:
    """The raw background on the box [origin, origin + shape), float32."""
    z, fy, fx, amplitude = _axes(slab, origin, shape)
    out = np.zeros(shape, _F32)
    rows = np.flatnonzero(slab.profile(z) > 0)
    if len(rows):
        s = slab.profile(z[rows])[:, None]
        fz = s * amplitude * np.exp(1j * np.outer(z[rows], slab.waves[:, 0]))
        # the constant ice density is one more term, with y and x factors of 1
        fz = np.concatenate([fz, ICE_DENSITY * s], axis=1)
        fy = np.concatenate([fy, np.ones((len(fy), 1))], axis=1)
        fx = np.concatenate([fx, np.ones((len(fx), 1))], axis=1)
        out[rows] = _separable(fz, fy, fx)
    return out


def wedged_background(slab: Slab, nz: int, tilt_range: float, origin, shape, extra: float = 0.0) -> np.ndarray:
    """The background after the missing wedge on the box [origin, origin + shape), float32.

    Each wave's z-profile ``s(z) exp(i k_z z)`` is filtered by the wedge's transfer at its
    fixed kx, along kz, on a zero-padded line three times the volume's depth. ``extra`` is a
    density added to the ice's (the objects' mean), filtered the same way.
    """
    z, fy, fx, amplitude = _axes(slab, origin, shape)
    line = np.arange(-nz, 2 * nz, dtype=np.float64)
    n = sfft.next_fast_len(len(line))
    profile = slab.profile(line)[None, :] * np.exp(1j * np.outer(slab.waves[:, 0], line))
    kz = sfft.fftfreq(n)[None, :]
    kx = np.abs(slab.waves[:, 2:3]) / (2 * np.pi)  # cycles per voxel
    filtered = sfft.ifft(sfft.fft(profile, n=n, axis=1) * wedge_transfer(kz, kx, tilt_range), axis=1)
    rows = np.round(z - line[0]).astype(int)
    fz = filtered[:, rows].T * amplitude
    offset = (ICE_DENSITY + extra) * float(np.mean(slab.profile(np.arange(nz, dtype=np.float64))))
    out = _separable(fz, fy, fx)
    out += _F32(offset)
    return out
