"""Classical denoising filters on one tile: median, Gaussian, Butterworth low-pass, NAD.

Every filter is local: the output at a voxel depends on the input within ``halo()`` voxels.
The block engine reads a block plus that halo (reflect-padded at the volume borders, i.e.
scipy's ``mode="mirror"``), calls the filter and keeps the core, so block-wise results equal
the whole-volume references (see :func:`reference`) up to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import fft as scipy_fft
from scipy import ndimage, signal

from tomocare.errors import TomocareError

# method -> default parameters
DEFAULTS: dict[str, dict[str, float]] = {
    "median": {"size": 3},
    "gaussian": {"sigma": 1.5},
    "lowpass": {"cutoff": 0.3, "order": 4},
    "nad": {"iterations": 10, "time_step": 0.1, "contrast": 0.5, "scale": 1.0, "sigma": 1.0, "rho": 1.0},
}
GAUSSIAN_TRUNCATE = 4.0  # as scipy's default: kernel radius int(4 * sigma + 0.5)
LOWPASS_TOLERANCE = 1e-2  # the truncated low-pass kernel keeps all but this share of its L1 mass
LOWPASS_GRID = 128  # grid on which the kernel is computed (its largest possible edge)
NAD_TRUNCATE = 2.0  # radius of NAD's inner Gaussians: int(2 * sigma + 0.5)
NAD_MAX_TIME_STEP = 0.15  # the explicit scheme is stable below about 1/6 in 3-D


@dataclass(frozen=True)
class Filter:
    """A validated filter: ``method`` and its complete ``params`` (defaults filled in)."""

    method: str
    params: dict = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.method, tuple(sorted(self.params.items()))))

    def halo(self) -> int:
        """Voxels of context needed on each side so that the core of a tile is exact."""
        p = self.params
        if self.method == "median":
            return int(p["size"]) // 2
        if self.method == "gaussian":
            return gaussian_radius(p["sigma"], GAUSSIAN_TRUNCATE)
        if self.method == "lowpass":
            return butterworth_kernel(p["cutoff"], p["order"]).shape[0] // 2
        return int(p["iterations"]) * nad_step_radius(p["sigma"], p["rho"])

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """The filtered tile, float32, same shape; exact at least ``halo()`` voxels from its faces."""
        tile = np.asarray(tile, dtype=np.float32)
        p = self.params
        if self.method == "median":
            return ndimage.median_filter(tile, size=int(p["size"]), mode="mirror")
        if self.method == "gaussian":
            return ndimage.gaussian_filter(tile, p["sigma"], mode="mirror", truncate=GAUSSIAN_TRUNCATE)
        if self.method == "lowpass":
            kernel = butterworth_kernel(p["cutoff"], p["order"])
            return signal.fftconvolve(tile, kernel, mode="same").astype(np.float32)
        return nad(tile, **p)

    def describe(self) -> dict:
        return {"method": self.method, "params": dict(self.params), "halo": self.halo()}


def make_filter(method: str, **params) -> Filter:
    """A filter by name with validated parameters; unknown names or values raise TomocareError."""
    if method not in DEFAULTS:
        raise TomocareError(f"{method}: unknown filter (choose from {', '.join(DEFAULTS)})")
    unknown = sorted(set(params) - set(DEFAULTS[method]))
    if unknown:
        raise TomocareError(f"{method}: unknown parameter {unknown[0]!r} (valid: {', '.join(DEFAULTS[method])})")
    full = {**DEFAULTS[method], **{k: v for k, v in params.items() if v is not None}}
    try:
        full = {k: float(v) for k, v in full.items()}
    except (TypeError, ValueError):
        raise TomocareError(f"{method}: parameters must be numbers, got {params}") from None
    _validate(method, full)
    for key in ("size", "iterations", "order"):
        if key in full:
            full[key] = int(full[key])
    return Filter(method, full)


def _validate(method: str, p: dict[str, float]) -> None:
    def bad(name: str, rule: str) -> TomocareError:
        return TomocareError(f"{method}: {name} must be {rule}, got {p[name]:g}")

    if method == "median" and (p["size"] < 1 or p["size"] % 2 != 1):
        raise bad("size", "an odd integer >= 1")
    if method == "gaussian" and not 0 < p["sigma"] <= 20:
        raise bad("sigma", "in (0, 20] voxels")
    if method == "lowpass":
        if not 0.1 <= p["cutoff"] < 1:
            raise bad("cutoff", "a fraction of Nyquist in [0.1, 1)")
        if p["order"] < 1 or p["order"] != int(p["order"]) or p["order"] > 8:
            raise bad("order", "an integer in [1, 8]")
    if method == "nad":
        if p["iterations"] < 1 or p["iterations"] != int(p["iterations"]) or p["iterations"] > 200:
            raise bad("iterations", "an integer in [1, 200]")
        if not 0 < p["time_step"] <= NAD_MAX_TIME_STEP:
            raise bad("time_step", f"in (0, {NAD_MAX_TIME_STEP}] (explicit scheme stability)")
        for name in ("contrast", "scale"):
            if not p[name] > 0:
                raise bad(name, "positive")
        for name in ("sigma", "rho"):
            if not 0 < p[name] <= 5:
                raise bad(name, "in (0, 5] voxels")


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

    best, best_norm = None, None
    for r, s in ((0, 1), (0, 2), (1, 2)):
        c = cross(rows[r], rows[s])
        norm = c[0] ** 2 + c[1] ** 2 + c[2] ** 2
        if best is None:
            best, best_norm = c, norm
        else:
            take = norm > best_norm
            best = [np.where(take, x, y) for x, y in zip(c, best)]
            best_norm = np.where(take, norm, best_norm)
    scale = np.sqrt(sum(x.astype(np.float32) ** 2 for x in (rows[0][0], rows[1][1], rows[2][2], rows[0][1], rows[0][2], rows[1][2])))
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


# -- whole-volume references ------------------------------------------------------------------


def reference(f: Filter, volume: np.ndarray) -> np.ndarray:
    """The whole-volume result a block-wise run must reproduce.

    Gaussian and median: scipy on the whole volume with ``mode="mirror"``. Low-pass and NAD:
    the filter on the volume reflect-padded by its halo once, then cropped.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if f.method in ("gaussian", "median"):
        return f(volume)
    h = f.halo()
    padded = np.pad(volume, h, mode="reflect")
    return f(padded)[(slice(h, -h),) * volume.ndim] if h else f(padded)
