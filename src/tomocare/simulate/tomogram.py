"""A synthetic tomogram as lazy dask arrays: ground truth and two independently noisy halves.

Nothing is computed over the volume. The object tables are drawn up front (small). Every
block of ``clean`` is one task: render the objects touching it plus ``SIGNAL_HALO`` voxels
along z and x (the wedge does not act along the tilt axis y) and convolve with the
missing-wedge kernel. Every block of noise is one task: draw the white noise of the block
plus ``NOISE_HALO`` (deterministic per lattice tile from (seed, half, tile), see
:mod:`.noise`) and convolve with the noise kernel. The kernels are compact (radius = halo,
see :mod:`.fourier`), so every block is exact: no seams, and up to float rounding the volume
does not depend on the chunking. No task depends on another, so the graph culls to single
blocks, and the same seed and chunks give the same bytes on any scheduler.

SNR is the variance of ``clean`` (noise-free, wedge-filtered) over the volume divided by the
variance of the noise of one half. The signal variance is estimated before anything is
computed, on at most ``PROBES`` windows of the volume (all of them for small volumes), and
the noise standard deviation follows from it.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from functools import partial
from typing import cast

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from tomocare.config import DEFAULT_CHUNK
from tomocare.errors import TomocareError
from tomocare.simulate.fourier import wedge_halo
from tomocare.simulate.noise import noise_block
from tomocare.simulate.objects import ICE_DENSITY, Phantom, make_phantom, masses
from tomocare.simulate.render import clean_block, render

SIGNAL_HALO = 32  # radius of the wedge kernel = voxels rendered around every block (z, x)
NOISE_HALO = 16  # radius of the noise kernel = white noise drawn around every block
MIN_SIZE = 16
PROBES = 32  # windows used to estimate the signal variance
PROBE_SIZE = 48  # their largest edge (voxels)
_PROBE_STREAM = 3


@dataclass
class SimulatedTomogram:
    """A simulated tomogram: lazy float32 (z, y, x) arrays and its ground truth.

    ``clean`` is the noise-free reconstruction (the phantom with the missing wedge applied),
    what a perfect Noise2Noise denoiser could reach; ``even``/``odd`` add independent noise.
    ``particles`` has fields z, y, x (voxel coordinates), radius (voxels) and kind.
    """

    clean: da.Array
    even: da.Array
    odd: da.Array
    particles: np.ndarray
    voxel_size: float
    phantom: da.Array | None = None  # density before the missing wedge, for reference
    noise_std: float = 0.0  # standard deviation of the noise of one half
    snr: float = 0.0
    tilt_range: float = 60.0
    seed: int = 0


def simulate_tomogram(
    shape: tuple[int, int, int] = (96, 192, 192),
    *,
    seed: int = 0,
    snr: float = 0.1,
    tilt_range: float = 60.0,
    voxel_size: float = 10.0,
    chunks: int | tuple[int, int, int] = DEFAULT_CHUNK,
    kinds: tuple[str, ...] | None = None,
) -> SimulatedTomogram:
    """Simulate a tomogram lazily; ``snr`` = var(clean) / var(noise of one half).

    Tilt series about y over ±``tilt_range``°, voxel size in Å, ``chunks`` the dask block edge
    (an int or one per axis; a last block shorter than 16 joins the one before). Same
    arguments, same bytes. ``kinds`` keeps only those particle kinds (``objects.KIND_NAMES``).
    """
    shape, chunks = validate_arguments(shape, seed, snr, tilt_range, voxel_size, chunks)
    seed, snr, tilt_range, voxel_size = int(seed), float(snr), float(tilt_range), float(voxel_size)
    axis_chunks = tuple(_axis_chunks(n, c) for n, c in zip(shape, chunks))
    phantom = make_phantom(shape, voxel_size, seed, kinds)
    token = tokenize("tomocare-simulate-v1", shape, seed, tilt_range, voxel_size, axis_chunks,
                     *(() if kinds is None else (kinds,)))

    clean, reference = _phantom_arrays(phantom, axis_chunks, tilt_range, token)
    noise_std = math.sqrt(estimate_signal_variance(phantom, tilt_range, seed) / snr)
    halves = []
    for half in (0, 1):
        noise = _noise_array(f"simulate-noise{half}-{token}", axis_chunks, partial(noise_block, seed, half), tilt_range)
        halves.append(clean + np.float32(noise_std) * noise)
    return SimulatedTomogram(clean=clean, even=halves[0], odd=halves[1], particles=phantom.particle_table(),
                             voxel_size=voxel_size, phantom=reference, noise_std=noise_std, snr=snr,
                             tilt_range=tilt_range, seed=seed)


def estimate_signal_variance(phantom: Phantom, tilt_range: float, seed: int) -> float:
    """Variance of ``clean`` over the volume, from at most ``PROBES`` windows of it.

    The volume is tiled into windows of edge <= ``PROBE_SIZE``, each computed exactly as a
    block is. With at most ``PROBES`` windows (up to about 96×192×192 voxels) all are used:
    the exact variance. Otherwise ``PROBES`` windows are drawn by systematic sampling (spread
    over the volume) with probabilities that follow the mass of the objects touching them,
    and the sums of (x - m) and (x - m)² over the volume (m: the known mean of the ice) are
    estimated as sum(window sum / (PROBES * probability)). That is unbiased and much less noisy
    than uniform sampling when a few large objects (vesicles, microtubules) hold most of the
    signal: about ±10 % (one standard deviation) on 128×512×512 volumes in our checks.
    """
    edges = [np.linspace(0, n, -(-n // PROBE_SIZE) + 1).astype(int) for n in phantom.shape]
    grid = tuple(len(e) - 1 for e in edges)
    n_windows = int(np.prod(grid))
    if n_windows <= PROBES:
        picks: np.ndarray = np.arange(n_windows)
        weight = np.ones(n_windows)
    else:
        proxy = np.zeros(n_windows)  # object mass, each object's spread over the windows it touches
        for key, mass in masses(phantom).items():
            rows, flat = _touching(getattr(phantom, key), edges, grid, (0, 0, 0))
            share = mass[rows] / np.bincount(rows, minlength=len(mass))[rows]
            proxy += np.bincount(flat, weights=share, minlength=n_windows)
        p = np.full(n_windows, 1.0 / n_windows)
        if proxy.sum() > 0:
            p = 0.1 * p + 0.9 * proxy / proxy.sum()
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PROBE_STREAM,)))
        steps = (rng.random() + np.arange(PROBES)) / PROBES
        picks = np.minimum(np.searchsorted(np.cumsum(p), steps), n_windows - 1)
        weight = 1.0 / (PROBES * p[picks])
    windows = []
    for flat in picks:
        idx = np.unravel_index(flat, grid)
        windows.append((np.array([e[i] for e, i in zip(edges, idx)]),
                        np.array([e[i + 1] - e[i] for e, i in zip(edges, idx)])))
    margin = 2 * np.array(wedge_halo(SIGNAL_HALO))
    subsets = phantom.select_many([(origin - margin, size + 2 * margin) for origin, size in windows])
    z = np.arange(phantom.shape[0], dtype=np.float64)
    centre = (ICE_DENSITY + phantom.object_density) * float(np.mean(phantom.slab.profile(z)))
    total = total_sq = 0.0
    for (origin, size), subset, w in zip(windows, subsets, weight):
        block = clean_block(subset, origin, size, SIGNAL_HALO, tilt_range).astype(np.float64) - centre
        total, total_sq = total + w * block.sum(), total_sq + w * np.square(block).sum()
    count = float(np.prod(phantom.shape))
    return max(total_sq / count - (total / count) ** 2, 1e-12)


def validate_arguments(
    shape, seed, snr, tilt_range, voxel_size, chunks
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Check :func:`simulate_tomogram`'s arguments (TomocareError); return shape and chunks per axis."""

    def is_int(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    try:
        shape = tuple(shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(is_int(n) and n >= MIN_SIZE for n in shape):
        raise TomocareError(f"simulate: shape must be 3 integers, each >= {MIN_SIZE}, got {shape!r}")
    if not is_int(seed) or seed < 0:
        raise TomocareError(f"simulate: seed must be a non-negative integer, got {seed!r}")
    if not isinstance(snr, numbers.Real) or not math.isfinite(snr) or snr <= 0:
        raise TomocareError(f"simulate: snr must be a positive number, got {snr!r}")
    if not isinstance(tilt_range, numbers.Real) or not 0 < tilt_range <= 90:  # type: ignore[operator]
        raise TomocareError(f"simulate: tilt_range must be in (0, 90] degrees, got {tilt_range!r}")
    if not isinstance(voxel_size, numbers.Real) or not math.isfinite(voxel_size) or voxel_size <= 0:
        raise TomocareError(f"simulate: voxel_size must be a positive number of Å, got {voxel_size!r}")
    chunks = (chunks,) * 3 if is_int(chunks) else tuple(chunks) if isinstance(chunks, (tuple, list)) else ()
    if len(chunks) != 3 or not all(is_int(c) and c >= MIN_SIZE for c in chunks):
        raise TomocareError(f"simulate: chunks must be an integer >= {MIN_SIZE} (or 3 of them), got {chunks!r}")
    return (cast(tuple[int, int, int], tuple(int(n) for n in shape)),
            cast(tuple[int, int, int], tuple(int(c) for c in chunks)))


def _axis_chunks(n: int, c: int) -> tuple[int, ...]:
    """Blocks of ``c`` along an axis of ``n``; a last block shorter than ``MIN_SIZE`` joins the one before."""
    sizes = [c] * (n // c)
    rest = n - c * len(sizes)
    if rest and (rest >= MIN_SIZE or not sizes):
        sizes.append(rest)
    elif rest:
        sizes[-1] += rest
    return tuple(sizes)


def _blocks(axis_chunks) -> list[tuple[tuple[int, ...], ...]]:
    """(index, origin, shape) of every block, in C order."""
    per_axis = [[(i, int(o), int(n)) for i, (o, n) in enumerate(zip(np.cumsum((0,) + c[:-1]), c))]
                for c in axis_chunks]
    return [tuple(zip(*parts)) for parts in itertools.product(*per_axis)]


def _array(name: str, dsk: dict, axis_chunks) -> da.Array:
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, axis_chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))


def _phantom_arrays(phantom: Phantom, axis_chunks, tilt_range: float, token: str) -> tuple[da.Array, da.Array]:
    """``clean`` and the raw phantom: one independent task per block, given only its objects."""
    bounds = [np.concatenate([[0], np.cumsum(c)]) for c in axis_chunks]
    grid = tuple(len(c) for c in axis_chunks)
    halo = wedge_halo(SIGNAL_HALO)
    groups = {key: _by_block(table, bounds, grid, halo) for key, table in phantom.tables().items()}
    clean, raw = {}, {}
    names = f"simulate-clean-{token}", f"simulate-phantom-{token}"
    for flat, (idx, origin, shape) in enumerate(_blocks(axis_chunks)):
        own = phantom.subset(**{key: rows[start[flat]:start[flat + 1]] for key, (rows, start) in groups.items()})
        clean[(names[0], *idx)] = (partial(clean_block, own, origin, shape, SIGNAL_HALO, tilt_range),)
        raw[(names[1], *idx)] = (partial(render, own, origin, shape),)
    return _array(names[0], clean, axis_chunks), _array(names[1], raw, axis_chunks)


def _noise_array(name: str, axis_chunks, make_block, tilt_range: float) -> da.Array:
    """Coloured unit-variance noise, one independent task per block."""
    dsk = {(name, *idx): (partial(make_block, origin, shape, NOISE_HALO, tilt_range),)
           for idx, origin, shape in _blocks(axis_chunks)}
    return _array(name, dsk, axis_chunks)


def _touching(table: np.ndarray, bounds, grid, halo: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, block) pair where the row's bounding box touches the block grown by ``halo``.

    ``bounds`` are the block edges per axis; blocks are numbered in C order over ``grid``.
    """
    first, count = [], []
    for axis, b in enumerate(bounds):
        b = np.asarray(b, np.float64)
        lo = np.searchsorted(b[1:] + halo[axis], table["lo"][:, axis].astype(np.float64), side="right")
        hi = np.searchsorted(b[:-1] - halo[axis], table["hi"][:, axis].astype(np.float64), side="left") - 1
        lo, hi = np.maximum(lo, 0), np.minimum(hi, grid[axis] - 1)
        first.append(lo)
        count.append(np.maximum(hi - lo + 1, 0))
    n_blocks = count[0] * count[1] * count[2]
    rows = np.repeat(np.arange(len(table)), n_blocks)
    local = np.arange(len(rows)) - np.repeat(np.cumsum(n_blocks) - n_blocks, n_blocks)
    cy, cx = count[1][rows], count[2][rows]
    iz = first[0][rows] + local // (cy * cx)
    iy = first[1][rows] + (local // cx) % cy
    ix = first[2][rows] + local % cx
    return rows, (iz * grid[1] + iy) * grid[2] + ix


def _by_block(table: np.ndarray, bounds, grid, halo: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Group object rows by the blocks (grown by ``halo`` per axis) their bounding boxes touch.

    Returns (rows, start): block ``flat`` (C order) owns ``rows[start[flat]:start[flat + 1]]``
    (an object touching several blocks is repeated).
    """
    rows, flat = _touching(table, bounds, grid, halo)
    order = np.argsort(flat, kind="stable")
    start = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=int(np.prod(grid))))])
    return table[rows[order]], start
