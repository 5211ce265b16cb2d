"""The synthesised-noise diagnostics tell like noise from unlike: spectra, a critic's AUC, histograms, figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from tomocare.errors import TomocareError
from tomocare.nt2c.diagnostics import (
    _auc,
    background_figure,
    critic_auc,
    histogram_distance,
    noise_figure,
    spectrum_match,
)


def white(n: int, *shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_spectrum_match_white_against_white_and_smoothed():
    real, other = white(512, 32, 32, seed=1), white(512, 32, 32, seed=2)
    same = spectrum_match(real, other)
    assert same["shells"] == list(range(17))
    assert same["ratio"][0] is None  # the mean is removed: no power at shell 0
    assert same["band"] == [1, 16]  # white noise: every shell clears the floor
    assert same["max_deviation"] < 0.1
    assert same["max_deviation_above_1"] <= same["max_deviation"]
    smoothed = spectrum_match(real, gaussian_filter(other, (0, 1, 1)))
    assert smoothed["max_deviation"] > 0.9  # the Gaussian blur takes nearly all the power near Nyquist
    # the other way round, the blurred noise's high shells fall below the floor and leave the band
    assert spectrum_match(gaussian_filter(real, (0, 1, 1)), other)["band"][1] < 16


def test_spectrum_match_3d_and_refusals():
    cubes = spectrum_match(white(64, 16, 16, 16, seed=3), white(64, 16, 16, 16, seed=4))
    assert cubes["band"] == [1, 8] and cubes["max_deviation"] < 0.1
    with pytest.raises(TomocareError, match="one shape"):
        spectrum_match(white(4, 16, 16, seed=0), white(4, 8, 8, seed=0))
    with pytest.raises(TomocareError, match="square"):
        spectrum_match(white(4, 16, 8, seed=0), white(4, 16, 8, seed=0))
    with pytest.raises(TomocareError, match="constant"):
        spectrum_match(np.ones((4, 8, 8)), white(4, 8, 8, seed=0))


def test_auc_by_ranks():
    assert _auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert _auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert _auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5  # ties count half
    assert _auc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75


def test_critic_auc_same_and_different():
    real = white(256, 16, 16, seed=5)
    same = critic_auc(real, white(256, 16, 16, seed=6))
    assert 0.35 <= same["auc"] <= 0.65
    assert same["train"] == [128, 128] and same["test"] == [128, 128]
    louder = critic_auc(real, 2 * white(256, 16, 16, seed=6))
    assert louder["auc"] > 0.8 and louder["accuracy"] > 0.7
    assert critic_auc(real, 2 * white(256, 16, 16, seed=6)) == louder  # seeded
    state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state()
    critic_auc(real[:8], real[8:16], steps=2)
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # the global torch seed is left alone
    assert np.array_equal(np.random.get_state()[1], state)


def test_critic_auc_3d_runs():
    out = critic_auc(white(8, 8, 8, 8, seed=7), white(8, 8, 8, 8, seed=8), steps=3, channels=4)
    assert 0 <= out["auc"] <= 1 and out["steps"] == 3


def test_histogram_distance_same_and_different():
    real = white(128, 16, 16, seed=9)
    assert histogram_distance(real, white(128, 16, 16, seed=10)) < 0.05
    assert histogram_distance(real, 2 * white(128, 16, 16, seed=10)) > 0.25
    assert histogram_distance(real, real + 3) == pytest.approx(0.866, abs=0.03)  # N(0, 1) vs N(3, 1): 2Φ(1.5) - 1
    assert histogram_distance(real, real + 10) > 0.99  # disjoint
    assert histogram_distance(real, real) == 0.0


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 16)])
def test_noise_figure(tmp_path, shape):
    path = tmp_path / "noise.png"
    assert noise_figure(white(6, *shape, seed=11), white(6, *shape, seed=12), path, "noise") == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert not list(tmp_path.glob(".*"))  # written in one step: no temporary left


def test_background_figure(tmp_path):
    path = tmp_path / "background.png"
    image = np.random.default_rng(13).standard_normal((64, 96))
    corners = np.array([(0, 0), (16, 32), (48, 80)])
    assert background_figure(image, corners, 16, path, "TS_01") == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    background_figure(image, np.zeros((0, 2), int), 16, tmp_path / "none.png", "TS_01")  # no patches found
    assert (tmp_path / "none.png").stat().st_size > 0
