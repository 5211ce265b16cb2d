"""Classical denoising filters on one tile: median, Gaussian, Butterworth low-pass, NAD.

Every filter is local: the output at a voxel depends on the input within ``halo`` voxels.
The block engine reads a block plus that halo (reflect-padded at the volume borders, i.e.
scipy's ``mode="mirror"``), calls the filter and keeps the core, so block-wise results equal
the whole-volume references (:meth:`Filter.reference`) up to float32 rounding.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import ClassVar

import numpy as np
from scipy import fft as scipy_fft
from scipy import ndimage, signal

from tomocare.baselines.params import NAD_MAX_TIME_STEP, param
from tomocare.errors import TomocareError
from tomocare.predict.operator import BlockOperator, TileFunction, averaged

GAUSSIAN_TRUNCATE = 4.0  # as scipy's default: kernel radius int(4 * sigma + 0.5)
LOWPASS_TOLERANCE = 1e-2  # the truncated low-pass kernel keeps all but this share of its L1 mass
LOWPASS_GRID = 128  # grid on which the kernel is computed (its largest possible edge)
NAD_TRUNCATE = 2.0  # radius of NAD's inner Gaussians: int(2 * sigma + 0.5)


@dataclass(frozen=True)
class Filter(BlockOperator):
    """A classical filter as a block operator: the sources (even, odd) averaged, then filtered.
    Each filter is a frozen class of its parameters, validated on construction."""

    method: ClassVar[str]

    @property
    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def identity(self) -> dict:
        return {"method": self.method, "params": self.params}

    def bytes_per_voxel(self, device: str) -> int:
        return 16  # the tile and a few float32 working copies

    def open(self) -> contextlib.AbstractContextManager[TileFunction]:
        return averaged(self)

    @abstractmethod
    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """The filtered tile, float32, same shape; exact at least ``halo`` voxels from its faces."""

    def reference(self, volume: np.ndarray) -> np.ndarray:
        """The whole-volume result a block-wise run must reproduce: the filter on the volume
        reflect-padded by its halo once, then cropped."""
        volume = np.asarray(volume, dtype=np.float32)
        h = self.halo
        padded = np.pad(volume, h, mode="reflect")
        return self(padded)[(slice(h, -h),) * volume.ndim] if h else self(padded)

    def _bad(self, name: str, rule: str) -> TomocareError:
        return TomocareError(f"{self.method}: {name} must be {rule}, got {getattr(self, name):g}")


@dataclass(frozen=True)
class Median(Filter):
    method: ClassVar[str] = "median"
    size: int = param("median", "size")

    def __post_init__(self) -> None:
        if self.size < 1 or self.size % 2 != 1:
            raise self._bad("size", "an odd integer >= 1")

    @property
    def halo(self) -> int:
        return self.size // 2

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        return ndimage.median_filter(np.asarray(tile, dtype=np.float32), size=self.size, mode="mirror")

    def reference(self, volume: np.ndarray) -> np.ndarray:
        return self(volume)  # scipy on the whole volume, mode "mirror": what reflect-padding tiles gives


@dataclass(frozen=True)
class Gaussian(Filter):
    method: ClassVar[str] = "gaussian"
    sigma: float = param("gaussian", "sigma")

    def __post_init__(self) -> None:
        if not 0 < self.sigma <= 20:
            raise self._bad("sigma", "in (0, 20] voxels")

    @property
    def halo(self) -> int:
        return gaussian_radius(self.sigma, GAUSSIAN_TRUNCATE)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(np.asarray(tile, dtype=np.float32), self.sigma, mode="mirror",
                                       truncate=GAUSSIAN_TRUNCATE)

    def reference(self, volume: np.ndarray) -> np.ndarray:
        return self(volume)


@dataclass(frozen=True)
class Lowpass(Filter):
    """Butterworth low-pass: ``cutoff`` a fraction of Nyquist, ``order`` its steepness."""

    method: ClassVar[str] = "lowpass"
    cutoff: float = param("lowpass", "cutoff")
    order: int = param("lowpass", "order")

    def __post_init__(self) -> None:
        if not 0.1 <= self.cutoff < 1:
            raise self._bad("cutoff", "a fraction of Nyquist in [0.1, 1)")
        if not 1 <= self.order <= 8:
            raise self._bad("order", "an integer in [1, 8]")
        butterworth_kernel(self.cutoff, self.order)  # a kernel too wide is refused here

    @property
    def halo(self) -> int:
        return butterworth_kernel(self.cutoff, self.order).shape[0] // 2

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        kernel = butterworth_kernel(self.cutoff, self.order)
        return signal.fftconvolve(np.asarray(tile, dtype=np.float32), kernel, mode="same").astype(np.float32)


@dataclass(frozen=True)
class NAD(Filter):
    """Non-linear anisotropic diffusion (:func:`nad`). ``scale`` is the data's standard deviation, the
    unit of ``contrast``: None means the input's, filled in by :meth:`bind` (1 on a bare tile)."""

    method: ClassVar[str] = "nad"
    iterations: int = param("nad", "iterations")
    time_step: float = param("nad", "time_step")
    contrast: float = param("nad", "contrast")
    scale: float | None = param("nad", "scale")
    sigma: float = param("nad", "sigma")
    rho: float = param("nad", "rho")

    def __post_init__(self) -> None:
        if not 1 <= self.iterations <= 200:
            raise self._bad("iterations", "an integer in [1, 200]")
        if not 0 < self.time_step <= NAD_MAX_TIME_STEP:
            raise self._bad("time_step", f"in (0, {NAD_MAX_TIME_STEP}] (explicit scheme stability)")
        for name in ("contrast", "scale"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise self._bad(name, "positive")
        for name in ("sigma", "rho"):
            if not 0 < getattr(self, name) <= 5:
                raise self._bad(name, "in (0, 5] voxels")

    @property
    def halo(self) -> int:
        return self.iterations * nad_step_radius(self.sigma, self.rho)

    def bind(self, volumes, *, strict: bool = False) -> NAD:
        if self.scale is not None:
            return self
        from dataclasses import replace

        from tomocare.io.volume import compute_stats

        return replace(self, scale=compute_stats(volumes[0]).std)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        return nad(tile, iterations=self.iterations, time_step=self.time_step, contrast=self.contrast,
                   scale=1.0 if self.scale is None else self.scale, sigma=self.sigma, rho=self.rho)


FILTERS: dict[str, type[Filter]] = {f.method: f for f in (Median, Gaussian, Lowpass, NAD)}
_INTEGERS = ("size", "iterations", "order")


def make_filter(method: str, **params: float | str | None) -> Filter:
    """A filter by name, parameters given as numbers or strings (``--param``); unknown names or bad
    values raise a one-line TomocareError."""
    if method not in FILTERS:
        raise TomocareError(f"{method}: unknown filter (choose from {', '.join(FILTERS)})")
    cls = FILTERS[method]
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise TomocareError(f"{method}: unknown parameter {unknown[0]!r} (valid: {', '.join(names)})")
    values = {}
    try:
        for key, value in params.items():
            if value is None:
                continue
            number = float(value)
            if key in _INTEGERS and number != int(number):
                raise TomocareError(f"{method}: {key} must be an integer, got {number:g}")
            values[key] = int(number) if key in _INTEGERS else number
    except (TypeError, ValueError, OverflowError):
        raise TomocareError(f"{method}: parameters must be numbers, got {params}") from None
    return cls(**values)


def gaussian_radius(sigma: float, truncate: float) -> int:
    """Radius of scipy's Gaussian kernel for ``sigma`` and ``truncate``."""
    return int(truncate * float(sigma) + 0.5)


# -- Butterworth low-pass ---------------------------------------------------------------------


@lru_cache(maxsize=16)
def butterworth_kernel(cutoff: float, order: int, tolerance: float = LOWPASS_TOLERANCE) -> np.ndarray:
    """The spatial kernel of the radial Butterworth low-pass ``1 / (1 + (f / fc)^(2 order))``.

    ``cutoff`` is ``fc`` as a fraction of Nyquist (0.5 cycles/voxel). The ideal kernel is the
    inverse FFT of the response on a grid large enough for it to decay; it is cut to the
    smallest cube (odd edge) that keeps all but ``tolerance`` of its absolute mass, and rescaled
    so that its sum (the gain at zero frequency) is 1. The kernel *is* the filter: block-wise
    and whole-volume results use the same one, so they agree exactly.
    """
    fc = 0.5 * float(cutoff)
    n = LOWPASS_GRID
    f, fr = np.fft.fftfreq(n).astype(np.float32), np.fft.rfftfreq(n).astype(np.float32)
    radius = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + fr[None, None, :] ** 2)
    response = 1.0 / (1.0 + (radius / np.float32(fc)) ** (2 * int(order)))
    kernel = np.fft.fftshift(scipy_fft.irfftn(response, s=(n, n, n))).astype(np.float64)
    c = n // 2
    absk = np.abs(kernel)
    total = absk.sum()
    for r in range(1, c):
        inside = absk[c - r : c + r + 1, c - r : c + r + 1, c - r : c + r + 1].sum()
        if total - inside <= tolerance * total:
            break
    else:
        raise TomocareError(f"lowpass: cutoff {cutoff:g} with order {order} needs a kernel wider than {n} voxels; "
                            "raise the cutoff or lower the order")
    cut = kernel[c - r : c + r + 1, c - r : c + r + 1, c - r : c + r + 1]
    cut = cut / cut.sum()
    cut.setflags(write=False)
    return cut.astype(np.float32)


# -- non-linear anisotropic diffusion ---------------------------------------------------------


def nad_step_radius(sigma: float, rho: float) -> int:
    """How far one NAD iteration reaches: pre-smoothing, gradient, tensor smoothing, update."""
    return gaussian_radius(sigma, NAD_TRUNCATE) + 1 + gaussian_radius(rho, NAD_TRUNCATE) + 1


def nad(
    tile: np.ndarray,
    *,
    iterations: int = 10,
    time_step: float = 0.1,
    contrast: float = 0.5,
    scale: float = 1.0,
    sigma: float = 1.0,
    rho: float = 1.0,
) -> np.ndarray:
    """Non-linear anisotropic diffusion after Frangakis & Hegerl (2001), explicit scheme.

    Each iteration builds the structure tensor ``J = G_rho * (grad u_sigma grad u_sigma^T)``
    (``u_sigma``: ``u`` smoothed by a Gaussian of ``sigma``), and from its eigenvalues
    ``mu1 >= mu2 >= mu3`` and eigenvectors a diffusion tensor ``D``:

    - edge-enhancing (EED) where the structure is plane-like or flat: diffusivity
      ``g(mu1) = 1 - exp(-3.31488 / (mu1 / K^2)^4)`` across the strongest gradient, 1 along
      the other two directions (flat noise is smoothed isotropically, edges are kept);
    - coherence-enhancing (CED) where it is line-like (``mu2 - mu3 > mu1 - mu2`` and
      ``mu1 > K^2``): diffusivity ``alpha`` across the line and
      ``alpha + (1 - alpha) exp(-K^4 / (mu1 - mu3)^2)`` along it (``alpha = 0.001``),

    then ``u += time_step * div(D grad u)`` (diagonal terms on half-voxel differences,
    off-diagonal terms on central differences). ``K = contrast * scale``: ``contrast`` in
    units of the data's standard deviation ``scale`` (the engine passes the volume's std), so
    the tile's own statistics are never used and tiles agree with the whole volume.
    """
    u = np.asarray(tile, dtype=np.float32).copy()
    k2 = np.float32((contrast * scale) ** 2)
    for _ in range(int(iterations)):
        d = _diffusion_tensor(u, k2, sigma, rho)
        u += np.float32(time_step) * _divergence(u, d)
    return u


def _diffusion_tensor(u: np.ndarray, k2: np.float32, sigma: float, rho: float) -> np.ndarray:
    """D (shape ``u.shape + (3, 3)``) from the structure tensor, as described in :func:`nad`."""
    smooth = ndimage.gaussian_filter(u, sigma, mode="nearest", truncate=NAD_TRUNCATE)
    grads = [ndimage.correlate1d(smooth, [-0.5, 0.0, 0.5], axis=a, mode="nearest") for a in range(3)]
    j = {(a, b): ndimage.gaussian_filter(grads[a] * grads[b], rho, mode="nearest", truncate=NAD_TRUNCATE)
         for a in range(3) for b in range(a, 3)}
    mu1, mu2, mu3 = _eigenvalues(j)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        g = 1.0 - np.exp(-3.31488 / np.maximum(mu1 / k2, 1e-12) ** 4)
        coherence = np.exp(-(k2**2) / np.maximum((mu1 - mu3) ** 2, 1e-30))
    alpha = np.float32(0.001)
    line = (mu2 - mu3 > mu1 - mu2) & (mu1 > k2)
    # EED: D = I + (g - 1) v1 v1^T.  CED: D = alpha I + (lambda3 - alpha) v3 v3^T.
    v = _eigenvector(j, np.where(line, mu3, mu1))
    base = np.where(line, alpha, np.float32(1)).astype(np.float32)
    weight = np.where(line, (1 - alpha) * coherence, g - 1).astype(np.float32)
    d = np.empty(u.shape + (3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            d[..., a, b] = weight * v[a] * v[b] + (base if a == b else 0)
            d[..., b, a] = d[..., a, b]
    return d


def _eigenvalues(j: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues (largest first, clipped at 0) of symmetric 3x3 fields, in closed form."""
    a00, a11, a22, a01, a02, a12 = (j[k] for k in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)))
    q = (a00 + a11 + a22) / 3
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p = np.sqrt((b00**2 + b11**2 + b22**2 + 2 * (a01**2 + a02**2 + a12**2)) / 6)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = (b00 * (b11 * b22 - a12**2) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02))
        r = np.where(p > 0, det / (2 * p**3), 0)
    phi = np.arccos(np.clip(r, -1, 1)) / 3
    e1 = q + 2 * p * np.cos(phi)
    e3 = q + 2 * p * np.cos(phi + np.float32(2 * np.pi / 3))
    e2 = 3 * q - e1 - e3
    return tuple(np.maximum(e, 0).astype(np.float32) for e in (e1, e2, e3))


def _eigenvector(j: dict, mu: np.ndarray) -> list[np.ndarray]:
    """A unit eigenvector for eigenvalue ``mu`` (zero where it is not unique to within rounding)."""
    rows = [[j[tuple(sorted((a, b)))] - (mu if a == b else 0) for b in range(3)] for a in range(3)]

    def cross(r, s):
        return [r[1] * s[2] - r[2] * s[1], r[2] * s[0] - r[0] * s[2], r[0] * s[1] - r[1] * s[0]]

    best = cross(rows[0], rows[1])
    best_norm = best[0] ** 2 + best[1] ** 2 + best[2] ** 2
    for r, s in ((0, 2), (1, 2)):
        c = cross(rows[r], rows[s])
        norm = c[0] ** 2 + c[1] ** 2 + c[2] ** 2
        take = norm > best_norm
        best = [np.where(take, x, y) for x, y in zip(c, best)]
        best_norm = np.where(take, norm, best_norm)
    scale = np.sqrt(sum(x.astype(np.float32) ** 2
                        for x in (rows[0][0], rows[1][1], rows[2][2], rows[0][1], rows[0][2], rows[1][2])))
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(best_norm > (1e-6 * scale**2) ** 2, 1 / np.sqrt(best_norm), 0).astype(np.float32)
    return [x * inv for x in best]


def _divergence(u: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``div(D grad u)``, zero on the outermost voxels of the tile (outside the exact core)."""
    out = np.zeros_like(u)
    inner = (slice(1, -1),) * 3
    for a in range(3):
        lo, hi, mid = ([slice(1, -1)] * 3 for _ in range(3))
        hi[a], lo[a] = slice(2, None), slice(None, -2)
        dh = 0.5 * (d[tuple(hi) + (a, a)] + d[inner + (a, a)])
        dl = 0.5 * (d[tuple(lo) + (a, a)] + d[inner + (a, a)])
        out[inner] += dh * (u[tuple(hi)] - u[inner]) - dl * (u[inner] - u[tuple(lo)])
    for a in range(3):
        for b in range(3):
            if a == b:
                continue
            # flux along a of D_ab * du/db, both as central differences
            du_b = np.zeros_like(u)
            hi, lo = [slice(None)] * 3, [slice(None)] * 3
            core = [slice(None)] * 3
            hi[b], lo[b], core[b] = slice(2, None), slice(None, -2), slice(1, -1)
            du_b[tuple(core)] = 0.5 * (u[tuple(hi)] - u[tuple(lo)])
            flux = d[..., a, b] * du_b
            hi, lo = [slice(1, -1)] * 3, [slice(1, -1)] * 3
            hi[a], lo[a] = slice(2, None), slice(None, -2)
            out[inner] += 0.5 * (flux[tuple(hi)] - flux[tuple(lo)])
    return out
