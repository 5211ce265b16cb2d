"""MRC files, lazily: a picklable array-like for dask workers, and a streamed writer.

``dask.array.from_array`` on a ``numpy.memmap`` copies the file into memory, and a memmap pickles
its data; :class:`MrcArray` instead carries only the path and the layout, and maps the file for the
duration of one ``__getitem__`` call, so a worker's resident memory holds one chunk, not the file.
"""

from __future__ import annotations

import base64
import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import dask
import dask.array as da
import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from tomocare.config import DEFAULT_CHUNK
from tomocare.errors import TomocareError
from tomocare.io.atomic import atomic_path
from tomocare.io.blocks import write_blocks
from tomocare.io.stats import Stats, block_stats

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
SUPPORTED_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
# Header fields that describe the data block itself; everything else is carried through.
_DATA_FIELDS = {"nx", "ny", "nz", "mode", "nsymbt", "dmin", "dmax", "dmean", "rms", "map", "machst"}


@dataclass(frozen=True)
class MrcHeader:
    """The parts of an MRC header that tomocare keeps, in a JSON-friendly form."""

    voxel_size: tuple[float, float, float]  # (z, y, x), Å
    origin: tuple[float, float, float]  # (z, y, x), Å
    mode: int
    header_b64: str  # the original 1024-byte main header
    extended_header_b64: str = ""
    exttyp: str = ""

    def to_dict(self) -> dict:
        return {
            "voxel_size": list(self.voxel_size),
            "origin": list(self.origin),
            "mode": self.mode,
            "header_b64": self.header_b64,
            "extended_header_b64": self.extended_header_b64,
            "exttyp": self.exttyp,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MrcHeader:
        return cls(
            voxel_size=tuple(d["voxel_size"]),
            origin=tuple(d["origin"]),
            mode=int(d["mode"]),
            header_b64=d["header_b64"],
            extended_header_b64=d.get("extended_header_b64", ""),
            exttyp=d.get("exttyp", ""),
        )

    @property
    def extended_header(self) -> bytes:
        return base64.b64decode(self.extended_header_b64)


@dataclass(frozen=True)
class MrcArray:
    """A picklable, lazy, read-only view of an MRC file's data block.

    Behaves as an array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``), which is what
    ``dask.array.from_array``, the patch sampler and the block engine need.
    """

    path: str
    shape: tuple[int, ...]
    file_dtype: str  # with byte order, as stored in the file
    offset: int
    header: MrcHeader = field(compare=False, repr=False)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.file_dtype).newbyteorder("=")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self.header.voxel_size

    def __getitem__(self, key) -> np.ndarray:
        """Read a selection. Each plane's rows are read with ``pread`` (a few MB at a time) and the
        selected columns copied out: mapping the file instead lets the kernel's fault-around put
        hundreds of MB of neighbouring pages into the reader's resident memory for one 25 MB block
        of a wide volume, and costs a page fault per row. A selection of whole rows is read in place."""
        planes = _plane_selection(key, self.shape)
        if planes is None:  # fancy indexing, or not a 3-D volume: map the whole data block
            mm = np.memmap(self.path, dtype=self.file_dtype, mode="r", offset=self.offset, shape=self.shape)
            try:
                return np.array(mm[key], dtype=self.dtype)
            finally:
                del mm
        zs, (y0, y1, ystep), xs, squeeze = planes
        ny, nx = self.shape[1:]
        out = np.empty((len(zs), len(range(y0, y1, ystep)), len(range(*xs.indices(nx)))), dtype=self.dtype)
        if out.size:
            _read_planes(self.path, self.offset, np.dtype(self.file_dtype), (ny, nx), zs, (y0, y1, ystep), xs, out)
        return out.squeeze(axis=squeeze) if squeeze else out

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)


#: Bytes one ``pread`` of a plane's rows reads at most (a scratch buffer of this size).
_READ_BYTES = 4 * 2**20


def _read_planes(path: str, offset: int, file_dtype: np.dtype, plane: tuple[int, int], zs: range,
                 rows: tuple[int, int, int], xs: slice, out: np.ndarray) -> None:
    """Fill ``out`` (planes, rows, columns) from an MRC data block with ``pread``: rows ``y0:y1:ystep``
    of the planes ``zs``, columns ``xs``; whole rows straight into ``out`` where its layout allows."""
    ny, nx = plane
    y0, y1, ystep = rows
    row_bytes = nx * file_dtype.itemsize
    whole = ystep == 1 and xs.indices(nx) == (0, nx, 1) and file_dtype == out.dtype
    per_read = max(1, min(y1 - y0, _READ_BYTES // row_bytes))
    scratch = None if whole else np.empty((per_read, nx), dtype=file_dtype)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, z in enumerate(zs):
            for r0 in range(y0, y1, per_read):
                r1 = min(y1, r0 + per_read)
                if whole:
                    buf = out[i, r0 - y0 : r1 - y0]
                else:
                    assert scratch is not None
                    first = -(-(r0 - y0) // ystep) * ystep + y0  # the first selected row at or after r0
                    if first >= r1:
                        continue
                    buf = scratch[: r1 - r0]
                _pread_exactly(fd, buf, offset + (z * ny + r0) * row_bytes, path)
                if not whole:
                    out[i, (first - y0) // ystep : (first - y0) // ystep + len(range(first, r1, ystep))] = (
                        buf[first - r0 :: ystep, xs])
    finally:
        os.close(fd)


def _pread_exactly(fd: int, buf: np.ndarray, at: int, path: str) -> None:
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]  # a contiguous array (cast raises otherwise)
    done = 0
    while done < view.nbytes:
        n = os.preadv(fd, [view[done:]], at + done)
        if n == 0:
            raise TomocareError(f"{path}: truncated MRC file (ends at byte {at + done}, the data need more)")
        done += n


def _plane_selection(key, shape: tuple[int, ...]):
    """``key`` on a 3-D shape as (planes, (first row, row stop, row step), column slice, int axes),
    or None for keys this reader does not split into planes (fancy indexing, negative steps)."""
    if len(shape) != 3:
        return None
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (3 - len(key))
    if len(key) != 3:
        return None
    ranges, squeeze = [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, (int, np.integer)):
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
            k = slice(int(k) % n, int(k) % n + 1)
            squeeze.append(axis)
        if not isinstance(k, slice):
            return None
        start, stop, step = k.indices(n)
        if step < 0:
            return None
        ranges.append((start, max(start, stop), step))
    (z0, z1, zs), (y0, y1, ys), (x0, x1, xs) = ranges
    rows = range(y0, y1, ys)
    y_stop = rows[-1] + 1 if len(rows) else y0
    return range(z0, z1, zs), (y0, y_stop, ys), slice(x0, x1, xs), tuple(squeeze)


def open_mrc(path: str | os.PathLike, *, ndim: int | None = 3, images: bool = False) -> MrcArray:
    """Open an MRC file lazily, checking header and size; raise TomocareError on bad input.

    ``images``: the data are 2-D images, and a single image opens as a stack of one (1, y, x).
    """
    path = Path(path)
    if not path.exists():
        raise TomocareError(f"{path}: no such file")
    if path.is_dir():
        raise TomocareError(f"{path}: is a directory, expected an MRC file")
    if not path.is_file():  # a FIFO, socket or device would block or stream forever
        raise TomocareError(f"{path}: not a regular file (a pipe, socket or device), expected an MRC file")
    with open(path, "rb") as f:
        head = f.read(HEADER_DTYPE.itemsize)
    magic = head[:4]
    if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\x28\xb5\x2f\xfd":
        raise TomocareError(f"{path}: a compressed file (gzip, bzip2 or zstd); decompress it first, tomocare maps "
                            "MRC data in place")
    _check_extended_header_size(path, head)
    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=False) as mrc:
            hdr = mrc.header
            ext = bytes(mrc.extended_header.tobytes()) if mrc.extended_header is not None else b""
            mode = int(hdr.mode)
            if mode not in SUPPORTED_MODES:
                raise TomocareError(
                    f"{path}: MRC mode {mode} is not supported (supported: "
                    + ", ".join(f"{m} ({t})" for m, t in SUPPORTED_MODES.items())
                    + ")"
                )
            file_dtype = mrcfile.utils.data_dtype_from_header(hdr)
            shape = _data_shape(path, hdr)
            _check_axis_order(path, hdr)
            vs = _voxel_size(path, hdr)
            header = MrcHeader(
                voxel_size=vs,
                origin=_origin(path, hdr),
                mode=mode,
                header_b64=base64.b64encode(hdr.tobytes()).decode(),
                extended_header_b64=base64.b64encode(ext).decode(),
                exttyp=bytes(hdr.exttyp).decode("ascii", "replace").strip("\x00 "),
            )
            offset = HEADER_DTYPE.itemsize + int(hdr.nsymbt)
    except TomocareError:
        raise
    except (ValueError, OSError) as err:
        raise TomocareError(f"{path}: not a readable MRC file ({_one_line(err)})") from None
    expected = offset + math.prod(shape) * file_dtype.itemsize  # Python integers: no overflow
    actual = path.stat().st_size
    if actual < expected:
        raise TomocareError(
            f"{path}: truncated MRC file ({actual} bytes, header says {expected} for shape {shape})"
        )
    if images and len(shape) == 2:
        shape = (1, *shape)
    if ndim is not None and len(shape) != ndim:
        if ndim == 3 and len(shape) == 2:
            raise TomocareError(f"{path}: a single 2-D image {shape}, not a tomogram; 2-D images are denoised "
                                "with a 2-D model ('tomocare train --ndim 2', then 'tomocare predict')")
        raise TomocareError(f"{path}: expected a {ndim}-D volume, found shape {shape}")
    if min(shape) < 1:
        raise TomocareError(f"{path}: empty volume, shape {shape}")
    return MrcArray(str(path.resolve()), shape, file_dtype.str, offset, header)


def mrc_to_dask(source: MrcArray, chunks: int | tuple[int, ...] = DEFAULT_CHUNK) -> da.Array:
    """A dask array over an MRC file; each task maps only the chunk it reads."""
    name = f"mrc-{dask.base.tokenize(source.path, source.shape, source.file_dtype, os.path.getmtime(source.path))}"
    return da.from_array(source, chunks=chunks, lock=False, asarray=True, name=name,
                         meta=np.empty((0,) * source.ndim, source.dtype))


def _write_block(block: np.ndarray, target: dict, region: tuple[slice, ...]) -> np.ndarray:
    """Write one block into the MRC data block that ``target`` describes (``np.memmap``'s filename,
    dtype, offset and shape: small and picklable, mapped on the worker); return its statistics."""
    mm = np.memmap(mode="r+", **target)
    try:
        mm[region] = block.astype(mm.dtype, copy=False)
        mm.flush()
    finally:
        del mm
    return block_stats(block)


def write_mrc(
    array: da.Array,
    path: str | os.PathLike,
    *,
    voxel_size: float | tuple[float, float, float],
    origin: tuple[float, float, float] | None = None,
    header: MrcHeader | None = None,
    overwrite: bool = False,
    check: Callable[[Stats], None] | None = None,
) -> Stats:
    """Write a dask array to an MRC file block by block, on the current dask scheduler.

    The file is written under a temporary name and moved into place when complete. Header
    statistics (min, max, mean, rms) are accumulated per block, never over the whole volume at
    once. ``header`` (from an input file) carries the original header fields and extended header
    through; ``voxel_size`` and ``origin`` (z, y, x) override it. Returns the data statistics;
    ``check``, given them before the file is moved into place, may raise: then nothing is left.
    """
    path = Path(path)
    dtype = np.dtype(array.dtype)
    if dtype == np.float64:
        dtype = np.dtype(np.float32)
    try:
        mode = mrcfile.utils.mode_from_dtype(dtype)
    except ValueError:
        raise TomocareError(f"{path}: cannot write dtype {dtype} to MRC") from None
    if mode == 6 and dtype == np.uint8:
        dtype = np.dtype(np.uint16)
    vs = (voxel_size,) * 3 if np.isscalar(voxel_size) else tuple(cast(Sequence[float], voxel_size))
    ext = header.extended_header if header is not None else b""

    with atomic_path(path, overwrite=overwrite) as tmp:
        with mrcfile.new_mmap(
            tmp,
            shape=array.shape,
            mrc_mode=mode,
            extended_header=np.frombuffer(ext, dtype="V1") if ext else None,
            exttyp=header.exttyp.encode() if header is not None and header.exttyp else None,
            overwrite=True,
        ) as mrc:
            if header is not None:
                _carry_header_fields(mrc.header, header)
            if header is None or tuple(header.voxel_size) != vs:
                mrc.voxel_size = (vs[2], vs[1], vs[0])
            org = origin if origin is not None else (header.origin if header is not None else None)
            if org is not None:
                mrc.header.origin = (org[2], org[1], org[0])
            offset = mrc.header.nbytes + int(mrc.header.nsymbt)
        target = {"filename": str(tmp), "dtype": dtype.str, "offset": offset, "shape": tuple(array.shape)}
        stats = write_blocks(array, _write_block, target)
        if check is not None:
            check(stats)
        _write_header_stats(tmp, stats)
    return stats


def _carry_header_fields(dst: np.recarray, src: MrcHeader) -> None:
    original = np.frombuffer(base64.b64decode(src.header_b64), dtype=HEADER_DTYPE)
    # The stored header may be big-endian; reinterpret by machine stamp as mrcfile does.
    byte_order = mrcfile.utils.byte_order_from_machine_stamp(original["machst"][0])
    original = original.view(HEADER_DTYPE.newbyteorder(byte_order))[0]
    for name in HEADER_DTYPE.names:
        if name not in _DATA_FIELDS:
            dst[name] = original[name]


def _write_header_stats(path: Path, stats: Stats) -> None:
    hdr = np.memmap(path, dtype=HEADER_DTYPE, mode="r+", offset=0, shape=(1,))
    try:
        hdr["dmin"], hdr["dmax"], hdr["dmean"], hdr["rms"] = stats.min, stats.max, stats.mean, stats.std
        hdr.flush()
    finally:
        del hdr


def _data_shape(path: Path, hdr) -> tuple[int, ...]:
    """The data shape the header describes, checked: positive sizes; a volume-stack space group
    (401-630) with one volume (mz 0 or mz = nz) reads as a volume, a stack of several is refused."""
    nx, ny, nz, mz, ispg = (int(hdr.nx), int(hdr.ny), int(hdr.nz), int(hdr.mz), int(hdr.ispg))
    if min(nx, ny, nz) < 1:
        raise TomocareError(f"{path}: header sizes nx {nx}, ny {ny}, nz {nz} must be positive")
    if 401 <= ispg <= 630 and 0 < mz < nz and nz % mz == 0:
        raise TomocareError(f"{path}: a stack of {nz // mz} volumes (space group {ispg}); give one volume per file")
    if ispg == 0 and nz == 1:
        return (ny, nx)
    return (nz, ny, nx)


def _voxel_size(path: Path, hdr) -> tuple[float, float, float]:
    """(z, y, x) voxel size in Å from the cell and the sampling; 0 where unset (sampling 0, or a
    zero cell, as many programs write); a negative, infinite or NaN value is refused."""
    sizes = []
    for axis in ("z", "y", "x"):
        cell, samples = np.float32(getattr(hdr.cella, axis)), int(getattr(hdr, f"m{axis}"))
        with np.errstate(all="ignore"):
            size = float(cell / np.float32(samples)) if samples > 0 else 0.0
        if not math.isfinite(size) or size < 0:
            raise TomocareError(f"{path}: voxel size along {axis} is {size:g} Å (cell {float(cell):g}, sampling "
                                f"{samples}); fix the header (e.g. IMOD's alterheader -del)")
        sizes.append(_f32(size))
    return cast(tuple[float, float, float], tuple(sizes))


def _check_extended_header_size(path: Path, head: bytes) -> None:
    """An extended header longer than the file is refused before mrcfile reads it (it would allocate
    nsymbt bytes, up to 2 GiB, first); a header mrcfile cannot read is left for it to say why."""
    order = {0x44: "<", 0x11: ">"}.get(head[212]) if len(head) == HEADER_DTYPE.itemsize else None
    if order is None:
        return
    nsymbt, size = struct.unpack_from(f"{order}i", head, 92)[0], path.stat().st_size
    if nsymbt > size - len(head):
        raise TomocareError(f"{path}: truncated MRC file ({size} bytes, header says an extended header of {nsymbt})")


def _check_axis_order(path: Path, hdr) -> None:
    """Columns, rows and sections must be x, y and z (mapc, mapr, maps 1, 2, 3): a file stored in another
    axis order is refused, not read transposed; values that are no axis order (0: unset) are ignored."""
    order = (int(hdr.mapc), int(hdr.mapr), int(hdr.maps))
    if sorted(order) == [1, 2, 3] and order != (1, 2, 3):
        raise TomocareError(f"{path}: axis order (mapc, mapr, maps) {order} is not x, y, z (1, 2, 3); "
                            "write the volume in x, y, z order first")


def _origin(path: Path, hdr) -> tuple[float, float, float]:
    """(z, y, x) origin in Å; an infinite or NaN value is refused."""
    origin = cast(tuple[float, float, float], tuple(_f32(getattr(hdr.origin, axis)) for axis in ("z", "y", "x")))
    for axis, value in zip("zyx", origin):
        if not math.isfinite(value):
            raise TomocareError(f"{path}: origin along {axis} is {value:g} Å; fix the header "
                                "(e.g. IMOD's alterheader -org 0,0,0)")
    return origin


def _f32(value) -> float:
    """A float32 header value as the shortest decimal that round-trips (3.3, not 3.2999999523)."""
    return float(str(np.float32(value)))


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
