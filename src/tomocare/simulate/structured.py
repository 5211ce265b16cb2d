"""A tomogram whose noise is not the simulator's default: Poisson in the projections, under an ice gradient.

The phantom is projected (:func:`~tomocare.simulate.simulate_tilt_series`); the expected counts
of every tilt are multiplied by a transmission ramp across x (``ramp``: thicker ice on one side
lets fewer electrons through), drawn as Poisson counts and linearised ((1 - N / (dose·r)) ·
mean_free_path / voxel_size, Beer-Lambert to first order); then reconstructed by WBP. The noise
is thus coloured by the reconstruction, has the statistics of counting, and its variance grows
across x as 1/r: structured and non-stationary. The whole tilt series gives the ``full``
tomogram (what data without halves is); its even and odd tilts give two halves with
independent noise (for Noise2Noise, the upper reference); ``clean`` is the reconstruction of the
noise-free counts, all tilts. In memory: for volumes of a few hundred voxels a side.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np

from tomocare.simulate.tiltseries import poisson_noise, simulate_tilt_series

_STREAM = 21  # Poisson stream of the structured counts


@dataclass(frozen=True)
class StructuredTomogram:
    """``full``, ``even``, ``odd`` and ``clean`` (z, y, x) float32; ``particles`` as the simulator's table."""

    full: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    clean: np.ndarray
    particles: np.ndarray
    dose: float
    snr: float  # measured: var(clean) / var(full - clean)


def structured_tomogram(shape: tuple[int, int, int], *, seed: int, snr: float = 0.1, voxel_size: float = 10.0,
                        tilt_range: float = 60.0, step: float = 3.0, ramp: tuple[float, float] = (1.0, 0.3),
                        mean_free_path: float = 400.0, pilot_dose: float = 100.0) -> StructuredTomogram:
    """A tomogram of ``shape`` whose full reconstruction has about ``snr`` (set by the dose, from a pilot)."""
    nz, _, nx = shape
    scale = np.float32(mean_free_path / voxel_size)
    transmission = np.linspace(ramp[0], ramp[1], nx, dtype=np.float32)

    def series(dose: float):
        return simulate_tilt_series(shape, max_angle=min(float(tilt_range), 87.0), step=step, dose=dose,
                                    mean_free_path=mean_free_path, voxel_size=voxel_size, seed=seed)

    def reconstructions(dose: float) -> tuple[np.ndarray, ...]:
        from tomocare.tilt.reconstruct import reconstruct_lazy

        s = series(dose)
        expected = s.clean * transmission
        noisy = (1 - poisson_noise(expected, seed, _STREAM) / (np.float32(dose) * transmission)) * scale
        clean = (1 - s.clean / np.float32(dose)) * scale
        n = len(s.angles)
        halves = [np.arange(0, n, 2), np.arange(1, n, 2)]
        out = [reconstruct_lazy(clean, s.angles, nz), reconstruct_lazy(noisy, s.angles, nz)]
        out += [reconstruct_lazy(noisy[h], s.angles[h], nz) for h in halves]
        return tuple(np.asarray(v, np.float32) for v in da.compute(*out))

    clean, full, _, _ = reconstructions(pilot_dose)
    signal_var, noise_var = float(np.var(clean, dtype=np.float64)), float(np.var(full - clean, dtype=np.float64))
    dose = pilot_dose * noise_var * snr / max(signal_var, 1e-30)
    clean, full, even, odd = reconstructions(dose)
    measured = float(np.var(clean, dtype=np.float64)) / max(float(np.var(full - clean, dtype=np.float64)), 1e-30)
    from tomocare.simulate.objects import make_phantom

    particles = make_phantom(shape, voxel_size, seed).particle_table()
    return StructuredTomogram(full, even, odd, clean, particles, dose, measured)


@dataclass(frozen=True)
class StructuredImages:
    """Micrographs (n, y, x) float32: ``noisy`` linearised counts, ``clean`` their expectation; ``particles`` per
    image: (image, y, x, radius) rows of the particles' projected centres."""

    noisy: np.ndarray
    clean: np.ndarray
    particles: np.ndarray
    dose: float


def structured_images(n: int, shape: tuple[int, int], *, seed: int, dose: float = 5.0, voxel_size: float = 4.0,
                      thickness: int = 48, ramp: tuple[float, float] = (1.0, 0.3),
                      mean_free_path: float = 400.0) -> StructuredImages:
    """``n`` micrographs: 0° projections of ``n`` phantoms (seeds ``seed``, ``seed + 1``, ...) with Poisson counts
    under the transmission ``ramp`` across x, linearised as in :func:`structured_tomogram`."""
    scale = np.float32(mean_free_path / voxel_size)
    transmission = np.linspace(ramp[0], ramp[1], shape[1], dtype=np.float32)
    noisy, clean, particles = [], [], []
    for i in range(n):
        s = simulate_tilt_series((thickness, *shape), angles=np.array([0.0, 1.0]), dose=dose,
                                 mean_free_path=mean_free_path, voxel_size=voxel_size, seed=seed + i,
                                 y_chunk=shape[0])
        counts = poisson_noise(s.clean[:1] * transmission, seed + i, _STREAM)
        noisy.append(np.asarray(((1 - counts / (np.float32(dose) * transmission)) * scale).compute())[0])
        clean.append(np.asarray(((1 - s.clean[:1] / np.float32(dose)) * scale).compute())[0])
        from tomocare.simulate.objects import make_phantom

        table = make_phantom((thickness, *shape), voxel_size, seed + i).particle_table()
        particles += [(i, float(p["y"]), float(p["x"]), float(p["radius"])) for p in table]
    return StructuredImages(np.stack(noisy).astype(np.float32), np.stack(clean).astype(np.float32),
                            np.array(particles, dtype=np.float64).reshape(-1, 4), dose)
