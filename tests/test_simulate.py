"""Synthetic tomograms: determinism, noise model, SNR, missing wedge, laziness, files, errors."""

from __future__ import annotations

import dask
import dask.array as da
import mrcfile
import numpy as np
import pytest

from tomocare import TomocareError
from tomocare.simulate import SimulatedTomogram, simulate_dataset, simulate_tomogram
from tomocare.simulate.noise import white_noise
from tomocare.simulate.objects import PARTICLE_KINDS, make_phantom

SHAPE = (48, 64, 64)
TILT = 60.0


def _compute(sim: SimulatedTomogram, scheduler: str = "sync") -> dict[str, np.ndarray]:
    clean, even, odd, phantom = dask.compute(sim.clean, sim.even, sim.odd, sim.phantom, scheduler=scheduler)
    return {"clean": clean, "even": even, "odd": odd, "phantom": phantom}


@pytest.fixture(scope="module")
def small():
    sim = simulate_tomogram((64, 96, 96), seed=1, snr=0.5, chunks=48)
    return sim, _compute(sim)


def _spectrum(v: np.ndarray) -> np.ndarray:
    """Power spectrum after a Hann taper (so the box edges do not streak along the axes)."""
    taper = np.ones(v.shape)
    for axis, n in enumerate(v.shape):
        taper = taper * np.hanning(n).reshape([n if a == axis else 1 for a in range(3)])
    return np.abs(np.fft.fftn((v - v.mean()) * taper)) ** 2


def _frequencies(shape):
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    angle = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))  # of (kx, kz) from the kx axis
    return np.sqrt(kz**2 + ky**2 + kx**2), angle


def test_arrays_are_lazy_float32_with_the_requested_chunks():
    sim = simulate_tomogram(SHAPE, seed=0, chunks=32)
    for name in ("clean", "even", "odd", "phantom"):
        arr = getattr(sim, name)
        assert isinstance(arr, da.Array)
        assert arr.shape == SHAPE and arr.dtype == np.float32
        assert arr.chunks == ((32, 16), (32, 32), (32, 32))
    assert sim.voxel_size == 10.0 and sim.snr == 0.1 and sim.noise_std > 0


def test_same_seed_same_bytes_other_seed_other_volume():
    a, b = (_compute(simulate_tomogram(SHAPE, seed=3, chunks=32)) for _ in range(2))
    c = _compute(simulate_tomogram(SHAPE, seed=4, chunks=32))
    for name in ("clean", "even", "odd"):
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.allclose(a[name], c[name])
    np.testing.assert_array_equal(simulate_tomogram(SHAPE, seed=3).particles,
                                  simulate_tomogram(SHAPE, seed=3).particles)


def test_distributed_workers_give_the_same_bytes(client):
    sim = simulate_tomogram(SHAPE, seed=5, chunks=32)
    local = _compute(sim)
    remote = dict(zip(("clean", "even", "odd"), client.compute([sim.clean, sim.even, sim.odd], sync=True)))
    for name, value in remote.items():
        np.testing.assert_array_equal(value, local[name])


def test_chunking_changes_nothing_but_rounding():
    """The filters are compact kernels, so blocks are exact: no seams, no dependence on chunks."""
    a = _compute(simulate_tomogram(SHAPE, seed=2, chunks=SHAPE))
    b = _compute(simulate_tomogram(SHAPE, seed=2, chunks=(16, 24, 40)))
    for name in ("clean", "even", "odd"):
        np.testing.assert_allclose(a[name], b[name], atol=1e-4 * a[name].std())


def test_white_noise_is_one_lattice_whatever_the_box():
    big = white_noise(7, 0, (-40, -8, 0), (96, 80, 70))
    part = white_noise(7, 0, (-3, 20, 33), (17, 40, 21))
    np.testing.assert_array_equal(part, big[37:54, 28:68, 33:54])
    assert not np.array_equal(white_noise(7, 1, (0, 0, 0), (8, 8, 8)), white_noise(7, 0, (0, 0, 0), (8, 8, 8)))


def test_halves_carry_independent_noise(small):
    _, v = small
    noise_even, noise_odd = v["even"] - v["clean"], v["odd"] - v["clean"]
    assert noise_even.std() > 0.1 * v["clean"].std()
    assert abs(np.corrcoef(noise_even.ravel(), noise_odd.ravel())[0, 1]) < 0.02
    assert abs(noise_even.mean()) < 0.05 * noise_even.std()


def test_realised_snr_is_near_the_requested_one(small):
    sim, v = small
    for half in ("even", "odd"):
        realised = v["clean"].var() / (v[half] - v["clean"]).var()
        assert realised == pytest.approx(sim.snr, rel=0.3)
    assert (v["even"] - v["clean"]).std() == pytest.approx(sim.noise_std, rel=0.05)


def test_snr_scales_only_the_noise():
    lo, hi = (simulate_tomogram(SHAPE, seed=1, snr=snr, chunks=32) for snr in (0.1, 1.0))
    assert lo.noise_std == pytest.approx(hi.noise_std * np.sqrt(10.0))
    np.testing.assert_array_equal(lo.clean.compute(), hi.clean.compute())


def test_missing_wedge_is_missing_in_clean_but_not_in_the_phantom(small):
    _, v = small
    k, angle = _frequencies(v["clean"].shape)
    band = (k > 0.08) & (k < 0.45)
    wedge, measured = band & (angle > TILT + 15), band & (angle < TILT - 15)
    for name, most in (("clean", 0.03), ("even", 0.03)):
        power = _spectrum(v[name])
        assert power[wedge].mean() < most * power[measured].mean(), name
    power = _spectrum(v["phantom"])
    assert power[wedge].mean() > 0.2 * power[measured].mean()


def test_noise_power_rises_with_frequency(small):
    _, v = small
    power = _spectrum(v["even"] - v["clean"])
    k, angle = _frequencies(power.shape)
    measured = angle < TILT - 10
    shells = [power[measured & (k >= lo) & (k < lo + 0.1)].mean() for lo in (0.05, 0.15, 0.25, 0.35)]
    assert all(a < b for a, b in zip(shells, shells[1:]))
    assert shells[-1] > 3 * shells[0]  # power ∝ |k|: about 4x from 0.1 to 0.4


def test_tilt_range_90_has_no_wedge():
    v = _compute(simulate_tomogram(SHAPE, seed=1, tilt_range=90.0, chunks=32))
    k, angle = _frequencies(SHAPE)
    band = (k > 0.08) & (k < 0.45)
    power = _spectrum(v["clean"])
    assert power[band & (angle > 75)].mean() > 0.2 * power[band & (angle < 45)].mean()


def test_particles_lie_inside_the_volume():
    sim = simulate_tomogram((96, 192, 192), seed=0)
    p = sim.particles
    assert set(p.dtype.names) >= {"z", "y", "x", "radius", "kind"}
    assert len(p) > 20
    for axis, n in zip("zyx", sim.clean.shape):
        assert np.all((p[axis] >= 0) & (p[axis] <= n - 1))
    assert np.all((p["radius"] >= 2.5) & (p["radius"] <= 9))  # 30-80 Å at 10 Å per voxel
    assert set(np.unique(p["kind"])) == set(range(len(PARTICLE_KINDS)))


def test_phantom_has_every_kind_of_object():
    phantom = make_phantom((96, 192, 192), 10.0, seed=0)
    assert len(phantom.vesicles) >= 1 and len(phantom.segments) >= 10 and len(phantom.particles) > 20
    radius = phantom.vesicles["radius"]
    assert np.all((radius >= 5) & (radius <= 60))


def test_huge_volume_is_lazy_and_one_block_computes():
    sim = simulate_tomogram((1024, 4096, 4096), seed=0, snr=0.1)
    assert sim.even.shape == (1024, 4096, 4096) and sim.even.numblocks == (8, 32, 32)
    block = sim.even.blocks[3, 10, 20].compute(scheduler="sync")
    assert block.shape == (128, 128, 128) and block.dtype == np.float32
    assert np.isfinite(block).all() and block.std() > 0
    assert len(sim.particles) > 100_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (15, 64, 64)},
        {"shape": (64, 64)},
        {"shape": (32.0, 64, 64)},
        {"shape": "big"},
        {"snr": 0},
        {"snr": -1.0},
        {"snr": float("nan")},
        {"tilt_range": 0},
        {"tilt_range": 91},
        {"chunks": 8},
        {"chunks": (32, 32)},
        {"seed": -1},
        {"seed": 1.5},
        {"voxel_size": 0},
    ],
)
def test_bad_arguments_raise_a_one_line_error(kwargs):
    args = {"shape": SHAPE, **kwargs}
    with pytest.raises(TomocareError) as err:
        simulate_tomogram(args.pop("shape"), **args)
    assert "\n" not in str(err.value) and "simulate" in str(err.value)


def test_dataset_writes_mrc_and_csv_and_refuses_to_overwrite(tmp_path):
    shape = (32, 48, 48)
    rows = simulate_dataset(tmp_path / "data", n_tomograms=2, shape=shape, seed=9, snr=1.0, chunks=32)
    assert [r["name"] for r in rows] == ["tomo_000", "tomo_001"]
    first = simulate_tomogram(shape, seed=rows[0]["seed"], snr=1.0, chunks=32)
    for kind in ("even", "odd", "clean"):
        with mrcfile.open(rows[0][kind]) as mrc:
            assert mrc.data.shape == shape and mrc.data.dtype == np.float32
            assert float(mrc.voxel_size.x) == pytest.approx(10.0)
            np.testing.assert_array_equal(mrc.data, getattr(first, kind).compute())
    with mrcfile.open(rows[1]["even"]) as a, mrcfile.open(rows[0]["even"]) as b:
        assert not np.allclose(a.data, b.data)
    table = np.loadtxt(rows[0]["particles"], delimiter=",", skiprows=1, ndmin=2)
    assert open(rows[0]["particles"]).readline().strip() == "z,y,x,radius,kind"
    assert len(table) == len(first.particles)
    np.testing.assert_allclose(table[:, 0], first.particles["z"], atol=0.01)

    with pytest.raises(TomocareError, match="tomo_000_even.mrc"):
        simulate_dataset(tmp_path / "data", n_tomograms=1, shape=shape, seed=9)
    again = simulate_dataset(tmp_path / "data", n_tomograms=1, shape=shape, seed=1, overwrite=True)
    assert again[0]["seed"] != rows[0]["seed"]
    with pytest.raises(TomocareError):
        simulate_dataset(tmp_path / "other", n_tomograms=0, shape=shape)
