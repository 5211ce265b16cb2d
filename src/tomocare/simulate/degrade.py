"""Degradations of a simulated tomogram: what turns the noise-free volume into a training input.

Every model but ``poisson`` is box-local: :meth:`Degradation.apply` degrades any box of the
clean volume given the box's origin, from random fields defined on the whole voxel lattice in
seeded tiles (:func:`tomocare.simulate.noise.white_noise`), so a block or a training patch is
generated on its own and, up to float rounding, the result does not depend on the chunking.

The SNR is var(clean) / var(noise) over the volume, clean being the noise-free volume with the
missing wedge (the denoising target); var(clean) comes from
:func:`~tomocare.simulate.tomogram.estimate_signal_variance` (see :func:`degradation`).

- ``gaussian``: white noise of standard deviation sqrt(var(clean) / snr).
- ``wbp``: noise coloured like a weighted back-projection (as :func:`simulate_tomogram`'s halves).
- ``salt-and-pepper``: a ``fraction`` of voxels (default 10 %), chosen independently, half of
  them set to ``high`` = m + a·s and half to ``low`` = m - a·s, where m is the clean volume's
  mean (:func:`volume_mean`: ice plus the objects' mean density, over the slab), s = sqrt(var(clean)) and
  a = sqrt(max(1 / (fraction · snr) - 1, 1)): values far out in both tails (a ≈ 10 for 10 % at
  SNR 0.1), the noise variance fraction · (a² + 1) · s² giving the requested SNR.
- ``poisson``: Poisson noise in the projections of a tilt series, reconstructed by WBP; not
  box-local: made for the whole volume at once, in memory (see :func:`poisson_pair`; fine for
  moderate sizes, a few hundred voxels a side).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import dask.array as da
import numpy as np
from scipy.special import ndtri

from tomocare.errors import TomocareError
from tomocare.simulate.noise import noise_block, white_noise
from tomocare.simulate.objects import ICE_DENSITY, Phantom

NOISE_HALO = 16  # radius of the WBP noise kernel, as in simulate_tomogram
NOISES = ("gaussian", "wbp", "salt-and-pepper", "poisson")
LOCAL_NOISES = NOISES[:3]
# lattice streams of the noise fields (the ``half`` of white_noise); simulate_tomogram's halves use 0 and 1
_GAUSSIAN, _WBP, _SALT = 10, 11, 12
_F32 = np.float32


class Degradation(ABC):
    """A seeded degradation of boxes of a clean volume; ``apply(clean_box, origin)`` -> degraded box."""

    name: ClassVar[str]
    local: ClassVar[bool] = True

    @abstractmethod
    def apply(self, clean: np.ndarray, origin) -> np.ndarray:
        """The degraded box, float32, of the clean box whose first voxel is at ``origin`` (z, y, x)."""


@dataclass(frozen=True)
class Gaussian(Degradation):
    """White gaussian noise of standard deviation ``std``."""

    std: float
    seed: int
    name: ClassVar[str] = "gaussian"

    def apply(self, clean: np.ndarray, origin) -> np.ndarray:
        return clean + _F32(self.std) * white_noise(self.seed, _GAUSSIAN, origin, clean.shape)


@dataclass(frozen=True)
class WbpNoise(Degradation):
    """Noise coloured like a WBP reconstruction over ±``tilt_range``°, standard deviation ``std``."""

    std: float
    seed: int
    tilt_range: float
    name: ClassVar[str] = "wbp"

    def apply(self, clean: np.ndarray, origin) -> np.ndarray:
        noise = noise_block(self.seed, _WBP, origin, clean.shape, NOISE_HALO, self.tilt_range)
        return clean + _F32(self.std) * noise


@dataclass(frozen=True)
class SaltAndPepper(Degradation):
    """A ``fraction`` of voxels set to ``low`` or ``high`` (half each, drawn per voxel)."""

    fraction: float
    low: float
    high: float
    seed: int
    name: ClassVar[str] = "salt-and-pepper"

    def apply(self, clean: np.ndarray, origin) -> np.ndarray:
        u = white_noise(self.seed, _SALT, origin, clean.shape)  # |u| beyond the (1 - f/2) quantile: prob f
        cut = _F32(-ndtri(self.fraction / 2))
        out = np.array(clean, dtype=np.float32, copy=True)
        out[u > cut] = self.high
        out[u < -cut] = self.low
        return out


@dataclass(frozen=True)
class Poisson(Degradation):
    """Poisson noise in the projections: whole-volume only (:func:`poisson_pair`)."""

    snr: float
    seed: int
    name: ClassVar[str] = "poisson"
    local: ClassVar[bool] = False

    def apply(self, clean: np.ndarray, origin) -> np.ndarray:
        raise TomocareError("poisson noise lives in the projections: it is made for whole volumes (simulate-pairs), "
                            "not box by box")


def check_noise(name: str) -> str:
    """``name`` if it is a noise model, else a one-line TomocareError listing them."""
    if name not in NOISES:
        raise TomocareError(f"noise {name!r}: use one of {', '.join(NOISES)}")
    return name


def degradation(name: str, *, seed: int, snr: float, signal_var: float, mean: float, tilt_range: float,
                fraction: float = 0.1) -> Degradation:
    """The degradation ``name`` set for ``snr`` given var(clean) ``signal_var`` and the ice's mean density."""
    std = math.sqrt(signal_var / snr)
    if check_noise(name) == "gaussian":
        return Gaussian(std, seed)
    if name == "wbp":
        return WbpNoise(std, seed, tilt_range)
    if name == "salt-and-pepper":
        if not 0 < fraction < 1:
            raise TomocareError(f"salt-and-pepper fraction must be in (0, 1), got {fraction!r}")
        a = math.sqrt(max(1.0 / (fraction * snr) - 1.0, 1.0)) * math.sqrt(signal_var)
        return SaltAndPepper(fraction, mean - a, mean + a, seed)
    return Poisson(snr, seed)


def degrade_lazy(clean: da.Array, model: Degradation) -> da.Array:
    """``clean`` degraded block by block (each block from its own origin: independent tasks)."""
    if not model.local:
        model.apply(np.empty((0, 0, 0), np.float32), (0, 0, 0))  # raises its one-line message

    def block(x: np.ndarray, block_info=None) -> np.ndarray:
        origin = [lo for lo, _ in block_info[0]["array-location"]]
        return model.apply(x, origin)

    return da.map_blocks(block, clean, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))


def volume_mean(phantom: Phantom) -> float:
    """The mean of the clean volume: (ice + the objects' mean density in ice) over the slab profile."""
    z = np.arange(phantom.shape[0], dtype=np.float64)
    return float((ICE_DENSITY + phantom.object_density) * np.mean(phantom.slab.profile(z)))


@dataclass(frozen=True)
class PoissonPair:
    """A Poisson pair in memory: ``input`` (the noisy reconstruction), ``clean`` (the same reconstruction of
    the noise-free counts), ``phantom`` (before the wedge), all (z, y, x) float32; ``dose`` in e/pixel/tilt."""

    input: np.ndarray
    clean: np.ndarray
    phantom: np.ndarray
    dose: float
    snr: float  # as measured: var(clean) / var(input - clean)


def poisson_pair(shape: tuple[int, int, int], *, seed: int, snr: float, tilt_range: float, voxel_size: float,
                 step: float = 3.0, mean_free_path: float = 400.0, pilot_dose: float = 100.0) -> PoissonPair:
    """A tilt series of the phantom (:func:`~tomocare.simulate.simulate_tilt_series`, ±``tilt_range``° by
    ``step``, capped at 87°) with Poisson counts, reconstructed by WBP over the whole volume.

    Counts N are linearised as (1 - N / dose) · mean_free_path / voxel_size (Beer-Lambert to first
    order, so the noise is exactly Poisson, scaled) before the reconstruction. The reconstructed
    noise variance is ∝ 1/dose, so one pilot at ``pilot_dose`` sets the dose that gives ``snr``
    = var(clean) / var(noise), clean being the reconstruction of the noise-free counts.
    """
    from tomocare.simulate.tiltseries import simulate_tilt_series
    from tomocare.tilt.reconstruct import reconstruct_lazy

    scale = mean_free_path / voxel_size
    nz = shape[0]

    def series(dose: float):
        return simulate_tilt_series(shape, max_angle=min(float(tilt_range), 87.0), step=step, dose=dose,
                                    mean_free_path=mean_free_path, voxel_size=voxel_size, seed=seed)

    def linear(counts: da.Array, dose: float) -> da.Array:
        return (1 - counts / np.float32(dose)) * np.float32(scale)

    pilot = series(pilot_dose)
    clean = reconstruct_lazy(linear(pilot.clean, pilot_dose), pilot.angles, nz).compute()
    noise = reconstruct_lazy(linear(pilot.noisy, pilot_dose) - linear(pilot.clean, pilot_dose), pilot.angles, nz)
    signal_var, noise_var = float(np.var(clean, dtype=np.float64)), float(noise.var(dtype=np.float64).compute())
    dose = pilot_dose * noise_var * snr / max(signal_var, 1e-30)
    final = series(dose)
    noisy = reconstruct_lazy(linear(final.noisy, dose), final.angles, nz).compute()
    measured = signal_var / max(float(np.var(noisy - clean, dtype=np.float64)), 1e-30)
    return PoissonPair(noisy, clean, final.phantom.compute(), dose, measured)
