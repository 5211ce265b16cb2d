"""The block plan: which output block each task computes, and which input region it reads.

Output blocks tile the volume on a grid of ``block`` voxels (a multiple of the output chunks and
of the network's down-sampling factor). Each task reads its block plus ``halo`` voxels on every
side (reflect-padded outside the volume) and pads the tile to a multiple of the factor, so every
tile starts on the network's pooling grid and the core of its output is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tomocare.errors import TomocareError

Shape = tuple[int, ...]


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class Block:
    """One task: its grid index, the output core, and the tile read around it."""

    index: tuple[int, ...]
    core: tuple[slice, ...]  # output region, in volume coordinates
    read: tuple[slice, ...]  # input region actually in the volume
    pad: tuple[tuple[int, int], ...]  # reflect padding before/after ``read`` to make the tile
    offset: tuple[int, ...]  # position of the core inside the tile

    def crop(self, tile: np.ndarray) -> np.ndarray:
        """The core of an output tile computed on this block's input tile."""
        return tile[tuple(slice(o, o + s.stop - s.start) for o, s in zip(self.offset, self.core))]


@dataclass(frozen=True)
class BlockPlan:
    """``factor`` is one down-sampling factor for every axis, or one per axis (a 2-D network on a
    stack of images has factor 1 and no halo along the stack axis)."""

    shape: Shape
    block: Shape
    halo: Shape
    factor: int | Shape

    def __post_init__(self) -> None:
        if isinstance(self.factor, int):
            object.__setattr__(self, "factor", (self.factor,) * len(self.shape))
        for name, values in (("block", self.block), ("halo", self.halo)):
            bad = [(v, f) for v, f in zip(values, self.factors) if v % f or v < 0]
            if bad:
                v, f = bad[0]
                raise TomocareError(
                    f"{name} {values} is not a multiple of the network's down-sampling factor {f}; "
                    f"nearest valid sizes: {nearest_valid(v, f)}"
                )
        if any(b < 1 for b in self.block):
            raise TomocareError(f"block {self.block} must be positive")

    @property
    def factors(self) -> Shape:
        """The down-sampling factor of each axis."""
        return self.factor if isinstance(self.factor, tuple) else (self.factor,) * len(self.shape)

    @property
    def grid(self) -> Shape:
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block))

    @property
    def n_blocks(self) -> int:
        return int(np.prod(self.grid))

    def tile_shape(self, core: Shape) -> Shape:
        return tuple(round_up(c, f) + 2 * h for c, h, f in zip(core, self.halo, self.factors))

    def blocks(self) -> Iterator[Block]:
        for index in np.ndindex(*self.grid):
            yield self.block_at(tuple(int(i) for i in index))

    def block_at(self, index: tuple[int, ...]) -> Block:
        core, read, pad, offset = [], [], [], []
        for i, size, b, h, f in zip(index, self.shape, self.block, self.halo, self.factors):
            start, stop = i * b, min((i + 1) * b, size)
            tile_start = start - h
            tile_stop = start + round_up(stop - start, f) + h
            lo, hi = max(tile_start, 0), min(tile_stop, size)
            core.append(slice(start, stop))
            read.append(slice(lo, hi))
            pad.append((lo - tile_start, tile_stop - hi))
            offset.append(h)
        return Block(index, tuple(core), tuple(read), tuple(pad), tuple(offset))

    def computed_ratio(self) -> float:
        """Voxels the network computes per output voxel (halo and padding overhead)."""
        computed = 0
        for index in np.ndindex(*self.grid):
            blk = self.block_at(tuple(index))
            computed += int(np.prod(self.tile_shape(tuple(s.stop - s.start for s in blk.core))))
        return computed / int(np.prod(self.shape))

    def describe(self) -> dict:
        tile = self.tile_shape(self.block)
        return {
            "shape": list(self.shape),
            "block": list(self.block),
            "halo": list(self.halo),
            "tile": list(tile),
            "blocks": self.n_blocks,
            "grid": list(self.grid),
            "computed_to_output_ratio": round(self.computed_ratio(), 3),
        }


def nearest_valid(size: int, factor: int) -> str:
    below = max(factor, (size // factor) * factor)
    above = round_up(max(size, 1), factor)
    return f"{below}" if below == above else f"{below} or {above}"


def reflect_pad(tile: np.ndarray, pad: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Reflect-pad a tile read from the volume; a 1-voxel axis is edge-padded (nothing to reflect),
    the others are still reflected."""
    if not any(p for pair in pad for p in pair):
        return tile
    if min(tile.shape) > 1:
        return np.pad(tile, pad, mode="reflect")
    for axis, width in enumerate(pad):
        widths = [(0, 0)] * tile.ndim
        widths[axis] = width
        tile = np.pad(tile, widths, mode="reflect" if tile.shape[axis] > 1 else "edge")
    return tile


def read_tiles(sources, block: Block) -> np.ndarray:
    """The block's input tile from every source (lazy array-likes), stacked: ``(n_sources, *tile)``."""
    return np.stack([reflect_pad(np.asarray(src[block.read], dtype=np.float32), block.pad) for src in sources])


def network_geometry(ndim: int, net_ndim: int, halo: int, factor: int) -> tuple[Shape, Shape]:
    """Per-axis halo and down-sampling factor of a ``net_ndim``-D network on an ``ndim``-D array:
    a 2-D network on a stack of images needs no context and no alignment along the stack axis."""
    flat = ndim - net_ndim
    if flat < 0:
        raise TomocareError(f"a {net_ndim}-D network cannot run on a {ndim}-D array")
    return (0,) * flat + (halo,) * net_ndim, (1,) * flat + (factor,) * net_ndim
