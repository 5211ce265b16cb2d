"""Convert a large MRC to OME-Zarr and back; print peak memory of all processes and throughput.

    python benchmarks/convert.py --gib 4 --workdir /tmp/tomocare-bench

Peak memory is the sum of the resident memory of this process and its children (the dask
scheduler runs here, the workers are child processes). Throughput is given as a ratio to copying
the same file with ``cp`` (page cache dropped is not possible without root, so the copy runs
first, on the same file, warm or not alike).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

import mrcfile
import numpy as np
import zarr
from _measure import PeakRSS, gib, save

from tomocare.cluster import dask_client
from tomocare.io.convert import convert_to_zarr, export_mrc
from tomocare.io.omezarr import COMPRESSIONS, DEFAULT_COMPRESSION


def make_mrc(path: Path, gib_size: float, ny: int = 1024, nx: int = 1024) -> tuple[int, int, int]:
    """A float32 MRC of about ``gib_size`` GiB with smooth structure plus noise, written slab by slab."""
    nz = int(gib_size * 2**30 / (4 * ny * nx))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    base = np.sin(yy / 37.0) * np.cos(xx / 53.0)
    with mrcfile.new_mmap(path, (nz, ny, nx), mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = 4.0
        for z in range(0, nz, 16):
            n = min(16, nz - z)
            mrc.data[z : z + n] = base + rng.normal(scale=0.5, size=(n, ny, nx)).astype(np.float32)
    return nz, ny, nx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=4.0, help="size of the test MRC")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compression", choices=COMPRESSIONS, default=DEFAULT_COMPRESSION,
                        help="chunk compression (default: tomocare's default)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src, zarr_out, mrc_out, copy = (args.workdir / n for n in ("big.mrc", "big.zarr", "back.mrc", "copy.mrc"))
    if not src.exists() or abs(src.stat().st_size - args.gib * 2**30) > 0.01 * 2**30:
        print(f"writing {args.gib} GiB test MRC ...")
        make_mrc(src, args.gib)
    size = src.stat().st_size
    for p in (zarr_out, mrc_out, copy):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    t = time.perf_counter()
    subprocess.run(["cp", str(src), str(copy)], check=True)
    subprocess.run(["sync"], check=True)
    t_cp = time.perf_counter() - t
    copy.unlink()

    with dask_client(n_workers=args.workers, threads_per_worker=1) as client:
        client.wait_for_workers(args.workers)
        with PeakRSS() as rss_convert:
            t = time.perf_counter()
            convert_to_zarr(src, zarr_out, chunks=128, levels=3, compression=args.compression)
            t_convert = time.perf_counter() - t
        with PeakRSS() as rss_export:
            t = time.perf_counter()
            export_mrc(zarr_out, mrc_out)
            subprocess.run(["sync"], check=True)
            t_export = time.perf_counter() - t

    same = _same_data(src, mrc_out)
    zarr_bytes = sum(f.stat().st_size for f in zarr_out.rglob("*") if f.is_file())
    level0_bytes = sum(f.stat().st_size for f in (zarr_out / "0").rglob("*") if f.is_file())
    codec = _codec(zarr_out / "0")
    results = {
        "input_bytes": size,
        "compression": args.compression,
        "codec": codec,
        "cp_seconds": round(t_cp, 2),
        "convert_seconds": round(t_convert, 2),
        "export_seconds": round(t_export, 2),
        "convert_throughput_ratio_to_cp": round(t_cp / t_convert, 3),
        "export_throughput_ratio_to_cp": round(t_cp / t_export, 3),
        "convert_peak_rss_bytes": rss_convert.peak,
        "export_peak_rss_bytes": rss_export.peak,
        "convert_mib_per_s": round(size / t_convert / 2**20, 1),
        "export_mib_per_s": round(size / t_export / 2**20, 1),
        "zarr_bytes_with_pyramid": zarr_bytes,
        "zarr_level0_bytes": level0_bytes,
        "compression_ratio_level0": round(size / level0_bytes, 3),
        "round_trip_identical": same,
        "workers": args.workers,
    }
    print(f"codec: {args.compression} ({codec})")
    print(f"input {gib(size)}; cp {t_cp:.1f} s ({size / t_cp / 2**20:.0f} MiB/s)")
    print(f"convert: {t_convert:.1f} s ({size / t_convert / 2**20:.0f} MiB/s, {t_cp / t_convert:.2f}x cp), "
          f"peak RSS of all processes {gib(rss_convert.peak)}")
    print(f"export:  {t_export:.1f} s ({size / t_export / 2**20:.0f} MiB/s, {t_cp / t_export:.2f}x cp), "
          f"peak RSS of all processes {gib(rss_export.peak)}")
    print(f"zarr store (with 2x, 4x levels): {gib(zarr_bytes)}; level 0 compression ratio {size / level0_bytes:.3f}; "
          f"round trip bit-identical: {same}")
    save(results, "convert")


def _codec(level: Path) -> str:
    """The stored codecs of a level after the bytes codec, e.g. ``blosc lz4 clevel 5 bitshuffle``."""
    codecs = zarr.open_array(str(level), mode="r").metadata.to_dict()["codecs"]
    return "; ".join(" ".join([c["name"], *(f"{k} {v}" if k in ("clevel", "level") else str(v)
                                           for k, v in c.get("configuration", {}).items()
                                           if k in ("cname", "clevel", "level", "shuffle"))])
                     for c in codecs if c["name"] != "bytes") or "none"


def _same_data(a: Path, b: Path, slab: int = 32) -> bool:
    with mrcfile.mmap(a, permissive=True) as x, mrcfile.mmap(b, permissive=True) as y:
        if x.data.shape != y.data.shape:
            return False
        return all(np.array_equal(x.data[z : z + slab], y.data[z : z + slab]) for z in range(0, x.data.shape[0], slab))


if __name__ == "__main__":
    main()
