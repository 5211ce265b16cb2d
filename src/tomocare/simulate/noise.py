"""Reconstruction noise of one half tomogram, per block, with no neighbour exchange.

White noise is defined on the whole (unbounded) voxel lattice, in tiles of ``TILE`` voxels,
each drawn from its own stream of (seed, half, tile index). Any box of it (a block plus its
halo, also past the volume's border) can be generated where it is needed, so a block's task
depends on nothing and the white noise does not depend on the chunking or the scheduler. The
block plus halo is then coloured like a WBP reconstruction by a kernel of radius ``halo`` and
cropped; that is exact (see :mod:`.fourier`), so the noise does not depend on the chunking.
"""

from __future__ import annotations

import numpy as np

from tomocare.simulate.fourier import convolve, halo_padding

TILE = 32
_STREAM = 2


def white_noise(seed: int, half: int, origin, shape) -> np.ndarray:
    """Unit white noise (float32) on the box [origin, origin + shape) of the lattice."""
    origin = np.asarray(origin, dtype=np.int64)
    shape = np.asarray(shape, dtype=np.int64)
    first = np.floor_divide(origin, TILE)
    last = np.floor_divide(origin + shape - 1, TILE)
    tiles = last - first + 1
    out = np.empty(tuple(tiles * TILE), np.float32)
    for idx in np.ndindex(*tiles):
        key = tuple(int(i) for i in first + idx)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM, half, *_unsigned(key))))
        region = tuple(slice(i * TILE, (i + 1) * TILE) for i in idx)
        out[region] = rng.standard_normal((TILE,) * 3, dtype=np.float32)
    start = origin - first * TILE
    return out[tuple(slice(int(a), int(a + n)) for a, n in zip(start, shape))]


def _unsigned(index: tuple[int, ...]) -> tuple[int, ...]:
    """Tile indices as non-negative integers (spawn keys must be), one-to-one."""
    return tuple(2 * i if i >= 0 else -2 * i - 1 for i in index)


def noise_block(seed: int, half: int, origin, shape, halo: int, tilt_range: float) -> np.ndarray:
    """Unit-variance WBP-coloured noise of one block: white noise with a halo (at least ``halo``,
    grown to a fast FFT size), convolved with the noise kernel of radius ``halo``, cropped."""
    origin = np.asarray(origin, dtype=np.int64)
    shape = tuple(int(n) for n in shape)
    pads = [halo_padding(n, halo) for n in shape]
    before = np.array([p[0] for p in pads])
    white = white_noise(seed, half, origin - before, tuple(n + sum(p) for n, p in zip(shape, pads)))
    coloured = convolve(white, "noise", tilt_range, halo)
    return np.ascontiguousarray(coloured[tuple(slice(b, b + n) for b, n in zip(before, shape))])
