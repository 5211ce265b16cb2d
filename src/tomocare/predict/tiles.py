"""Running the network on tiles (compute only: no file I/O here)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tomocare.nn.device import autocast, channels_last, prepare
from tomocare.predict.plan import Block, BlockPlan, network_geometry, read_tiles, round_up

#: Flips (axes counted from the end: x is -1) under which the network sees its inputs, in turn: the
#: even half the first, the odd half the second, and so on. A network is not exactly equivariant
#: under flips, so outputs for different orientations differ in their errors and their average is
#: better (measured on a development tomogram, benchmarks/quality.py seed 100, SNR 0.08: the odd half
#: flipped in y and x +0.25 dB at no cost; two orientations per half +0.42 dB at twice the cost).
#: The missing wedge is symmetric under each of them. 2-D networks use the first four.
ORIENTATIONS: tuple[tuple[int, ...], ...] = ((), (-2, -1), (-2,), (-1,), (-3,), (-3, -2, -1), (-3, -2), (-3, -1))


@torch.inference_mode()
def run_tiles(
    net: torch.nn.Module, tiles: np.ndarray, *, mean: float, std: float, precision: str = "fp32"
) -> np.ndarray:
    """Denoise a batch of tiles ``(n, *spatial)`` given in the data's intensity scale."""
    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = channels_last((x.unsqueeze(1) - mean) / std)
    with autocast(device, precision):
        y = net(x)
    y = y.float().squeeze(1) * std + mean
    return y.cpu().numpy()


def piece_shape(tile: Sequence[int], halo: int, factor: int, max_voxels: int | None) -> tuple[int, ...] | None:
    """The shape of the pieces a 3-D tile's core is computed in, so each network call sees at most
    ``max_voxels`` voxels (piece plus halo), choosing the split that computes the fewest voxels in
    all (pieces of equal size, multiples of ``factor``); None when the whole tile fits."""
    if max_voxels is None or int(np.prod(tile)) <= max_voxels or halo == 0:
        return None
    core = [n - 2 * halo for n in tile]
    best = None
    for counts in itertools.product(range(1, 17), repeat=3):
        piece = [round_up(-(-c // k), factor) for c, k in zip(core, counts)]  # ceil(c / k), on the grid
        if int(np.prod([p + 2 * halo for p in piece])) > max_voxels:
            continue
        computed = int(np.prod([-(-c // p) for c, p in zip(core, piece)])) * int(np.prod([p + 2 * halo for p in piece]))
        if best is None or computed < best[0]:
            best = (computed, tuple(piece))
    return best[1] if best else (factor,) * 3


def _run_pieces(net, tile: np.ndarray, *, halo: int, piece: Sequence[int], **kw) -> np.ndarray:
    """The network on one tile (z, y, x), piece by piece over its core (the tile less ``halo`` on each
    side, a multiple of the down-sampling factor), each piece read with its halo from the tile.
    Equal to one call on the whole tile where it matters: the core (the halo is left at 0)."""
    out = np.zeros(tile.shape, np.float32)
    core = [n - 2 * halo for n in tile.shape]
    for corner in np.ndindex(*[-(-c // p) for c, p in zip(core, piece)]):
        lo = [halo + i * p for i, p in zip(corner, piece)]
        hi = [min(a + p, halo + c) for a, p, c in zip(lo, piece, core)]
        part = tile[tuple(slice(a - halo, b + halo) for a, b in zip(lo, hi))]
        result = run_tiles(net, part[None], **kw)[0]
        out[tuple(slice(a, b) for a, b in zip(lo, hi))] = result[(slice(halo, -halo),) * 3]
    return out


def run_network(
    net: torch.nn.Module, tiles: np.ndarray, *, mean: float, std: float, precision: str = "fp32",
    halo: int = 0, factor: int = 1, max_voxels: int | None = None, orientations: int = 1,
) -> np.ndarray:
    """The network on the tile of every source (even, odd), one after the other, in ``orientations``
    orientations each (``ORIENTATIONS``: the sources take turns, so with one each the odd half is
    seen flipped), all outputs averaged.

    ``tiles`` is ``(n_sources, *tile)``. A 2-D network takes a tile of a stack of images
    ``(n_sources, n_images, y, x)`` as a batch of single images. A 3-D tile larger than
    ``max_voxels`` is computed in pieces of its core (``halo`` and ``factor`` of the network), which
    bounds memory; the output's halo is then 0, which the engine crops anyway.
    """
    n, *tile = tiles.shape
    kw: dict[str, Any] = dict(mean=mean, std=std, precision=precision)
    net_2d = getattr(net, "ndim", 3) == 2
    turns = ORIENTATIONS[:4] if net_2d else ORIENTATIONS
    if n * orientations > len(turns):
        raise ValueError(f"{orientations} orientations for {n} sources: at most {len(turns)} in all")
    flips = [[turns[k * n + i] for k in range(orientations)] for i in range(n)]
    if net_2d:
        views = [np.flip(source, axes) for source, axs in zip(tiles, flips) for axes in axs]
        out = run_tiles(net, np.stack(views).reshape(-1, *tile[-2:]), **kw).reshape(len(views), *tile)
        return np.mean([np.flip(o, axes) for o, axes in zip(out, [a for axs in flips for a in axs])], axis=0)
    piece = piece_shape(tile, halo, factor, max_voxels)
    total = np.zeros(tile, np.float32)
    # one at a time: a batch of two costs twice the memory, runs no faster on CPUs
    for source, axs in zip(tiles, flips):
        for axes in axs:
            view = np.flip(source, axes)
            out = run_tiles(net, view[None], **kw)[0] if piece is None else _run_pieces(net, view, halo=halo,
                                                                                        piece=piece, **kw)
            total += np.flip(out, axes)
    return total / (n * orientations)


def compute_block(
    net: torch.nn.Module, sources, block: Block, *, mean: float, std: float, precision: str = "fp32",
    orientations: int = 1,
) -> np.ndarray:
    """One block's output core from in-memory sources (the reference the engine is tested against)."""
    return block.crop(run_network(net, read_tiles(sources, block), mean=mean, std=std, precision=precision,
                                  orientations=orientations))


def predict_whole(
    net: torch.nn.Module, volume: np.ndarray | Sequence[np.ndarray], *, halo: int, factor: int, mean: float = 0.0,
    std: float = 1.0, precision: str = "fp32", max_voxels: int | None = None, orientations: int = 1,
) -> np.ndarray:
    """Reference: the network on a whole in-memory volume, or on the sources given as a tuple or
    list (even, odd: averaged as the engine does), reflect-padded by the halo and cropped.

    Tiled prediction must equal this; it is used by tests, benchmarks and the report, not by the engine.
    """
    sources = tuple(volume) if isinstance(volume, (tuple, list)) else (volume,)
    net = prepare(net)
    shape = sources[0].shape
    halos, factors = network_geometry(len(shape), getattr(net, "ndim", 3), halo, factor)
    plan = BlockPlan(shape, tuple(round_up(s, f) for s, f in zip(shape, factors)), halos, factors)
    (block,) = list(plan.blocks())
    return block.crop(run_network(net, read_tiles(sources, block), mean=mean, std=std, precision=precision,
                                  halo=halos[-1], factor=factors[-1], max_voxels=max_voxels,
                                  orientations=orientations))
