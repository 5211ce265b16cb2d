"""Pixel losses of training: mean squared error, mean absolute error, and 1 − SSIM (torch, fp32)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from tomocare.evaluate.ssim import K1, K2, SSIM_SIGMA, ssim_radius


def _gaussian(sigma: float, device: torch.device) -> torch.Tensor:
    """The normalised 1-D Gaussian window of ``tomocare.evaluate.ssim`` (2 · ssim_radius + 1 taps)."""
    r = ssim_radius(sigma)
    taps = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    w = torch.exp(-0.5 * (taps / sigma) ** 2)
    return w / w.sum()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, *, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """1 − mean SSIM of ``pred`` against ``target``, (batch, channels, *spatial) in 2-D or 3-D.

    As :func:`tomocare.evaluate.ssim.ssim`: Gaussian window (sigma 1.5, 11 taps), population
    statistics, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``, the mean over voxels at least a window radius
    from every face (a "valid" convolution); ``L`` is each patch's target range (max − min). fp32.
    """
    pred, target = pred.float(), target.float()
    spatial = pred.ndim - 2
    if min(pred.shape[2:]) <= 2 * ssim_radius(sigma):
        raise ValueError(f"SSIM needs every side longer than {2 * ssim_radius(sigma)} voxels, got {tuple(pred.shape)}")
    c = pred.shape[1]
    stack = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    w = _gaussian(sigma, pred.device)
    conv = F.conv3d if spatial == 3 else F.conv2d
    for axis in range(spatial):
        shape = [1] * spatial
        shape[axis] = w.numel()
        stack = conv(stack, w.view(1, 1, *shape).expand(5 * c, 1, *shape), groups=5 * c)
    ux, ur, xx, rr, xr = stack.split(c, dim=1)
    vx, vr, cov = xx - ux * ux, rr - ur * ur, xr - ux * ur
    data_range = (target.flatten(1).amax(1) - target.flatten(1).amin(1)).clamp_min(1e-6)
    data_range = data_range.view(-1, *(1,) * (pred.ndim - 1))
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * ur + c1) * (2 * cov + c2)) / ((ux**2 + ur**2 + c1) * (vx + vr + c2))
    return 1 - s.mean()


#: Training and validation losses by name (``TrainConfig.loss``); prediction and target in fp32.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss, "l1": F.l1_loss, "ssim": ssim_loss}
