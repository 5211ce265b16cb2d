"""A labelled, dask-backed view of a tomogram: dims (z, y, x), coordinates in Å."""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from tomocare.io.volume import open_volume


def open_tomogram(path: str | os.PathLike, chunks: int | tuple[int, ...] | None = None) -> xr.DataArray:
    """Open an MRC file or OME-Zarr image as an ``xarray.DataArray`` without reading its data.

    Coordinates are voxel centres in Å (origin + index × voxel size); ``attrs`` carry the voxel
    size, the origin and, when stored, the statistics.
    """
    vol = open_volume(path)
    coords = {
        dim: origin + np.arange(n) * size
        for dim, n, size, origin in zip(("z", "y", "x"), vol.shape, vol.voxel_size, vol.origin)
    }
    attrs: dict = {"voxel_size": vol.voxel_size, "origin": vol.origin, "units": "angstrom", "source": str(vol.path)}
    if vol.stats is not None:
        attrs["stats"] = vol.stats.to_dict()
    return xr.DataArray(vol.to_dask(chunks), dims=("z", "y", "x"), coords=coords, attrs=attrs, name=vol.path.stem)
