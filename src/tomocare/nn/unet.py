"""A strictly local 2-D/3-D U-Net for Noise2Noise denoising (cryo-CARE style).

Every layer is translation-equivariant on the grid of the coarsest level: convolutions with
zero "same" padding, max-pooling by 2, upsampling by interpolation followed by a convolution,
no normalisation layer. So an output voxel depends only on the input voxels inside its
receptive field, and a volume can be predicted tile by tile, each tile read with a ``halo``
and aligned to ``downsampling_factor``, with the same result as a whole-volume pass.
Without skip connections (``skips=False``) it is the plain convolutional auto-encoder baseline.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tomocare.nn.architecture import UNetConfig, Upsample


def _conv(ndim: int, c_in: int, c_out: int, kernel_size: int) -> nn.Conv3d | nn.Conv2d:
    conv = nn.Conv3d if ndim == 3 else nn.Conv2d
    return conv(c_in, c_out, kernel_size, padding=kernel_size // 2)


class _Block(nn.Sequential):
    """``n_conv`` convolutions, each followed by a ReLU."""

    def __init__(self, ndim: int, c_in: int, c_out: int, kernel_size: int, n_conv: int):
        layers: list[nn.Module] = []
        for i in range(n_conv):
            layers += [_conv(ndim, c_in if i == 0 else c_out, c_out, kernel_size), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class _Up(nn.Module):
    """Upsample by 2, then a convolution (its weights are a plain convolution's).

    Nearest-neighbour upsampling followed by a convolution is computed as one transposed
    convolution of stride 2 whose kernel folds the convolution's taps that fall on the same
    coarse voxel (``nearest_up_kernel``): the same function, computed on the coarse grid, with
    2**ndim instead of 3**ndim taps per output voxel and no upsampled tensor in memory (3x faster
    than upsampling then convolving, on CPU and in bf16). Linear upsampling interpolates, then
    convolves.
    """

    def __init__(self, ndim: int, c_in: int, c_out: int, kernel_size: int, mode: Upsample):
        super().__init__()
        linear = "trilinear" if ndim == 3 else "bilinear"
        self.mode = mode
        self.interpolation = {"mode": "nearest"} if mode == "nearest" else {"mode": linear, "align_corners": False}
        self.conv = _conv(ndim, c_in, c_out, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            transposed = F.conv_transpose3d if x.ndim == 5 else F.conv_transpose2d
            weight = nearest_up_kernel(self.conv.weight)
            x = transposed(x, weight, self.conv.bias, stride=2, padding=self.conv.kernel_size[0] // 2)
        else:
            x = self.conv(F.interpolate(x, scale_factor=2, **self.interpolation))
        return F.relu(x, inplace=True)


def nearest_up_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The transposed-convolution kernel (stride 2, padding r) equal to nearest upsampling by 2
    followed by the convolution ``weight`` (out, in, k, ..., k), k = 2r + 1, zero-padded.

    Per axis, fine output 2m + p reads coarse voxel m' through the taps a with
    floor((2m + p + a - r) / 2) = m', so tap j of the transposed convolution is the sum of taps
    a = 2r - j and 2r + 1 - j of the convolution (those in 0..2r). Sums only: exact in any dtype.
    """
    out = weight.transpose(0, 1)  # (in, out, k, ...): the transposed convolution's layout
    for axis in range(2, weight.ndim):
        padded = F.pad(out.movedim(axis, -1), (1, 1))
        out = (padded[..., :-1] + padded[..., 1:]).flip(-1).movedim(-1, axis)
    return out.contiguous()


class UNet(nn.Module):
    """U-Net of ``depth`` levels; channel count ``base_channels * 2**level``.

    Input and output have shape ``(batch, channels, *spatial)`` with every spatial size a
    multiple of :attr:`downsampling_factor`. The last layer is a linear 1×1 convolution; with
    ``residual`` the input is added to it (single channel in and out). With ``skips`` false the
    decoder sees only the upsampled coarser level (an auto-encoder).
    """

    def __init__(self, config: UNetConfig | None = None, **fields) -> None:
        super().__init__()
        if config is not None and fields:
            raise TypeError("give a UNetConfig or its fields, not both")
        self.config: UNetConfig = config if config is not None else UNetConfig(**fields)
        ndim, depth, base_channels = self.config.ndim, self.config.depth, self.config.base_channels
        kernel_size, n_conv, upsample = self.config.kernel_size, self.config.n_conv, self.config.upsample
        in_channels, out_channels = self.config.in_channels, self.config.out_channels
        ch = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            _Block(ndim, in_channels if lv == 0 else ch[lv - 1], ch[lv], kernel_size, n_conv) for lv in range(depth)
        )
        self.bottom = _Block(ndim, ch[depth - 1], ch[depth], kernel_size, n_conv)
        self.up = nn.ModuleList(_Up(ndim, ch[lv + 1], ch[lv], kernel_size, upsample) for lv in range(depth))
        joined = 2 if self.config.skips else 1
        self.merge = nn.ModuleList(_Block(ndim, joined * ch[lv], ch[lv], kernel_size, n_conv) for lv in range(depth))
        self.head = _conv(ndim, ch[0], out_channels, 1)
        self.pool = nn.MaxPool3d(2) if ndim == 3 else nn.MaxPool2d(2)

    @property
    def ndim(self) -> int:
        return self.config.ndim

    @property
    def downsampling_factor(self) -> int:
        """Spatial sizes, tile offsets and halos must be multiples of this."""
        return 2**self.config.depth

    @property
    def receptive_field(self) -> int:
        """Full width (voxels, per axis) of the input region any output voxel depends on.

        Computed exactly by propagating dependency intervals back through the layers, for every
        position modulo :attr:`downsampling_factor`; the field is symmetrised, so an output voxel
        depends only on inputs within ``receptive_field // 2`` of it.
        """
        reach = 0
        for p in range(self.downsampling_factor):
            lo, hi = self._input_interval(0, p, p)
            reach = max(reach, p - lo, hi - p)
        return 2 * reach + 1

    @property
    def halo(self) -> int:
        """Margin a tile needs on each side for an exact core: ≥ receptive_field // 2, aligned."""
        d = self.downsampling_factor
        return -(-(self.receptive_field // 2) // d) * d

    def _input_interval(self, level: int, a: int, b: int) -> tuple[int, int]:
        """Positions at the input of ``level`` on which that level's output at [a, b] depends."""
        r = self.config.kernel_size // 2
        n = self.config.n_conv
        if level == self.config.depth:
            return a - n * r, b + n * r
        a, b = a - n * r, b + n * r  # merge block
        ua, ub = a - r, b + r  # convolution after upsampling
        if self.config.upsample == "nearest":
            ca, cb = ua // 2, ub // 2
        else:  # linear, align_corners=False: fine 2m uses coarse m-1, m; 2m+1 uses m, m+1
            ca, cb = (ua - 1) // 2, (ub + 1) // 2
        ca, cb = self._input_interval(level + 1, ca, cb)
        if self.config.skips:
            a, b = min(a, 2 * ca), max(b, 2 * cb + 1)  # max-pool, joined with the skip connection
        else:
            a, b = 2 * ca, 2 * cb + 1  # max-pool only
        return a - n * r, b + n * r  # encoder block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.downsampling_factor
        if x.ndim != self.ndim + 2 or any(s % d for s in x.shape[2:]):
            raise ValueError(
                f"expected (batch, channels) + {self.ndim} spatial sizes that are multiples of {d}, "
                f"got {tuple(x.shape)}"
            )
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            with torch.autocast(h.device.type, enabled=False):  # exact in any dtype; autocast would make it fp32
                h = self.pool(h)
        h = self.bottom(h)
        for up, merge, skip in zip(reversed(self.up), reversed(self.merge), reversed(skips)):
            h = merge(torch.cat([skip, up(h)], dim=1) if self.config.skips else up(h))
        out = self.head(h)
        return x + out if self.config.residual else out
