"""Inputs are never written: an output that is an input, lies inside one or contains one (symlinks
resolved) is refused by every command, with or without --overwrite; a replaced input restarts an
interrupted prediction instead of mixing old and new blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.io.convert import convert_to_zarr
from tomocare.model import Model, save_model
from tomocare.nn import UNet
from tomocare.predict.engine import plan_run
from tomocare.predict.network import NetworkOperator

SHAPE = (24, 40, 40)


def _digest(path: Path) -> str:
    """A hash of a file, or of every file under a directory (names and bytes)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory, client):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for half in ("even", "odd"):
        write_test_mrc(d / f"t_{half}.mrc", rng.normal(size=SHAPE).astype(np.float32), voxel_size=(10.0,) * 3)
    convert_to_zarr(d / "t_even.mrc", d / "t_even.zarr", chunks=16, levels=1)
    torch.manual_seed(0)
    save_model(d / "model", UNet(depth=1, base_channels=2, residual=False), mean=0.0, std=1.0, voxel_size=10.0,
               patch_size=16, trained_on=["t"])
    (d / "link.zarr").symlink_to(d / "t_even.zarr")
    (d / "link.mrc").symlink_to(d / "t_even.mrc")
    return d


def _cases(d: Path) -> list[list[str]]:
    e, o, z, m = (str(d / n) for n in ("t_even.mrc", "t_odd.mrc", "t_even.zarr", "model"))
    return [
        ["predict", "-m", m, "--even", e, "--odd", o, "--out", e],  # output = input
        ["predict", "-m", m, "--input", z, "--out", f"{z}/sub.zarr"],  # inside an input store
        ["predict", "-m", m, "--input", z, "--out", str(d / "link.zarr")],  # a symlink onto the input
        ["predict", "-m", m, "--input", e, "--out", str(d / "x.zarr"), "--mrc", str(d / "link.mrc")],
        ["predict", "-m", m, "--input", e, "--out", m],  # the model directory
        ["baseline", "gaussian", e, e],
        ["baseline", "gaussian", z, f"{z}/0"],
        ["baseline", "gaussian", e, str(d / "y.zarr"), "--mrc", e],
        ["export", z, z],
        ["export", e, e],
        ["export", z, f"{z}/x.mrc"],
        ["convert", e, f"{z}/sub"],
        ["convert", e, str(d)],  # an output directory that holds the input
        ["evaluate", z, e, "--out", z],
        ["train", "--even", e, "--odd", o, "-o", e],
        ["denoise", str(d), "--out", str(d)],  # the dataset directory holds the halves
    ]


@pytest.mark.parametrize("overwrite", [False, True])
def test_no_command_writes_into_an_input(data, capsys, overwrite):
    inputs = {n: _digest(data / n) for n in ("t_even.mrc", "t_odd.mrc", "t_even.zarr", "model")}
    for argv in _cases(data):
        argv = argv + (["--overwrite"] if overwrite and argv[0] not in ("evaluate", "denoise") else [])
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and "input" in err, (argv, err)
    assert {n: _digest(data / n) for n in inputs} == inputs
    assert not list(data.glob(".*partial")) and not (data / "x.zarr").exists() and not (data / "y.zarr").exists()


def test_a_replaced_input_changes_the_resume_fingerprint(data, tmp_path):
    source = tmp_path / "v.mrc"
    rng = np.random.default_rng(1)
    write_test_mrc(source, rng.normal(size=SHAPE).astype(np.float32), voxel_size=(10.0,) * 3)
    operator = NetworkOperator(Model.read(data / "model"))
    first = plan_run(operator, [source], tmp_path / "o.zarr").fingerprint()
    assert plan_run(NetworkOperator(Model.read(data / "model")), [source], tmp_path / "o.zarr").fingerprint() == first
    write_test_mrc(tmp_path / "new.mrc", rng.normal(size=SHAPE).astype(np.float32), voxel_size=(10.0,) * 3)
    (tmp_path / "new.mrc").replace(source)  # a new reconstruction at the same path
    assert plan_run(operator, [source], tmp_path / "o.zarr").fingerprint() != first


def test_a_pipe_is_refused_not_read(tmp_path, capsys):
    import os

    fifo = tmp_path / "x.mrc"
    os.mkfifo(fifo)
    assert main(["info", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "baseline", "convert"])
def test_a_missing_output_directory_is_created(data, tmp_path, client, command):
    """What ``--dry-run`` accepts runs: every command creates its output's missing parents."""
    e, m = str(data / "t_even.mrc"), str(data / "model")
    out = tmp_path / "new" / "dir" / "o.zarr"
    argv = {"predict": ["predict", "-m", m, "--input", e, "--out", str(out)],
            "baseline": ["baseline", "gaussian", e, str(out), "-p", "sigma=1"],
            "convert": ["convert", e, str(out)]}[command]
    assert main([*argv, "--scheduler", client.scheduler.address]) == 0
    assert out.is_dir() and (out / "zarr.json").is_file()
