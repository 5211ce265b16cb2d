"""Block-wise writes of a dask array: one task per block, no locks, statistics on the way."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import dask.array as da
import numpy as np
from distributed import default_client, wait

from tomocare.io.stats import N_FIELDS, Stats

Region = tuple[slice, ...]
T = TypeVar("T")  # the target written to


def _region(block_info: dict) -> Region:
    return tuple(slice(lo, hi) for lo, hi in block_info[0]["array-location"])


def _apply(block: np.ndarray, writer, target, block_info=None) -> np.ndarray:
    row = writer(block, target, _region(block_info))
    return row.reshape((1,) * block.ndim + (N_FIELDS,))


def write_blocks(array: da.Array, func: Callable[[np.ndarray, T, Region], np.ndarray], target: T) -> Stats:
    """Run ``func(block, target, region) -> stats row`` on every block; merge the rows.

    Uses ``map_blocks``, so dask fuses reading a block with writing it into one task (no block
    ever moves between workers). Runs on the current dask scheduler (the active
    ``distributed.Client`` if there is one). Blocks must not straddle the target's chunks, so
    concurrent writes never touch the same chunk. When a block fails (a corrupt input chunk), the
    error is raised once every other block has finished: none still writes into a target that the
    caller then removes.
    """
    rows = da.map_blocks(
        _apply,
        array,
        writer=func,
        target=target,
        dtype=np.float64,
        chunks=tuple((1,) * len(c) for c in array.chunks) + ((N_FIELDS,),),
        new_axis=array.ndim,
        meta=np.empty((0,) * (array.ndim + 1), np.float64),
    )
    try:
        client = default_client()
    except ValueError:  # no distributed client: dask's local scheduler
        return Stats.from_rows(rows.compute().reshape(-1, N_FIELDS))
    futures = client.compute(list(rows.to_delayed().ravel()))
    wait(futures)
    return Stats.from_rows(np.concatenate([f.result().reshape(-1, N_FIELDS) for f in futures]))
