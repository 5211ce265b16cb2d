"""Tilt series: angles, projection/back-projection geometry, simulator, reconstruct and split commands."""

from __future__ import annotations

import dask
import mrcfile
import numpy as np
import pytest
from helpers import write_test_mrc
from scipy.ndimage import gaussian_filter

from tomocare.cli import main
from tomocare.errors import TomocareError
from tomocare.simulate.tiltseries import (
    exposure_filter,
    simulate_image_pairs,
    simulate_movie,
    simulate_tilt_series,
    write_tilt_series,
)
from tomocare.tilt.angles import (
    dose_symmetric_ranks,
    even_odd_indices,
    read_order,
    read_tlt,
    tilt_range_angles,
    write_order,
    write_tlt,
)
from tomocare.tilt.wbp import angle_weights, project_slab, ramp_filter, reconstruct_slab


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def read(path) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as m:
        return np.array(m.data)


# ---------------------------------------------------------------- angles and order


def test_dose_symmetric_order_and_even_odd_split():
    angles = tilt_range_angles(9, 3)  # -9 .. 9
    ranks = dose_symmetric_ranks(angles)
    acquired = angles[np.argsort(ranks)]
    assert acquired.tolist() == [0, 3, 6, -3, -6, 9, -9]
    even, odd = even_odd_indices(len(angles), ranks)
    assert sorted(angles[even].tolist()) == [-9, -6, 0, 6] and sorted(angles[odd].tolist()) == [-3, 3, 9]
    assert even_odd_indices(5)[0].tolist() == [0, 2, 4]


def test_tlt_and_order_files_round_trip(tmp_path):
    angles = tilt_range_angles(60, 3)
    write_tlt(tmp_path / "a.tlt", angles)
    assert np.allclose(read_tlt(tmp_path / "a.tlt"), angles)
    ranks = dose_symmetric_ranks(angles)
    write_order(tmp_path / "o.csv", angles, ranks)
    assert (tmp_path / "o.csv").read_text().startswith("1,0.00\n2,3.00\n")
    assert np.array_equal(read_order(tmp_path / "o.csv", angles), ranks)
    (tmp_path / "bad.tlt").write_text("0\nforty\n")
    with pytest.raises(TomocareError, match="line 2"):
        read_tlt(tmp_path / "bad.tlt")


# ---------------------------------------------------------------- geometry


def test_ramp_filter_has_no_dc_and_ramps():
    h = ramp_filter(256)
    assert abs(h[0]) < 2e-3 and np.all(np.diff(h[1:]) > 0) and h[-1] == pytest.approx(0.5, abs=0.02)
    assert (ramp_filter(256, "hamming")[-1] < 0.05
            and angle_weights(np.array([-3.0, 0, 3])).sum() == pytest.approx(np.radians(9)))


def test_blob_reconstructs_in_place_with_its_amplitude():
    """Convention check: a blob off-centre in z and x comes back where it was (not mirrored)."""
    z, x = np.mgrid[:48, :48] - 23.5
    blob = np.exp(-((z - 6.5) ** 2 + (x + 8.5) ** 2) / (2 * 3.0**2))[:, None, :].repeat(2, axis=1)
    angles = np.arange(-89.0, 90.0, 1.0)
    rec = reconstruct_slab(project_slab(blob, angles), angles, 48)
    assert np.unravel_index(np.argmax(rec[:, 0]), (48, 48)) == (30, 15)  # 23.5 + 6.5, 23.5 - 8.5
    assert rec.max() == pytest.approx(blob.max(), rel=0.1)
    assert corr(rec, blob) > 0.99


# ---------------------------------------------------------------- simulator


def test_simulated_tilt_series_counts_and_damage():
    sim = simulate_tilt_series((32, 32, 64), max_angle=30, step=10, dose=50.0, seed=3, y_chunk=16)
    assert sim.noisy.shape == sim.clean.shape == (7, 32, 64) and sim.ranks[3] == 0
    with dask.config.set(scheduler="synchronous"):
        clean, noisy = dask.compute(sim.clean, sim.noisy)
        again = sim.noisy.compute()
    assert np.array_equal(noisy, again)  # same seed, same bytes
    assert 0 < clean.min() and clean.max() <= 50.0
    assert np.mean(noisy - clean) == pytest.approx(0, abs=0.3)
    assert np.var(noisy - clean) == pytest.approx(clean.mean(), rel=0.1)  # Poisson
    filt = exposure_filter((32, 64), 10.0, 60.0)
    assert filt[0, 0] == 1.0 and filt[16, 32] < filt[0, 4] < 1.0
    damaged = simulate_tilt_series((32, 32, 64), max_angle=30, step=10, dose=5000.0, damage=True, seed=3, y_chunk=16)
    with dask.config.set(scheduler="synchronous"):
        first, last = damaged.clean[3].compute(), damaged.clean[int(np.argmax(damaged.ranks))].compute()
    undamaged = sim.clean.compute()
    assert np.allclose(first / 5000.0, undamaged[3] / 50.0, rtol=1e-4)  # nothing received before the first tilt
    assert np.std(np.diff(last, axis=1)) < np.std(np.diff(undamaged[0] / 50 * 5000, axis=1))


def test_simulated_image_pairs_are_independent_draws():
    pairs = simulate_image_pairs(2, (32, 32), dose=30.0, thickness=32, seed=2)
    with dask.config.set(scheduler="synchronous"):
        clean, a, b = dask.compute(pairs.clean, *pairs.noisy)
    assert clean.shape == a.shape == b.shape == (2, 32, 32) and not np.array_equal(a, b)
    assert abs(corr(a - clean, b - clean)) < 0.1


def test_simulated_movie_shares_the_dose():
    movie = simulate_movie((32, 32), n_frames=4, dose=40.0, thickness=32, seed=1)
    with dask.config.set(scheduler="synchronous"):
        clean, frames = movie.clean.compute(), movie.noisy[0].compute()
    assert frames.shape == (4, 32, 32)
    assert frames.sum(axis=0).mean() == pytest.approx(clean.mean(), rel=0.05)


# ---------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def tilt_files(tmp_path_factory):
    """A small simulated tilt series on disk: noisy counts and noiseless line integrals."""
    out = tmp_path_factory.mktemp("tilt")
    sim = simulate_tilt_series((64, 128, 128), seed=1, dose=50.0, y_chunk=32)
    with dask.config.set(scheduler="threads", num_workers=2):
        paths = write_tilt_series(sim, out / "ts")
        wedge = sim.wedge_clean.compute()
    return paths, wedge


CENTRE = (slice(8, 56), slice(None), slice(24, 104))  # away from the slab faces and the x edges


def test_reconstruct_correlates_with_the_phantom(tilt_files, tmp_path, client, capsys):
    paths, wedge = tilt_files
    rec = tmp_path / "rec.mrc"
    assert main(["reconstruct", str(paths["projections"]), str(rec), "--angles", str(paths["angles"]),
                 "--thickness", "64", "--y-chunk", "32"]) == 0
    volume = read(rec)
    assert volume.shape == (64, 128, 128)
    r = corr(volume[CENTRE], wedge[CENTRE])
    print(f"WBP correlation with the wedge-filtered phantom: {r:.4f}")
    assert r > 0.95
    with mrcfile.open(rec, header_only=True) as m:
        assert float(m.voxel_size.x) == pytest.approx(10.0)


def test_reconstruct_even_odd_differ_by_noise_only(tilt_files, tmp_path, client):
    paths, wedge = tilt_files
    out = tmp_path / "half.mrc"
    assert main(["reconstruct", str(paths["noisy"]), str(out), "--angles", str(paths["angles"]), "--split",
                 "even-odd", "--order", str(paths["order"]), "--thickness", "64", "--y-chunk", "32"]) == 0
    even, odd = read(tmp_path / "half_even.mrc"), read(tmp_path / "half_odd.mrc")
    assert even.shape == odd.shape == (64, 128, 128) and not np.array_equal(even, odd)
    signal, noise = (even + odd)[CENTRE], (even - odd)[CENTRE]
    smooth = gaussian_filter(even + odd, 2.0)[CENTRE]
    print(f"even+odd vs phantom: {corr(signal, -wedge[CENTRE]):.3f}, low-passed {corr(smooth, -wedge[CENTRE]):.3f}; "
          f"even-odd vs phantom: {corr(noise, wedge[CENTRE]):.3f}")
    assert corr(smooth, -wedge[CENTRE]) > 0.5  # counts: dense matter is dark
    assert corr(signal, -wedge[CENTRE]) > 0.15 and abs(corr(noise, wedge[CENTRE])) < 0.03
    assert abs(noise.mean()) < 0.1 * noise.std()


def test_split_tilts_alternates_in_acquisition_order(tilt_files, tmp_path, client):
    paths, _ = tilt_files
    e, o = tmp_path / "E.mrc", tmp_path / "O.mrc"
    assert main(["split-tilts", str(paths["noisy"]), "--angles", str(paths["angles"]), "--order", str(paths["order"]),
                 "--even", str(e), "--odd", str(o)]) == 0
    angles, ranks = read_tlt(paths["angles"]), read_order(paths["order"], read_tlt(paths["angles"]))
    even_idx, odd_idx = even_odd_indices(len(angles), ranks)
    assert np.allclose(read_tlt(tmp_path / "E.tlt"), angles[even_idx])
    assert np.allclose(read_tlt(tmp_path / "O.tlt"), angles[odd_idx])
    assert np.array_equal(read(e), read(paths["noisy"])[even_idx])


def test_split_frames_sums_interleaved_frames(tmp_path, client):
    frames = np.random.default_rng(0).poisson(3.0, (5, 24, 40)).astype(np.float32)
    write_test_mrc(tmp_path / "movie.mrc", frames)
    assert main(["split-frames", str(tmp_path / "movie.mrc"), "--even", str(tmp_path / "e.mrc"),
                 "--odd", str(tmp_path / "o.mrc")]) == 0
    assert np.allclose(read(tmp_path / "e.mrc"), frames[0::2].sum(0))
    assert np.allclose(read(tmp_path / "o.mrc"), frames[1::2].sum(0))
    with mrcfile.open(tmp_path / "e.mrc", header_only=True) as m:
        assert float(m.voxel_size.x) == pytest.approx(3.1)
    # one file per frame works the same
    for i, f in enumerate(frames):
        write_test_mrc(tmp_path / f"f{i}.mrc", f)
    assert main(["split-frames", *[str(tmp_path / f"f{i}.mrc") for i in range(5)], "--even", str(tmp_path / "e2.mrc"),
                 "--odd", str(tmp_path / "o2.mrc")]) == 0
    assert np.allclose(read(tmp_path / "o2.mrc"), frames[1::2].sum(0))


def test_bad_inputs_one_line_errors(tmp_path, client, capsys):
    stack = write_test_mrc(tmp_path / "ts.mrc", np.zeros((5, 16, 16), np.float32))
    image = write_test_mrc(tmp_path / "img.mrc", np.zeros((16, 16), np.float32))
    other = write_test_mrc(tmp_path / "other.mrc", np.zeros((16, 20), np.float32))
    tomogram = write_test_mrc(tmp_path / "tomo.mrc", np.zeros((32, 16, 16), np.float32))
    write_tlt(tmp_path / "a.tlt", np.array([-6.0, -3, 0, 3]))
    cases = [
        (["reconstruct", str(stack), str(tmp_path / "r.mrc"), "--angles", str(tmp_path / "a.tlt")],
         "5 images but 4 angles"),
        (["reconstruct", str(tomogram), str(tmp_path / "r.mrc"), "--angles", str(tmp_path / "a.tlt")],
         "reconstructed tomogram"),
        (["reconstruct", str(image), str(tmp_path / "r.mrc"), "--angles", str(tmp_path / "a.tlt")], "single 2-D image"),
        (["split-tilts", str(stack), "--angles", str(tmp_path / "a.tlt"), "--even", "e.mrc", "--odd", "o.mrc"],
         "angles"),
        (["split-frames", str(image), str(other), "--even", str(tmp_path / "e.mrc"), "--odd", str(tmp_path / "o.mrc")],
         "differ"),
        (["split-frames", str(image), "--even", str(tmp_path / "e.mrc"), "--odd", str(tmp_path / "o.mrc")],
         "at least 2 frames"),
        (["reconstruct", str(stack), str(tmp_path / "r.mrc"), "--angles", str(tmp_path / "missing.tlt")],
         "no such angles file"),
    ]
    for args, expected in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and expected in err, err
    assert not (tmp_path / "r.mrc").exists() and not (tmp_path / "e.mrc").exists()
