"""Every block operator keeps the contract of ``tomocare.testing.OperatorTests``: the trained network
(3-D, and 2-D on a stack of images) and each classical filter."""

from __future__ import annotations

import numpy as np
import pytest

from tomocare.baselines import NAD, Gaussian, Lowpass, Median
from tomocare.model import Model
from tomocare.predict.network import NetworkOperator
from tomocare.testing import OperatorTests, RecordingOperator, blockwise, tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return Model.read(tiny_model(tmp_path_factory.mktemp("op") / "model"))


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory):
    return Model.read(tiny_model(tmp_path_factory.mktemp("op") / "model", ndim=2, depth=2))


class TestMedian(OperatorTests):
    @pytest.fixture
    def operator(self):
        return Median(size=3)


class TestGaussian(OperatorTests):
    @pytest.fixture
    def operator(self):
        return Gaussian(sigma=1.2)


class TestLowpass(OperatorTests):
    @pytest.fixture
    def operator(self):
        return Lowpass(cutoff=0.5, order=2)


class TestNAD(OperatorTests):
    shape = (24, 26, 22)
    blocks = (12,)
    atol = 1e-4  # many explicit float32 iterations

    @pytest.fixture
    def operator(self):
        return NAD(iterations=2, scale=1.0)


class TestNetwork(OperatorTests):
    @pytest.fixture(params=[1, 2], ids=["one orientation", "two orientations"])
    def operator(self, model, request):
        return NetworkOperator(model, "fp32", request.param)


class TestNetworkOnPieces(OperatorTests):
    """A tile larger than the memory bound is computed in pieces: the same output."""

    blocks = (16,)

    @pytest.fixture
    def operator(self, model):
        return NetworkOperator(model, "fp32", max_voxels=32**3)


class TestNetwork2D(OperatorTests):
    shape = (3, 38, 30)

    @pytest.fixture
    def operator(self, model_2d):
        return NetworkOperator(model_2d, "fp32")


def test_recording_operator_computes_the_same_and_counts_blocks(tmp_path):
    inner = Gaussian(sigma=1.0)
    recording = RecordingOperator(inner, str(tmp_path / "log"))
    sources = (np.random.default_rng(0).normal(size=(16, 20, 24)).astype(np.float32),)
    assert recording.identity() == inner.identity()
    np.testing.assert_array_equal(blockwise(recording, sources, 8), blockwise(inner, sources, 8))
    assert recording.calls() == 2 * 3 * 3


def test_filters_refuse_bad_parameters_on_construction():
    from tomocare.errors import TomocareError

    for build in (lambda: Median(size=4), lambda: Gaussian(sigma=0), lambda: Lowpass(cutoff=1.5),
                  lambda: NAD(time_step=0.5)):
        with pytest.raises(TomocareError):
            build()
