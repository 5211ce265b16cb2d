"""Running the network on tiles (compute only: no file I/O here)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from tomocare.predict.plan import Block, BlockPlan, network_geometry, read_tiles, reflect_pad, round_up


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


def run_network(
    net: torch.nn.Module, tiles: np.ndarray, *, mean: float, std: float, precision: str = "fp32"
) -> np.ndarray:
    """The network on the tiles of every source (even, odd) in one batch, averaged.

    ``tiles`` is ``(n_sources, *tile)``. A 2-D network takes a tile of a stack of images
    ``(n_sources, n_images, y, x)`` as a batch of single images.
    """
    n, *tile = tiles.shape
    if getattr(net, "ndim", 3) == 2:
        out = run_tiles(net, tiles.reshape(-1, *tile[-2:]), mean=mean, std=std, precision=precision)
        return out.reshape(n, *tile).mean(axis=0)
    return run_tiles(net, tiles, mean=mean, std=std, precision=precision).mean(axis=0)


def compute_block(
    net: torch.nn.Module, sources, block: Block, *, mean: float, std: float, precision: str = "fp32"
) -> np.ndarray:
    """One block's output core from in-memory sources (the reference the engine is tested against)."""
    return block.crop(run_network(net, read_tiles(sources, block), mean=mean, std=std, precision=precision))


def predict_whole(
    net: torch.nn.Module, volume: np.ndarray, *, halo: int, factor: int, mean: float = 0.0, std: float = 1.0
) -> np.ndarray:
    """Reference: the network on a whole in-memory volume (reflect-padded by the halo, cropped).

    Tiled prediction must equal this; it is used by tests and benchmarks, not by the engine.
    """
    net = prepare(net)
    halos, factors = network_geometry(volume.ndim, getattr(net, "ndim", 3), halo, factor)
    plan = BlockPlan(volume.shape, tuple(round_up(s, f) for s, f in zip(volume.shape, factors)), halos, factors)
    (block,) = list(plan.blocks())
    return block.crop(run_network(net, read_tiles((volume,), block), mean=mean, std=std))
