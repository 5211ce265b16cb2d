"""RELION 5 tomogram sets: a project's tomograms.star in, a copy naming the denoised tomograms out."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.testing import tiny_model

starfile = pytest.importorskip("starfile")

SHAPE = (24, 40, 36)
# the columns RELION 5's "Reconstruct tomograms" job writes with half tomograms (data_global)
HEADER = """
# version 50001

data_global

loop_
_rlnTomoName #1
_rlnVoltage #2
_rlnTomoTiltSeriesStarFile #3
_rlnTomoTiltSeriesPixelSize #4
_rlnTomoTomogramBinning #5
_rlnTomoSizeX #6
_rlnTomoReconstructedTomogram #7
_rlnTomoReconstructedTomogramHalf1 #8
_rlnTomoReconstructedTomogramHalf2 #9
"""


def _project(root: Path, names: list[str]) -> Path:
    """A RELION project: halves under Tomograms/job006/tomograms/, paths relative to the project."""
    rng = np.random.default_rng(0)
    (root / "Tomograms/job006/tomograms").mkdir(parents=True)
    rows = []
    for name in names:
        signal = rng.normal(size=SHAPE).astype(np.float32)
        for half in ("half1", "half2"):
            write_test_mrc(root / "Tomograms/job006/tomograms" / f"rec_{name}_{half}.mrc",
                           signal + rng.normal(size=SHAPE).astype(np.float32), voxel_size=(10.0,) * 3)
        rec = f"Tomograms/job006/tomograms/rec_{name}"
        rows.append(f"{name} 300.000000 AlignTiltSeries/job005/tilt_series/{name}.star 2.500000 4.000000 {SHAPE[2]} "
                    f"{rec}.mrc {rec}_half1.mrc {rec}_half2.mrc")
    star = root / "Tomograms/job006/tomograms.star"
    star.write_text(HEADER + "\n".join(rows) + "\n\n")
    return star


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("m") / "model", base_channels=4)


def test_a_relion_project_is_denoised_from_its_star_file(tmp_path, model, client, capsys):
    star = _project(tmp_path / "project", ["TS_01", "TS_02"])
    out = tmp_path / "project" / "Denoise" / "job007"
    assert main(["info", str(star)]) == 0
    assert "2 pairs" in capsys.readouterr().out
    assert main(["denoise", str(star), "--out", str(out), "--model", str(model), "--chunks", "32",
                 "--scheduler", client.scheduler.address]) == 0

    before, after = starfile.read(star), starfile.read(out / "tomograms.star")
    assert list(after.columns) == list(before.columns) + ["rlnTomoReconstructedTomogramDenoised"]
    assert after.drop(columns="rlnTomoReconstructedTomogramDenoised").equals(before)  # nothing else changed
    for name, path in zip(after["rlnTomoName"], after["rlnTomoReconstructedTomogramDenoised"]):
        assert path == f"Denoise/job007/{name}_denoised.mrc"  # relative to the project, as RELION writes paths
        with mrcfile.open(tmp_path / "project" / path, permissive=True) as m:
            assert m.data.shape == SHAPE and float(m.voxel_size.x) == pytest.approx(10.0)  # 2.5 Å x binning 4


def test_star_files_that_do_not_describe_half_tomograms_are_one_line_errors(tmp_path, capsys):
    star = _project(tmp_path / "p", ["TS_01"])
    text = star.read_text()
    bad = tmp_path / "p" / "no_halves.star"
    bad.write_text(text.replace("_rlnTomoReconstructedTomogramHalf2 #9\n", "")
                   .replace(" Tomograms/job006/tomograms/rec_TS_01_half2.mrc", ""))
    moved = tmp_path / "p" / "Tomograms" / "job006" / "tomograms" / "rec_TS_01_half2.mrc"
    for path, expected in [(bad, "no rlnTomoReconstructedTomogramHalf2 column"),
                           (tmp_path / "none.star", "no such STAR file")]:
        assert main(["denoise", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}") and expected in err, err
    moved.unlink()
    assert main(["denoise", str(star), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rec_TS_01_half2.mrc not found relative to the project directory" in err
    assert not (tmp_path / "o").exists()
