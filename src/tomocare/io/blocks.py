"""Block-wise writes of a dask array: one task per block, no locks, statistics on the way."""

from __future__ import annotations

from collections.abc import Callable

import dask
import dask.array as da
import numpy as np

from tomocare.io.stats import Stats

Region = tuple[slice, ...]


def block_regions(chunks: tuple[tuple[int, ...], ...]) -> dict[tuple[int, ...], Region]:
    """The region of the whole array covered by each block index."""
    starts = [np.cumsum((0,) + c[:-1]) for c in chunks]
    shape = tuple(len(c) for c in chunks)
    return {
        index: tuple(slice(int(s[i]), int(s[i]) + c[i]) for s, c, i in zip(starts, chunks, index))
        for index in np.ndindex(*shape)
    }


def write_blocks(array: da.Array, func: Callable[[np.ndarray, object, Region], np.ndarray], target) -> Stats:
    """Run ``func(block, target, region) -> stats row`` on every block; merge the rows.

    Runs on the current dask scheduler (the active ``distributed.Client`` if there is one).
    Blocks must not straddle the target's chunks, so concurrent writes never touch the same chunk.
    """
    blocks = array.to_delayed()
    rows = [
        dask.delayed(func, pure=True)(blocks[index], target, region)
        for index, region in block_regions(array.chunks).items()
    ]
    (computed,) = dask.compute(rows)
    return Stats.from_rows(np.stack(computed))
