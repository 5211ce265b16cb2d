"""Classical filters: block-wise with halos equals the whole-volume result; parameters are validated."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from helpers import write_test_mrc
from scipy import ndimage

from tomocare import TomocareError
from tomocare.baselines import FILTERS, NAD, Filter, Gaussian, Lowpass, Median, make_filter
from tomocare.baselines.filters import butterworth_kernel
from tomocare.io.volume import compute_stats, open_volume
from tomocare.predict.plan import BlockPlan, reflect_pad

SHAPE = (24, 40, 36)
BLOCK = (10, 16, 14)  # divides none of the axes


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.0) * 3
            + rng.standard_normal(SHAPE)).astype(np.float32)


def blockwise(f: Filter, volume: np.ndarray, block=BLOCK) -> np.ndarray:
    """What the block engine does: block + halo read, reflect padding at the borders, core kept."""
    plan = BlockPlan(volume.shape, block, (f.halo,) * 3, factor=1)
    out = np.full(volume.shape, np.nan, np.float32)
    for blk in plan.blocks():
        result = f(reflect_pad(volume[blk.read], blk.pad))
        core = tuple(slice(o, o + c.stop - c.start) for o, c in zip(blk.offset, blk.core))
        out[blk.core] = result[core]
    return out


@pytest.mark.parametrize(
    ("method", "params", "scipy_reference"),
    [
        ("gaussian", {"sigma": 1.5}, lambda v: ndimage.gaussian_filter(v, 1.5, mode="mirror", truncate=4)),
        ("gaussian", {"sigma": 0.8}, lambda v: ndimage.gaussian_filter(v, 0.8, mode="mirror", truncate=4)),
        ("median", {"size": 3}, lambda v: ndimage.median_filter(v, 3, mode="mirror")),
        ("median", {"size": 5}, lambda v: ndimage.median_filter(v, 5, mode="mirror")),
    ],
)
def test_blockwise_gaussian_and_median_equal_scipy_on_the_whole_volume(volume, method, params, scipy_reference):
    f = make_filter(method, **params)
    expected = scipy_reference(volume)
    got = blockwise(f, volume)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * float(np.abs(expected).max()))
    np.testing.assert_allclose(f.reference(volume), expected, rtol=0, atol=1e-6 * float(np.abs(expected).max()))


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("lowpass", {"cutoff": 0.3, "order": 4}),
        ("lowpass", {"cutoff": 0.5, "order": 2}),
        ("nad", {"iterations": 2, "sigma": 0.7, "rho": 0.7, "contrast": 0.5}),
    ],
)
def test_blockwise_lowpass_and_nad_equal_their_whole_volume_reference(volume, method, params):
    f = make_filter(method, **params)
    assert f.halo < min(SHAPE)  # reflecting the halo needs no more than the volume
    expected = f.reference(volume)
    got = blockwise(f, volume)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def test_lowpass_kernel_is_a_butterworth_with_unit_gain():
    kernel = butterworth_kernel(0.3, 4)
    assert kernel.shape[0] % 2 == 1 and kernel.shape[0] == kernel.shape[2]
    assert abs(float(kernel.sum()) - 1) < 1e-5
    n = 80  # fc and 2 fc fall on frequency samples
    spectrum = np.abs(np.fft.fftn(kernel, s=(n, n, n), axes=(0, 1, 2)))
    fc = 0.5 * 0.3
    for f, expected in ((0.0, 1.0), (fc, 0.5), (2 * fc, 1 / (1 + 2**8))):
        measured = spectrum[0, 0, int(round(f * n))]
        assert abs(measured - expected) < 0.03, (f, measured, expected)


def test_filters_reduce_noise_and_keep_float32():
    rng = np.random.default_rng(1)
    clean = ndimage.gaussian_filter(rng.standard_normal((32, 32, 32)), 3).astype(np.float32)
    clean /= clean.std()
    noisy = (clean + rng.standard_normal(clean.shape)).astype(np.float32)
    err_raw = float(np.mean((noisy - clean) ** 2))
    for method, params in (("gaussian", {}), ("median", {}), ("lowpass", {}),
                           ("nad", {"iterations": 4, "sigma": 0.7, "rho": 0.7, "contrast": 1.0})):
        f = make_filter(method, **params)
        out = f.reference(noisy)
        assert out.dtype == np.float32 and out.shape == noisy.shape
        assert float(np.mean((out - clean) ** 2)) < 0.6 * err_raw, method


def test_defaults_and_halos():
    assert make_filter("gaussian").params == {"sigma": 1.5} and make_filter("gaussian").halo == 6
    assert make_filter("median").halo == 1
    nad = make_filter("nad")
    assert nad.params["iterations"] == 10 and nad.halo == 10 * 6
    assert make_filter("lowpass").describe()["halo"] == butterworth_kernel(0.3, 4).shape[0] // 2
    assert nad.params["scale"] is None  # the input's standard deviation, filled in by bind()


def test_one_class_per_filter_built_by_name_or_directly():
    assert FILTERS == {"median": Median, "gaussian": Gaussian, "lowpass": Lowpass, "nad": NAD}
    assert make_filter("median", size="5") == Median(5) and make_filter("gaussian", sigma=2) == Gaussian(2.0)
    assert make_filter("lowpass", cutoff=0.4, order=2) == Lowpass(0.4, 2)
    assert make_filter("median").describe() == {"method": "median", "params": {"size": 3}, "halo": 1}
    assert make_filter("nad", scale=2.0) != make_filter("nad")  # the identity is the parameters
    with pytest.raises(TomocareError, match="size must be an odd integer"):
        Median(4)  # validated on construction, not only by make_filter
    with pytest.raises(TomocareError, match="iterations must be an integer"):
        make_filter("nad", iterations=2.5)
    with pytest.raises(FrozenInstanceError):
        Median(3).size = 5  # frozen: its identity cannot change under a run


def test_nad_scale_defaults_to_the_input_std(tmp_path, volume):
    path = write_test_mrc(tmp_path / "v.mrc", volume, voxel_size=(10.0,) * 3)
    bound = make_filter("nad", iterations=1).bind([open_volume(path)])
    assert bound.scale == pytest.approx(compute_stats(open_volume(path)).std) and bound.scale != 1.0
    assert make_filter("nad", scale=2.0).bind([open_volume(path)]).scale == 2.0  # a given scale is kept
    np.testing.assert_array_equal(make_filter("nad", iterations=1)(volume),
                                  make_filter("nad", iterations=1, scale=1)(volume))


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("wiener", {}, "wiener: unknown filter"),
        ("median", {"size": 4}, "size must be an odd integer"),
        ("gaussian", {"sigma": -1}, "sigma must be in"),
        ("gaussian", {"radius": 3}, "unknown parameter 'radius'"),
        ("lowpass", {"cutoff": 1.5}, "cutoff must be"),
        ("lowpass", {"order": 0}, "order must be"),
        ("nad", {"time_step": 0.5}, "time_step must be"),
        ("nad", {"contrast": "high"}, "parameters must be numbers"),
    ],
)
def test_bad_parameters_raise_one_line_errors(method, params, message):
    with pytest.raises(TomocareError, match=message) as err:
        make_filter(method, **params)
    assert "\n" not in str(err.value)
