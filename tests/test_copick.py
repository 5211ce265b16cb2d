"""copick projects: tomograms read from ExperimentRuns/RUN/VoxelSpacingX.XXX/TYPE.zarr (static or overlay
root), denoised ones written back to the overlay as a new type in OME-Zarr 0.4 on zarr v2; bad input is
one line. copick's own API reads the result in benchmarks/copick_check.py (a separate venv: zarr<3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from helpers import check_reference_reader, check_zarr_format

from tomocare.cli import main
from tomocare.io.convert import convert_to_zarr
from tomocare.io.copick import CopickProject
from tomocare.io.volume import open_volume
from tomocare.simulate import simulate_dataset
from tomocare.testing import tiny_model

VOXEL = 10.0
SHAPE = (32, 48, 48)


def make_project(root, data, runs=("TS_001", "TS_002"), static=True):
    """A copick project as the data portal lays it out: half tomograms as OME-Zarr 0.4 types in the static
    root (or the overlay when ``static`` is False), an empty overlay."""
    config = {"name": "test", "config_type": "filesystem", "pickable_objects": [],
              "overlay_root": f"local://{root / 'overlay'}"}
    if static:
        config["static_root"] = f"local://{root / 'static'}"
    (root / "overlay").mkdir(parents=True)
    for i, run in enumerate(runs):
        spacing = root / ("static" if static else "overlay") / "ExperimentRuns" / run / f"VoxelSpacing{VOXEL:.3f}"
        for half in ("even", "odd"):
            convert_to_zarr(data / f"tomo_{i:03d}_{half}.mrc", spacing / f"wbp-{half}.zarr", chunks=16,
                            output_format="ome-zarr-0.4")
    path = root / "copick_config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory, client):
    d = tmp_path_factory.mktemp("data")
    simulate_dataset(d, n_tomograms=2, shape=SHAPE, snr=0.5, seed=5, chunks=32, voxel_size=VOXEL)
    return d


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("m") / "model", base_channels=4, voxel_size=VOXEL)


def test_denoised_types_are_written_to_the_overlay_as_ngff_04(tmp_path, data, model, client, capsys):
    config = make_project(tmp_path, data)
    argv = ["copick-predict", str(config), "-m", str(model), "--voxel-size", "10", "--even-type", "wbp-even",
            "--odd-type", "wbp-odd", "--out-type", "denoised", "--chunks", "16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for run in ("TS_001", "TS_002"):
        spacing = f"ExperimentRuns/{run}/VoxelSpacing10.000"
        out = tmp_path / "overlay" / spacing / "denoised.zarr"
        assert f"{out}:" in printed
        check_zarr_format(out, 2)
        check_reference_reader(out, SHAPE, VOXEL)  # 0.4 by default
        assert not (tmp_path / "static" / spacing / "denoised.zarr").exists()  # the static root is never written
        assert sorted(p.name for p in (tmp_path / "overlay" / spacing).iterdir()) == ["denoised.zarr"]
    # the same as predict on the halves' paths
    static = tmp_path / "static" / "ExperimentRuns" / "TS_002" / "VoxelSpacing10.000"
    direct = tmp_path / "direct.zarr"
    assert main(["predict", "-m", str(model), "--even", str(static / "wbp-even.zarr"), "--odd",
                 str(static / "wbp-odd.zarr"), "--out", str(direct), "--chunks", "16"]) == 0
    written = tmp_path / "overlay" / "ExperimentRuns" / "TS_002" / "VoxelSpacing10.000" / "denoised.zarr"
    assert np.array_equal(np.asarray(open_volume(direct).array[...]), np.asarray(open_volume(written).array[...]))
    # an existing type is refused, then replaced with --overwrite; one run at a time with --run
    assert main(argv + ["--run", "TS_001"]) == 2
    assert "output exists" in capsys.readouterr().err
    assert main(argv + ["--run", "TS_001", "--overwrite"]) == 0


def test_single_volume_type_and_overlay_only_project(tmp_path, data, model, client):
    config = make_project(tmp_path, data, runs=("TS_9",), static=False)
    assert main(["copick-predict", str(config), "-m", str(model), "--voxel-size", "10.0001", "--tomo-type",
                 "wbp-even", "--chunks", "16"]) == 0
    out = tmp_path / "overlay" / "ExperimentRuns" / "TS_9" / "VoxelSpacing10.000" / "tomocare-denoised.zarr"
    assert zarr.open_group(str(out), mode="r").metadata.zarr_format == 2
    assert open_volume(out).shape == SHAPE
    project = CopickProject.open(config)
    assert project.static == project.overlay and project.runs() == ["TS_9"]
    assert project.tomogram("TS_9", 10.0, "tomocare-denoised") == out


@pytest.mark.parametrize(("change", "argv_extra", "message"), [
    ("no config", [], "no such copick config file"),
    ("not json", [], "not a readable copick config"),
    ("portal", [], "config_type 'cryoet_data_portal' is not supported"),
    ("s3", [], "is not local"),
    (None, ["--run", "TS_404"], "no run 'TS_404' in the copick project (found: TS_001, TS_002)"),
    (None, ["--voxel-size", "7.5"], "has no voxel spacing 7.500 Å (found: 10.000)"),
    (None, ["--even-type", "nope"], "has no tomogram type 'nope' (found: wbp-even, wbp-odd)"),
    (None, ["--out-type", "a/b"], "a new tomogram type is letters, digits and '-'"),
    (None, ["--tomo-type", "wbp-even"], "either --tomo-type or --even-type and --odd-type"),
])
def test_bad_projects_and_names_are_one_line(tmp_path, data, model, capsys, change, argv_extra, message):
    config = make_project(tmp_path, data)
    if change == "no config":
        config.unlink()
    elif change == "not json":
        config.write_text("{")
    elif change in ("portal", "s3"):
        meta = json.loads(config.read_text())
        meta.update({"config_type": "cryoet_data_portal"} if change == "portal" else {"overlay_root": "s3://b/p"})
        config.write_text(json.dumps(meta))
    argv = ["copick-predict", str(config), "-m", str(model), "--voxel-size", "10", "--even-type", "wbp-even",
            "--odd-type", "wbp-odd"]
    for option in ("--run", "--voxel-size", "--out-type", "--tomo-type"):
        if option in argv_extra and option in argv:
            where = argv.index(option)
            del argv[where:where + 2]
    if argv_extra[:1] == ["--even-type"]:
        argv[argv.index("--even-type") + 1] = argv_extra[1]
        argv_extra = []
    assert main(argv + argv_extra) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not any((tmp_path / "overlay").rglob("*.zarr"))
