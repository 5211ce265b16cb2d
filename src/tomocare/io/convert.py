"""MRC ⇄ OME-Zarr conversion, streamed block by block on dask workers."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import mrcfile
import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.atomic import check_output, refuse_inputs
from tomocare.io.mrc import MRC_SUFFIXES, write_mrc
from tomocare.io.omezarr import DEFAULT_COMPRESSION, default_chunk, write_ome_zarr
from tomocare.io.stats import Stats
from tomocare.io.volume import check_values, open_volume, reading, warn_nonfinite


def convert_to_zarr(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    chunks: int | None = None,
    compression: str = DEFAULT_COMPRESSION,
    levels: int = 3,
    overwrite: bool = False,
    output_format: str = "ome-zarr-0.5",
) -> Stats:
    """Convert one MRC file to an OME-Zarr image (``ome-zarr-0.5`` or ``ome-zarr-0.4``), keeping voxel
    size, origin and header; ``chunks`` default: ``default_chunk(output_format)``."""
    vol = open_volume(source)
    attrs: dict = {"source": str(vol.path)}
    if vol.mrc_header is not None:
        attrs["mrc_header"] = vol.mrc_header.to_dict()
    with reading(vol.path):
        return write_ome_zarr(
            vol.to_dask(chunks or default_chunk(output_format)),
            out,
            voxel_size=vol.voxel_size,
            chunks=chunks,
            compression=compression,
            levels=levels,
            attrs=attrs,
            overwrite=overwrite,
            check=lambda stats: check_values(vol.path, stats),  # all NaN or constant: nothing is left
            output_format=output_format,
        )


def zarr_name_for(source: Path) -> str:
    name = source.name
    for suffix in MRC_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + ".zarr"
    return name + ".zarr"


def plan_conversions(
    sources: Sequence[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """Check every input and output before anything is written; return (source, target) pairs.

    ``out`` is a ``.zarr`` path for one input, else a directory (created) for ``NAME.zarr`` files.
    """
    paths = [Path(s) for s in sources]
    out = Path(out)
    refuse_inputs(out, paths)
    if len(paths) == 1 and out.suffix == ".zarr":
        targets = [out]
    else:
        if out.suffix == ".zarr":
            raise TomocareError(f"{out}: several inputs need an output directory, not a .zarr path")
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / zarr_name_for(s) for s in paths]
    if len({t.name for t in targets}) != len(targets):
        raise TomocareError(f"{out}: two inputs would be written to the same output name")
    for s, t in zip(paths, targets):
        open_volume(s)
        check_output(t, overwrite=overwrite)
    return list(zip(paths, targets))


def export_mrc(
    source: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False
) -> Stats:
    """Stream an OME-Zarr image (or MRC) to an MRC file, restoring its header where known."""
    refuse_inputs(out, [source])
    vol = open_volume(source)
    try:
        mrcfile.utils.mode_from_dtype(np.dtype(np.float32) if vol.dtype == np.float64 else vol.dtype)
    except ValueError:
        raise TomocareError(f"{source}: data type {vol.dtype} has no MRC mode (int8, int16, uint16, float16, "
                            "float32; uint8 and float64 are widened and narrowed)") from None
    out = Path(out)
    check_output(out, overwrite=overwrite)
    _check_space(out, vol)
    with reading(vol.path):
        return write_mrc(
            vol.to_dask(),
            out,
            voxel_size=vol.voxel_size,
            origin=vol.origin,
            header=vol.mrc_header,
            overwrite=overwrite,
            check=lambda stats: warn_nonfinite(vol.path, stats),  # all NaN: nothing is left; a result may be constant
        )


def _check_space(out: Path, vol) -> None:
    """A full disk is an error before an MRC file is written: its data are written through memory maps,
    which a disk that fills up breaks with SIGBUS (the worker dies) instead of an error."""
    itemsize = {np.dtype(np.float64): 4, np.dtype(np.uint8): 2}.get(vol.dtype, vol.dtype.itemsize)  # as write_mrc
    ext = vol.mrc_header.extended_header if vol.mrc_header is not None else b""
    need = 1024 + len(ext) + int(np.prod(vol.shape)) * itemsize
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise OSError(errno.ENOSPC, f"No space left on device ({need / 2**20:.1f} MiB needed, "
                                    f"{free / 2**20:.1f} MiB free)", str(out))
