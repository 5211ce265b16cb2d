"""The dataset command: resumable after a kill, isolates a corrupt tomogram, writes the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

from tomocare.cli import main
from tomocare.nn.unet import UNet
from tomocare.simulate import simulate_dataset
from tomocare.train.model_file import save_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, client):
    d = tmp_path_factory.mktemp("dataset")
    simulate_dataset(d, n_tomograms=3, shape=(32, 64, 64), snr=0.5, seed=4, chunks=32)
    return d


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "model"
    save_model(path, UNet(depth=1, base_channels=4), mean=0.0, std=1.0, voxel_size=10.0, patch_size=16, trained_on=["t"])
    return path


def _state(out):
    return json.loads((out / "state.json").read_text())["tomograms"]


def test_denoise_resumes_after_kill_without_recomputing(tmp_path, dataset, model, client):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tomocare.cli", "denoise", str(dataset), "--out", str(out), "--model", str(model),
           "--chunks", "32", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not ((out / "state.json").exists() and _state(out).get("tomo_000", {}).get("status") == "done"):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _state(out)["tomo_000"]["status"] == "done"
    first = (out / "tomo_000.zarr" / "zarr.json").stat().st_mtime_ns
    first_mrc = (out / "tomo_000_denoised.mrc").stat().st_mtime_ns

    assert main(["denoise", str(dataset), "--out", str(out), "--model", str(model), "--chunks", "32"]) == 0
    assert (out / "tomo_000.zarr" / "zarr.json").stat().st_mtime_ns == first  # not recomputed
    assert (out / "tomo_000_denoised.mrc").stat().st_mtime_ns == first_mrc
    state = _state(out)
    assert [state[n]["status"] for n in ("tomo_000", "tomo_001", "tomo_002")] == ["done"] * 3
    for name in state:
        data = np.asarray(zarr.open_group(str(out / f"{name}.zarr"), mode="r")["0"][:])
        assert data.shape == (32, 64, 64) and np.isfinite(data).all()
    report = out / "report"
    for name in state:
        assert (report / f"{name}_slices.png").stat().st_size > 10_000
        assert (report / f"{name}_fsc.png").exists()
    summary = json.loads((report / "summary.json").read_text())
    assert {r["name"] for r in summary} == {"tomo_000", "tomo_001", "tomo_002"}
    assert all("psnr_denoised_db" in r for r in summary)  # simulated data carry a clean volume


def test_corrupt_tomogram_is_skipped_and_reported(tmp_path, dataset, model, client, capsys):
    bad = tmp_path / "data"
    bad.mkdir()
    for f in dataset.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "tomo_001_odd.mrc").unlink()
    (bad / "tomo_001_odd.mrc").write_bytes((dataset / "tomo_001_odd.mrc").read_bytes()[:5000])  # truncated
    out = tmp_path / "out"
    assert main(["denoise", str(bad), "--out", str(out), "--model", str(model), "--chunks", "32", "--no-mrc"]) == 2
    captured = capsys.readouterr()
    assert "tomo_001: FAILED" in captured.out and "truncated MRC file" in captured.out
    assert "1 of 3 tomograms failed" in captured.err
    state = _state(out)
    assert state["tomo_001"]["status"] == "failed"
    assert state["tomo_000"]["status"] == state["tomo_002"]["status"] == "done"
    assert not (out / "tomo_001.zarr").exists()


def test_empty_directory_is_an_error(tmp_path, capsys):
    assert main(["denoise", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no even/odd pairs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
