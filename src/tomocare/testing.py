"""Test support shipped with the package (as ``zarr.testing``): builders, a conformance suite for
block operators, and an operator that records what the engine computes.

Needs pytest (the ``test`` extra). A new operator is tested by subclassing :class:`OperatorTests`::

    class TestMyFilter(OperatorTests):
        @pytest.fixture
        def operator(self):
            return MyFilter(strength=2)
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tomocare.predict.operator import BlockOperator, TileFunction, opened
from tomocare.predict.plan import BlockPlan, network_geometry, read_tiles, round_up


def write_mrc(path: str | os.PathLike, data: np.ndarray, *, voxel_size: Sequence[float] = (10.0, 10.0, 10.0),
              origin: Sequence[float] = (0.0, 0.0, 0.0), extended_header: bytes = b"", exttyp: bytes = b"") -> Path:
    """An MRC file written with mrcfile itself; voxel size and origin given as (z, y, x)."""
    path = Path(path)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = tuple(reversed(tuple(voxel_size)))
        mrc.header.origin = tuple(reversed(tuple(origin)))
        if extended_header:
            mrc.set_extended_header(np.frombuffer(extended_header, dtype="V1"))
            mrc.header.exttyp = exttyp
    return path


def tiny_model(directory: str | os.PathLike, *, depth: int = 1, base_channels: int = 2, seed: int = 0,
               voxel_size: float | None = 10.0, ndim: int = 3) -> Path:
    """A small untrained network saved as a model directory (random weights, seeded): what tests predict with."""
    import torch

    from tomocare.model import save_model
    from tomocare.nn import UNet

    torch.manual_seed(seed)
    net = UNet(ndim=ndim, depth=depth, base_channels=base_channels)
    save_model(directory, net, mean=0.0, std=1.0, voxel_size=voxel_size, patch_size=8 * net.downsampling_factor,
               trained_on=["testing"])
    return Path(directory)


def blockwise(operator: BlockOperator, sources: Sequence[np.ndarray], block: int) -> np.ndarray:
    """``operator`` over in-memory ``sources`` block by block, as the engine runs it (without the cluster)."""
    shape = sources[0].shape
    halo, factor = network_geometry(len(shape), operator.ndim, operator.halo, operator.factor)
    plan = BlockPlan(shape, tuple(min(round_up(block, f), round_up(s, f)) for s, f in zip(shape, factor)), halo, factor)
    out = np.empty(shape, np.float32)
    function = opened(operator)
    for b in plan.blocks():
        out[b.core] = b.crop(function(read_tiles(sources, b)))
    return out


@dataclass(frozen=True)
class RecordingOperator(BlockOperator):
    """Another operator, computing the same (same identity, so runs resume across the two), that appends
    a line to ``log`` for every block it computes: the engine's injection point for tests of what runs."""

    inner: BlockOperator
    log: str

    halo = property(lambda self: self.inner.halo)
    factor = property(lambda self: self.inner.factor)
    ndim = property(lambda self: self.inner.ndim)

    def identity(self) -> dict:
        return self.inner.identity()

    def bytes_per_voxel(self, device: str) -> int:
        return self.inner.bytes_per_voxel(device)

    def describe(self) -> dict:
        return self.inner.describe()

    @contextlib.contextmanager
    def open(self) -> Iterator[TileFunction]:
        with self.inner.open() as function:
            def recorded(tiles: np.ndarray) -> np.ndarray:
                with open(self.log, "a") as f:
                    f.write(f"{os.getpid()}\n")
                return function(tiles)

            yield recorded

    def key(self) -> str:  # opened apart from the inner operator, although the identity is the same
        return "recording " + self.inner.key()

    def calls(self) -> int:
        """Blocks computed so far, by every process."""
        return len(Path(self.log).read_text().splitlines()) if Path(self.log).exists() else 0


class OperatorTests:
    """The contract every :class:`BlockOperator` keeps; subclass and provide an ``operator`` fixture.
    ``sources`` may be overridden (e.g. one source for single-volume operators)."""

    shape: tuple[int, ...] = (20, 34, 27)
    blocks: tuple[int, ...] = (8, 16)
    atol: float = 1e-5  # relative to the output's largest magnitude

    @pytest.fixture
    def operator(self) -> BlockOperator:
        raise NotImplementedError("define an 'operator' fixture")

    @pytest.fixture
    def sources(self, operator: BlockOperator) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(0)
        signal = rng.normal(size=self.shape).astype(np.float32)
        return tuple(signal + rng.normal(scale=0.5, size=self.shape).astype(np.float32) for _ in range(2))

    def test_geometry(self, operator: BlockOperator) -> None:
        assert isinstance(operator.halo, int) and operator.halo >= 0
        assert isinstance(operator.factor, int) and operator.factor >= 1
        assert operator.ndim in (2, 3)
        assert operator.bytes_per_voxel("cpu") > 0

    def test_identity_is_json_and_survives_pickling(self, operator: BlockOperator) -> None:
        identity = operator.identity()
        assert json.loads(json.dumps(identity)) == identity
        copy = pickle.loads(pickle.dumps(operator))
        assert copy == operator and copy.key() == operator.key()
        json.dumps(operator.describe())

    def test_is_frozen(self, operator: BlockOperator) -> None:
        name = next(iter(vars(operator)), None) if hasattr(operator, "__dict__") else None
        if name is None:
            pytest.skip("no instance fields")
        with pytest.raises(FrozenInstanceError):
            setattr(operator, name, None)

    def test_opened_once_and_maps_tiles_to_a_tile(self, operator: BlockOperator, sources) -> None:
        function = opened(operator)
        assert opened(operator) is function  # once per process, then reused
        halo, factor = network_geometry(len(self.shape), operator.ndim, operator.halo, operator.factor)
        plan = BlockPlan(self.shape, tuple(round_up(8, f) for f in factor), halo, factor)
        tiles = read_tiles(sources, plan.block_at((0,) * len(self.shape)))
        out = function(tiles)
        assert out.shape == tiles.shape[1:] and out.dtype == np.float32

    def test_blockwise_equals_whole(self, operator: BlockOperator, sources) -> None:
        whole = blockwise(operator, sources, max(self.shape))
        assert np.isfinite(whole).all()
        tolerance = self.atol * max(float(np.abs(whole).max()), 1.0)
        for block in self.blocks:
            np.testing.assert_allclose(blockwise(operator, sources, block), whole, rtol=0, atol=tolerance)
