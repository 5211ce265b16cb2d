"""One way to open a tomogram, MRC or OME-Zarr: a lazy, picklable array plus its metadata."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import numpy as np

from tomocare.config import DEFAULT_CHUNK
from tomocare.errors import TomocareError
from tomocare.io.mrc import MrcArray, MrcHeader, mrc_to_dask, open_mrc
from tomocare.io.omezarr import is_zarr, known_voxel_size, open_ome_zarr, voxel_size_from_attrs
from tomocare.io.stats import Stats, block_stats

Zyx = tuple[float, float, float]  # (z, y, x)


@dataclass(frozen=True)
class Volume:
    """A tomogram on disk. ``array`` is a lazy array-like that pickles cheaply to dask workers."""

    path: Path
    array: Any  # MrcArray or zarr.Array: .shape, .dtype, __getitem__
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
            return mrc_to_dask(self.array, chunks or DEFAULT_CHUNK)
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
        meta = meta if isinstance(meta, dict) else {}
        header = _stored(path, meta, "mrc_header", MrcHeader.from_dict, "exported MRC files get a new header")
        return Volume(
            path=path,
            array=array,
            voxel_size=cast(Zyx, known_voxel_size(attrs, voxel_size_from_attrs(attrs, path, array.ndim))),
            origin=cast(Zyx, tuple(header.origin)) if header else (0.0, 0.0, 0.0),
            stats=_stored(path, meta, "stats", Stats.from_dict, "they are computed again"),
            mrc_header=header,
        )
    if path.is_dir():
        raise TomocareError(f"{path}: a directory that is not a zarr store")
    mrc = open_mrc(path, ndim=ndim, images=images)
    return Volume(path, mrc, mrc.voxel_size, mrc.header.origin, None, mrc.header)


def _stored(path: Path, meta: dict, key: str, parse, fallback: str):
    """A tomocare attribute of a store, parsed; a damaged one is dropped with a warning saying
    what happens instead (never made up)."""
    if key not in meta:
        return None
    try:
        value = parse(meta[key])
        if isinstance(value, MrcHeader):
            base64.b64decode(value.header_b64, validate=True)
            value.extended_header  # noqa: B018 - decodes, raising on damage
            if len(value.voxel_size) != 3 or len(value.origin) != 3:
                raise ValueError("three values per axis expected")
        if isinstance(value, Stats) and not all(isinstance(v, (int, float)) for v in vars(value).values()):
            raise TypeError("numbers expected")
        return value
    except (KeyError, TypeError, ValueError, binascii.Error) as err:
        reason = "bad base64" if isinstance(err, binascii.Error) else type(err).__name__
        warnings.warn(f"{path}: stored {key} is damaged ({reason}); ignored, {fallback}", stacklevel=3)
        return None


def compute_stats(volume: Volume, *, check: bool = True) -> Stats:
    """The volume's statistics: stored ones if present, else computed block by block on the current
    dask scheduler. With ``check`` a volume nothing can be computed from is refused (``check_values``)."""
    stats = volume.stats
    if stats is None:
        rows = [dask.delayed(block_stats)(b) for b in volume.to_dask().to_delayed().ravel()]
        with reading(volume.path):
            (computed,) = dask.compute(rows)
        stats = Stats.from_rows(np.stack(computed))
    if check:
        check_values(volume.path, stats)
    return stats


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str = "the voxels cannot be read") -> Iterator[None]:
    """An error reading ``path``'s voxels (a corrupt chunk, here or on a worker) in one line naming it."""
    try:
        yield
    except (TomocareError, OSError, MemoryError):
        raise
    except Exception as err:  # zarr and its codecs raise several types for a corrupt chunk
        raise TomocareError(f"{path}: {what} ({type(err).__name__}: {' '.join(str(err).split())})") from None


def check_values(path: str | os.PathLike, stats: Stats) -> None:
    """Refuse voxels nothing can be computed from: no finite one, or a single value (a constant
    volume); warn about NaN or infinite voxels."""
    warn_nonfinite(path, stats)
    if stats.min == stats.max:
        raise TomocareError(f"{path}: a constant volume (every finite voxel is {stats.min:g}); nothing to compute from")


def warn_nonfinite(path: str | os.PathLike, stats: Stats) -> None:
    if stats.nonfinite:
        warnings.warn(f"{path}: {stats.nonfinite} NaN or infinite voxels (skipped in statistics)", stacklevel=2)
    if stats.count == 0:
        raise TomocareError(f"{path}: no finite voxels")
