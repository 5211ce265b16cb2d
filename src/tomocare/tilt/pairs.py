"""2-D Noise2Noise pairs as lazy image stacks (n, y, x), for ``TrainConfig(ndim=2)``.

The three pairings of cryo-CARE's P2P: two acquisitions of the same area (P2P-ip: the two
stacks as they are), even/odd frame sums of a movie (P2P-df: see
:func:`tomocare.tilt.split.frame_sums`), and adjacent tilts of an aligned tilt series
(P2P-tap: :func:`adjacent_tilt_pairs`, image i against image i + 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageStack:
    """A picklable, read-only view of images ``start:stop`` of a stack (or of one 2-D image)."""

    source: Any  # array-like (n, y, x) or (y, x): MrcArray, zarr array, numpy
    start: int = 0
    stop: int | None = None

    @property
    def _n(self) -> int:
        n = 1 if len(self.source.shape) == 2 else self.source.shape[0]
        return (n if self.stop is None else self.stop) - self.start

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._n, *tuple(self.source.shape)[-2:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def path(self) -> str:
        return str(getattr(self.source, "path", "") or "")

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        z, rest = key[0], key[1:]
        if len(self.source.shape) == 2:
            return np.asarray(self.source[rest])[None][z]
        if isinstance(z, slice):
            lo, hi, step = z.indices(self._n)
            z = slice(self.start + lo, self.start + hi, step)
        else:
            z = self.start + int(z)
        return np.asarray(self.source[(z, *rest)])

    def __array__(self, dtype=None, copy=None):
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype)


def as_image_stack(array: Any) -> Any:
    """A (y, x) image as a stack of one; (n, y, x) stacks as they are."""
    return ImageStack(array) if len(array.shape) == 2 else array


def adjacent_tilt_pairs(tilt_series: Any) -> tuple[ImageStack, ImageStack]:
    """P2P-tap: images 0..n-2 against 1..n-1 of an aligned tilt series (n, y, x)."""
    n = tilt_series.shape[0]
    if len(tilt_series.shape) != 3 or n < 2:
        raise ValueError(f"adjacent tilts need a stack of at least 2 images, got shape {tuple(tilt_series.shape)}")
    return ImageStack(tilt_series, 0, n - 1), ImageStack(tilt_series, 1, n)
