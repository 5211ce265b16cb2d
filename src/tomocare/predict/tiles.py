"""Running the network on tiles (compute only: no file I/O here)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from tomocare.predict.plan import Block, BlockPlan, reflect_pad, round_up


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA when asked for; full precision otherwise (and always on CPU)."""
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def prepare(net: torch.nn.Module) -> torch.nn.Module:
    """Put a network in the layout ``run_tiles`` feeds it (channels-last for 3-D), in eval mode."""
    if getattr(net, "ndim", 3) == 3:
        net = net.to(memory_format=torch.channels_last_3d)
    return net.eval()


@torch.inference_mode()
def run_tiles(
    net: torch.nn.Module, tiles: np.ndarray, *, mean: float, std: float, precision: str = "fp32"
) -> np.ndarray:
    """Denoise a batch of tiles ``(n, *spatial)`` given in the data's intensity scale."""
    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = (x.unsqueeze(1) - mean) / std
    if x.ndim == 5:  # oneDNN and cuDNN run 3-D convolutions faster channels-last (about 2x on CPU)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with autocast(device, precision):
        y = net(x)
    y = y.float().squeeze(1) * std + mean
    return y.cpu().numpy()


def compute_block(
    net: torch.nn.Module, sources, block: Block, *, mean: float, std: float, precision: str = "fp32"
) -> np.ndarray:
    """One block's output core: the tiles of every source (even, odd) in one batch, averaged."""
    tiles = np.stack([reflect_pad(np.asarray(src[block.read], dtype=np.float32), block.pad) for src in sources])
    out = run_tiles(net, tiles, mean=mean, std=std, precision=precision).mean(axis=0)
    return out[tuple(slice(o, o + s.stop - s.start) for o, s in zip(block.offset, block.core))]


def predict_whole(
    net: torch.nn.Module, volume: np.ndarray, *, halo: int, factor: int, mean: float = 0.0, std: float = 1.0
) -> np.ndarray:
    """Reference: the network on a whole in-memory volume (reflect-padded by the halo, cropped).

    Tiled prediction must equal this; it is used by tests and benchmarks, not by the engine.
    """
    net = prepare(net)
    plan = BlockPlan(volume.shape, tuple(round_up(s, factor) for s in volume.shape), (halo,) * volume.ndim, factor)
    (block,) = list(plan.blocks())
    tile = reflect_pad(volume[block.read], block.pad)
    out = run_tiles(net, tile[None], mean=mean, std=std)[0]
    return out[tuple(slice(h, h + s) for h, s in zip(block.offset, volume.shape))]
