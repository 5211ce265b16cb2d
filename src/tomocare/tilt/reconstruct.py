"""Tomograms from tilt series on dask: weighted back-projection slab by slab along y.

Every y-slab of the tilt series reconstructs independently (:mod:`tomocare.tilt.wbp`), so the
graph is one ``map_blocks`` over y-chunks of the lazily read stack, streamed into the output
MRC by :func:`tomocare.io.mrc.write_mrc`: a task holds one slab of images and one slab of
the tomogram, whatever the size of either.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.atomic import check_output
from tomocare.io.mrc import write_mrc
from tomocare.io.stats import Stats
from tomocare.tilt.angles import even_odd_indices, read_order, read_tlt
from tomocare.tilt.stack import check_angles, open_stack
from tomocare.tilt.wbp import WINDOWS, Window, reconstruct_slab

SPLITS = ("none", "even-odd")


def reconstruct_lazy(
    stack: da.Array, angles: np.ndarray, thickness: int, *, window: Window = "ramp"
) -> da.Array:
    """A lazy tomogram (thickness, y, x) from a tilt series (tilt, y, x): one task per y-chunk."""
    angles = np.asarray(angles, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[0] != len(angles):
        raise ValueError(f"stack of shape {stack.shape} does not match {len(angles)} angles")
    if len(stack.chunks[0]) > 1 or len(stack.chunks[2]) > 1:
        stack = stack.rechunk({0: -1, 2: -1})
    return da.map_blocks(
        reconstruct_slab, stack, angles, thickness, window,
        chunks=((thickness,), stack.chunks[1], (stack.shape[2],)), dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )


def half_paths(out: Path) -> tuple[Path, Path]:
    """OUT_even.mrc and OUT_odd.mrc beside OUT.mrc."""
    even, odd = (out.with_name(f"{out.stem}_{half}{out.suffix or '.mrc'}") for half in ("even", "odd"))
    return even, odd


def reconstruct_tomogram(
    tilt_series: str | os.PathLike,
    angles_file: str | os.PathLike,
    out: str | os.PathLike,
    *,
    thickness: int | None = None,
    split: str = "none",
    order_file: str | os.PathLike | None = None,
    window: Window = "ramp",
    y_chunk: int = 16,
    overwrite: bool = False,
) -> dict[str, Stats]:
    """Reconstruct ``tilt_series`` into ``out`` (or OUT_even/OUT_odd with ``split='even-odd'``).

    ``thickness`` defaults to half the image width. The even/odd halves use alternate tilts in
    acquisition order (``order_file``, an order list) or else by index. Runs on the current
    dask scheduler; returns the statistics of each file written, by path.
    """
    out = Path(out)
    if split not in SPLITS:
        raise TomocareError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if window not in WINDOWS:
        raise TomocareError(f"--filter {window!r}: use one of {', '.join(WINDOWS)}")
    stack = open_stack(tilt_series, command="reconstruct")
    angles = read_tlt(angles_file)
    check_angles(stack, angles, angles_file, "reconstruct")
    n, ny, nx = stack.shape
    thickness = nx // 2 if thickness is None else int(thickness)
    if thickness < 1:
        raise TomocareError(f"--thickness {thickness}: must be a positive number of voxels")
    if y_chunk < 1:
        raise TomocareError(f"y_chunk {y_chunk}: must be a positive number of rows")
    ranks = read_order(order_file, angles) if order_file is not None else None
    if split == "even-odd":
        if n < 4:
            raise TomocareError(f"{stack.path}: {n} tilts are too few to split into even and odd halves")
        targets = list(zip(half_paths(out), even_odd_indices(n, ranks)))
    else:
        targets = [(out, np.arange(n))]
    for path, _ in targets:
        check_output(path, overwrite=overwrite)
    images = stack.to_dask(y_chunk)
    vy, vx = stack.pixel_size
    written = {}
    for path, index in targets:
        subset = images if len(index) == n else images[index]
        volume = reconstruct_lazy(subset, angles[index], thickness, window=window)
        written[str(path)] = write_mrc(volume, path, voxel_size=(vx, vy, vx), overwrite=overwrite)
    return written
