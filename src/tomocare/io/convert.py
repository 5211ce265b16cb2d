"""MRC ⇄ OME-Zarr conversion, streamed block by block on dask workers."""

from __future__ import annotations

import os
from pathlib import Path

from tomocare.errors import TomocareError
from tomocare.io.atomic import check_output, refuse_inputs
from tomocare.io.mrc import MRC_SUFFIXES, write_mrc
from tomocare.io.omezarr import write_ome_zarr
from tomocare.io.stats import Stats
from tomocare.io.volume import open_volume, warn_nonfinite


def convert_to_zarr(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    chunks: int = 128,
    compression: str = "blosc-zstd",
    levels: int = 3,
    overwrite: bool = False,
) -> Stats:
    """Convert one MRC file to an OME-Zarr image, keeping voxel size, origin and header."""
    vol = open_volume(source)
    attrs = {"source": str(vol.path)}
    if vol.mrc_header is not None:
        attrs["mrc_header"] = vol.mrc_header.to_dict()
    stats = write_ome_zarr(
        vol.to_dask(chunks),
        out,
        voxel_size=vol.voxel_size,
        chunks=chunks,
        compression=compression,
        levels=levels,
        attrs=attrs,
        overwrite=overwrite,
    )
    warn_nonfinite(vol.path, stats)
    return stats


def zarr_name_for(source: Path) -> str:
    name = source.name
    for suffix in MRC_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + ".zarr"
    return name + ".zarr"


def plan_conversions(
    sources: list[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """Check every input and output before anything is written; return (source, target) pairs.

    ``out`` is a ``.zarr`` path for one input, else a directory (created) for ``NAME.zarr`` files.
    """
    sources = [Path(s) for s in sources]
    out = Path(out)
    refuse_inputs(out, sources)
    if len(sources) == 1 and out.suffix == ".zarr":
        targets = [out]
    else:
        if out.suffix == ".zarr":
            raise TomocareError(f"{out}: several inputs need an output directory, not a .zarr path")
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / zarr_name_for(s) for s in sources]
    if len({t.name for t in targets}) != len(targets):
        raise TomocareError(f"{out}: two inputs would be written to the same output name")
    for s, t in zip(sources, targets):
        open_volume(s)
        check_output(t, overwrite=overwrite)
    return list(zip(sources, targets))


def export_mrc(
    source: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False
) -> Stats:
    """Stream an OME-Zarr image (or MRC) to an MRC file, restoring its header where known."""
    refuse_inputs(out, [source])
    vol = open_volume(source)
    return write_mrc(
        vol.to_dask(),
        out,
        voxel_size=vol.voxel_size,
        origin=vol.origin,
        header=vol.mrc_header,
        overwrite=overwrite,
    )
