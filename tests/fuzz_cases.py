"""Generated malformed inputs for tests/test_fuzz.py: each case writes one MRC file or OME-Zarr store
and says what a right answer to it is (its verdict)."""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import json
import lzma
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from helpers import write_test_mrc
from test_malformed import CASES as HEADER_CASES
from test_malformed import _mutate
from test_malformed_zarr import CASES as ZARR_METADATA_CASES

from tomocare.io.mrc import open_mrc
from tomocare.io.omezarr import create_level, write_image_metadata
from tomocare.io.stats import Stats, block_stats

SHAPE = (16, 24, 20)  # z, y, x: two by two chunks of 16 in y and x
VOXEL = 10.0
CHUNK = 16

# Verdicts: what exit 0 may mean (exit 2 with one line naming the input is right for all but VALID).
VALID = "valid"  # a correct input: every command succeeds with the correct output
INVALID = "invalid"  # not a volume (cut, compressed, not a regular file, a stack): every command refuses it
VOXELS = "voxels"  # a readable header over voxels nothing can be computed from (all NaN, constant, a corrupt
#                    chunk): commands that read voxels refuse it; describing the header (info, --dry-run) is right
CONSTANT = "constant"  # VOXELS of one value: as VOXELS, but export writes it (a result may be constant)
EITHER = "either"  # a header a reader may accept or refuse: refused, or the correct answer for what it says
PAIR = "pair"  # a good volume, but not the partner's shape or voxel size: refused by commands of two inputs


def volume(seed: int = 0, shape: tuple[int, ...] = SHAPE, dtype=np.float32) -> np.ndarray:
    """Reproducible noise, scaled into the range of integer types."""
    data = np.random.default_rng(seed).normal(size=shape)
    if np.dtype(dtype).kind in "iu":
        data = np.abs(data) * 20 if np.dtype(dtype).kind == "u" else data * 20
    return data.astype(dtype)


BASE = volume(0)  # the volume every mutated case starts from
PARTNER = volume(1)  # the other half / the reference the pair commands use


@dataclass(frozen=True)
class Built:
    """A written input: its path and the voxels a correct reader returns (None: as its header says)."""

    path: Path
    data: np.ndarray | None = None


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    verdict: str
    build: Callable[[Path], Built]  # writes the input at (or beside) the given path
    suffix: str = ".mrc"

    @property
    def id(self) -> str:
        return f"{self.family}: {self.name}"


# ---------------------------------------------------------------- MRC files

def _mrc(data: np.ndarray = BASE, voxel: float = VOXEL, ext: bytes = b"") -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        return write_test_mrc(path, data, voxel_size=(voxel,) * 3, extended_header=ext, exttyp=b"FUZZ" if ext else b"")
    return write


def _patched(patches: list[tuple[int, bytes]], data: np.ndarray | None = BASE) -> Callable:
    """The base file with bytes replaced at offsets; ``data``: the voxels it still holds."""
    def build(path: Path) -> Built:
        raw = bytearray(_mrc()(path).read_bytes())
        for offset, value in patches:
            raw[offset:offset + len(value)] = value
        path.write_bytes(bytes(raw))
        return Built(path, data)
    return build


def _i32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def _f32(value: float) -> bytes:
    return struct.pack("<f", value)


def _from_test_malformed(name: str, fmt: str, offset: int, value) -> Callable:
    layout = name in ("nx", "ny", "nz", "mode", "nsymbt")  # the voxels then are what the header says

    def build(path: Path) -> Built:
        _mrc()(path)
        _mutate(path, fmt, offset, value)
        return Built(path, None if layout else BASE)
    return build


def _cut(size: int | Callable[[int], int], ext: bytes = b"") -> Callable:
    def build(path: Path) -> Built:
        raw = _mrc(ext=ext)(path).read_bytes()
        path.write_bytes(raw[: size(len(raw)) if callable(size) else size])
        return Built(path)
    return build


def _appended(n: int) -> Callable:
    def build(path: Path) -> Built:
        with open(_mrc()(path), "ab") as f:
            f.write(b"\xab" * n)
        return Built(path, BASE)
    return build


def _content(data: np.ndarray, voxel: float = VOXEL) -> Callable:
    def build(path: Path) -> Built:
        return Built(_mrc(data, voxel)(path), data)
    return build


def _bytes(make: Callable[[bytes], bytes]) -> Callable:
    """A file whose bytes are made from those of the base file (compressed, replaced)."""
    def build(path: Path) -> Built:
        raw = _mrc()(path).read_bytes()
        path.write_bytes(make(raw))
        return Built(path)
    return build


def _zip(raw: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("v.mrc", raw)
    return buf.getvalue()


def _random_bytes(seed: int, size: int) -> Callable:
    return _bytes(lambda _: np.random.default_rng(seed).bytes(size))


def _random_header(seed: int) -> Callable:
    """A header with 'MAP ' and a little-endian stamp, random sizes, mode, extended header and length."""
    def build(path: Path) -> Built:
        rng = np.random.default_rng(1000 + seed)
        raw = bytearray(_mrc()(path).read_bytes())
        nx, ny, nz = (int(v) for v in rng.integers(-3, 40, 3))
        mode = int(rng.choice([0, 1, 2, 6, 12, 2, 2, 3, 4, 101]))
        nsymbt = int(rng.choice([0, 0, 0, 4, 96, int(rng.integers(-50, 5000))]))
        struct.pack_into("<4i", raw, 0, nx, ny, nz, mode)
        struct.pack_into("<3i", raw, 28, *(int(v) for v in rng.integers(-2, 40, 3)))
        struct.pack_into("<3f", raw, 40, *(float(v) for v in rng.uniform(-50, 500, 3)))
        struct.pack_into("<2i", raw, 88, int(rng.choice([0, 1, 401, 1000])), nsymbt)
        length = int(rng.integers(900, len(raw) + 2000))
        path.write_bytes(bytes(raw[:length]) + b"\x00" * max(0, length - len(raw)))
        return Built(path)
    return build


def _special(make: Callable[[Path], Path]) -> Callable:
    """Something that is not a plain MRC file at ``path`` (or a link or a file beside it)."""
    def build(path: Path) -> Built:
        return Built(make(path))
    return build


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _symlink(target: Callable[[Path], Path | str]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.symlink_to(target(path))
        return path
    return make


def _directory(with_files: bool) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.mkdir()
        if with_files:
            _mrc()(path / "inner.mrc")
        return path
    return make


def _unreadable(path: Path) -> Path:
    _mrc()(path).chmod(0)
    return path


def _valid_elsewhere(name: str, link: str = "") -> Callable:
    """The base file under another name (spaces, non-ASCII), or reached through a link."""
    def build(path: Path) -> Built:
        target = _mrc()(path.with_name(name))
        if link == "symlink":
            path.symlink_to(target)
            return Built(path, BASE)
        if link == "hardlink":
            os.link(target, path)
            return Built(path, BASE)
        return Built(target, BASE)
    return build


def _with(data: np.ndarray, index, value) -> np.ndarray:
    out = data.copy()
    out[index] = value
    return out


def mrc_cases() -> list[Case]:
    cases = [Case(f"{name}={value}", "header (test_malformed)", EITHER, _from_test_malformed(name, fmt, off, value))
             for name, fmt, off, value in HEADER_CASES]

    def add(family: str, verdict: str, name: str, build: Callable) -> None:
        cases.append(Case(name, family, verdict, build))

    n_data = BASE.nbytes
    for axis, offset, size in (("x", 0, SHAPE[2]), ("y", 4, SHAPE[1]), ("z", 8, SHAPE[0])):
        add("header sizes", EITHER, f"n{axis}={size - 1}", _patched([(offset, _i32(size - 1))], None))
        for value in (size + 1, 10 * size, 65536):
            add("header sizes", INVALID, f"n{axis}={value}", _patched([(offset, _i32(value))], None))
    for mode in (3, 4, 5, 101, -2):
        add("header sizes", INVALID, f"mode={mode}", _patched([(12, _i32(mode))], None))
    add("header sizes", INVALID, "nsymbt=4", _patched([(92, _i32(4))], None))
    add("header sizes", INVALID, "nsymbt=-4", _patched([(92, _i32(-4))], None))
    for axis, offset in (("x", 196), ("y", 200), ("z", 204)):
        for value in (0.0, -1e6, float("nan"), float("inf"), float("-inf"), 3e38):
            add("header origin", EITHER, f"origin.{axis}={value}", _patched([(offset, _f32(value))]))
    for field, offset in (("dmin", 76), ("dmax", 80), ("dmean", 84), ("rms", 216)):
        for value in (float("nan"), float("-inf")):
            add("header statistics", VALID, f"{field}={value}", _patched([(offset, _f32(value))]))
    for order in ((2, 1, 3), (3, 2, 1), (1, 3, 2), (2, 3, 1), (3, 1, 2)):  # data stored in another axis order
        add("header axis order", INVALID, f"mapc,mapr,maps={order}", _patched([(64, _i32(*order))], None))
    for order in ((0, 0, 0), (1, 1, 1), (-1, 5, 9)):  # not an axis order: unset or damaged
        add("header axis order", EITHER, f"mapc,mapr,maps={order}", _patched([(64, _i32(*order))]))
    for stamp in (b"MAP\x00", b"map ", b"\x00\x00\x00\x00", b"PAM "):
        add("header map", EITHER, f"map={stamp!r}", _patched([(208, stamp)]))
    for stamp in (b"\x11\x11\x00\x00", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x44\x44\x00\x00",
                  b"\x11\x00\x00\x00"):
        add("header machine stamp", EITHER, f"machst={stamp!r}", _patched([(212, stamp)]))
    add("header labels", VALID, "labels of 0xff", _patched([(220, _i32(10)), (224, b"\xff" * 800)]))
    add("header labels", EITHER, "nlabl=-5", _patched([(220, _i32(-5))]))
    add("header labels", VALID, "exttyp ZZZZ without extended header", _patched([(104, b"ZZZZ")]))
    add("header labels", EITHER, "nversion=-1", _patched([(108, _i32(-1))]))

    ext = bytes(range(128))
    for size in (0, 1, 4, 16, 100, 208, 216, 223, 224, 500, 1000, 1023, 1024, 1025, 1028):
        add("truncated", INVALID, f"cut at {size} bytes", _cut(size))
    for label, size in (("a quarter", lambda n: 1024 + n_data // 4), ("half", lambda n: 1024 + n_data // 2),
                        ("all but 4 bytes", lambda n: n - 4), ("all but 1 byte", lambda n: n - 1)):
        add("truncated", INVALID, f"data cut: {label}", _cut(size))
    for label, size in (("header only", 1024), ("1 byte of it", 1025), ("half of it", 1024 + 64),
                        ("all but 1 byte of it", 1024 + 127), ("no data", 1024 + 128),
                        ("half the data", 1024 + 128 + n_data // 2), ("all but 1 byte", lambda n: n - 1)):
        add("truncated extended header", INVALID, label, _cut(size, ext))
    for n in (1, 4, 4096):
        add("trailing bytes", EITHER, f"{n} bytes appended", _appended(n))

    add("not a file", INVALID, "empty file", _bytes(lambda _: b""))
    add("not a file", INVALID, "a text file", _bytes(lambda _: b"tomogram reconstructed with IMOD\n" * 3))
    add("not a file", INVALID, "a long text file", _bytes(lambda _: b"x y z value\n" * 2000))
    add("not a file", INVALID, "a directory", _special(_directory(False)))
    add("not a file", INVALID, "a directory holding an MRC file", _special(_directory(True)))
    add("not a file", INVALID, "a FIFO", _special(_fifo))
    add("not a file", INVALID, "a symlink loop", _special(_symlink(lambda p: p)))
    add("not a file", INVALID, "a dangling symlink", _special(_symlink(lambda p: p.with_name("gone.mrc"))))
    add("not a file", INVALID, "a symlink to /dev/null", _special(_symlink(lambda p: "/dev/null")))
    add("not a file", INVALID, "a symlink to a FIFO", _special(_symlink(lambda p: _fifo(p.with_name("pipe")))))
    if os.geteuid() != 0:  # root reads a file whatever its permissions
        add("not a file", INVALID, "unreadable (chmod 000)", _special(_unreadable))
    add("not a file", VALID, "a symlink to an MRC file", _valid_elsewhere("target.mrc", "symlink"))
    add("not a file", VALID, "a hard link", _valid_elsewhere("target.mrc", "hardlink"))
    add("not a file", VALID, "a name with spaces and umlauts", _valid_elsewhere("tomo gr\u00fcn #1.mrc"))
    for name, make in (("gzip", gzip.compress), ("bzip2", bz2.compress), ("xz", lzma.compress),
                       ("zstd", numcodecs.Zstd().encode), ("zlib", zlib.compress), ("zip", _zip)):
        add("compressed", INVALID, name, _bytes(lambda raw, make=make: bytes(make(raw))))
    for seed, size in enumerate((1, 100, 1023, 1024, 1024 + n_data, 40_000) * 2):
        add("random bytes", INVALID, f"{size} bytes, seed {seed}", _random_bytes(seed, size))
    for seed in range(40):
        add("random header", EITHER, f"seed {seed}", _random_header(seed))

    nan = np.full(SHAPE, np.nan, np.float32)
    for name, data in (
        ("all NaN", nan), ("all +inf", np.full(SHAPE, np.inf, np.float32)),
        ("all -inf", np.full(SHAPE, -np.inf, np.float32)),
        ("NaN and inf", np.where(BASE > 0, np.nan, np.inf).astype(np.float32)),
        ("all NaN float16", np.full(SHAPE, np.nan, np.float16)),
    ):
        add("voxels", VOXELS, name, _content(data))
    for name, data in (
        ("constant 0", np.zeros(SHAPE, np.float32)), ("constant 1.5", np.full(SHAPE, 1.5, np.float32)),
        ("constant int16", np.full(SHAPE, 7, np.int16)), ("constant uint16", np.zeros(SHAPE, np.uint16)),
        ("constant float16", np.full(SHAPE, -2, np.float16)), ("one finite voxel", _with(nan, (3, 4, 5), 1.0)),
        ("constant but one NaN", _with(np.ones(SHAPE, np.float32), (0, 0, 0), np.nan)),
    ):
        add("voxels", CONSTANT, name, _content(data))
    for dtype in (np.int8, np.int16, np.uint16, np.float16):
        add("voxels", VALID, np.dtype(dtype).name, _content(volume(2, dtype=dtype)))
    add("voxels", VALID, "two values", _content((BASE > 0).astype(np.float32)))
    add("voxels", VALID, "one outlier", _content(_with(np.zeros(SHAPE, np.float32), (8, 12, 10), 1.0)))
    add("voxels", EITHER, "one NaN voxel", _content(_with(BASE, (8, 12, 10), np.nan)))
    add("voxels", EITHER, "a NaN slice", _content(_with(BASE, 3, np.nan)))
    for shape in ((2, 2, 2), (1, 24, 20), (16, 1, 20), (16, 24, 1), (3, 5, 7)):
        add("small volumes", EITHER, "x".join(map(str, shape)), _content(volume(3, shape)))

    for shape in ((15, 24, 20), (16, 23, 20), (16, 24, 21), (20, 24, 16), (8, 12, 10), (32, 48, 40)):
        add("mismatched halves", PAIR, f"shape {shape}", _content(volume(4, shape)))
    for voxel in (11.0, 10.5, 20.0, 1.0):
        add("mismatched halves", PAIR, f"voxel size {voxel}", _content(volume(4), voxel))
    add("mismatched halves", EITHER, "voxel size unset (0)", _content(volume(4), 0.0))
    add("mismatched halves", VALID, "voxel size 10.001", _content(volume(4), 10.001))
    return cases


# ---------------------------------------------------------------- OME-Zarr stores

@functools.cache
def _base_header() -> dict:
    """The MRC header tomocare keeps of the base volume, as ``convert`` stores it."""
    with tempfile.TemporaryDirectory() as d:
        return open_mrc(_mrc()(Path(d) / "v.mrc")).header.to_dict()


def write_store(path: Path, data: np.ndarray, *, stats: Stats | None = None, chunks: int = CHUNK) -> Path:
    """An OME-Zarr image of one level as ``convert`` writes it (``stats``: stored instead of the true ones)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    level = create_level(group, "0", data.shape, (chunks,) * data.ndim, data.dtype, "blosc-zstd")
    level[...] = data
    true = Stats.from_rows(block_stats(data)) if data.dtype.kind in "fiu" else Stats(0.0, 1.0, 0.0, 1.0, data.size, 0)
    write_image_metadata(group, path, (VOXEL,) * data.ndim, 1, stats or true,
                         {"source": "fuzz", "mrc_header": _base_header()})
    return path


def _store(data: np.ndarray = BASE, expected: np.ndarray | None | str = "data", *, lying: bool = False,
           change: Callable[[Path], None] | None = None) -> Callable:
    """A store of ``data`` (its stored statistics those of the base volume if ``lying``), then ``change``d."""
    def build(path: Path) -> Built:
        write_store(path, data, stats=Stats.from_rows(block_stats(BASE)) if lying else None)
        if change is not None:
            change(path)
        return Built(path, data if isinstance(expected, str) else expected)
    return build


def _edit_json(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        meta = json.loads((path / relative).read_text())
        change(meta)
        (path / relative).write_text(json.dumps(meta))
    return edit


def _replace(relative: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    """Remove ``relative`` inside the store and put what ``make`` creates there (nothing: removed)."""
    def edit(path: Path) -> None:
        target = path / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        make(target)
    return edit


def _text(content: bytes) -> Callable[[Path], None]:
    return lambda target: target.write_bytes(content)


def _nothing(target: Path) -> None:
    pass


CHUNK_FILE = "0/c/0/1/1"  # z 0:16, y 16:24, x 16:20


def _cut_file(relative: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        raw = (path / relative).read_bytes()
        (path / relative).write_bytes(raw[: len(raw) // 2])
    return edit


def _chunk_bytes(transform: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        chunk = path / CHUNK_FILE
        chunk.write_bytes(transform(chunk.read_bytes()))
    return edit


def _foreign_chunk(path: Path) -> None:
    """A well-formed chunk of another array (float64, 8^3): decodes, but to the wrong size."""
    other = write_store(path.with_name("other.zarr"), np.ones((8, 8, 8)), chunks=8)
    shutil.copyfile(other / "0/c/0/0/0", path / CHUNK_FILE)
    shutil.rmtree(other)


def _moved_level(path: Path) -> None:
    """Level 0 stored under 's0', as other writers name it; the metadata says so."""
    (path / "0").rename(path / "s0")
    _edit_json("zarr.json", lambda m: m["attributes"]["ome"]["multiscales"][0]["datasets"][0].update(path="s0"))(path)


def _second_level_broken(path: Path) -> None:
    def add(meta: dict) -> None:
        ms = meta["attributes"]["ome"]["multiscales"][0]
        ms["datasets"].append({"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [20.0] * 3}]})
    _edit_json("zarr.json", add)(path)
    (path / "1").mkdir()
    (path / "1" / "zarr.json").write_text("{broken")


def _zero_chunk_region(data: np.ndarray) -> np.ndarray:
    out = data.copy()
    out[0:16, 16:24, 16:20] = 0  # a missing chunk reads as the fill value
    return out


def zarr_cases() -> list[Case]:
    cases = []

    def add(family: str, verdict: str, name: str, build: Callable) -> None:
        cases.append(Case(name, family, verdict, build, ".zarr"))

    for where, name, change in ZARR_METADATA_CASES:
        relative = "zarr.json" if where == "group" else "0/zarr.json"
        add(f"zarr {where} metadata (test_malformed_zarr)", EITHER, name,
            _store(expected=BASE if where == "group" else None, change=_edit_json(relative, change)))
    for relative in ("zarr.json", "0/zarr.json"):
        family = f"zarr {'group' if relative == 'zarr.json' else 'level'} file"
        add(family, INVALID, "cut in half", _store(expected=None, change=_cut_file(relative)))
        for name, make in (("invalid JSON", _text(b"{")), ("empty", _text(b"")), ("binary", _text(bytes(range(256)))),
                           ("a JSON list", _text(b"[]")), ("missing", _nothing), ("a directory", lambda t: t.mkdir()),
                           ("a FIFO", _fifo)):
            add(family, INVALID, name, _store(expected=None, change=_replace(relative, make)))
    add("zarr group file", INVALID, "zarr_format 2", _store(
        expected=None, change=_edit_json("zarr.json", lambda m: m.update(zarr_format=2))))
    add("zarr group file", INVALID, "root is an array", _store(
        expected=None, change=lambda p: shutil.copyfile(p / "0/zarr.json", p / "zarr.json")))
    add("zarr level file", INVALID, "unknown codec", _store(
        expected=None, change=_edit_json("0/zarr.json", lambda m: m.update(codecs=[{"name": "nonesuch"}]))))
    add("zarr level file", INVALID, "fill value a string", _store(
        expected=None, change=_edit_json("0/zarr.json", lambda m: m.update(fill_value="abc"))))
    add("zarr level file", EITHER, "dimension names of two axes", _store(
        expected=BASE, change=_edit_json("0/zarr.json", lambda m: m.update(dimension_names=["y", "x"]))))

    for name, change in (("garbage", _chunk_bytes(lambda b: b"not a blosc frame" * 10)),
                         ("cut in half", _chunk_bytes(lambda b: b[: len(b) // 2])),
                         ("empty", _chunk_bytes(lambda b: b"")),
                         ("a chunk of another array", _foreign_chunk)):
        add("zarr chunk", VOXELS, name, _store(expected=None, change=change))
    add("zarr chunk", EITHER, "a directory", _store(  # zarr reads it as a missing chunk
        expected=_zero_chunk_region(BASE), change=_replace(CHUNK_FILE, lambda t: t.mkdir())))
    add("zarr chunk", EITHER, "one byte changed", _store(  # blosc has no checksum: may decode to other voxels
        expected=None, change=_chunk_bytes(lambda b: b[:20] + bytes([b[20] ^ 0xFF]) + b[21:])))
    add("zarr chunk", VALID, "missing (the fill value)", _store(expected=_zero_chunk_region(BASE),
                                                                 change=_replace(CHUNK_FILE, _nothing)))
    add("zarr chunk", VALID, "a stray chunk outside the grid", _store(
        change=lambda p: shutil.copyfile(p / CHUNK_FILE, (p / "0/c/0/1").joinpath("9"))))
    add("zarr chunk", VALID, "level 0 named s0", _store(change=_moved_level))
    add("zarr chunk", VALID, "a broken level 1", _store(change=_second_level_broken))
    add("zarr chunk", VALID, "stray files in the store", _store(change=lambda p: (p / "README").write_text("x")))

    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float64):
        add("zarr dtype", VALID, np.dtype(dtype).name, _store(volume(5, dtype=dtype)))
    for dtype in (np.int32, np.uint32, np.int64, np.uint64):  # not an MRC mode: export refuses them
        add("zarr dtype", EITHER, np.dtype(dtype).name, _store(volume(5, dtype=dtype)))
    add("zarr dtype", INVALID, "bool", _store((BASE > 0), expected=None))
    for dtype in (np.complex64, np.complex128):
        add("zarr dtype", INVALID, np.dtype(dtype).name, _store((BASE + 1j * BASE).astype(dtype), expected=None))

    nan = np.full(SHAPE, np.nan, np.float32)
    for verdict, name, data in ((VOXELS, "all NaN", nan), (CONSTANT, "constant", np.full(SHAPE, 3.0, np.float32))):
        add("zarr voxels", verdict, name, _store(data))
        # stored statistics are trusted (what they are for): refused where voxels are read, or not at all
        add("zarr voxels", EITHER, f"{name}, stored statistics of another volume", _store(data, lying=True))
    add("zarr voxels", EITHER, "one NaN voxel", _store(_with(BASE, (8, 12, 10), np.nan)))
    add("zarr voxels", VALID, "no stored statistics", _store(
        change=_edit_json("zarr.json", lambda m: m["attributes"]["tomocare"].pop("stats"))))
    add("zarr voxels", VALID, "a symlink to a store", lambda path: Built(
        _symlink(lambda p: write_store(p.with_name("target.zarr"), BASE))(path), BASE))
    add("zarr voxels", INVALID, "a directory without zarr.json", _special(_directory(False)))
    return cases


def all_cases() -> list[Case]:
    return mrc_cases() + zarr_cases()


def raw_mrc_data(path: Path) -> np.ndarray | None:
    """The voxels an MRC file's header describes, read by the MRC2014 rules alone (no tomocare, no
    mrcfile); None when the header does not describe one 3-D volume that the file holds."""
    if not path.is_file():
        return None
    raw = path.read_bytes()
    if len(raw) < 1024 or raw[208:211] != b"MAP":
        return None
    order = {0x44: "<", 0x11: ">"}.get(raw[212])
    if order is None or (order == "<" and raw[213] not in (0x44, 0x41)) or (order == ">" and raw[213] != 0x11):
        return None
    nx, ny, nz, mode = struct.unpack_from(f"{order}4i", raw, 0)
    mz, ispg, nsymbt = struct.unpack_from(f"{order}i", raw, 36)[0], *struct.unpack_from(f"{order}2i", raw, 88)
    dtype = {0: "i1", 1: "i2", 2: "f4", 6: "u2", 12: "f2"}.get(mode)
    if dtype is None or min(nx, ny, nz) < 1 or nsymbt < 0 or (ispg == 0 and nz == 1):
        return None
    if 401 <= ispg <= 630 and 0 < mz < nz and nz % mz == 0:
        return None  # a stack of volumes
    offset, count = 1024 + nsymbt, nx * ny * nz
    dt = np.dtype(dtype).newbyteorder(order)
    if offset + count * dt.itemsize > len(raw):
        return None
    return np.frombuffer(raw, dt, count, offset).reshape(nz, ny, nx).astype(dt.newbyteorder("="))
