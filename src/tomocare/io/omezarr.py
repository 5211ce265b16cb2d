"""OME-Zarr images: chunk-aligned parallel writes, a multiscale pyramid, metadata.

Two formats, one writer (the group's zarr format decides): OME-Zarr 0.5 on zarr v3 (the default), and
OME-Zarr 0.4 on zarr v2 (``ome-zarr-0.4``: the layout of the CZ cryoET data portal and of copick, with
``/``-nested chunk keys and a numcodecs compressor). Layout of a tomocare store::

    NAME.zarr/            group; v3: attributes {"ome": {"version": "0.5", "multiscales": [...]}, "tomocare": {...}}
                                 v2: attributes {"multiscales": [{"version": "0.4", ...}], "tomocare": {...}}
      0/  1/  2/          full resolution, 2x and 4x averaged (z, y, x)

``tomocare`` attributes hold the statistics of level 0 (mean, std, min, max, non-finite count),
the original MRC header (when converted from MRC) and provenance. Both formats read back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast

import dask.array as da
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from tomocare import __version__
from tomocare.config import DEFAULT_CHUNK, FORMATS, PORTAL_CHUNK
from tomocare.errors import TomocareError
from tomocare.io.atomic import atomic_path
from tomocare.io.blocks import write_blocks
from tomocare.io.stats import Stats, block_stats

#: Short names of the chunk compressions tomocare writes; every store of any of them reads back.
COMPRESSIONS = ("blosc-lz4", "blosc-zstd", "zstd", "none")
#: The default: blosc's lz4 with bit shuffling (as the CZ cryoET data portal's stores use lz4)
#: compresses noisy float32 tomograms as much as blosc-zstd level 3 (about 1.17x) at four times
#: the speed, which on two cores is the difference in conversion speed (benchmarks/convert.py).
DEFAULT_COMPRESSION = "blosc-lz4"
AXES = ("z", "y", "x")
ZarrFormat = Literal[2, 3]


def zarr_format_for(output_format: str) -> ZarrFormat:
    """The zarr format of an OME-Zarr output format: 3 for ``ome-zarr-0.5``, 2 for ``ome-zarr-0.4``."""
    if output_format == "ome-zarr-0.5":
        return 3
    if output_format == "ome-zarr-0.4":
        return 2
    raise TomocareError(f"format {output_format!r} is not an OME-Zarr format (choose from {', '.join(FORMATS[:2])})")


def default_chunk(output_format: str) -> int:
    """Chunk edge when none is given: 256 for OME-Zarr 0.4 (as the data portal), else ``DEFAULT_CHUNK``."""
    return PORTAL_CHUNK if output_format == "ome-zarr-0.4" else DEFAULT_CHUNK


#: Blosc compressor and level of each blosc name (bit shuffling for all), and zstd's level.
_BLOSC: dict[str, tuple[Literal["lz4", "zstd"], int]] = {"blosc-lz4": ("lz4", 5), "blosc-zstd": ("zstd", 3)}
_ZSTD_LEVEL = 3


def codecs_for(compression: str, zarr_format: int = 3) -> list:
    """Compressor list from a short name: zarr v3 codecs, or numcodecs for zarr v2 (blosc for the blosc names)."""
    if compression in _BLOSC:
        cname, clevel = _BLOSC[compression]
        if zarr_format == 2:
            return [numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=numcodecs.Blosc.BITSHUFFLE)]
        return [BloscCodec(cname=cname, clevel=clevel, shuffle=BloscShuffle.bitshuffle)]
    if compression == "zstd":
        return [numcodecs.Zstd(level=_ZSTD_LEVEL) if zarr_format == 2 else ZstdCodec(level=_ZSTD_LEVEL)]
    if compression == "none":
        return []
    raise TomocareError(f"unknown compression {compression!r} (choose from {', '.join(COMPRESSIONS)})")


def _zarr_format(group: zarr.Group) -> ZarrFormat:
    return group.metadata.zarr_format


def _write_chunk(block: np.ndarray, target: zarr.Array, region: tuple[slice, ...]) -> np.ndarray:
    target[region] = block
    return block_stats(block)


def create_level(group: zarr.Group, name: str, shape, chunks, dtype, compression: str) -> zarr.Array:
    """An empty level array of an OME-Zarr group, in the group's zarr format (v2: chunk keys nested
    with ``/``, as the data portal's stores and copick expect)."""
    zarr_format = _zarr_format(group)
    layout: dict = ({"dimension_names": AXES[-len(shape) :]} if zarr_format == 3
                    else {"chunk_key_encoding": {"name": "v2", "separator": "/"}})
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        compressors=codecs_for(compression, zarr_format),
        fill_value=0,
        **layout,
    )


def _store_level(array: da.Array, group: zarr.Group, name: str, chunks: tuple[int, ...], compression: str) -> Stats:
    chunks = tuple(min(c, s) for c, s in zip(chunks, array.shape))
    target = create_level(group, name, array.shape, chunks, array.dtype, compression)
    aligned = array.rechunk(chunks)  # one block per zarr chunk: parallel writes without locks
    return write_blocks(aligned, _write_chunk, target)


class Downsampled:
    """A lazy, picklable 2×-per-axis mean of an array-like (excess voxels at the end trimmed).

    Reading a region reads exactly the source region it averages, so each pyramid chunk is one
    task reading its 2³ source chunks.
    """

    def __init__(self, source):
        self.source = source
        self.shape = tuple(s // 2 for s in source.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        bounds = [k.indices(n)[:2] for k, n in zip(key, self.shape)]
        block = np.asarray(self.source[tuple(slice(2 * a, 2 * b) for a, b in bounds)], dtype=np.float32)
        for axis in range(self.ndim):  # pairs summed axis by axis: ten times faster than a mean over 2^n
            even = (slice(None),) * axis + (slice(0, None, 2),)
            odd = (slice(None),) * axis + (slice(1, None, 2),)
            block = np.add(block[even], block[odd])
        block *= np.float32(0.5**self.ndim)
        return block


def _level(group: zarr.Group, name: str) -> zarr.Array:
    return cast(zarr.Array, group[name])


def write_pyramid(group: zarr.Group, levels: int, compression: str) -> int:
    """Levels 1.. of the pyramid, each the 2×2×2 mean of the previous; return the level count."""
    chunks = _level(group, "0").chunks
    n_levels = 1
    for level in range(1, levels):
        smaller = Downsampled(group[str(level - 1)])
        if min(smaller.shape) < 2:
            break
        _store_level(da.from_array(smaller, chunks=chunks, lock=False, asarray=True), group, str(level), chunks,
                     compression)
        n_levels += 1
    return n_levels


def write_image_metadata(
    group: zarr.Group, path: Path, voxel_size: tuple[float, ...], n_levels: int, stats: Stats, attrs: dict | None
) -> None:
    """OME-Zarr multiscales (0.5 under ``ome`` on zarr v3, 0.4 at the top on zarr v2) plus tomocare's
    own attributes (statistics, provenance, the voxel size with 0 where unknown: see ``multiscales_metadata``)."""
    version = "0.5" if _zarr_format(group) == 3 else "0.4"
    ome = multiscales_metadata(voxel_size, n_levels, path.stem, _level(group, "0").ndim, version)
    group.attrs.update(
        {
            **({"ome": ome} if version == "0.5" else ome),
            "tomocare": {"version": __version__, "stats": stats.to_dict(),
                         "voxel_size": [float(v) for v in voxel_size], **(attrs or {})},
        }
    )


def multiscales_metadata(
    voxel_size: tuple[float, ...], levels: int, name: str, ndim: int = 3, version: str = "0.5"
) -> dict:
    """OME-Zarr ``multiscales`` metadata: axes in Å, one scale (+ half-voxel shift) per level. 0.5: the
    ``ome`` attribute, ``{"version", "multiscales"}``; 0.4: the group's attributes, ``{"multiscales"}`` with
    the version in each entry. An unknown voxel size (0: an MRC header that does not say) is written as
    1, as OME-Zarr scales are positive; tomocare's attributes keep the 0 (``known_voxel_size``)."""
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in AXES[-ndim:]]
    scales = [v if v > 0 else 1.0 for v in voxel_size]
    datasets = []
    for level in range(levels):
        factor = 2**level
        transforms = [{"type": "scale", "scale": [float(v) * factor for v in scales]}]
        if level:
            transforms.append({"type": "translation", "translation": [float(v) * (factor - 1) / 2 for v in scales]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    if version == "0.4":
        return {"multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": datasets}]}
    return {"version": "0.5", "multiscales": [{"name": name, "axes": axes, "datasets": datasets}]}


def write_ome_zarr(
    array: da.Array,
    path: str | os.PathLike,
    *,
    voxel_size: tuple[float, float, float],
    chunks: int | tuple[int, ...] | None = None,
    compression: str = DEFAULT_COMPRESSION,
    levels: int = 3,
    attrs: dict | None = None,
    overwrite: bool = False,
    check: Callable[[Stats], None] | None = None,
    output_format: str = "ome-zarr-0.5",
) -> Stats:
    """Write a dask volume as an OME-Zarr image (``output_format`` ``ome-zarr-0.5`` or ``ome-zarr-0.4``)
    with a pyramid; return level-0 statistics. ``chunks`` default: ``default_chunk(output_format)``.

    Every level is written block by block on the current dask scheduler, each block aligned to
    one zarr chunk. The store is assembled under a temporary name and moved into place at the end,
    unless ``check`` (given the statistics of level 0) raises: then nothing is left.
    """
    path = Path(path)
    zarr_format = zarr_format_for(output_format)
    chunks = default_chunk(output_format) if chunks is None else chunks
    edges = (chunks,) * array.ndim if isinstance(chunks, int) else chunks
    chunks = tuple(min(c, s) for c, s in zip(edges, array.shape))
    codecs_for(compression)  # fail early on a bad name
    with atomic_path(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        stats = _store_level(array, group, "0", chunks, compression)
        if check is not None:
            check(stats)
        n_levels = write_pyramid(group, levels, compression)
        write_image_metadata(group, path, voxel_size, n_levels, stats, attrs)
    return stats


def is_zarr(path: str | os.PathLike) -> bool:
    """A zarr group's directory: v3 (``zarr.json``) or v2 (``.zgroup``)."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())


#: Largest plausible level 0: 2^42 voxels (a 16k x 16k x 16k volume); beyond it, metadata is damaged.
MAX_VOXELS = 2**42


def open_ome_zarr(path: str | os.PathLike) -> tuple[zarr.Array, dict]:
    """Open level 0 of an OME-Zarr image read-only; return it with the group attributes.

    OME-Zarr 0.5 (zarr v3) and 0.4 (zarr v2: ``multiscales`` at the top of the attributes, which
    are returned under ``ome`` too, so that callers read one layout). The metadata is checked before
    anything is read: multiscales with datasets, level 0 an array of a real numeric type with positive
    chunks and a plausible shape, a positive finite scale of one value per axis. Anything else is one
    ``TomocareError`` naming the store.
    """
    path = Path(path)
    if not path.exists():
        raise TomocareError(f"{path}: no such file or directory")
    v2 = not (path / "zarr.json").exists() and (path / ".zgroup").exists()
    for name in (".zgroup", ".zattrs") if v2 else ("zarr.json",):
        if name == "zarr.json" or (path / name).exists() or (path / name).is_symlink():
            _check_metadata_file(path, path / name)
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=2 if v2 else 3)
        attrs = dict(group.attrs)
    except Exception as err:  # zarr raises several types for a malformed store
        raise TomocareError(f"{path}: not a readable OME-Zarr image ({' '.join(str(err).split())})") from None
    if v2 and "ome" not in attrs and "multiscales" in attrs:  # OME-Zarr 0.4 and earlier
        multiscales = attrs["multiscales"]
        first = multiscales[0] if isinstance(multiscales, list) and multiscales else None
        attrs["ome"] = {"version": first.get("version") if isinstance(first, dict) else None,
                        "multiscales": multiscales}
    ome = attrs.get("ome")
    if not isinstance(ome, dict):
        raise TomocareError(f"{path}: zarr group has no OME-Zarr metadata ('ome' attribute"
                            f"{', or multiscales for 0.4' if v2 else ''})")
    level = _level0(path, ome)
    for name in ("zarr.json", ".zarray"):
        if (path / level / name).exists():
            _check_metadata_file(path, path / level / name)
    try:
        array = group[level]
    except Exception as err:
        raise TomocareError(f"{path}: level {level!r} is not readable ({' '.join(str(err).split())})") from None
    if not isinstance(array, zarr.Array):
        raise TomocareError(f"{path}: level {level!r} is a group, not an array")
    try:
        dtype = np.dtype(array.dtype)
    except TypeError:
        dtype = np.dtype(object)
    if dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise TomocareError(f"{path}: data type {dtype} is not supported (real integers or floats)")
    if any(int(c) < 1 for c in array.chunks) or any(int(n) < 1 for n in array.shape):
        raise TomocareError(
            f"{path}: level {level!r} has shape {array.shape} and chunks {array.chunks}; both must be positive"
        )
    if np.prod([float(n) for n in array.shape]) > MAX_VOXELS:
        raise TomocareError(f"{path}: level {level!r} shape {array.shape} is implausibly large (damaged metadata?)")
    voxel_size_from_attrs(attrs, path, array.ndim)  # checked now, read again by the caller
    return array, attrs


def _check_metadata_file(path: Path, meta: Path) -> None:
    """A metadata file must be a regular file: reading a pipe or a device would block or never end."""
    if not meta.is_file():
        raise TomocareError(f"{path}: {meta.relative_to(path)} is not a regular file (a directory, pipe or device)")


def _level0(path: Path, ome: dict) -> str:
    multiscales = ome.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise TomocareError(f"{path}: OME-Zarr metadata has no multiscales list")
    datasets = multiscales[0].get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise TomocareError(f"{path}: OME-Zarr multiscales have no datasets")
    level = datasets[0].get("path")
    if not isinstance(level, str) or not level or level.startswith("/") or ".." in level.split("/"):
        raise TomocareError(f"{path}: OME-Zarr dataset path {level!r} is not a path inside the store")
    return level


def known_voxel_size(attrs: dict, scale: tuple[float, ...]) -> tuple[float, ...]:
    """The voxel size: the OME-Zarr ``scale``, with 0 (unknown) on the axes where tomocare wrote 1 for
    an unknown size (``multiscales_metadata``)."""
    stored = attrs.get("tomocare", {}).get("voxel_size") if isinstance(attrs.get("tomocare"), dict) else None
    if not isinstance(stored, list) or len(stored) != len(scale):
        return scale
    return tuple(0.0 if v == 0 and s == 1.0 else s for v, s in zip(stored, scale))


def voxel_size_from_attrs(attrs: dict, path: str | os.PathLike = "OME-Zarr",
                          ndim: int | None = None) -> tuple[float, ...]:
    """Level-0 voxel size (z, y, x) in Å from OME-Zarr multiscales metadata, checked."""
    try:
        transforms = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        scales = [t["scale"] for t in transforms if isinstance(t, dict) and t.get("type") == "scale"]
    except (KeyError, IndexError, TypeError):
        scales = []
    if not scales:
        raise TomocareError(f"{path}: OME-Zarr metadata has no scale transform for level 0")
    scale = scales[0]
    ok = isinstance(scale, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
    values = tuple(float(v) for v in scale) if ok else ()
    if not ok or (ndim is not None and len(values) != ndim) or not all(np.isfinite(v) and v > 0 for v in values):
        raise TomocareError(f"{path}: OME-Zarr scale {scale!r} is not one positive number per axis")
    return values
