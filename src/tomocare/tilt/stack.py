"""Opening image stacks (tilt series, movies, 2-D image sets) from MRC files, with checks."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import cast

import dask.array as da
import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.mrc import MrcArray, MrcHeader, mrc_to_dask, open_mrc


@dataclasses.dataclass(frozen=True)
class Stack:
    """A lazily read stack of images (n, y, x) and the header it came with."""

    path: Path
    array: MrcArray
    header: MrcHeader

    @property
    def shape(self) -> tuple[int, int, int]:
        return cast(tuple[int, int, int], (1, *self.array.shape) if self.array.ndim == 2 else tuple(self.array.shape))

    @property
    def pixel_size(self) -> tuple[float, float]:
        """(y, x) pixel size in Å."""
        return self.header.voxel_size[1], self.header.voxel_size[2]

    def to_dask(self, y_chunk: int = 64) -> da.Array:
        """The stack as (n, y, x), chunked in slabs of ``y_chunk`` rows holding every image."""
        n, ny, nx = self.shape
        arr = mrc_to_dask(self.array,
                          chunks=(min(y_chunk, ny), nx) if self.array.ndim == 2 else (n, min(y_chunk, ny), nx))
        return arr[None] if self.array.ndim == 2 else arr

    def image_header(self) -> MrcHeader:
        """The header to carry into derived stacks: without the per-section extended header."""
        return dataclasses.replace(self.header, extended_header_b64="", exttyp="")


def open_stack(path: str | os.PathLike, *, command: str, what: str = "tilt series", min_images: int = 2) -> Stack:
    """Open an MRC stack of at least ``min_images`` images; a single 2-D image is an error naming ``command``."""
    path = Path(path)
    mrc = open_mrc(path, ndim=None)
    if mrc.ndim not in (2, 3):
        raise TomocareError(f"{path}: expected a stack of images (n, y, x), found shape {mrc.shape}")
    stack = Stack(path, mrc, mrc.header)
    if stack.shape[0] < min_images:
        raise TomocareError(
            f"{path}: a single 2-D image {stack.shape[1:]}; '{command}' needs a {what} "
            f"(at least {min_images} images); to denoise single images, train on image pairs (P2P)"
        )
    return stack


def check_angles(stack: Stack, angles: np.ndarray, angles_path: str | os.PathLike, command: str) -> None:
    """One angle per image; otherwise say what the input probably is."""
    n = stack.shape[0]
    if len(angles) == n:
        return
    hint = ""
    if n > 2 * len(angles):
        hint = f" (is {stack.path.name} a reconstructed tomogram? '{command}' takes the aligned tilt series)"
    raise TomocareError(f"{stack.path}: {n} images but {len(angles)} angles in {angles_path}{hint}")
