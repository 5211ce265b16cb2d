"""One way to open a tomogram, MRC or OME-Zarr: a lazy, picklable array plus its metadata."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.mrc import MrcArray, MrcHeader, mrc_to_dask, open_mrc
from tomocare.io.omezarr import is_zarr, open_ome_zarr, voxel_size_from_attrs
from tomocare.io.stats import Stats, block_stats


@dataclass(frozen=True)
class Volume:
    """A tomogram on disk. ``array`` is a lazy array-like that pickles cheaply to dask workers."""

    path: Path
    array: object  # MrcArray or zarr.Array: .shape, .dtype, __getitem__
    voxel_size: tuple[float, float, float]  # (z, y, x), Å
    origin: tuple[float, float, float]  # (z, y, x), Å
    stats: Stats | None  # stored statistics, when the file carries them
    mrc_header: MrcHeader | None  # the original MRC header, when there is one

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def to_dask(self, chunks: int | tuple[int, ...] | None = None) -> da.Array:
        """A dask array over the file; zarr chunks by default, 128³ for MRC."""
        if isinstance(self.array, MrcArray):
            return mrc_to_dask(self.array, chunks or 128)
        return da.from_zarr(self.array, chunks=chunks or self.array.chunks)


def open_volume(path: str | os.PathLike, *, ndim: int = 3, images: bool = False) -> Volume:
    """Open an MRC file or an OME-Zarr image read-only, without reading its data.

    ``images``: 2-D data, where a single MRC image opens as a stack of one (1, y, x).
    """
    path = Path(path)
    if is_zarr(path):
        array, attrs = open_ome_zarr(path)
        if array.ndim != ndim:
            raise TomocareError(f"{path}: expected a {ndim}-D volume, found shape {array.shape}")
        meta = attrs.get("tomocare", {})
        header = MrcHeader.from_dict(meta["mrc_header"]) if "mrc_header" in meta else None
        return Volume(
            path=path,
            array=array,
            voxel_size=voxel_size_from_attrs(attrs),
            origin=tuple(header.origin) if header else (0.0, 0.0, 0.0),
            stats=Stats.from_dict(meta["stats"]) if "stats" in meta else None,
            mrc_header=header,
        )
    if path.is_dir():
        raise TomocareError(f"{path}: a directory that is not a zarr store")
    mrc = open_mrc(path, ndim=ndim, images=images)
    return Volume(path, mrc, mrc.voxel_size, mrc.header.origin, None, mrc.header)


def compute_stats(volume: Volume) -> Stats:
    """The volume's statistics: stored ones if present, else computed block by block."""
    if volume.stats is not None:
        return volume.stats
    arr = volume.to_dask()
    rows = [dask.delayed(block_stats)(b) for b in arr.to_delayed().ravel()]
    (computed,) = dask.compute(rows)
    stats = Stats.from_rows(np.stack(computed))
    warn_nonfinite(volume.path, stats)
    return stats


def warn_nonfinite(path: Path, stats: Stats) -> None:
    if stats.nonfinite:
        warnings.warn(f"{path}: {stats.nonfinite} NaN or infinite voxels (skipped in statistics)", stacklevel=2)
    if stats.count == 0:
        raise TomocareError(f"{path}: no finite voxels")
