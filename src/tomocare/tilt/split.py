"""Even/odd splits of movies (frames) and tilt series (tilts), streamed with dask.

Frames are split interleaved (0, 2, 4… and 1, 3, 5…) so that both sums share the beam damage
equally; tilts alternate in acquisition order when it is known (an order list), else by index.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.atomic import check_output
from tomocare.io.mrc import write_mrc
from tomocare.tilt.angles import even_odd_indices, read_order, read_tlt, write_tlt
from tomocare.tilt.stack import Stack, check_angles, open_stack


def frame_sums(frames: da.Array) -> tuple[da.Array, da.Array]:
    """Sums of the even- and odd-indexed frames of a movie (n, y, x), each (1, y, x), float32."""
    if frames.shape[0] < 2:
        raise ValueError("a movie needs at least 2 frames")
    frames = frames.astype(np.float32)
    return frames[0::2].sum(axis=0, keepdims=True), frames[1::2].sum(axis=0, keepdims=True)


def _open_frames(movies: Sequence[str | os.PathLike], y_chunk: int) -> tuple[list[Stack], da.Array]:
    stacks = [open_stack(m, command="split-frames", what="movie", min_images=1) for m in movies]
    first = stacks[0]
    for s in stacks[1:]:
        if s.shape[1:] != first.shape[1:]:
            raise TomocareError(
                f"{s.path}: frames of shape {s.shape[1:]} differ from {first.path.name}'s {first.shape[1:]}"
            )
    frames = da.concatenate([s.to_dask(y_chunk) for s in stacks]) if len(stacks) > 1 else first.to_dask(y_chunk)
    if frames.shape[0] < 2:
        raise TomocareError(
            f"{first.path}: a single 2-D image; 'split-frames' needs a movie of at least 2 frames "
            "(two acquired images can be trained on directly as a pair)"
        )
    return stacks, frames


def split_frames(
    movies: Sequence[str | os.PathLike], even: str | os.PathLike, odd: str | os.PathLike,
    *, y_chunk: int = 256, overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write the interleaved even and odd frame sums of a movie (one stack, or one file per frame)."""
    even, odd = Path(even), Path(odd)
    for path in (even, odd):
        check_output(path, overwrite=overwrite)
    stacks, frames = _open_frames(movies, y_chunk)
    vy, vx = stacks[0].pixel_size
    header = stacks[0].image_header()
    for path, image in zip((even, odd), frame_sums(frames)):
        write_mrc(image, path, voxel_size=(vx, vy, vx), header=header, overwrite=overwrite)
    return even, odd


def split_tilts(
    tilt_series: str | os.PathLike, angles_file: str | os.PathLike, even: str | os.PathLike, odd: str | os.PathLike,
    *, order_file: str | os.PathLike | None = None, y_chunk: int = 256, overwrite: bool = False,
) -> dict[str, Path]:
    """Write alternate tilts as two stacks, each with its ``.tlt`` beside it (E.mrc → E.tlt)."""
    even, odd = Path(even), Path(odd)
    stack = open_stack(tilt_series, command="split-tilts")
    angles = read_tlt(angles_file)
    check_angles(stack, angles, angles_file, "split-tilts")
    if stack.shape[0] < 4:
        raise TomocareError(f"{stack.path}: {stack.shape[0]} tilts are too few to split into even and odd halves")
    outputs = {"even": even, "odd": odd, "even_angles": even.with_suffix(".tlt"), "odd_angles": odd.with_suffix(".tlt")}
    if len(set(outputs.values())) < 4:
        raise TomocareError(f"{even}: the even and odd outputs must be different files")
    for path in outputs.values():
        check_output(path, overwrite=overwrite)
    ranks = read_order(order_file, angles) if order_file is not None else None
    images = stack.to_dask(y_chunk)
    header = stack.image_header()
    for half, index in zip(("even", "odd"), even_odd_indices(stack.shape[0], ranks)):
        write_mrc(images[index], outputs[half], voxel_size=stack.header.voxel_size, header=header, overwrite=overwrite)
        write_tlt(outputs[f"{half}_angles"], angles[index])
    return outputs
