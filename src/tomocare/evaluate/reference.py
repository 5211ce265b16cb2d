"""Metrics against a reference, block by block: whole-volume values and sub-volume percentiles.

Inputs are array-likes (numpy, ``MrcArray``, zarr): only one block (plus the SSIM window) of
each is in memory at a time, so any volume size works and the whole-volume values are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tomocare.config import DEFAULT_CHUNK
from tomocare.errors import TomocareError
from tomocare.evaluate.metrics import Moments
from tomocare.evaluate.ssim import SSIM_SIGMA, ssim_map, ssim_radius
from tomocare.predict.plan import Block, BlockPlan

PERCENTILES = (5, 50, 95)
METRICS = ("psnr_db", "ssim", "nrmse", "mse")


@dataclass
class ReferenceMetrics:
    """Whole-volume metrics and their 5th/50th/95th percentiles over sub-volumes (cubes)."""

    whole: dict[str, float]
    percentiles: dict[str, dict[str, float]]  # metric -> {"p5": .., "p50": .., "p95": ..}
    cube: int
    n_cubes: int
    fit: tuple[float, float] | None  # (scale, offset) applied to x, when fitted
    data_range: float
    per_cube: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "whole": self.whole,
            "percentiles_over_subvolumes": self.percentiles,
            "subvolume_edge": self.cube,
            "n_subvolumes": self.n_cubes,
            "affine_fit": {"scale": self.fit[0], "offset": self.fit[1]} if self.fit else None,
            "data_range": self.data_range,
        }


def _blocks(shape: tuple[int, ...], block: int, halo: int = 0) -> Iterator[Block]:
    """Prediction's block plan, unpadded: blocks of edge ``block`` tiling ``shape`` from its origin
    (the last ones shorter) in C order, each ``core`` with its ``read`` region, ``halo`` voxels
    around it clipped to the volume."""
    return BlockPlan(shape, (block,) * len(shape), (halo,) * len(shape), 1).blocks()


def _local(region: tuple[slice, ...], ctx: tuple[slice, ...]) -> tuple[slice, ...]:
    """``region`` (volume coordinates) in the coordinates of the array read over ``ctx``."""
    return tuple(slice(r.start - c.start, r.stop - c.start) for r, c in zip(region, ctx))


def _read(arr, sl) -> np.ndarray:
    return np.asarray(arr[sl], dtype=np.float64)


def compare_to_reference(
    x,
    reference,
    *,
    fit: bool = True,
    data_range: float | None = None,
    cube: int = 64,
    block: int = DEFAULT_CHUNK,
    name: str = "reference",
    x_name: str = "volume",
) -> ReferenceMetrics:
    """PSNR (dB), SSIM (3-D), NRMSE (over the reference's std) and MSE of ``x`` against ``reference``.

    With ``fit``, ``x`` is first mapped to ``a x + b`` (least squares over the whole volume).
    ``data_range`` (PSNR peak, SSIM's L) defaults to the reference's max - min. The
    percentiles are over the complete, non-overlapping cubes of edge ``cube`` tiling the
    volume from its origin; a cube's SSIM is the mean of the volume's SSIM map over it, and
    its NRMSE uses the cube's own reference std. Raises TomocareError if either holds NaN or
    infinite values, or one of them is constant.
    """
    shape = tuple(reference.shape)
    if tuple(x.shape) != shape:
        raise TomocareError(f"{name}: shape {shape} differs from the volume's {tuple(x.shape)}")
    block = max(cube, (block // cube) * cube)
    moments = Moments()
    x_min, x_max = np.inf, -np.inf
    for blk in _blocks(shape, block):
        sl = blk.core
        xb, rb = _read(x, sl), _read(reference, sl)
        if not np.isfinite(rb).all():
            raise TomocareError(f"{name}: NaN or infinite values in the reference (first in block {_where(sl)})")
        if not np.isfinite(xb).all():
            raise TomocareError(f"{x_name}: NaN or infinite values (block {_where(sl)}), compared with {name}")
        moments = moments + Moments.of(xb, rb)
        x_min, x_max = min(x_min, float(xb.min())), max(x_max, float(xb.max()))
    if x_min == x_max:
        raise TomocareError(f"{x_name}: a constant volume (every voxel is {x_min:g}); nothing to compare with {name}")
    a, b = moments.fit() if fit else (1.0, 0.0)
    peak = float(moments.r_max - moments.r_min) if data_range is None else float(data_range)
    if not peak > 0:
        raise TomocareError(f"{name}: the reference is constant (data range 0)")

    pad = ssim_radius(SSIM_SIGMA)
    valid = tuple(slice(pad, n - pad) for n in shape)
    sq_err, ssim_sum, ssim_count = 0.0, 0.0, 0
    per_cube: dict[str, list[float]] = {m: [] for m in METRICS}
    for blk in _blocks(shape, block, pad):
        sl, ctx = blk.core, blk.read
        xc, rc = a * _read(x, ctx) + b, _read(reference, ctx)
        core = _local(sl, ctx)
        err = (xc[core] - rc[core]) ** 2
        sq_err += float(err.sum())
        smap = ssim_map(xc, rc, peak) if min(xc.shape) > 1 else np.ones_like(xc)
        inside = _intersect(sl, valid)  # volume coordinates of the core's voxels that count for SSIM
        if inside is not None:
            ssim_sum += float(smap[_local(inside, ctx)].sum())
            ssim_count += int(np.prod([i.stop - i.start for i in inside]))
        for cube_blk in _blocks(tuple(s.stop - s.start for s in sl), cube):
            cube_sl = cube_blk.core
            if any(c.stop - c.start < cube for c in cube_sl):
                continue
            vol_sl = tuple(slice(s.start + c.start, s.start + c.stop) for s, c in zip(sl, cube_sl))
            cube_err = float(err[cube_sl].mean())
            r_cube = rc[_local(vol_sl, ctx)]
            per_cube["mse"].append(cube_err)
            per_cube["psnr_db"].append(_psnr(peak, cube_err))
            per_cube["nrmse"].append(float(np.sqrt(cube_err) / r_cube.std()) if r_cube.std() > 0 else float("nan"))
            cube_in = _intersect(vol_sl, valid)
            if cube_in is not None:
                per_cube["ssim"].append(float(smap[_local(cube_in, ctx)].mean()))
    n = int(np.prod(shape))
    whole_mse = sq_err / n
    whole = {
        "psnr_db": _psnr(peak, whole_mse),
        "ssim": ssim_sum / ssim_count if ssim_count else float("nan"),
        "nrmse": float(np.sqrt(whole_mse) / moments.reference_std) if moments.reference_std > 0 else float("nan"),
        "mse": whole_mse,
    }
    percentiles = {
        m: {f"p{q}": _percentile(v, q) for q in PERCENTILES} for m, v in per_cube.items() if len(v)
    }
    return ReferenceMetrics(whole, percentiles, cube, len(per_cube["mse"]), (a, b) if fit else None, peak, per_cube)


def _percentile(values: list[float], q: float) -> float:
    """``np.nanpercentile`` where infinite values (the PSNR of an identical cube) are values too:
    between two equal infinities, or at one, no interpolation (which gives NaN and a warning)."""
    with np.errstate(invalid="ignore"):
        value = float(np.nanpercentile(values, q))
    if np.isnan(value) and not np.isnan(values).all():
        value = float(np.nanpercentile(values, q, method="nearest"))
    return value


def _psnr(peak: float, mse: float) -> float:
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


def _intersect(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...] | None:
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return out if all(s.stop > s.start for s in out) else None


def _where(sl: tuple[slice, ...]) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in sl) + "]"
