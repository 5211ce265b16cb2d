"""Noise-model transfer: background patches, re-weighting, the synthesiser, and the chain end to end."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from scipy.ndimage import gaussian_filter

from tomocare.cli import main
from tomocare.io.mrc import write_mrc
from tomocare.io.volume import open_volume
from tomocare.nt2c.background import about_plane, find_background, min_ssim, moments
from tomocare.nt2c.reweight import fit_weights, radial_power
from tomocare.nt2c.synthesiser import (
    CHECKPOINT,
    NoiseGenerator,
    Synthesiser,
    SynthesiserConfig,
    _save_checkpoint,
    train_synthesiser,
)
from tomocare.simulate.structured import structured_tomogram


def test_sub_patch_ssim_tells_flat_from_structure():
    rng = np.random.default_rng(0)
    flat = 0.01 * rng.standard_normal((16, 16, 16))
    z, y, x = np.ogrid[:16, :16, :16]
    blob = flat + 0.5 * np.exp(-((z - 4) ** 2 + (y - 4) ** 2 + (x - 4) ** 2) / 8)  # a particle in one octant
    values = min_ssim(np.stack([moments(flat), moments(blob)]), -0.5, 1.0)
    assert values[0] > 0.9 and values[1] < 0.3


def test_background_is_found_away_from_objects(client):
    rng = np.random.default_rng(1)
    volume = 0.01 * rng.standard_normal((32, 64, 64)).astype(np.float32)
    z, y, x = np.ogrid[:32, :64, :64]
    volume[(z - 16) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 64] = 1.0  # a ball of radius 8 at (16, 20, 20)
    found = find_background(client, volume, patch=16, ndim=3, threshold=0.7)
    assert len(found.corners) == 3 * 7 * 7
    touches = np.array([all(c <= p + 8 and c + 16 > p - 8 for c, p in zip(corner, (16, 20, 20)))
                        for corner in found.corners])
    assert not found.background[touches].any()  # no patch over the ball is background
    assert found.background[~touches].mean() > 0.9  # the flat rest nearly all is


def test_reweighting_recovers_the_mixture():
    rng = np.random.default_rng(2)
    signal = np.stack([gaussian_filter(rng.standard_normal((32, 32, 32)), 2.0) for _ in range(24)])
    noise = rng.standard_normal((24, 32, 32, 32))
    real = 2.0 * np.stack([gaussian_filter(rng.standard_normal((32, 32, 32)), 2.0) for _ in range(24)]) \
        + 0.5 * rng.standard_normal((24, 32, 32, 32)) + 3.0
    weights = fit_weights(real, signal, noise, real_mean=float(real.mean()), signal_mean=0.0)
    assert weights.alpha == pytest.approx(2.0, rel=0.08)
    assert weights.beta == pytest.approx(0.5, rel=0.05)
    assert weights.gamma == pytest.approx(3.0, abs=0.05)
    assert radial_power(noise)[1:].std() / radial_power(noise)[1:].mean() < 0.1  # white: flat spectrum


def test_synthesiser_makes_any_shape_saves_and_resumes(tmp_path):
    rng = np.random.default_rng(3)
    patches = (1.0 + 0.5 * rng.standard_normal((64, 16, 16))).astype(np.float32)
    config = SynthesiserConfig(ndim=2, time_limit=60, max_steps=4, batch_size=8, critic_steps=2, seed=5)
    synth = train_synthesiser(patches, tmp_path / "a", config)
    # it learns the noise about each patch's plane: the level (1.0) is not noise
    assert synth.mean == pytest.approx(0.0, abs=1e-3) and synth.std == pytest.approx(0.5, rel=0.1)
    sample = synth.sample(2, (20, 36), seed=1)
    assert sample.shape == (2, 20, 36) and np.isfinite(sample).all()
    again = Synthesiser.read(tmp_path / "a")
    assert np.array_equal(again.sample(2, (20, 36), seed=1), sample)
    assert not (tmp_path / "a" / CHECKPOINT).exists()  # a finished run leaves no checkpoint
    # a checkpoint at the last step: a resumed run takes it as it is (no more steps)
    torch.manual_seed(0)
    generator = NoiseGenerator(config)
    from tomocare.nt2c.synthesiser import NoiseCritic

    critic = NoiseCritic(2)
    opts = [torch.optim.Adam(m.parameters()) for m in (generator, critic)]
    (tmp_path / "b").mkdir()
    _save_checkpoint(tmp_path / "b" / CHECKPOINT, generator, critic, *opts, torch.Generator().manual_seed(0), 4,
                     [], 1.0)
    resumed = train_synthesiser(patches, tmp_path / "b", config, resume=True)
    for a, b in zip(resumed.generator.state_dict().values(), generator.state_dict().values()):
        assert torch.equal(a, b)


def test_about_plane_takes_level_and_slope_and_leaves_the_noise():
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((32, 8, 8, 8)).astype(np.float32)
    z, y, x = np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij")
    ramps = np.stack([a + b * z + c * y + e * x for a, b, c, e in rng.normal(0, 3, (32, 4))])
    flat = about_plane(noise + ramps)
    assert np.allclose(about_plane(ramps), 0, atol=1e-4)
    assert np.allclose(flat, about_plane(noise), atol=1e-4)
    assert 0.9 < flat.std() / noise.std() < 1.0  # four of 512 degrees of freedom per patch go


def test_calibration_gives_the_training_spectrum(tmp_path):
    """A barely trained generator is far from anisotropic coloured training noise (as tomographic noise is);
    the calibrated one matches its spectrum per frequency, on samples of other seeds than the calibration's."""
    from tomocare.nt2c.reweight import power_spectrum

    rng = np.random.default_rng(6)
    coloured = np.stack([gaussian_filter(rng.standard_normal((16, 16, 16)), (1.5, 0.4, 0.8)) for _ in range(256)])
    config = SynthesiserConfig(ndim=3, time_limit=60, max_steps=2, batch_size=4, critic_steps=1, channels=4, seed=1)
    synth = train_synthesiser(coloured.astype(np.float32), tmp_path, config)
    target, made = power_spectrum(about_plane(coloured)), power_spectrum(synth.sample(512, (16,) * 3, seed=11))
    raw = power_spectrum(synth.sample(512, (16,) * 3, seed=11, calibrated=False))
    assert np.median(np.abs(raw / target - 1)) > 0.5  # the generator alone is far off
    assert np.median(np.abs(made / target - 1)) < 0.1
    along_z, along_x = (made[2, 0, 0], made[0, 0, 2]), (target[2, 0, 0], target[0, 0, 2])
    assert along_z[0] / along_z[1] == pytest.approx(along_x[0] / along_x[1], rel=0.3)  # the anisotropy is kept
    ratio = radial_power(synth.sample(256, (16,) * 3, seed=12))[1:] / radial_power(about_plane(coloured))[1:]
    assert np.abs(ratio - 1).max() < 0.1, ratio


def test_calibration_from_few_patches_averages_neighbouring_frequencies(tmp_path, monkeypatch):
    """A micrograph may give only a handful of noise patches: one frequency's power from 4 patches is off by
    half, so the calibration averages neighbouring frequencies; its samples then keep to the noise's spectrum
    (measured on 4096 patches of the same noise) far better than a gain per frequency would."""
    import tomocare.nt2c.synthesiser as synthesiser_module
    from tomocare.nt2c.reweight import power_spectrum

    rng = np.random.default_rng(6)

    def noise(n: int) -> np.ndarray:
        return np.stack([gaussian_filter(rng.standard_normal((64, 64)), (0.6, 0.3), mode="wrap")
                         for _ in range(n)]).astype(np.float32)

    few, truth = noise(4), power_spectrum(about_plane(noise(4096)))
    config = SynthesiserConfig(ndim=2, time_limit=60, max_steps=2, batch_size=4, critic_steps=1, channels=4, seed=1)
    error = {}
    for label, periodograms in (("per frequency", 1), ("averaged", synthesiser_module.MIN_PERIODOGRAMS)):
        monkeypatch.setattr(synthesiser_module, "MIN_PERIODOGRAMS", periodograms)
        synth = train_synthesiser(few, tmp_path / label, config)
        ratio = power_spectrum(synth.sample(1024, (64, 64), seed=11)) / truth
        error[label] = float(np.median(np.abs(ratio.ravel()[1:] - 1)))
    assert error["per frequency"] > 0.25, error
    assert error["averaged"] < 0.15, error


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def single_dataset(tmp_path_factory) -> Path:
    """One structured tomogram without halves (32 x 96 x 96, 10 Å)."""
    root = tmp_path_factory.mktemp("single")
    tomo = structured_tomogram((32, 96, 96), seed=3, snr=0.1, voxel_size=10.0)
    (root / "data").mkdir()
    write_mrc(da.from_array(tomo.full), root / "data" / "tomo.mrc", voxel_size=10.0)
    (root / "settings.toml").write_text("[nt2c]\npairs = 1\npair_shape = [32, 64, 64]\nmax_patches = 64\n"
                                        "synthesiser_time = 4\n")
    return root


def _chain_args(root: Path, out: Path) -> list[str]:
    return ["denoise-single", str(root / "data"), "--out", str(out), "--config", str(root / "settings.toml"),
            "--time-limit", "8", "--workers", "1"]


def test_final_prediction_orientations_default_to_two_unless_set(tmp_path):
    from tomocare.config import load_settings
    from tomocare.nt2c.chain import FINAL_ORIENTATIONS, final_settings

    assert final_settings(load_settings(None)).predict.orientations == FINAL_ORIENTATIONS == 2
    given = tmp_path / "one.toml"
    given.write_text("[predict]\norientations = 1\n")
    assert final_settings(load_settings(given)).predict.orientations == 1


def test_denoise_single_runs_the_chain_and_a_rerun_skips_it(single_dataset, tmp_path):
    source = single_dataset / "data" / "tomo.mrc"
    before = _sha(source)
    out = tmp_path / "out"
    assert main(_chain_args(single_dataset, out)) == 0
    state = json.loads((out / "state.json").read_text())["done"]
    assert set(state) == {"coarse/tomo", "noise/tomo", "synthesiser", "pairs", "fine", "predict/tomo"}
    assert json.loads((out / "model" / "train_config.json").read_text())["config"]["loss"] == "l1"  # FINE_LOSS
    assert state["noise/tomo"]["kept"] >= 2
    result = open_volume(out / "tomo.zarr")
    assert result.shape == (32, 96, 96) and result.voxel_size == pytest.approx((10.0, 10.0, 10.0))
    assert np.isfinite(np.asarray(result.array[...])).all()
    # the fine model sees the tomogram in two orientations (the coarse model, not asked, in one)
    assert zarr.open_group(str(out / "tomo.zarr"), mode="r").attrs["tomocare"]["operator"]["orientations"] == 2
    coarse = zarr.open_group(str(out / "work" / "coarse" / "tomo.zarr"), mode="r")
    assert coarse.attrs["tomocare"]["operator"]["orientations"] == 1
    assert (out / "tomo_denoised.mrc").is_file() and (out / "work" / "noise" / "tomo_background.png").is_file()
    weights = json.loads((out / "work" / "pairs" / "reweight.json").read_text())
    assert weights["alpha"] > 0 and weights["beta"] > 0
    assert "Re-weighting" in (out / "report" / "summary.md").read_text()
    assert _sha(source) == before  # the input is never written
    output = _sha(out / "tomo_denoised.mrc")
    t = time.monotonic()
    assert main(_chain_args(single_dataset, out)) == 0  # everything done: nothing is redone
    assert time.monotonic() - t < 30 and _sha(out / "tomo_denoised.mrc") == output


def test_denoise_single_resumes_after_a_kill(single_dataset, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "tomocare", *_chain_args(single_dataset, out)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    state = out / "state.json"
    while time.monotonic() < deadline and process.poll() is None:  # kill it once the synthesiser is training
        if state.exists() and "noise/tomo" in json.loads(state.read_text())["done"]:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = json.loads(state.read_text())["done"]
    assert "predict/tomo" not in done
    coarse = out / "work" / "coarse" / "tomo.zarr"
    stamp = coarse.stat().st_mtime_ns
    assert main(_chain_args(single_dataset, out)) == 0
    assert coarse.stat().st_mtime_ns == stamp  # the finished stages were not redone
    assert set(json.loads(state.read_text())["done"]) >= {"synthesiser", "pairs", "fine", "predict/tomo"}
    assert open_volume(out / "tomo.zarr").shape == (32, 96, 96)


def test_the_stages_one_by_one(single_dataset, tmp_path, capsys):
    """extract-noise -> train-noise -> synthesise-pairs, as the README lists them, with default settings for
    the pairs' signal (the coarse output, which synthesise-pairs must be given)."""
    data, noise, synth, pairs = single_dataset / "data" / "tomo.mrc", tmp_path / "noise", tmp_path / "s", tmp_path / "p"
    settings = ["--config", str(single_dataset / "settings.toml"), "--workers", "1"]
    assert main(["extract-noise", str(data), "--out", str(noise), *settings]) == 0
    assert main(["train-noise", str(noise), "--out", str(synth), "--time-limit", "3",
                 "--config", str(single_dataset / "settings.toml")]) == 0
    assert (synth / "noise_samples.png").is_file()
    capsys.readouterr()
    assert main(["synthesise-pairs", "--synthesiser", str(synth), "--like", str(data), "--out", str(pairs),
                 *settings]) == 2  # the default signal is the coarse output: without it, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--enhanced" in err[0]
    assert main(["synthesise-pairs", "--synthesiser", str(synth), "--like", str(data), "--enhanced",
                 str(noise / "tomo_coarse.zarr"), "--out", str(pairs), *settings]) == 0
    noisy, clean = (np.asarray(open_volume(pairs / f"pair_000_{k}.mrc").array[...]) for k in ("input", "target"))
    assert noisy.shape == clean.shape == (32, 64, 64)
    assert (noisy - clean).std() > 0.2 * noisy.std()  # the input carries the synthesised noise


@pytest.mark.parametrize("args", [
    ["denoise-single", "{tmp}/missing", "--out", "{tmp}/o"],
    ["denoise-single", "{tmp}/empty", "--out", "{tmp}/o"],
    ["denoise-single", "{tmp}/bad", "--out", "{tmp}/o", "--workers", "1"],
    ["extract-noise", "{tmp}/bad/t.mrc", "--out", "{tmp}/o", "--coarse", "general", "--enhanced", "{tmp}/x.zarr"],
    ["train-noise", "{tmp}/empty", "--out", "{tmp}/o"],
    ["denoise-single", "{tmp}/bad", "--out", "{tmp}/o", "--threshold", "2"],
    ["denoise-single", "{tmp}/bad", "--out", "{tmp}/o", "--patch-size", "7"],
])
def test_bad_input_is_one_line(tmp_path, capsys, args):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "t.mrc").write_bytes(b"not an mrc file" * 10)
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in err[0]


def test_denoise_single_on_micrographs_with_a_2d_coarse_model(tmp_path):
    """The chain in 2-D, plumbing only: an untrained 2-D coarse model, every patch taken as background."""
    from tomocare.simulate.structured import structured_images
    from tomocare.testing import tiny_model

    images = structured_images(2, (96, 96), seed=4, dose=40.0, thickness=24)
    (tmp_path / "data").mkdir()
    write_mrc(da.from_array(images.noisy), tmp_path / "data" / "micrographs.mrc", voxel_size=4.0)
    coarse = tiny_model(tmp_path / "coarse", ndim=2, voxel_size=4.0)
    (tmp_path / "s.toml").write_text("[nt2c]\npairs = 1\npair_shape = [2, 64, 64]\nmax_patches = 32\npatch_size = 16\n"
                                     "threshold = -0.99\nsynthesiser_time = 3\n[train]\npatch_size = 32\n")
    out = tmp_path / "out"
    assert main(["denoise-single", str(tmp_path / "data"), "--out", str(out), "--coarse", str(coarse), "--config",
                 str(tmp_path / "s.toml"), "--time-limit", "6", "--workers", "1"]) == 0
    result = open_volume(out / "micrographs.zarr")
    assert result.shape == (2, 96, 96) and np.isfinite(np.asarray(result.array[...])).all()
    assert np.load(out / "work" / "noise" / "micrographs_patches.npy").shape[1:] == (16, 16)
