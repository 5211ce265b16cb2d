"""Render a box of the phantom from its object tables, and the noise-free block of a tomogram.

The phantom is defined everywhere (also outside the volume), so a box with a halo needs no
padding. Each object is evaluated only on its bounding box clipped to the box being rendered.
Densities have smooth edges ``EDGE_VOXELS`` wide; gaussian lobes are separable products.
"""

from __future__ import annotations

import numpy as np

from tomocare.simulate.background import background, wedged_background
from tomocare.simulate.fourier import convolve, halo_padding, wedge_halo
from tomocare.simulate.objects import EDGE_VOXELS, LOBE_LEVELS, Phantom

_F32 = np.float32


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """3t² - 2t³ of ``t`` clipped to [0, 1] (in few passes: np.clip is slow)."""
    t = np.maximum(t, _F32(0.0))
    np.minimum(t, _F32(1.0), out=t)
    square = t * t
    t *= _F32(-2.0)
    t += _F32(3.0)
    t *= square
    return t


def _inside(depth: np.ndarray) -> np.ndarray:
    """Soft indicator of ``depth`` (voxels, > 0 inside) with an edge ``EDGE_VOXELS`` wide."""
    return _smoothstep(depth * (1.0 / EDGE_VOXELS) + 0.5)


def _window(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, shape: tuple[int, ...]):
    """The part of the box covered by [lo, hi): slices and global coordinates per axis."""
    start = np.maximum(np.ceil(lo - origin).astype(int), 0)
    stop = np.minimum(np.floor(hi - origin).astype(int) + 1, shape)
    if np.any(stop <= start):
        return None, None
    slices = tuple(slice(a, b) for a, b in zip(start, stop))
    coords = [np.arange(a, b, dtype=_F32) + _F32(o) for a, b, o in zip(start, stop, origin)]
    return slices, coords


def _grid(coords, centre):
    """Broadcastable (z, y, x) offsets from ``centre``."""
    dz, dy, dx = (c - _F32(p) for c, p in zip(coords, centre))
    return dz[:, None, None], dy[None, :, None], dx[None, None, :]


def _add_vesicles(out: np.ndarray, ph: Phantom, origin: np.ndarray) -> None:
    for v in ph.vesicles:
        slices, coords = _window(v["lo"], v["hi"], origin, out.shape)
        if slices is None:
            continue
        dz, dy, dx = _grid(coords, v["centre"])
        d = np.sqrt(dz * dz + dy * dy + dx * dx)
        half = v["thickness"] / 2
        out[slices] += v["density"] * _inside(half - np.abs(d - v["radius"]))


def _add_filaments(out: np.ndarray, ph: Phantom, origin: np.ndarray) -> None:
    """Tubes along polyline segments; overlapping segments combine by maximum."""
    if len(ph.segments) == 0:
        return
    layer = np.zeros_like(out)
    for s in ph.segments:
        slices, coords = _window(s["lo"], s["hi"], origin, out.shape)
        if slices is None:
            continue
        axis = s["p1"] - s["p0"]
        length = float(np.linalg.norm(axis))
        u = axis / max(length, 1e-6)
        dz, dy, dx = _grid(coords, s["p0"])
        along = dz * u[0] + dy * u[1] + dx * u[2]
        t = np.clip(along, 0.0, length)
        d = np.sqrt(np.maximum(dz * dz + dy * dy + dx * dx - 2 * t * along + t * t, 0.0))
        if s["inner"] > 0:  # hollow tube: a wall between the inner and outer radius, no end caps
            mid, half = (s["radius"] + s["inner"]) / 2, (s["radius"] - s["inner"]) / 2
            density = _inside(half - np.abs(d - mid)) * _inside(np.minimum(along + 0.5, length + 0.5 - along))
        else:  # solid tube with round caps, so that consecutive segments join smoothly
            density = _inside(s["radius"] - d)
        np.maximum(layer[slices], s["density"] * density, out=layer[slices])
    out += layer


def _add_particles(out: np.ndarray, ph: Phantom, origin: np.ndarray) -> None:
    """Each particle: a sum of gaussian lobes mapped to density by a smooth threshold."""
    lo_level, hi_level = LOBE_LEVELS
    for p in ph.particles:
        slices, coords = _window(p["lo"], p["hi"], origin, out.shape)
        if slices is None:
            continue
        f = None
        for cz, cy, cx, sigma, weight in p["lobes"]:
            if weight <= 0:
                continue
            gz, gy, gx = (np.exp(-((c - _F32(m)) ** 2) / _F32(2 * sigma * sigma)) for c, m in zip(coords, (cz, cy, cx)))
            lobe = (weight * gz)[:, None, None] * gy[None, :, None] * gx[None, None, :]
            f = lobe if f is None else f + lobe
        if f is None:  # no lobe of positive weight: nothing to add
            continue
        out[slices] += p["density"] * _smoothstep((f - lo_level) / (hi_level - lo_level))


def render_objects(ph: Phantom, origin, shape) -> np.ndarray:
    """Vesicles, filaments and particles on the box [origin, origin + shape), float32."""
    origin = np.asarray(origin, dtype=np.int64)
    out = np.zeros(tuple(int(n) for n in shape), _F32)
    _add_vesicles(out, ph, origin)
    _add_filaments(out, ph, origin)
    _add_particles(out, ph, origin)
    return out


def render(ph: Phantom, origin, shape) -> np.ndarray:
    """The phantom's density (background and objects) on the box [origin, origin + shape)."""
    out = render_objects(ph, origin, shape)
    out += background(ph.slab, origin, out.shape)
    return out


def clean_block(ph: Phantom, origin, shape, halo: int, tilt_range: float) -> np.ndarray:
    """The noise-free reconstruction of one block.

    Objects: render the block plus ``halo`` along z and x (grown to a fast FFT size) and
    convolve with the wedge kernel of radius ``halo`` (exact, see :mod:`.fourier`). Background, and the objects'
    mean density inside the ice: filtered analytically (see :mod:`.background`).
    """
    origin = np.asarray(origin, dtype=np.int64)
    shape = tuple(int(n) for n in shape)
    pads = [halo_padding(n, h) for n, h in zip(shape, wedge_halo(halo))]
    before = np.array([p[0] for p in pads])
    padded = render_objects(ph, origin - before, tuple(n + sum(p) for n, p in zip(shape, pads)))
    # the objects' mean inside the ice is a slab-shaped step: move it to the exact part
    z = np.arange(padded.shape[0], dtype=np.float64) + origin[0] - before[0]
    padded -= (ph.object_density * ph.slab.profile(z)).astype(_F32)[:, None, None]
    out = convolve(padded, "wedge", tilt_range, halo)[tuple(slice(b, b + n) for b, n in zip(before, shape))]
    out += wedged_background(ph.slab, ph.shape[0], tilt_range, origin, shape, ph.object_density)
    return out
