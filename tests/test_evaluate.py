"""Evaluation: metrics agree with scikit-image, FSC properties, SNR from boxes, detection, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_test_mrc
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.metrics import mean_squared_error, normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from tomocare import TomocareError
from tomocare.cli import main
from tomocare.evaluate.detection import detection_curve, otsu_threshold
from tomocare.evaluate.fsc import fsc, fsc_subvolumes, subvolume_corners, write_fsc_csv
from tomocare.evaluate.metrics import affine_fit, mse, nrmse, psnr
from tomocare.evaluate.reference import compare_to_reference
from tomocare.evaluate.snr import BoxPair, estimate_snr, read_boxes
from tomocare.evaluate.ssim import ssim


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A smooth reference and a scaled, shifted, noisy copy of it."""
    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.standard_normal((36, 48, 44)), 2).astype(np.float32)
    x = (1.7 * ref + 0.3 + 0.05 * rng.standard_normal(ref.shape)).astype(np.float32)
    return x, ref


def test_psnr_ssim_nrmse_mse_agree_with_scikit_image(pair):
    x, ref = pair
    dr = float(ref.max() - ref.min())
    xf = affine_fit(x, ref)
    for test in (x, xf):
        expected = structural_similarity(test, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=dr)
        assert ssim(test, ref, data_range=dr) == pytest.approx(expected, rel=1e-6, abs=1e-7)
        assert ssim(test, ref) == pytest.approx(expected, rel=1e-6, abs=1e-7)  # data range from the reference
        assert psnr(test, ref, fit=False) == pytest.approx(peak_signal_noise_ratio(ref, test, data_range=dr), rel=1e-6)
        assert mse(test, ref) == pytest.approx(mean_squared_error(ref, test), rel=1e-6)
        for norm in ("euclidean", "min-max", "mean"):
            assert nrmse(test, ref, fit=False, normalization=norm) == pytest.approx(
                normalized_root_mse(ref, test, normalization=norm), rel=1e-6)
    assert psnr(x, ref) == pytest.approx(psnr(xf, ref, fit=False), rel=1e-6)  # fit=True by default
    assert psnr(xf, ref, fit=False) > psnr(x, ref, fit=False) + 10


def test_block_by_block_metrics_equal_the_whole_volume_ones(pair):
    x, ref = pair
    got = compare_to_reference(x, ref, fit=True, cube=16, block=32)
    xf = affine_fit(x, ref)
    dr = float(ref.max() - ref.min())
    assert got.whole["psnr_db"] == pytest.approx(psnr(x, ref), rel=1e-6)
    assert got.whole["ssim"] == pytest.approx(ssim(xf, ref, data_range=dr), rel=1e-6)
    assert got.whole["nrmse"] == pytest.approx(nrmse(x, ref), rel=1e-6)
    assert got.whole["mse"] == pytest.approx(mse(xf, ref), rel=1e-6)
    x64, r64 = x.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    assert got.fit[0] == pytest.approx(np.cov(x64, r64, bias=True)[0, 1] / x64.var(), rel=1e-6)
    assert got.n_cubes == 2 * 3 * 2  # complete 16-cubes only
    for metric, q in got.percentiles.items():
        assert q["p5"] <= q["p50"] <= q["p95"], metric
    assert q["p5"] <= got.whole["mse"] <= q["p95"]
    assert compare_to_reference(x, ref, fit=False).whole["psnr_db"] == pytest.approx(psnr(x, ref, fit=False))


def test_reference_with_nan_is_refused(pair):
    x, ref = pair
    bad = ref.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(TomocareError, match="NaN or infinite values in the reference"):
        compare_to_reference(x, bad)


def test_fsc_of_a_volume_with_itself_is_one_at_every_shell():
    vol = np.random.default_rng(1).standard_normal((32, 40, 36)).astype(np.float32)
    curve = fsc(vol, vol, 5.0)
    np.testing.assert_allclose(curve.correlation, 1.0, atol=1e-9)
    assert curve.resolutions() == {"0.5": None, "0.143": None}
    sub = fsc_subvolumes(vol, vol, 5.0, size=16, count=4)
    np.testing.assert_allclose(sub.correlation, 1.0, atol=1e-9)
    assert sub.n_subvolumes == 4 and sub.method == "mean of 4 sub-volumes of edge 16"


def test_fsc_of_independent_noise_lies_in_the_3_sigma_band():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((48, 48, 48)).astype(np.float32) for _ in range(2))
    curve = fsc(a, b, 4.0)
    outside = np.abs(curve.correlation) > curve.noise_band(3.0)
    assert outside[1:].sum() <= 1  # 3σ: about 0.3 % expected; the first shell has only a few voxels
    sub = fsc_subvolumes(a, b, 4.0, size=24, count=8)
    assert (np.abs(sub.correlation) > sub.noise_band(3.0))[1:].sum() <= 1


def test_fsc_crossings_and_csv(tmp_path):
    rng = np.random.default_rng(3)
    signal = ndimage.gaussian_filter(rng.standard_normal((40, 40, 40)), 1.5)
    signal /= signal.std()
    a, b = (signal + 2.0 * rng.standard_normal(signal.shape) for _ in range(2))
    curve = fsc(a, b, 2.0)
    res = curve.resolutions()
    assert res["0.5"] is not None and res["0.143"] is not None
    assert 4.0 < res["0.143"] < res["0.5"]  # Nyquist (2 x 2 Å) < 0.143 < 0.5: 0.5 is reached first
    for threshold, resolution in res.items():  # the crossing interpolates the curve
        assert (np.interp(1 / resolution, curve.frequency, curve.correlation)
                == pytest.approx(float(threshold), abs=0.02))
    write_fsc_csv({"ab": curve}, tmp_path / "fsc.csv")
    table = np.genfromtxt(tmp_path / "fsc.csv", delimiter=",", names=True)
    np.testing.assert_allclose(table["fsc_ab"], curve.correlation, atol=1e-6)
    np.testing.assert_allclose(table["resolution_A"], 1 / curve.frequency, rtol=1e-3)


def test_subvolume_corners_spread_and_fit():
    corners, edge = subvolume_corners((100, 300, 300), 128, 8)
    assert edge == 100 and len(corners) == 4  # one position along z, 2 x 2 in y, x
    assert all(c[0] == 0 and c[1] + edge <= 300 and c[2] + edge <= 300 for c in corners)
    corners, edge = subvolume_corners((400, 400, 400), 128, 8)
    assert edge == 128 and len(set(corners)) == 8


def test_snr_from_paired_boxes(tmp_path):
    rng = np.random.default_rng(4)
    vol = rng.standard_normal((30, 40, 40)).astype(np.float32)
    vol[5:15, 5:20, 5:20] += 2.0 * rng.standard_normal((10, 15, 15)).astype(np.float32)  # signal variance 4
    (tmp_path / "boxes.csv").write_text(
        "pair,kind,z0,y0,x0,z1,y1,x1\n"
        "p1,signal,5,5,5,15,20,20\np1,background,18,22,22,28,38,38\n"
        "p2,background,18,2,22,28,18,38\np2,signal,6,6,6,14,19,19\n"
    )
    pairs = read_boxes(tmp_path / "boxes.csv")
    assert [p.name for p in pairs] == ["p1", "p2"]
    result = estimate_snr(vol, pairs)
    assert result["n_pairs"] == 2 and result["snr"] == pytest.approx(4.0, rel=0.25)
    assert result["snr_db"] == pytest.approx(10 * np.log10(result["snr"]))
    with pytest.raises(TomocareError,
                       match=r"pair far signal: box z0:10 y0:10 x35:45 is outside the volume of shape \(30, 40, 40\)"):
        estimate_snr(vol, [BoxPair("far", (0, 0, 35, 10, 10, 45), (0, 0, 0, 5, 5, 5))])
    (tmp_path / "bad.csv").write_text("pair,kind,z0,y0,x0,z1,y1,x1\np1,signal,0,0,0,5,5,5\n")
    with pytest.raises(TomocareError, match="needs one signal and one background box"):
        read_boxes(tmp_path / "bad.csv")


def test_otsu_agrees_with_scikit_image():
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(0, 1, 5000), rng.normal(6, 1.5, 2000)])
    assert otsu_threshold(values) == pytest.approx(threshold_otsu(values), abs=(values.max() - values.min()) / 256)


@pytest.fixture(scope="module")
def simulated():
    import dask

    from tomocare.simulate import simulate_tomogram

    sim = simulate_tomogram((40, 80, 80), seed=1, snr=0.3, chunks=40)
    clean, even, odd = dask.compute(sim.clean, sim.even, sim.odd, scheduler="sync")
    p = sim.particles
    return {"clean": clean, "even": even, "odd": odd, "positions": np.stack([p["z"], p["y"], p["x"]], 1),
            "radii": p["radius"], "voxel_size": sim.voxel_size}


def test_detection_finds_the_particles_in_a_clean_volume_and_not_in_noise(simulated):
    pos, radii = simulated["positions"], simulated["radii"]
    assert len(pos) >= 5
    clean = detection_curve(simulated["clean"], pos, radii)
    assert clean["best"]["f1"] >= 0.8 and clean["polarity"] == "bright"
    assert len(clean["precision"]) == len(clean["recall"]) == len(clean["min_voxels"])
    noise = np.random.default_rng(6).standard_normal(simulated["clean"].shape).astype(np.float32)
    assert detection_curve(noise, pos, radii)["best"]["f1"] < 0.2
    assert detection_curve(simulated["clean"], pos, radii, polarity="dark")["best"]["f1"] < 0.3


def _write_dataset(tmp_path, simulated) -> dict:
    vs = (simulated["voxel_size"],) * 3
    paths = {k: write_test_mrc(tmp_path / f"t_{k}.mrc", simulated[k], voxel_size=vs) for k in ("clean", "even", "odd")}
    table = np.column_stack([simulated["positions"], simulated["radii"], np.zeros(len(simulated["radii"]))])
    paths["particles"] = tmp_path / "t_particles.csv"
    np.savetxt(paths["particles"], table, fmt="%.2f", delimiter=",", header="z,y,x,radius,kind", comments="")
    paths["boxes"] = tmp_path / "boxes.csv"
    paths["boxes"].write_text("pair,kind,z0,y0,x0,z1,y1,x1\na,signal,10,10,10,30,40,40\na,background,0,0,0,6,30,30\n")
    return paths


def test_cli_evaluate_writes_metrics_figures_and_csv(tmp_path, simulated, capsys):
    paths = _write_dataset(tmp_path, simulated)
    out = tmp_path / "eval"
    args = ["evaluate", str(paths["even"]), str(paths["odd"]), "--reference", str(paths["clean"]),
            "--boxes", str(paths["boxes"]), "--particles", str(paths["particles"]), "--out", str(out), "--cube", "32"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "FSC t_even.mrc vs t_odd.mrc (whole volume)" in printed and "PSNR" in printed and "best F1" in printed
    for name in ("metrics.json", "fsc.csv", "fsc.png", "pr.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fsc"]["method"] == "whole volume" and set(metrics["fsc"]["resolution_A"]) == {"0.5", "0.143"}
    whole = metrics["reference"]["A"]["whole"]
    assert whole["psnr_db"] == pytest.approx(psnr(simulated["even"], simulated["clean"]), rel=1e-6)
    assert set(metrics["reference"]["A"]["percentiles_over_subvolumes"]["ssim"]) == {"p5", "p50", "p95"}
    assert metrics["snr"]["A"]["n_pairs"] == 1 and "best" in metrics["detection"]["B"]

    # a small memory limit switches the FSC to sub-volumes, and says so
    assert main(["evaluate", str(paths["even"]), str(paths["odd"]), "--out", str(out), "--memory-limit", "0.001"]) == 0
    assert "sub-volumes" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["fsc"]["n_subvolumes"] > 1


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.filterwarnings("ignore:Data array contains NaN values")
def test_cli_evaluate_bad_input_one_line_exit_2(tmp_path, capsys):
    a = write_test_mrc(tmp_path / "a.mrc", np.zeros((16, 20, 20), np.float32))
    b = write_test_mrc(tmp_path / "b.mrc", np.zeros((16, 20, 24), np.float32))
    c = write_test_mrc(tmp_path / "c.mrc", np.ones((16, 20, 20), np.float32), voxel_size=(5.0, 5.0, 5.0))
    nan = np.ones((16, 20, 20), np.float32)
    nan[0, 0, 0] = np.nan
    n = write_test_mrc(tmp_path / "n.mrc", nan)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("pair,kind,z0,y0,x0,z1,y1,x1\nq,signal,0,0,0,8,8,8\nq,background,10,10,10,20,30,20\n")
    cases = [
        ([str(a), str(b)], "b.mrc: shape (16, 20, 24) differs from a.mrc's (16, 20, 20)"),
        ([str(a), str(c)], "c.mrc: voxel size 5 x 5 x 5 Å differs from a.mrc's 3.3 x 3.2 x 3.1 Å"),
        ([str(a), "--reference", str(n)], "n.mrc: NaN or infinite values in the reference"),
        ([str(a), "--boxes", str(boxes)],
         "pair q background: box z10:20 y10:30 x10:20 is outside the volume of shape (16, 20, 20)"),
        ([str(a)], "nothing to measure"),
        ([str(tmp_path / "missing.mrc")], "missing.mrc: no such file"),
        ([str(a), str(a), "--polarity", "grey"], "polarity must be one of bright, dark"),
    ]
    for args, expected in cases:
        assert main(["evaluate", *args, "--out", str(tmp_path / "o")]) == 2
        assert expected in _error_line(capsys)
