"""Output formats: every OME-Zarr tomocare writes (0.5 on zarr v3, 0.4 on zarr v2) opens in the reference
reader, the ``ome-zarr`` package, with z/y/x axes in Å, the voxel size as scale and three levels; MRC outputs."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import zarr
from helpers import check_reference_reader, check_zarr_format

from tomocare.cli import main
from tomocare.io.convert import convert_to_zarr
from tomocare.io.volume import open_volume
from tomocare.simulate import simulate_dataset
from tomocare.testing import tiny_model, write_mrc

VOXEL = 7.5
SHAPE = (32, 64, 64)
FORMATS = [("ome-zarr-0.5", 3), ("ome-zarr-0.4", 2)]


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("vol") / "t.mrc"
    data = np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
    write_mrc(path, data, voxel_size=(VOXEL,) * 3)
    return path, data


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("m") / "model", base_channels=4, voxel_size=VOXEL)


@pytest.mark.parametrize(("fmt", "zarr_format"), FORMATS)
def test_convert_writes_either_format_read_by_ome_zarr_and_tomocare(tmp_path, client, volume, fmt, zarr_format):
    source, data = volume
    out = tmp_path / "t.zarr"
    assert main(["convert", str(source), str(out), "--format", fmt, "--chunks", "16"]) == 0
    check_zarr_format(out, zarr_format)
    check_reference_reader(out, SHAPE, VOXEL, version=fmt.split("-")[-1])
    back = open_volume(out)
    assert back.voxel_size == (VOXEL,) * 3 and back.origin == open_volume(source).origin
    assert back.array.chunks == (16, 16, 16) and back.stats is not None
    assert np.array_equal(np.asarray(back.array[...]), data)
    assert main(["export", str(out), str(tmp_path / "back.mrc")]) == 0  # both versions export
    with mrcfile.open(tmp_path / "back.mrc", permissive=True) as mrc:
        assert np.array_equal(mrc.data, data) and float(mrc.voxel_size.x) == pytest.approx(VOXEL)


def test_ome_zarr_04_defaults_to_256_chunks(tmp_path, client):
    data = np.random.default_rng(0).normal(size=(4, 260, 8)).astype(np.float32)
    source = write_mrc(tmp_path / "w.mrc", data, voxel_size=(VOXEL,) * 3)
    convert_to_zarr(source, tmp_path / "a.zarr", levels=1, output_format="ome-zarr-0.4")
    convert_to_zarr(source, tmp_path / "b.zarr", levels=1)
    assert zarr.open_array(str(tmp_path / "a.zarr" / "0"), mode="r").chunks == (4, 256, 8)
    assert zarr.open_array(str(tmp_path / "b.zarr" / "0"), mode="r").chunks == (4, 128, 8)


def test_convert_refuses_mrc_and_unknown_formats(tmp_path, volume, capsys):
    source, _ = volume
    for fmt in ("mrc", "n5"):
        assert main(["convert", str(source), str(tmp_path / "o.zarr"), "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and fmt in err
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize(("fmt", "zarr_format"), FORMATS)
def test_predict_and_baseline_write_either_format(tmp_path, client, volume, model, fmt, zarr_format):
    source, _ = volume
    version = fmt.split("-")[-1]
    out = tmp_path / "p.zarr"
    assert main(["predict", "-m", str(model), "--input", str(source), "--out", str(out), "--format", fmt,
                 "--chunks", "16"]) == 0
    check_zarr_format(out, zarr_format)
    check_reference_reader(out, SHAPE, VOXEL, version=version)
    assert zarr.open_array(str(out / "0"), mode="r").chunks == (16, 16, 16)
    assert open_volume(out).voxel_size == (VOXEL,) * 3

    base = tmp_path / "b.zarr"
    assert main(["baseline", "gaussian", str(source), str(base), "--param", "sigma=1", "--format", fmt]) == 0
    check_zarr_format(base, zarr_format)
    check_reference_reader(base, SHAPE, VOXEL, version=version)
    expected = 256 if fmt == "ome-zarr-0.4" else 128  # the format's default chunk edge, cut to the shape
    assert zarr.open_array(str(base / "0"), mode="r").chunks == tuple(min(expected, s) for s in SHAPE)
    # predict reads what it wrote, in both versions (zarr v2 input)
    again = tmp_path / "again.zarr"
    assert main(["baseline", "gaussian", str(base), str(again), "--param", "sigma=1", "--chunks", "16"]) == 0
    check_zarr_format(again, 3)


def test_predict_and_baseline_format_mrc_leave_only_the_mrc_file(tmp_path, client, volume, model, capsys):
    source, _ = volume
    out = tmp_path / "p.mrc"
    assert main(["predict", "-m", str(model), "--input", str(source), "--out", str(out), "--format", "mrc",
                 "--chunks", "16"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.mrc"]  # the blocks' zarr is removed
    with mrcfile.open(out, permissive=True) as mrc:
        assert mrc.data.shape == SHAPE and float(mrc.voxel_size.z) == pytest.approx(VOXEL)
        assert np.isfinite(mrc.data).all()
    assert main(["baseline", "median", str(source), str(tmp_path / "b.mrc"), "--format", "mrc"]) == 0
    assert open_volume(tmp_path / "b.mrc").shape == SHAPE
    capsys.readouterr()
    assert main(["baseline", "median", str(source), str(tmp_path / "c.mrc"), "--format", "mrc",
                 "--mrc", str(tmp_path / "d.mrc")]) == 2
    assert "--format mrc" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["ome-zarr-0.4", "mrc"])
def test_denoise_writes_the_chosen_format(tmp_path, client, model, fmt):
    data = tmp_path / "data"
    simulate_dataset(data, n_tomograms=1, shape=SHAPE, snr=0.5, seed=2, chunks=32, voxel_size=VOXEL)
    out = tmp_path / "out"
    assert main(["denoise", str(data), "--out", str(out), "--model", str(model), "--chunks", "32",
                 "--format", fmt]) == 0
    state = json.loads((out / "state.json").read_text())["tomograms"]["tomo_000"]
    assert state["status"] == "done" and state["predict"]["format"] == fmt
    if fmt == "mrc":
        assert state["output"] == str(out / "tomo_000_denoised.mrc")
        assert not (out / "tomo_000.zarr").exists() and not any(p.name.startswith(".") for p in out.iterdir())
        assert open_volume(out / "tomo_000_denoised.mrc").shape == SHAPE
    else:
        check_zarr_format(out / "tomo_000.zarr", 2)
        check_reference_reader(out / "tomo_000.zarr", SHAPE, VOXEL, version="0.4")
        assert (out / "tomo_000_denoised.mrc").exists()  # --mrc is on by default
    first = (out / "state.json").read_text()
    assert main(["denoise", str(data), "--out", str(out), "--model", str(model), "--chunks", "32",
                 "--format", fmt]) == 0
    assert json.loads((out / "state.json").read_text()) == json.loads(first)  # done: not redone
