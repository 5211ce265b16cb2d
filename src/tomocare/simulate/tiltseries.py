"""Simulated tilt series, movie frames and 2-D image pairs, with ground truth.

The specimen is the phantom of :func:`tomocare.simulate.simulate_tomogram` (density per voxel,
before the missing wedge). Projections follow the geometry of :mod:`tomocare.tilt.wbp`: tilt
axis along y, parallel beam, line integrals ``P`` in density × voxels. The detector counts
``clean = dose · exp(-P · voxel_size / mean_free_path)`` electrons per pixel (amplitude
contrast, Beer-Lambert), and a noisy image is a Poisson draw of it: dense matter is dark, as
in real images, so reconstructions of counts have inverted contrast.

With ``damage=True`` each tilt's line integrals are low-passed by the exposure filter of
Grant & Grigorieff (2015), attenuation exp(-N / 2Nₑ(k)) with Nₑ(k) = 0.245 k^-1.665 + 2.81
(k in 1/Å, N the dose accumulated before the tilt in e/Å²), following the acquisition order.

Everything is lazy (dask): one task per slab of y rows for projections and noise; noise is
drawn per slab from (seed, tilt set, slab), so the same arguments give the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.atomic import check_output, check_output_dir
from tomocare.io.mrc import write_mrc
from tomocare.simulate.tomogram import simulate_tomogram
from tomocare.tilt.angles import dose_symmetric_ranks, tilt_range_angles, write_order, write_tlt
from tomocare.tilt.wbp import project_slab

_TILTS, _FRAMES, _PAIRS = 11, 12, 13  # random streams


@dataclass
class SimulatedTiltSeries:
    """A tilt series (tilt, y, x) as lazy float32 arrays, with the volume it was projected from.

    ``projections``: line integrals of the phantom (noise-free, undamaged); ``clean``: expected
    counts per pixel; ``noisy``: Poisson counts. ``ranks``: 0-based acquisition order per tilt.
    ``phantom`` and ``wedge_clean`` are the simulator's volume before and after the missing wedge.
    """

    angles: np.ndarray
    ranks: np.ndarray
    projections: da.Array
    clean: da.Array
    noisy: da.Array
    phantom: da.Array
    wedge_clean: da.Array
    voxel_size: float
    dose: float
    mean_free_path: float
    seed: int


def _check_positive(name: str, value: float) -> float:
    if not np.isfinite(value) or value <= 0:
        raise TomocareError(f"simulate: {name} must be a positive number, got {value!r}")
    return float(value)


def exposure_filter(shape: tuple[int, int], voxel_size: float, dose_before: float) -> np.ndarray:
    """Grant & Grigorieff attenuation in the 2-D Fourier plane (``numpy.fft.fftfreq`` layout)."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    k = np.hypot(ky, kx) / voxel_size
    with np.errstate(divide="ignore"):
        critical = 0.245 * np.power(k, -1.665) + 2.81
    critical[0, 0] = np.inf
    return np.exp(-dose_before / (2 * critical))


def _damage(block: np.ndarray, attenuation_doses: np.ndarray, voxel_size: float, block_info=None) -> np.ndarray:
    t = block_info[0]["chunk-location"][0]
    filt = exposure_filter(block.shape[1:], voxel_size, float(attenuation_doses[t]))
    return np.fft.ifft2(np.fft.fft2(block[0]) * filt).real[None].astype(np.float32)


def _poisson(expected: np.ndarray, seed: int, stream: int, block_id=None) -> np.ndarray:
    rng = np.random.default_rng([seed, stream, *block_id])
    return rng.poisson(np.maximum(expected, 0)).astype(np.float32)


def counts(projections: da.Array, dose: float | np.ndarray, voxel_size: float, mean_free_path: float) -> da.Array:
    """Expected electrons per pixel for line integrals ``projections`` (Beer-Lambert)."""
    return (np.float32(dose) * np.exp(-projections * np.float32(voxel_size / mean_free_path))).astype(np.float32)


def poisson_noise(expected: da.Array, seed: int, stream: int = _TILTS) -> da.Array:
    """Independent Poisson draws per element, reproducible per block from (seed, stream, block)."""
    return da.map_blocks(_poisson, expected, seed, stream, dtype=np.float32)


def simulate_tilt_series(
    shape: tuple[int, int, int] = (64, 128, 128),
    *,
    angles: np.ndarray | None = None,
    max_angle: float = 60.0,
    step: float = 3.0,
    dose: float = 20.0,
    mean_free_path: float = 400.0,
    damage: bool = False,
    voxel_size: float = 10.0,
    seed: int = 0,
    y_chunk: int = 32,
) -> SimulatedTiltSeries:
    """Project the simulator's phantom at ``angles`` (default -max_angle..max_angle by ``step``).

    ``dose``: electrons per pixel per tilt; ``mean_free_path``: Å per unit density (sets the
    contrast); acquisition is dose-symmetric (:func:`~tomocare.tilt.angles.dose_symmetric_ranks`).
    """
    dose = _check_positive("dose", dose)
    mean_free_path = _check_positive("mean_free_path", mean_free_path)
    angles = tilt_range_angles(max_angle, step) if angles is None else np.asarray(angles, dtype=np.float64)
    if angles.ndim != 1 or len(angles) < 2 or np.any(np.abs(angles) >= 90):
        raise TomocareError("simulate: give at least 2 tilt angles within (-90, 90) degrees")
    ranks = dose_symmetric_ranks(angles)
    nz, ny, nx = shape
    tomo = simulate_tomogram(shape, seed=seed, tilt_range=float(np.max(np.abs(angles))), voxel_size=voxel_size,
                             chunks=(nz, min(y_chunk, ny), nx))
    assert tomo.phantom is not None  # simulate_tomogram always returns the phantom
    phantom = tomo.phantom.rechunk((nz, y_chunk, nx))
    projections = phantom.map_blocks(project_slab, angles, chunks=((len(angles),), phantom.chunks[1], (nx,)),
                                     dtype=np.float32)
    signal = projections
    if damage:
        before = ranks * dose / voxel_size**2  # e/Å² received before each tilt
        signal = projections.rechunk((1, ny, nx)).map_blocks(_damage, before, voxel_size, dtype=np.float32)
        signal = signal.rechunk(projections.chunks)
    clean = counts(signal, dose, voxel_size, mean_free_path)
    return SimulatedTiltSeries(angles=angles, ranks=ranks, projections=projections, clean=clean,
                               noisy=poisson_noise(clean, seed, _TILTS), phantom=tomo.phantom,
                               wedge_clean=tomo.clean, voxel_size=float(voxel_size), dose=dose,
                               mean_free_path=mean_free_path, seed=seed)


@dataclass
class SimulatedImages:
    """2-D data with ground truth: ``clean`` (n, y, x) expected counts and noisy stacks of it."""

    clean: da.Array
    noisy: tuple[da.Array, ...]


def simulate_image_pairs(
    n: int = 4, shape: tuple[int, int] = (128, 128), *, dose: float = 20.0, thickness: int = 48,
    mean_free_path: float = 400.0, voxel_size: float = 10.0, seed: int = 0,
) -> SimulatedImages:
    """Two noisy acquisitions (P2P-ip) of ``n`` images: projections at n angles of one phantom."""
    if n < 1:
        raise TomocareError(f"simulate: n must be a positive number of images, got {n}")
    ts = simulate_tilt_series((thickness, *shape), angles=np.linspace(-30, 30, max(n, 2)), dose=dose,
                              mean_free_path=mean_free_path, voxel_size=voxel_size, seed=seed, y_chunk=shape[0])
    clean = ts.clean[:n]
    return SimulatedImages(clean, (poisson_noise(clean, seed, _PAIRS), poisson_noise(clean, seed, _PAIRS + 1)))


def simulate_movie(
    shape: tuple[int, int] = (128, 128), *, n_frames: int = 10, dose: float = 20.0, thickness: int = 48,
    mean_free_path: float = 400.0, voxel_size: float = 10.0, seed: int = 0,
) -> SimulatedImages:
    """A movie of one 0° projection: ``n_frames`` aligned frames sharing ``dose`` (e/pixel) equally.

    ``clean`` is (1, y, x) for the whole dose; ``noisy`` is one (n_frames, y, x) stack.
    """
    if n_frames < 2:
        raise TomocareError(f"simulate: a movie needs at least 2 frames, got {n_frames}")
    ts = simulate_tilt_series((thickness, *shape), angles=np.array([0.0, 1.0]), dose=dose,
                              mean_free_path=mean_free_path, voxel_size=voxel_size, seed=seed, y_chunk=shape[0])
    clean = ts.clean[:1]
    frames = da.concatenate([clean / np.float32(n_frames)] * n_frames).rechunk((1, shape[0], shape[1]))
    return SimulatedImages(clean, (poisson_noise(frames, seed, _FRAMES),))


def write_tilt_series(sim: SimulatedTiltSeries, prefix: str | os.PathLike, *,
                      overwrite: bool = False) -> dict[str, Path]:
    """Write PREFIX.mrc (noisy), PREFIX_clean.mrc, PREFIX_projections.mrc, PREFIX_phantom.mrc,
    PREFIX_wedge.mrc (phantom after the missing wedge), PREFIX.tlt and PREFIX_order.csv. Existing
    files are refused (all checked before anything is written) unless ``overwrite``."""
    prefix = Path(prefix)
    paths = {
        "noisy": prefix.with_name(prefix.name + ".mrc"),
        "clean": prefix.with_name(prefix.name + "_clean.mrc"),
        "projections": prefix.with_name(prefix.name + "_projections.mrc"),
        "phantom": prefix.with_name(prefix.name + "_phantom.mrc"),
        "wedge_clean": prefix.with_name(prefix.name + "_wedge.mrc"),
        "angles": prefix.with_name(prefix.name + ".tlt"),
        "order": prefix.with_name(prefix.name + "_order.csv"),
    }
    check_output_dir(prefix.parent)
    for path in paths.values():
        check_output(path, overwrite=overwrite)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("noisy", "clean", "projections", "phantom", "wedge_clean"):
        write_mrc(getattr(sim, kind), paths[kind], voxel_size=sim.voxel_size, overwrite=overwrite)
    write_tlt(paths["angles"], sim.angles)
    write_order(paths["order"], sim.angles, sim.ranks)
    return paths
