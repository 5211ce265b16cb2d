"""A conditional PatchGAN critic (pix2pix, Isola et al. 2017), 2-D or 3-D, for adversarial training.

It scores a candidate output given the input it was made from: the two are concatenated as two
channels and mapped by strided convolutions with LeakyReLU(0.2) to a map of scores, one per
overlapping patch. Normalisation is per sample (instance norm, or none), never batch norm: the
WGAN-GP gradient penalty is per sample. Training only: model files hold the generator alone.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Norm = Literal["instance", "none"]


class PatchCritic(nn.Module):
    """``n_down`` convolutions of kernel 4 and stride 2 (``channels``, doubling, at most 8x), one of
    kernel 3 and stride 1, then a 1-channel convolution of kernel 3: the patch scores (logits for a
    cGAN, Wasserstein critic values for WGAN-GP), shape (batch, 1, *spatial / 2**n_down)."""

    def __init__(self, ndim: int = 3, channels: int = 16, n_down: int = 3, norm: Norm = "instance") -> None:
        super().__init__()
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        instance = nn.InstanceNorm3d if ndim == 3 else nn.InstanceNorm2d
        layers: list[nn.Module] = []
        c_in = 2
        for i in range(n_down + 1):
            c_out = channels * 2 ** min(i, 3)
            stride, kernel = (2, 4) if i < n_down else (1, 3)
            layers.append(conv(c_in, c_out, kernel, stride=stride, padding=1))
            if i > 0 and norm == "instance":  # pix2pix: no normalisation after the first layer
                layers.append(instance(c_out, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        layers.append(conv(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.ndim = ndim

    def forward(self, condition: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, candidate], dim=1))


def critic_depth(patch_size: int, most: int = 3) -> int:
    """Strided layers for ``patch_size``: pix2pix's 3, fewer so that the score map keeps ≥ 4 per side."""
    n = 0
    while n < most and patch_size // 2 ** (n + 1) >= 4:
        n += 1
    return max(n, 1)
