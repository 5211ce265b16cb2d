"""Block plan arithmetic and seamless tiling (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tomocare import TomocareError
from tomocare.nn.unet import UNet
from tomocare.predict.plan import BlockPlan
from tomocare.predict.tiles import compute_block, piece_shape, predict_whole

torch.manual_seed(0)
NETS = {depth: UNet(ndim=3, depth=depth, base_channels=4).eval() for depth in (1, 2)}


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 40)] * 3),
    block=st.tuples(*[st.integers(2, 6)] * 3),
    halo=st.integers(0, 4),
    factor=st.sampled_from([1, 2, 4, 8]),
)
def test_blocks_cover_volume_exactly_once(shape, block, halo, factor):
    plan = BlockPlan(shape, tuple(b * factor for b in block), (halo * factor,) * 3, factor)
    covered = np.zeros(shape, np.int32)
    for blk in plan.blocks():
        covered[blk.core] += 1
        tile = plan.tile_shape(tuple(s.stop - s.start for s in blk.core))
        assert all(t % factor == 0 for t in tile)  # every tile is on the pooling grid
        for s, r, p, t in zip(blk.core, blk.read, blk.pad, tile):
            assert s.start % factor == 0
            assert (r.stop - r.start) + p[0] + p[1] == t
            assert 0 <= r.start <= s.start and s.stop <= r.stop
    assert (covered == 1).all()
    assert plan.computed_ratio() >= 1


@settings(max_examples=8, deadline=None)
@given(
    shape=st.tuples(st.integers(8, 32), st.integers(8, 32), st.integers(8, 32)),
    block_mult=st.tuples(*[st.integers(1, 4)] * 3),
    depth=st.sampled_from([1, 2]),
)
def test_tiled_equals_whole_volume(shape, block_mult, depth):
    net = NETS[depth]
    factor, halo = net.downsampling_factor, net.halo
    volume = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    whole = predict_whole(net, volume, halo=halo, factor=factor, mean=0.1, std=2.0)
    plan = BlockPlan(shape, tuple(m * factor * 2 for m in block_mult), (halo,) * 3, factor)
    tiled = np.zeros(shape, np.float32)
    for blk in plan.blocks():
        tiled[blk.core] = compute_block(net, (volume,), blk, mean=0.1, std=2.0)
    assert np.abs(tiled - whole).max() <= 1e-5


@settings(max_examples=4, deadline=None)
@given(
    shape=st.tuples(st.integers(8, 32), st.integers(8, 32), st.integers(8, 32)),
    block_mult=st.tuples(*[st.integers(1, 4)] * 3),
    orientations=st.sampled_from([1, 2]),
)
def test_tiled_equals_whole_volume_for_flipped_halves(shape, block_mult, orientations):
    """The halves seen in other orientations (flipped, computed, flipped back) stay seamless."""
    net = NETS[2]
    rng = np.random.default_rng(sum(shape))
    halves = tuple(rng.normal(size=shape).astype(np.float32) for _ in range(2))
    kw = dict(mean=0.1, std=2.0, orientations=orientations)
    whole = predict_whole(net, halves, halo=net.halo, factor=net.downsampling_factor, **kw)
    plan = BlockPlan(shape, tuple(m * net.downsampling_factor * 2 for m in block_mult), (net.halo,) * 3,
                     net.downsampling_factor)
    tiled = np.zeros(shape, np.float32)
    for blk in plan.blocks():
        tiled[blk.core] = compute_block(net, halves, blk, **kw)
    assert np.abs(tiled - whole).max() <= 1e-5


def test_the_odd_half_is_seen_flipped():
    """By default the odd half is computed flipped in y and x (and flipped back); a second
    orientation per half adds the y and the x flip."""
    net = NETS[2]
    rng = np.random.default_rng(5)
    even, odd = (rng.normal(size=(20, 24, 28)).astype(np.float32) for _ in range(2))
    kw = dict(halo=net.halo, factor=net.downsampling_factor)

    def seen(volume, axes):
        return np.flip(predict_whole(net, np.ascontiguousarray(np.flip(volume, axes)), **kw), axes)

    both = predict_whole(net, (even, odd), **kw)
    assert np.abs(both - (seen(even, ()) + seen(odd, (1, 2))) / 2).max() <= 1e-5
    assert np.abs(both - (seen(even, ()) + seen(odd, ())) / 2).max() > 1e-3  # a random net is not flip-equivariant
    four = predict_whole(net, (even, odd), **kw, orientations=2)
    expected = (seen(even, ()) + seen(odd, (1, 2)) + seen(even, (1,)) + seen(odd, (2,))) / 4
    assert np.abs(four - expected).max() <= 1e-5
    with pytest.raises(ValueError, match="at most 8"):
        predict_whole(net, (even, odd), **kw, orientations=5)


def test_invalid_block_names_nearest_sizes():
    with pytest.raises(TomocareError, match="nearest valid sizes: 96 or 100"):
        BlockPlan((200, 200, 200), (98, 96, 96), (8, 8, 8), 4)


def test_default_ratio_reported():
    plan = BlockPlan((256, 1024, 1024), (128, 128, 128), (24, 24, 24), 4)
    assert plan.describe()["computed_to_output_ratio"] == pytest.approx((176 / 128) ** 3, rel=1e-3)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.integers(2000, 300_000))
def test_pieces_fit_the_memory_bound_and_sit_on_the_grid(scale, max_voxels):
    halo, factor = 8, 4
    tile = tuple(2 * halo + factor * scale * k for k in (3, 4, 5))
    piece = piece_shape(tile, halo, factor, max_voxels)
    if piece is None:
        assert np.prod(tile) <= max_voxels
    else:
        assert all(p % factor == 0 for p in piece)
        assert np.prod([p + 2 * halo for p in piece]) <= max_voxels or piece == (factor,) * 3


def test_a_tile_computed_in_pieces_equals_the_whole_tile():
    torch.manual_seed(3)
    net = UNet(depth=2, base_channels=4, residual=False)
    volume = np.random.default_rng(2).normal(size=(36, 52, 44)).astype(np.float32)
    kw = dict(halo=net.halo, factor=net.downsampling_factor, mean=0.1, std=2.0, precision="fp32")
    whole = predict_whole(net, volume, **kw)
    pieces = predict_whole(net, volume, **kw, max_voxels=(16 + 2 * net.halo) ** 3)
    assert piece_shape([s + 2 * net.halo for s in (36, 52, 44)], net.halo, net.downsampling_factor,
                       (16 + 2 * net.halo) ** 3) is not None
    assert np.abs(pieces - whole).max() <= 1e-5
