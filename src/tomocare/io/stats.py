"""Volume statistics computed out-of-core: one small row per block, merged exactly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# A block's row: finite count, mean, sum of squared deviations (M2), min, max, non-finite count.
N_FIELDS = 6


def block_stats(block: np.ndarray) -> np.ndarray:
    """Statistics of one block, skipping NaN and infinite voxels.

    Voxels that float32 holds exactly (float32, float16, integers of up to 16 bits) are summed in
    float64 without a float64 copy of the block; the squared deviations are summed in float32 along
    short rows and the rows in float64, which keeps the result exact to about 1e-7 relative.
    """
    values = np.asarray(block).ravel()
    if values.dtype == np.float16 or (values.dtype.kind in "iub" and values.dtype.itemsize <= 2):
        values = values.astype(np.float32)
    if values.dtype == np.float32 and values.size:
        total = float(np.add.reduce(values, dtype=np.float64))
        if np.isfinite(total):  # a NaN or infinite voxel would make the sum non-finite
            return _finite_float32_stats(values, total)
    return _float64_stats(values)


def _finite_float32_stats(values: np.ndarray, total: float, row: int = 64, piece: int = 2**16) -> np.ndarray:
    n = values.size
    mean = total / n
    shift = np.float32(mean)
    scratch = np.empty(min(n, piece), dtype=np.float32)  # cache-sized: no block-sized temporary
    m2 = 0.0
    for start in range(0, n, piece):
        dev = np.subtract(values[start : start + piece], shift, out=scratch[: min(piece, n - start)])
        whole = dev.size - dev.size % row
        rows = dev[:whole].reshape(-1, row)
        m2 += float(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64))
        tail = dev[whole:].astype(np.float64)
        m2 += float(np.dot(tail, tail))
    m2 = max(m2 - n * (mean - float(shift)) ** 2, 0.0)  # deviations were taken from the rounded mean
    return np.array([n, mean, m2, float(values.min()), float(values.max()), 0], dtype=np.float64)


def _float64_stats(block: np.ndarray) -> np.ndarray:
    values = np.asarray(block, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    n_bad = values.size - int(finite.sum())
    if n_bad:
        values = values[finite]
    if values.size == 0:
        return np.array([0, 0.0, 0.0, np.inf, -np.inf, n_bad], dtype=np.float64)
    mean = values.mean()
    m2 = float(((values - mean) ** 2).sum())
    return np.array([values.size, mean, m2, values.min(), values.max(), n_bad], dtype=np.float64)


@dataclass(frozen=True)
class Stats:
    """Mean, standard deviation, range and count of non-finite voxels of a volume."""

    mean: float
    std: float
    min: float
    max: float
    count: int
    nonfinite: int

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> Stats:
        """Merge per-block rows (Chan et al.'s parallel variance), exact up to rounding."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, N_FIELDS)
        n, means, m2 = rows[:, 0], rows[:, 1], rows[:, 2]
        total = n.sum()
        if total == 0:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"), 0, int(rows[:, 5].sum()))
        mean = float((n * means).sum() / total)
        m2_total = float(m2.sum() + (n * (means - mean) ** 2).sum())
        return cls(
            mean=mean,
            std=float(np.sqrt(m2_total / total)),
            min=float(rows[:, 3].min()),
            max=float(rows[:, 4].max()),
            count=int(total),
            nonfinite=int(rows[:, 5].sum()),
        )

    def to_row(self) -> np.ndarray:
        """The block-statistics row this summary stands for, so summaries merge like blocks."""
        return np.array([self.count, self.mean, self.std**2 * self.count, self.min, self.max, self.nonfinite])

    @classmethod
    def merge(cls, parts: list[Stats]) -> Stats:
        return cls.from_rows(np.stack([p.to_row() for p in parts]))

    def to_dict(self) -> dict:
        """JSON as the standard has it: None for NaN (the statistics of no finite voxel)."""
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Stats:
        values: dict[str, Any] = {k: float("nan") if d[k] is None else d[k]
                                  for k in ("mean", "std", "min", "max", "count", "nonfinite")}
        return cls(**values)


def normalisation(volumes: Iterable) -> tuple[float, float] | None:
    """Mean and standard deviation over all ``volumes`` (objects with a ``stats`` attribute, such as
    :class:`~tomocare.io.volume.Volume`) from their stored statistics, merged exactly; None when
    any of them has none stored (the caller then computes them from the voxels)."""
    stored = [volume.stats for volume in volumes]
    if not stored or any(s is None for s in stored):
        return None
    merged = Stats.merge(stored)
    return merged.mean, merged.std
