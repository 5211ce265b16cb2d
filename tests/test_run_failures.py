"""What goes wrong during a run: a corrupt chunk ends it in one line and the rerun after repair resumes
to the same output; a second run into the same output is refused while the first holds it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import zarr
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.io.atomic import output_lock
from tomocare.io.convert import convert_to_zarr
from tomocare.model import save_model
from tomocare.nn import UNet


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, client):
    d = tmp_path_factory.mktemp("run")
    data = np.random.default_rng(0).normal(size=(48, 48, 48)).astype(np.float32)
    convert_to_zarr(write_test_mrc(d / "v.mrc", data, voxel_size=(10.0,) * 3), d / "v.zarr", chunks=16, levels=1)
    torch.manual_seed(0)
    save_model(d / "model", UNet(depth=1, base_channels=2, residual=False), mean=0.0, std=1.0, voxel_size=10.0,
               patch_size=16, trained_on=["t"])
    return d


def _predict(d, source, out, *extra):
    return main(["predict", "-m", str(d / "model"), "--input", str(source), "--out", str(out), "--chunks", "16",
                 *extra])


def test_a_corrupt_chunk_ends_the_run_in_one_line_and_the_rerun_resumes(inputs, tmp_path, capsys):
    assert _predict(inputs, inputs / "v.zarr", tmp_path / "whole.zarr") == 0  # 27 blocks, uninterrupted
    source = tmp_path / "v.zarr"
    shutil.copytree(inputs / "v.zarr", source)
    chunk = source / "0" / "c" / "1" / "1" / "1"
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a blosc frame" * 10)
    capsys.readouterr()
    assert _predict(inputs, source, tmp_path / "out.zarr") == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "block (" in errors[0] and f"{source}/0" in errors[0] and "rerun the same command" in errors[0]
    assert not (tmp_path / "out.zarr").exists() and (tmp_path / ".out.zarr.partial").exists()
    chunk.write_bytes(good)  # repaired
    assert _predict(inputs, source, tmp_path / "out.zarr") == 0
    whole = zarr.open_group(str(tmp_path / "whole.zarr"), mode="r")["0"][:]
    assert np.array_equal(zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"][:], whole)


def test_a_second_run_into_the_same_output_is_refused(inputs, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    with output_lock(out):  # a first run holds the output
        assert _predict(inputs, inputs / "v.mrc", out) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another tomocare run (pid" in errors[0]
        assert not (tmp_path / ".o.zarr.partial").exists()
    assert _predict(inputs, inputs / "v.mrc", out) == 0  # released, even by a run that died
    assert not (tmp_path / ".o.zarr.lock").exists()
