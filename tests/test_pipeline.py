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
from tomocare.model import save_model
from tomocare.nn.unet import UNet
from tomocare.simulate import simulate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, client):
    d = tmp_path_factory.mktemp("dataset")
    simulate_dataset(d, n_tomograms=3, shape=(32, 64, 64), snr=0.5, seed=4, chunks=32)
    return d


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "model"
    save_model(path, UNet(depth=1, base_channels=4), mean=0.0, std=1.0, voxel_size=10.0, patch_size=16,
               trained_on=["t"])
    return path


def _state(out):
    return json.loads((out / "state.json").read_text())["tomograms"]


def test_denoise_resumes_after_kill_without_recomputing(tmp_path, dataset, model, client):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tomocare.cli", "denoise", str(dataset), "--out", str(out), "--model", str(model),
           "--chunks", "32", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not ((out / "state.json").exists()
                                          and _state(out).get("tomo_000", {}).get("status") == "done"):
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
    page = (report / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 * len(state) and "</html>" in page
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


def _fill_disk_when_writing(client, name: str | None) -> None:
    """On every worker, make block writes into outputs named ``name`` fail as a full disk would
    (``None`` frees the space again)."""

    def install():
        import errno

        from tomocare.predict import engine

        original = engine.__dict__.setdefault("_original_run_block", engine.run_block)

        def full(job, index):
            if name in str(job.target.store_path):
                raise OSError(errno.ENOSPC, "No space left on device", str(job.target.store_path))
            return original(job, index)

        engine.run_block = original if name is None else full

    client.run(install)


def test_full_disk_stops_with_a_clear_error_and_resumes(tmp_path, dataset, model, client, capsys):
    out = tmp_path / "out"
    args = ["denoise", str(dataset), "--out", str(out), "--model", str(model), "--chunks", "32", "--no-mrc"]
    _fill_disk_when_writing(client, "tomo_001")
    try:
        assert main(args) == 2
    finally:
        _fill_disk_when_writing(client, None)
    err = capsys.readouterr().err
    assert "no space left on device while writing tomo_001" in err and "rerun the same command" in err
    state = _state(out)
    assert state["tomo_000"]["status"] == "done" and state["tomo_001"]["status"] == "failed"
    assert "tomo_002" not in state  # the run stopped instead of failing every remaining tomogram
    first = (out / "tomo_000.zarr" / "zarr.json").stat().st_mtime_ns
    assert main(args) == 0  # space freed: the rerun finishes the rest
    assert (out / "tomo_000.zarr" / "zarr.json").stat().st_mtime_ns == first
    assert all(s["status"] == "done" for s in _state(out).values())


def test_per_tomogram_training(tmp_path, dataset, client):
    subset = tmp_path / "data"
    subset.mkdir()
    for f in dataset.glob("tomo_00[01]_*"):
        (subset / f.name).symlink_to(f)
    (tmp_path / "s.toml").write_text(
        "[train]\npatch_size = 16\ndepth = 1\nbase_channels = 4\nn_patches = 16\nn_val_patches = 4\n"
        "batch_size = 4\nmax_steps = 4\nsteps_per_epoch = 2\n[denoise]\nmrc = false\n"
    )
    out = tmp_path / "out"
    assert main(["denoise", str(subset), "--out", str(out), "--config", str(tmp_path / "s.toml"),
                 "--per-tomogram", "--chunks", "32"]) == 0
    for name in ("tomo_000", "tomo_001"):
        trained_on = json.loads((out / "models" / name / "model.json").read_text())["trained_on"]
        assert trained_on and all(name in t for t in trained_on)
        assert (out / f"{name}.zarr").exists() and not (out / f"{name}_denoised.mrc").exists()
    assert not (out / "model").exists()
    saved = json.loads((out / "config.json").read_text())
    assert saved["denoise"]["per_tomogram"] is True and saved["train"]["max_steps"] == 4 and "version" in saved


def test_changed_training_settings_are_refused_unless_retrain(tmp_path, dataset, client, capsys):
    subset = tmp_path / "data"
    subset.mkdir()
    for f in dataset.glob("tomo_000_*"):
        (subset / f.name).symlink_to(f)
    settings = ("[train]\npatch_size = 16\ndepth = 1\nbase_channels = 4\nn_patches = 16\nn_val_patches = 4\n"
                "batch_size = 4\nsteps_per_epoch = 2\nmax_steps = {}\n[denoise]\nmrc = false\n")
    (tmp_path / "a.toml").write_text(settings.format(4))
    (tmp_path / "b.toml").write_text(settings.format(6))
    out = tmp_path / "out"
    args = ["denoise", str(subset), "--out", str(out), "--chunks", "32", "--config"]
    assert main(args + [str(tmp_path / "a.toml")]) == 0
    first = json.loads((out / "model" / "model.json").read_text())["weights_sha256"]
    capsys.readouterr()
    assert main(args + [str(tmp_path / "b.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_steps" in err and "--retrain" in err
    assert main(args + [str(tmp_path / "b.toml"), "--retrain"]) == 0
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["weights_sha256"] != first and model["extra"]["training"]["step"] == 6
    assert _state(out)["tomo_000"]["model"] == model["weights_sha256"]  # the tomogram was redone
    report = (out / "report" / "summary.md").read_text()
    assert "not resolution" in report and "step limit reached" in report
