"""Contrast-guided re-weighting: how much simulated signal and synthesised noise make the real data.

NT2C scales the clean simulated signal S and the synthesised noise V so that their mixture
α·S + β·V + γ has the contrast of the real images X. Here the contrast is the radially averaged
power spectrum: signal and noise are independent, so for every frequency shell k

    P_X(k) ≈ α² P_S(k) + β² P_V(k),

linear in (α², β²), which are fitted by non-negative least squares over the shells from the
lowest non-zero frequency to Nyquist, each shell's equation divided by P_X(k) (relative
residuals: every shell counts alike, not only the strong low frequencies); γ then matches the
means. The spectra are taken on cubic (square) patches of one edge, mean-subtracted, so every
term is measured the same way. The modulation F of the paper is the identity here: the data
are reconstructions (or images) already on a linear scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import nnls

from tomocare.errors import TomocareError


def power_spectrum(patches: np.ndarray) -> np.ndarray:
    """The mean power of a stack of patches (n, d, d[, d]) at every frequency of the patch's grid (the rfft
    layout, mean-subtracted): the full spectrum, not its radial average, because tomographic noise is not
    isotropic (weak along the beam and the tilt axis' missing directions, strong across)."""
    patches = np.asarray(patches, np.float64)
    axes = tuple(range(1, patches.ndim))
    centred = patches - patches.mean(axis=axes, keepdims=True)
    return (np.abs(np.fft.rfftn(centred, axes=axes)) ** 2).mean(axis=0)


def radial_power(patches: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of a stack of cubic (or square) patches (n, d, d[, d]), mean-subtracted,
    averaged over the stack: one value per shell 0 .. d/2 (shell k = frequency k/d cycles per voxel)."""
    patches = np.asarray(patches)
    d = patches.shape[-1]
    power = power_spectrum(patches) / d ** (patches.ndim - 1)
    freqs = np.meshgrid(*[np.fft.fftfreq(d)] * (patches.ndim - 2), np.fft.rfftfreq(d), indexing="ij")
    shell = np.rint(np.sqrt(sum(f**2 for f in freqs)) * d).astype(int)
    # the rfft holds half the spectrum: shells are averages, so the halving does not matter
    inside = shell <= d // 2
    total = np.bincount(shell[inside], power[inside], minlength=d // 2 + 1)
    count = np.bincount(shell[inside], minlength=d // 2 + 1)
    return total / np.maximum(count, 1)


@dataclass(frozen=True)
class Weights:
    """The fitted mixture: input = alpha·S + beta·V + gamma, target = alpha·S + gamma."""

    alpha: float
    beta: float
    gamma: float
    residual: float  # rms relative misfit of the spectra over the fitted shells

    def to_dict(self) -> dict:
        return asdict(self)


def fit_weights(real: np.ndarray, signal: np.ndarray, noise: np.ndarray, *, real_mean: float,
                signal_mean: float) -> Weights:
    """Fit α, β, γ from patches of the real data, of the clean simulated signal and of zero-mean synthesised
    noise (each (n, d, ...) of one edge d) and the means of the real data and of the signal volumes."""
    p_x, p_s, p_v = radial_power(real)[1:], radial_power(signal)[1:], radial_power(noise)[1:]
    if not (np.all(np.isfinite(p_x)) and p_x.min() > 0):
        raise TomocareError("the real data's patches have no power in some frequency shell (constant patches?)")
    design = np.stack([p_s / p_x, p_v / p_x], axis=1)
    (a, b), _ = nnls(design, np.ones_like(p_x))
    residual = float(np.sqrt(np.mean((design @ np.array([a, b]) - 1) ** 2)))
    alpha, beta = float(np.sqrt(a)), float(np.sqrt(b))
    if beta == 0:
        raise TomocareError("re-weighting found no noise in the data's spectrum: the synthesised noise does not "
                            "match it (check the noise patches)")
    return Weights(alpha, beta, float(real_mean - alpha * signal_mean), residual)
