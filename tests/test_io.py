"""MRC and OME-Zarr I/O: lazy access, round trips, headers, statistics, bad input."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import mrcfile
import numpy as np
import pytest
import zarr
from helpers import write_test_mrc

from tomocare import TomocareError, open_tomogram
from tomocare.io.convert import convert_to_zarr, export_mrc
from tomocare.io.mrc import open_mrc
from tomocare.io.stats import Stats, block_stats, normalisation
from tomocare.io.volume import compute_stats, open_volume

MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}


def _data(dtype, shape=(37, 45, 52), seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return (rng.normal(size=shape) * 10).astype(dtype)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_round_trip_is_bit_identical_and_keeps_header(tmp_path, client, mode):
    data = _data(MODES[mode])
    ext = bytes(range(256)) * 3
    src = write_test_mrc(tmp_path / "in.mrc", data, extended_header=ext, exttyp=b"FEI1")
    convert_to_zarr(src, tmp_path / "in.zarr", chunks=16)
    export_mrc(tmp_path / "in.zarr", tmp_path / "out.mrc")
    with mrcfile.open(src) as a, mrcfile.open(tmp_path / "out.mrc") as b:
        assert b.data.dtype == a.data.dtype
        assert np.array_equal(a.data, b.data)
        assert b.voxel_size == a.voxel_size
        assert b.header.origin == a.header.origin
        assert bytes(b.extended_header) == ext
        assert b.header.exttyp == b"FEI1"
        assert int(b.header.mode) == mode
        ref = a.data.astype(np.float64)
        assert b.header.dmin == pytest.approx(ref.min())
        assert b.header.dmax == pytest.approx(ref.max())
        assert b.header.dmean == pytest.approx(ref.mean(), rel=1e-5, abs=1e-3)
        assert b.header.rms == pytest.approx(ref.std(), rel=1e-5)
    if mode != 12:  # mrcfile's validator sums float16 data in float16 and overflows
        assert mrcfile.validate(tmp_path / "out.mrc", print_file=open("/dev/null", "w"))


@pytest.mark.parametrize("compression", ["blosc-lz4", "blosc-zstd", "zstd", "none"])
def test_every_compression_round_trips_bit_identical(tmp_path, client, compression):
    data = _data(np.float32)
    src = write_test_mrc(tmp_path / "in.mrc", data)
    convert_to_zarr(src, tmp_path / "in.zarr", chunks=16, compression=compression)
    codecs = zarr.open_array(str(tmp_path / "in.zarr" / "0"), mode="r").metadata.to_dict()["codecs"]
    names = [c["name"] for c in codecs]
    assert names[-1:] == {"none": ["bytes"], "zstd": ["zstd"]}.get(compression, ["blosc"])
    if compression.startswith("blosc"):
        assert codecs[-1]["configuration"]["cname"] == compression.split("-")[1]
    export_mrc(tmp_path / "in.zarr", tmp_path / "out.mrc")
    with mrcfile.open(tmp_path / "out.mrc") as out:
        assert np.array_equal(out.data, data)


def test_default_compression_is_blosc_lz4(tmp_path, client):
    src = write_test_mrc(tmp_path / "in.mrc", _data(np.float32, shape=(8, 8, 8)))
    convert_to_zarr(src, tmp_path / "in.zarr", chunks=8, levels=1)
    (codec,) = zarr.open_array(str(tmp_path / "in.zarr" / "0"), mode="r").metadata.to_dict()["codecs"][1:]
    assert codec["configuration"]["cname"] == "lz4" and codec["configuration"]["shuffle"] == "bitshuffle"


def test_ome_zarr_metadata_pyramid_and_stats(tmp_path, client):
    data = _data(np.float32, shape=(40, 64, 72))
    data[3, 4, 5] = np.nan
    src = write_test_mrc(tmp_path / "t.mrc", data)
    with pytest.warns(UserWarning, match="1 NaN or infinite"):
        stats = convert_to_zarr(src, tmp_path / "t.zarr", chunks=32)
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "angstrom" for a in ms["axes"])
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [3.3, 3.2, 3.1]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == pytest.approx([6.6, 6.4, 6.2])
    assert group["0"].chunks == (32, 32, 32)
    assert group["1"].shape == (20, 32, 36)
    assert group["2"].shape == (10, 16, 18)
    lvl1 = np.asarray(group["1"][:])
    expected = data[:40, :64, :72].reshape(20, 2, 32, 2, 36, 2).mean(axis=(1, 3, 5))
    assert np.allclose(lvl1[~np.isnan(expected)], expected[~np.isnan(expected)], atol=1e-5)
    finite = data[np.isfinite(data)].astype(np.float64)
    assert stats.nonfinite == 1
    assert stats.mean == pytest.approx(finite.mean())
    assert stats.std == pytest.approx(finite.std())
    assert group.attrs["tomocare"]["stats"]["nonfinite"] == 1


def test_stats_merge_equals_numpy():
    rng = np.random.default_rng(1)
    data = rng.normal(5, 3, size=(30, 20)).astype(np.float32)
    rows = np.stack([block_stats(data[i : i + 7]) for i in range(0, 30, 7)])
    stats = Stats.from_rows(rows)
    assert stats.mean == pytest.approx(data.astype(np.float64).mean())
    assert stats.std == pytest.approx(data.astype(np.float64).std())
    assert (stats.min, stats.max) == (data.min(), data.max())


def test_normalisation_from_stored_stats_merges_exactly():
    rng = np.random.default_rng(2)
    parts = [rng.normal(m, s, size=n) for m, s, n in ((1, 2, 500), (4, 1, 300), (-2, 3, 200))]
    volumes = [SimpleNamespace(stats=Stats.from_rows(block_stats(p)[None])) for p in parts]
    mean, std = normalisation(volumes)
    whole = np.concatenate(parts)
    assert (mean, std) == (pytest.approx(whole.mean()), pytest.approx(whole.std()))
    assert normalisation([*volumes, SimpleNamespace(stats=None)]) is None  # then computed from the voxels
    assert normalisation([]) is None


def test_mrc_array_is_lazy_and_pickles_small(tmp_path):
    data = _data(np.int16, shape=(64, 64, 64))
    src = write_test_mrc(tmp_path / "big.mrc", data)
    arr = open_mrc(src)
    assert len(pickle.dumps(arr)) < 5000  # the path and layout, never the data
    assert np.array_equal(arr[10:20, 5:9, ::3], data[10:20, 5:9, ::3])
    dask_arr = open_volume(src).to_dask(32)
    assert dask_arr.chunksize == (32, 32, 32)
    assert np.array_equal(dask_arr[33:40].compute(), data[33:40])


@pytest.mark.parametrize("dtype", [np.float32, ">i2", np.float16])
def test_mrc_array_reads_any_selection(tmp_path, monkeypatch, dtype):
    data = _data(np.dtype(dtype).newbyteorder("="), shape=(9, 37, 23))
    path = tmp_path / "t.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.astype(dtype))
    arr = open_mrc(path)
    keys = [np.s_[:], np.s_[2:5, 3:30:4, 1:20], np.s_[4, :, 5], np.s_[:, 7], np.s_[1:8:3, ::5, ::2], np.s_[..., 3],
            np.s_[0:0], np.s_[3, 36, 22], np.s_[:, 1:36:7, :], np.s_[-1, -5:, :]]
    for read_bytes in (2**22, 3 * 23 * data.itemsize, 1):  # rows per read: all, three, one
        monkeypatch.setattr("tomocare.io.mrc._READ_BYTES", read_bytes)
        for key in keys:
            got = arr[key]
            assert got.dtype == data.dtype and np.array_equal(got, data[key]), (key, read_bytes)


def test_xarray_view_mrc_and_zarr(tmp_path, client):
    data = _data(np.float32, shape=(20, 24, 28))
    src = write_test_mrc(tmp_path / "v.mrc", data, voxel_size=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    convert_to_zarr(src, tmp_path / "v.zarr", chunks=16)
    for path in (src, tmp_path / "v.zarr"):
        da = open_tomogram(path)
        assert da.dims == ("z", "y", "x")
        assert da.attrs["voxel_size"] == (2.0, 2.0, 2.0)
        assert float(da.x[3]) == 6.0
        assert np.array_equal(da.sel(z=10.0).values, data[5])
    assert open_tomogram(tmp_path / "v.zarr").attrs["stats"]["count"] == data.size


def test_compute_stats_out_of_core_for_mrc(tmp_path, client):
    data = _data(np.float32, shape=(33, 40, 40))
    src = write_test_mrc(tmp_path / "s.mrc", data)
    stats = compute_stats(open_volume(src))
    assert stats.mean == pytest.approx(data.astype(np.float64).mean(), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"not an mrc"), "not a readable MRC file"),
        (lambda p: p.write_bytes(write_test_mrc(p, np.zeros((8, 8, 8), np.float32)).read_bytes()[:1500]), "truncated"),
        (lambda p: write_test_mrc(p, np.zeros((8, 8), np.float32)), "a single 2-D image"),
    ],
)
def test_bad_mrc_input(tmp_path, make, message):
    path = tmp_path / "bad.mrc"
    make(path)
    with pytest.raises(TomocareError, match=message) as err:
        open_volume(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_existing_output_refused_and_nothing_partial(tmp_path, client):
    src = write_test_mrc(tmp_path / "a.mrc", _data(np.float32, shape=(16, 16, 16)))
    convert_to_zarr(src, tmp_path / "a.zarr")
    with pytest.raises(TomocareError, match="output exists"):
        convert_to_zarr(src, tmp_path / "a.zarr")
    convert_to_zarr(src, tmp_path / "a.zarr", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mrc", "a.zarr"]


def test_failed_write_leaves_no_output(tmp_path, client):
    import dask.array as da

    def boom(block):
        raise RuntimeError("disk full")

    arr = da.zeros((16, 16, 16), chunks=8, dtype=np.float32).map_blocks(boom, dtype=np.float32)
    from tomocare.io.mrc import write_mrc

    with pytest.raises(RuntimeError, match="disk full"):
        write_mrc(arr, tmp_path / "x.mrc", voxel_size=1.0)
    assert list(tmp_path.iterdir()) == []
