"""The U-Net: shapes, exact receptive field, and tiled prediction equal to whole-volume prediction."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tomocare.nn import UNet, UNetConfig


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("residual", [True, False])
def test_shapes_3d(residual):
    net = UNet(depth=2, base_channels=4, residual=residual)
    x = torch.randn(2, 1, 16, 24, 32)
    assert net(x).shape == x.shape
    assert net.downsampling_factor == 4


def test_2d():
    net = UNet(ndim=2, depth=3, base_channels=4, upsample="linear")
    x = torch.randn(3, 1, 32, 48)
    assert net(x).shape == x.shape
    assert net.downsampling_factor == 8


def test_rejects_unaligned_input():
    with pytest.raises(ValueError, match="multiples of 4"):
        UNet(depth=2, base_channels=2)(torch.zeros(1, 1, 16, 16, 18))


def test_config_round_trip():
    net = UNet(depth=3, base_channels=8, residual=False, upsample="linear")
    assert isinstance(net.config, UNetConfig)
    config = json.loads(json.dumps(net.config.model_dump()))
    twin = UNet(**config)
    assert twin.config == net.config
    twin.load_state_dict(net.state_dict())  # same parameter names and shapes
    again = UNet(UNetConfig.model_validate(config))  # the typed config, as model.json is read
    assert again.config == net.config
    again.load_state_dict(net.state_dict())
    assert UNet(net.config).config is net.config


def test_autoencoder_has_no_skip_connections_and_old_files_are_unets():
    """skips=False: the decoder sees only the upsampled coarser level; a model.json without the field is a U-Net."""
    ae = UNet(depth=2, base_channels=4, skips=False)
    unet = UNet(depth=2, base_channels=4)
    assert [m[0].in_channels for m in ae.merge] == [4, 8] and [m[0].in_channels for m in unet.merge] == [8, 16]
    old = {k: v for k, v in unet.config.model_dump().items() if k != "skips"}
    assert UNetConfig.model_validate(old).skips is True
    assert ae(torch.randn(1, 1, 8, 8, 8)).shape == (1, 1, 8, 8, 8)
    assert ae.receptive_field > 0 and ae.halo % ae.downsampling_factor == 0


def test_default_is_not_residual_as_training():
    from tomocare.train import TrainConfig

    assert UNet().config.residual is False and UNetConfig().residual is False
    assert UNet().config == TrainConfig().network()  # the defaults of the network and of training agree


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ndim": 4}, "ndim"),
        ({"depth": 0}, "depth"),
        ({"kernel_size": 4}, "kernel_size must be odd"),
        ({"upsample": "cubic"}, "upsample"),
        ({"residual": True, "out_channels": 2}, "as many input as output channels"),
        ({"layers": 3}, "layers"),
    ],
)
def test_bad_architectures_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        UNet(**fields)
    with pytest.raises(TypeError):
        UNet(UNetConfig(), depth=3)  # a config or its fields, not both


def test_halo_arithmetic():
    for depth, up in itertools.product((1, 2, 3), ("nearest", "linear")):
        net = UNet(depth=depth, base_channels=2, upsample=up)
        assert net.halo % net.downsampling_factor == 0
        assert net.receptive_field // 2 <= net.halo < net.receptive_field // 2 + net.downsampling_factor
    assert UNet(depth=2).receptive_field == 53  # 2 convs of 3 at 1×, 2×, 4×, plus the up-convs


@pytest.mark.parametrize(
    ("ndim", "depth", "upsample", "channels", "skips"),
    [(3, 2, "nearest", 4, True), (2, 2, "linear", 8, True), (2, 3, "nearest", 8, True),
     (3, 2, "nearest", 8, False), (2, 3, "linear", 8, False)],
)
def test_receptive_field_is_exact(ndim, depth, upsample, channels, skips):
    """Perturb one voxel: changes stay within receptive_field // 2 and reach that distance.

    In float64 on CPU each output is a sum over its own inputs only, so "changed" means "differs".
    """
    net = UNet(ndim=ndim, depth=depth, base_channels=channels, upsample=upsample, skips=skips).double().eval()
    reach = net.receptive_field // 2
    size = 2 * reach + 2 * net.downsampling_factor
    size += -size % net.downsampling_factor
    x = torch.rand(1, 1, *(size,) * ndim, dtype=torch.float64)
    with torch.no_grad():
        base = net(x)
        seen = 0
        for r in range(net.downsampling_factor):  # the field depends on the position modulo the factor
            q = (size // 2 + r,) * ndim
            changed = torch.zeros_like(base[0, 0], dtype=torch.bool)
            for bump in (1.0,) if skips else (100.0, -100.0):  # no skips: every path runs through a max-pool
                y = x.clone()
                y[(0, 0, *q)] += bump
                changed |= (net(y) != base)[0, 0]
            changed = changed.nonzero()
            dist = (changed - torch.tensor(q)).abs().max(dim=0).values
            assert int(dist.max()) <= reach
            seen = max(seen, int(dist.max()))
    assert seen == reach


def _predict_whole(net: UNet, vol: torch.Tensor) -> torch.Tensor:
    h = net.halo
    padded = F.pad(vol[None, None], (h,) * 6, mode="reflect")
    return net(padded)[0, 0, h:-h, h:-h, h:-h]


def _predict_tiled(net: UNet, vol: torch.Tensor, tile: tuple[int, int, int]) -> torch.Tensor:
    """Tiles aligned to the down-sampling factor, each read with its halo from a reflect-padded source."""
    h = net.halo
    padded = F.pad(vol[None, None], (h,) * 6, mode="reflect")  # what a reader does at volume borders
    out = torch.empty_like(vol)
    starts = [range(0, n, t) for n, t in zip(vol.shape, tile)]
    for z, y, x in itertools.product(*starts):
        core = tuple(slice(s, min(s + t, n)) for s, t, n in zip((z, y, x), tile, vol.shape))
        region = tuple(slice(c.start, c.stop + 2 * h) for c in core)  # offsets shifted by h in `padded`
        pred = net(padded[(0, 0, *region)][None, None])[0, 0]
        out[core] = pred[h:-h, h:-h, h:-h]
    return out


@pytest.mark.parametrize(("upsample", "skips"), [("nearest", True), ("linear", True), ("nearest", False),
                                                  ("linear", False)])
def test_tiled_equals_whole(upsample, skips):
    net = UNet(depth=2, base_channels=4, upsample=upsample, skips=skips).eval()
    vol = torch.randn(36, 48, 48)  # reflect padding needs the halo (up to 32) below every size
    with torch.no_grad():
        whole = _predict_whole(net, vol)
        tiled = _predict_tiled(net, vol, tile=(16, 24, 32))  # last tiles along z and x are cut short
    np.testing.assert_allclose(tiled.numpy(), whole.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ndim,kernel", [(2, 3), (3, 3), (3, 5)])
def test_nearest_upsampling_is_one_transposed_convolution(ndim, kernel):
    """The folded kernel computes nearest upsampling then the convolution: same values, borders included."""
    from tomocare.nn.unet import _Up

    torch.manual_seed(0)
    up = _Up(ndim, 6, 4, kernel, "nearest").double()
    x = torch.randn((2, 6) + (7,) * ndim, dtype=torch.float64)
    direct = F.relu(up.conv(F.interpolate(x, scale_factor=2, mode="nearest")))
    assert torch.allclose(up(x), direct, atol=1e-12)
