"""Restoration quality against a reference: PSNR, NRMSE and MSE after an optional affine fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NRMSE_NORMALIZATIONS = ("std", "euclidean", "min-max", "mean")


def affine_fit(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``a * x + b`` with ``a, b`` minimising the squared error to ``reference``.

    Denoisers and references differ in scale and offset (normalisation, missing DC): the fit
    makes the comparison about structure, as in the cryo-CARE and 3-D denoising literature.
    """
    x64, r64 = x.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    xc = x64 - x64.mean()
    var = float(xc @ xc)
    a = float(xc @ (r64 - r64.mean())) / var if var > 0 else 0.0
    b = r64.mean() - a * x64.mean()
    return (a * x.astype(np.float64) + b).reshape(x.shape)


def mse(x: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean((x.astype(np.float64) - reference.astype(np.float64)) ** 2))


def psnr(x: np.ndarray, reference: np.ndarray, *, fit: bool = True, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; the peak is ``data_range``, by default the reference's max - min."""
    if fit:
        x = affine_fit(x, reference)
    peak = float(reference.max() - reference.min()) if data_range is None else float(data_range)
    error = mse(x, reference)
    return float(10 * np.log10(peak**2 / error)) if error > 0 else float("inf")


def nrmse(x: np.ndarray, reference: np.ndarray, *, fit: bool = True, normalization: str = "std") -> float:
    """Root-mean-square error divided by the reference's standard deviation (``"std"``).

    ``normalization`` may also be ``"euclidean"`` (root mean square of the reference),
    ``"min-max"`` or ``"mean"``, as in scikit-image's ``normalized_root_mse``.
    """
    if fit:
        x = affine_fit(x, reference)
    r = reference.astype(np.float64)
    denominator = {
        "std": lambda: r.std(),
        "euclidean": lambda: np.sqrt(np.mean(r * r)),
        "min-max": lambda: r.max() - r.min(),
        "mean": lambda: r.mean(),
    }
    if normalization not in denominator:
        raise ValueError(f"normalization must be one of {NRMSE_NORMALIZATIONS}, got {normalization!r}")
    return float(np.sqrt(mse(x, reference)) / denominator[normalization]())


@dataclass(frozen=True)
class Moments:
    """Sums over voxels of ``x``, ``r`` (the reference) and their products: mergeable block by block.

    Enough for the least-squares affine fit and for the mean squared error after it, without
    a second pass over the data.
    """

    n: int = 0
    sx: float = 0.0
    sr: float = 0.0
    sxx: float = 0.0
    srr: float = 0.0
    sxr: float = 0.0
    r_min: float = np.inf
    r_max: float = -np.inf

    @classmethod
    def of(cls, x: np.ndarray, r: np.ndarray) -> Moments:
        x64, r64 = np.asarray(x, np.float64).ravel(), np.asarray(r, np.float64).ravel()
        if x64.size == 0:
            return cls()
        return cls(x64.size, x64.sum(), r64.sum(), float(x64 @ x64), float(r64 @ r64), float(x64 @ r64),
                   r64.min(), r64.max())

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.sx + other.sx, self.sr + other.sr, self.sxx + other.sxx,
                       self.srr + other.srr, self.sxr + other.sxr, min(self.r_min, other.r_min),
                       max(self.r_max, other.r_max))

    def fit(self) -> tuple[float, float]:
        """Scale and offset ``(a, b)`` minimising ``sum((a x + b - r)^2)``."""
        mx, mr = self.sx / self.n, self.sr / self.n
        var = self.sxx - self.n * mx * mx
        a = (self.sxr - self.n * mx * mr) / var if var > 0 else 0.0
        return float(a), float(mr - a * mx)

    @property
    def reference_std(self) -> float:
        mr = self.sr / self.n
        return float(np.sqrt(max(self.srr / self.n - mr * mr, 0.0)))
