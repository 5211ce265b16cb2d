"""A full disk, for real: outputs on a small tmpfs, written by the dask worker processes. A run that
cannot write ends in one line (exit 2) naming the output, leaves its input untouched and no output
that looks complete; once there is space, the same command finishes, with the output of a run that
was never interrupted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import zarr
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.model import save_model
from tomocare.nn import UNet
from tomocare.predict.engine import DONE_FILE, RUN_FILE, _resume_state

PAGE = 4096  # tmpfs allocates files in pages
ROOMY = 16 * 2**20


@pytest.fixture(scope="module")
def work(tmp_path_factory, client) -> Path:
    """Random data (it hardly compresses), a tiny residual model (its output neither), and every output
    written once into a roomy directory: the reference of the runs that meet a full disk."""
    d = tmp_path_factory.mktemp("disk_full")
    data = np.random.default_rng(0).normal(size=(64, 64, 64)).astype(np.float32)
    write_test_mrc(d / "v.mrc", data, voxel_size=(10.0,) * 3)
    torch.manual_seed(0)
    save_model(d / "model", UNet(depth=1, base_channels=2, residual=True), mean=0.0, std=1.0, voxel_size=10.0,
               patch_size=16, trained_on=["t"])
    (d / "roomy").mkdir()
    for command in ("predict", "baseline", "export"):
        assert main(_command(command, d, d / "roomy", client)) == 0
    return d


def _command(name: str, d: Path, where: Path, client) -> list[str]:
    """The command line of ``name`` reading ``d``'s input and writing its output(s) into ``where``."""
    source = str(d / "v.mrc")
    args = {
        "predict": ["predict", "-m", str(d / "model"), "--input", source, "--out", str(where / "p.zarr"),
                    "--mrc", str(where / "p.mrc"), "--chunks", "32"],
        "baseline": ["baseline", "gaussian", source, str(where / "b.zarr"), "--chunks", "32"],
        "convert": ["convert", source, str(where / "c.zarr"), "--chunks", "32"],
        "export": ["export", source, str(where / "e.mrc")],
    }[name]
    return [*args, "--scheduler", client.scheduler.address]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[int], Path]]:
    """``mount(size)``: a tmpfs of ``size`` bytes at ``tmp_path/disk``, grown when mounted already;
    unmounted at teardown, whatever the test did."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = False

    def mount(size: int) -> Path:
        nonlocal mounted
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        if mounted:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True, capture_output=True)
            return disk
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted = True
        return disk

    try:
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _allocated(path: Path) -> int:
    """Bytes that the files under ``path`` take on a tmpfs."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in files)


def _fill(disk: Path) -> None:
    """Take every free page of ``disk``."""
    with open(disk / "filler", "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while f.write(b"\1" * PAGE):
                pass


def _disk_full_line(capsys, output: Path) -> str:
    """The one error line of a run that met a full disk, naming ``output``; no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"error: {output}" in errors[0] and "No space left on device" in errors[0], errors[0]
    assert "free space and rerun the same command" in errors[0]
    return errors[0]


def _assert_same_zarr(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert sorted(ga.array_keys()) == sorted(gb.array_keys()) == ["0", "1", "2"]
    for level in ga.array_keys():
        assert np.array_equal(ga[level][:], gb[level][:]), level
    ta, tb = dict(ga.attrs["tomocare"]), dict(gb.attrs["tomocare"])
    sa, sb = ta.pop("stats"), tb.pop("stats")  # blocks merged in another order: equal up to rounding
    assert ta == tb and ga.attrs["ome"] == gb.attrs["ome"]
    assert sa == pytest.approx(sb, rel=1e-9)


def test_convert_stops_on_a_full_disk_and_the_rerun_converts(work, small_disk, client, capsys):
    disk = small_disk(2**20)  # the 1 MiB volume does not fit compressed, let alone with its pyramid
    before = _sha256(work / "v.mrc")
    args = _command("convert", work, disk, client)
    assert main(args) == 2
    _disk_full_line(capsys, disk / "c.zarr")
    assert _sha256(work / "v.mrc") == before
    # Nothing complete-looking; the partial store is removed (blocks still running elsewhere may recreate it).
    assert set(os.listdir(disk)) <= {".c.zarr.partial"}
    small_disk(ROOMY)
    assert main(args) == 0
    converted = zarr.open_group(str(disk / "c.zarr"), mode="r")["0"][:]
    assert np.array_equal(converted, mrcfile.read(work / "v.mrc"))


@pytest.mark.parametrize(("command", "stage"), [("predict", "blocks"), ("predict", "pyramid"),
                                                ("predict", "start"), ("baseline", "pyramid")])
def test_prediction_stops_on_a_full_disk_and_the_rerun_resumes(work, small_disk, client, capsys, command, stage):
    """The disk fills while blocks are written, while the pyramid is, or was full from the start."""
    name = "p.zarr" if command == "predict" else "b.zarr"
    roomy = work / "roomy" / name
    level0 = _allocated(roomy / "0")
    size = {"blocks": level0 // 2, "pyramid": level0 + 8 * PAGE, "start": _allocated(roomy) + 64 * PAGE}[stage]
    disk = small_disk(size)
    if stage == "start":
        _fill(disk)
    before = _sha256(work / "v.mrc")
    args = _command(command, work, disk, client)
    if command == "predict":  # the MRC export is the test below
        args = [a for a in args if a not in ("--mrc", str(disk / "p.mrc"))]
    assert main(args) == 2
    _disk_full_line(capsys, disk / name)
    assert _sha256(work / "v.mrc") == before
    assert set(os.listdir(disk)) <= {"filler", f".{name}.partial"}  # no output, no lock left behind
    if stage == "start":
        (disk / "filler").unlink()
    else:  # the blocks written are kept for the rerun: some, or all when the pyramid did not fit
        done = (disk / f".{name}.partial" / DONE_FILE).read_text().splitlines()
        assert 0 < len(done) <= 8 and (len(done) == 8) == (stage == "pyramid")
        small_disk(ROOMY)
    assert main(args) == 0
    assert sorted(os.listdir(disk)) == [name]
    _assert_same_zarr(disk / name, roomy)


def test_predict_mrc_stops_on_a_full_disk_and_the_rerun_writes_only_it(work, small_disk, client, capsys):
    """The OME-Zarr output fits, its MRC copy does not: the rerun keeps the zarr and writes the MRC."""
    roomy = work / "roomy"
    disk = small_disk(_allocated(roomy / "p.zarr") + _allocated(roomy / "p.mrc") // 2)
    args = _command("predict", work, disk, client)
    before = _sha256(work / "v.mrc")
    assert main(args) == 2
    assert "MiB needed" in _disk_full_line(capsys, disk / "p.mrc")
    assert _sha256(work / "v.mrc") == before
    assert sorted(os.listdir(disk)) == ["p.zarr"]  # complete: the zarr; the MRC file is not there at all
    written = (disk / "p.zarr" / "zarr.json").stat().st_mtime_ns
    small_disk(ROOMY)
    assert main(args) == 0
    assert (disk / "p.zarr" / "zarr.json").stat().st_mtime_ns == written  # not computed again
    assert _sha256(disk / "p.mrc") == _sha256(roomy / "p.mrc")
    _assert_same_zarr(disk / "p.zarr", roomy / "p.zarr")


def test_export_stops_on_a_full_disk_and_the_rerun_exports(work, small_disk, client, capsys):
    """MRC data are written through memory maps: the space is checked first, no worker dies of SIGBUS."""
    disk = small_disk(2**20)  # 1 MiB of data plus the header
    args = _command("export", work, disk, client)
    before = _sha256(work / "v.mrc")
    assert main(args) == 2
    assert "MiB needed" in _disk_full_line(capsys, disk / "e.mrc")
    assert _sha256(work / "v.mrc") == before and os.listdir(disk) == []
    small_disk(ROOMY)
    assert main(args) == 0
    assert _sha256(disk / "e.mrc") == _sha256(work / "roomy" / "e.mrc")


def test_a_record_torn_by_a_full_disk_is_dropped_when_resuming(tmp_path):
    """A full disk may cut the last line of the blocks-done log: the rerun drops it (the block is computed
    again) before it appends, so no later record is glued to it."""
    (tmp_path / RUN_FILE).write_text(json.dumps({"fingerprint": "f"}))
    (tmp_path / DONE_FILE).write_text("0,0,0 1.0,0.5,2.0,0.0,1.0,0.0\n0,0,1 1.0,0.")
    assert list(_resume_state(tmp_path, "f")) == [(0, 0, 0)]
    assert (tmp_path / DONE_FILE).read_text() == "0,0,0 1.0,0.5,2.0,0.0,1.0,0.0\n"
