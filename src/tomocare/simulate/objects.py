"""The phantom's objects, drawn once from the seed as small tables.

Sizes are physical (Å) and converted to voxels with the voxel size; counts are number densities
per µm³ of ice times the ice volume, so a huge tomogram gets proportionally many objects (a
1024×4096×4096 volume at 10 Å holds about 0.5 M particles: tables of a few tens of MB).
Coordinates are in voxels, voxel ``i`` centred on coordinate ``i``. Every object row carries
its bounding box (``lo``, ``hi``) so that a block renders only the objects that touch it.

Contents, inside a slab of ice (normal to z, 70-80 % of the z extent):
vesicles (spherical membrane shells), filaments (actin-like solid tubes and a few hollow
microtubule-like tubes, gently curved polylines) and macromolecule-like particles of
``len(PARTICLE_KINDS)`` kinds, each a union of 1-3 gaussian lobes with a random orientation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from scipy.spatial import cKDTree

UM3 = 1e12  # Å³ in a µm³

ICE_FRACTION = (0.70, 0.80)  # slab thickness, fraction of the z extent
ICE_DENSITY = 0.3  # objects add about 1 on top of this
BACKGROUND_AMPLITUDE = 0.05  # std of the low-frequency background inside the ice
BACKGROUND_WAVELENGTH_A = (400.0, 2000.0)
BACKGROUND_WAVES = 12

VESICLES_PER_UM3 = 1000.0
VESICLE_RADIUS_A = (150.0, 600.0)
MEMBRANE_THICKNESS_A = (35.0, 50.0)
VESICLE_GAP_A = 30.0  # minimum distance between two membranes

FILAMENTS_PER_UM3 = 1500.0
SEGMENT_A = 100.0  # filaments are polylines of segments this long
ACTIN_RADIUS_A = (25.0, 40.0)
ACTIN_LENGTH_A = (500.0, 3000.0)
ACTIN_BEND_DEG = 4.0  # std of the direction change per segment
MICROTUBULE_FRACTION = 0.2
MICROTUBULE_RADII_A = (125.0, 85.0)  # outer, inner
MICROTUBULE_LENGTH_A = (1500.0, 5000.0)
MICROTUBULE_BEND_DEG = 1.0

PARTICLES_PER_UM3 = 40000.0

# name, share of particles, nominal radius range (Å), density,
# lobes as (offset (z, y, x) in units of the radius, sigma in units of the radius, weight)
_S3 = math.sqrt(3.0) / 2.0
PARTICLE_KINDS: tuple[tuple[str, float, tuple[float, float], float, tuple], ...] = (
    ("ribosome-like", 0.4, (70.0, 80.0), 1.0, (((0.0, 0.0, -0.3), 0.45, 1.0), ((0.0, 0.1, 0.55), 0.32, 0.9))),
    ("trimer", 0.2, (50.0, 60.0), 0.9, (((0.0, 0.0, 0.45), 0.3, 1.0), ((0.0, 0.45 * _S3, -0.225), 0.3, 1.0),
                                        ((0.0, -0.45 * _S3, -0.225), 0.3, 1.0))),
    ("barrel", 0.2, (55.0, 65.0), 1.0, (((-0.5, 0.0, 0.0), 0.35, 1.0), ((0.0, 0.0, 0.0), 0.35, 1.0),
                                        ((0.5, 0.0, 0.0), 0.35, 1.0))),
    ("small", 0.2, (30.0, 40.0), 0.8, (((0.0, 0.0, 0.0), 0.6, 1.0), ((0.35, 0.2, 0.0), 0.35, 0.6))),
)
MAX_LOBES = 3
LOBE_LEVELS = (0.3, 0.7)  # lobe sum -> density: 0 below the first, full above the second

EDGE_VOXELS = 1.5  # width of the smooth edges of every object
_MARGIN = EDGE_VOXELS + 1.0

VESICLE_DTYPE = np.dtype([("centre", "f4", 3), ("radius", "f4"), ("thickness", "f4"),
                          ("density", "f4"), ("lo", "f4", 3), ("hi", "f4", 3)])
SEGMENT_DTYPE = np.dtype([("p0", "f4", 3), ("p1", "f4", 3), ("radius", "f4"), ("inner", "f4"),
                          ("density", "f4"), ("lo", "f4", 3), ("hi", "f4", 3)])
PARTICLE_DTYPE = np.dtype([("centre", "f4", 3), ("radius", "f4"), ("kind", "i2"), ("density", "f4"),
                           ("lobes", "f4", (MAX_LOBES, 5)), ("lo", "f4", 3), ("hi", "f4", 3)])
PUBLIC_PARTICLE_DTYPE = np.dtype([("z", "f4"), ("y", "f4"), ("x", "f4"), ("radius", "f4"), ("kind", "i2")])


@dataclass(frozen=True)
class Slab:
    """The ice layer, z within ``half_thickness`` of ``centre_z``, and its faint background.

    The background is ``BACKGROUND_AMPLITUDE`` times a unit-variance sum of plane waves
    cos(k·r + phase). The slab is kept normal to z (no tilt) so that its wedge-filtered form
    stays separable (see :mod:`.background`).
    """

    centre_z: float
    half_thickness: float
    waves: np.ndarray  # (K, 3) wave vectors, radians per voxel, (z, y, x)
    phases: np.ndarray  # (K,)

    def profile(self, z: np.ndarray) -> np.ndarray:
        """Soft indicator of the ice along z (1 inside, 0 outside, edges ``EDGE_VOXELS`` wide)."""
        t = np.clip((self.half_thickness - np.abs(z - self.centre_z)) / EDGE_VOXELS + 0.5, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Phantom:
    """All a block needs to render itself: the slab and (a subset of) the object tables.

    ``object_density`` is the mean density the objects add inside the ice (from their
    analytic masses), so that the objects' slab-shaped mean can be filtered exactly.
    """

    shape: tuple[int, int, int]
    voxel_size: float
    slab: Slab
    vesicles: np.ndarray  # VESICLE_DTYPE
    segments: np.ndarray  # SEGMENT_DTYPE
    particles: np.ndarray  # PARTICLE_DTYPE
    object_density: float = 0.0

    def tables(self) -> dict[str, np.ndarray]:
        return {"vesicles": self.vesicles, "segments": self.segments, "particles": self.particles}

    def subset(self, **tables: Any) -> Phantom:
        return dataclasses.replace(self, **tables)

    def select(self, origin, shape) -> Phantom:
        """The objects whose bounding boxes touch the box [origin, origin + shape)."""
        return self.select_many([(origin, shape)])[0]

    def select_many(self, boxes) -> list[Phantom]:
        """:meth:`select` for each (origin, shape) of ``boxes``."""
        bounds = {k: (np.ascontiguousarray(t["lo"]), np.ascontiguousarray(t["hi"])) for k, t in self.tables().items()}
        out = []
        for origin, shape in boxes:
            lo = np.asarray(origin, np.float32)
            hi = lo + np.asarray(shape, np.float32)
            subsets = {}
            for key, table in self.tables().items():
                t_lo, t_hi = bounds[key]
                rows = np.flatnonzero((t_lo[:, 2] < hi[2]) & (t_hi[:, 2] > lo[2]))  # cheap first cut
                rows = rows[np.all(t_lo[rows] < hi, axis=1) & np.all(t_hi[rows] > lo, axis=1)]
                subsets[key] = table[rows]
            out.append(self.subset(**subsets))
        return out

    def particle_table(self) -> np.ndarray:
        """The public particle table: z, y, x (voxels), radius (voxels), kind."""
        out = np.empty(len(self.particles), PUBLIC_PARTICLE_DTYPE)
        for i, axis in enumerate("zyx"):
            out[axis] = self.particles["centre"][:, i]
        out["radius"] = self.particles["radius"]
        out["kind"] = self.particles["kind"]
        return out


KIND_NAMES = tuple(k[0] for k in PARTICLE_KINDS)


def make_phantom(
    shape: tuple[int, int, int], voxel_size: float, seed: int, kinds: tuple[str, ...] | None = None
) -> Phantom:
    """Draw every object of the phantom from ``seed`` (each class from its own stream).

    ``kinds`` (names of ``PARTICLE_KINDS``) keeps only those particles; everything else is the
    same phantom as without it (held-out particle kinds for generalisation tests)."""
    streams = np.random.SeedSequence(seed, spawn_key=(1,)).spawn(4)
    rng_slab, rng_ves, rng_fil, rng_par = (np.random.default_rng(s) for s in streams)
    slab = _draw_slab(rng_slab, shape, voxel_size)
    vesicles = _draw_vesicles(rng_ves, shape, voxel_size, slab)
    segments = _draw_filaments(rng_fil, shape, voxel_size, slab)
    particles = _draw_particles(rng_par, shape, voxel_size, slab, vesicles)
    if kinds is not None:
        unknown = sorted(set(kinds) - set(KIND_NAMES))
        if unknown:
            raise ValueError(f"unknown particle kinds {unknown} (known: {', '.join(KIND_NAMES)})")
        particles = particles[np.isin(particles["kind"], [KIND_NAMES.index(k) for k in kinds])]
    phantom = Phantom(cast(tuple[int, int, int], tuple(shape)), float(voxel_size), slab, vesicles, segments, particles)
    ice = float(np.sum(slab.profile(np.arange(shape[0], dtype=np.float64)))) * shape[1] * shape[2]
    mass = sum(float(m.sum()) for m in masses(phantom).values())
    return dataclasses.replace(phantom, object_density=mass / max(ice, 1.0))


def masses(phantom: Phantom) -> dict[str, np.ndarray]:
    """Integrated density of every row of every object table (voxel units), from its shape."""
    v, s, p = phantom.vesicles, phantom.segments, phantom.particles
    r, half = v["radius"].astype(float), v["thickness"] / 2.0
    length = np.linalg.norm(s["p1"] - s["p0"], axis=1)
    return {
        "vesicles": v["density"] * 4 / 3 * np.pi * ((r + half) ** 3 - (r - half) ** 3),
        "segments": s["density"] * np.pi * (s["radius"] ** 2 - s["inner"] ** 2) * length,
        "particles": p["density"] * np.array(_unit_masses())[p["kind"]] * p["radius"].astype(float) ** 3,
    }


@functools.lru_cache(maxsize=1)
def _unit_masses() -> tuple[float, ...]:
    """Volume of each particle kind at radius 1 (numerically, on a fine grid)."""
    lobes, support = _kind_templates()
    radius = 16.0
    out = []
    for k in range(len(PARTICLE_KINDS)):
        half = int(np.ceil(support[k] * radius)) + 1
        axis = np.arange(-half, half + 1, dtype=float)
        z, y, x = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
        f = sum(w * np.exp(-((z - cz * radius) ** 2 + (y - cy * radius) ** 2 + (x - cx * radius) ** 2)
                           / (2 * (s * radius) ** 2)) for cz, cy, cx, s, w in lobes[k] if w > 0)
        t = np.clip((f - LOBE_LEVELS[0]) / (LOBE_LEVELS[1] - LOBE_LEVELS[0]), 0.0, 1.0)
        out.append(float(np.sum(t * t * (3 - 2 * t))) / radius**3)
    return tuple(out)


def _count(rng: np.random.Generator, expected: float) -> int:
    """``expected`` rounded up or down at random: proportional to volume, low variance."""
    n = math.floor(expected)
    return n + int(rng.random() < expected - n)


def _ice_voxels(shape, slab: Slab) -> float:
    return 2.0 * slab.half_thickness * shape[1] * shape[2]


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _draw_slab(rng: np.random.Generator, shape, voxel_size: float) -> Slab:
    nz = shape[0]
    thickness = rng.uniform(*ICE_FRACTION) * nz
    centre_z = (nz - 1) / 2 + rng.uniform(-0.03, 0.03) * nz
    low, high = np.log(BACKGROUND_WAVELENGTH_A)
    wavelength = np.exp(rng.uniform(low, high, BACKGROUND_WAVES)) / voxel_size
    waves = _unit_vectors(rng, BACKGROUND_WAVES) * (2 * np.pi / wavelength)[:, None]
    phases = rng.uniform(0, 2 * np.pi, BACKGROUND_WAVES)
    return Slab(centre_z, thickness / 2, waves, phases)


def _in_slab_z(rng, slab: Slab, y: np.ndarray, x: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """z positions uniform across the ice at (y, x), keeping ``margin`` from its surfaces."""
    reach = np.maximum(slab.half_thickness - margin, 0.0)
    return slab.centre_z + rng.uniform(-1.0, 1.0, len(y)) * reach


def _draw_vesicles(rng, shape, voxel_size: float, slab: Slab) -> np.ndarray:
    thick = rng.uniform(*MEMBRANE_THICKNESS_A) / voxel_size
    r_fit = slab.half_thickness - thick - _MARGIN  # largest vesicle the ice holds
    r_min, r_max = (min(r / voxel_size, r_fit) for r in VESICLE_RADIUS_A)
    n = _count(rng, VESICLES_PER_UM3 / UM3 * voxel_size**3 * _ice_voxels(shape, slab))
    if r_fit < 5.0 or n == 0:
        return np.empty(0, VESICLE_DTYPE)
    radius = np.exp(rng.uniform(math.log(r_min), math.log(r_max), n))  # small ones more common
    thickness = thick * rng.uniform(0.9, 1.1, n)
    y, x = rng.uniform(0, shape[1] - 1, n), rng.uniform(0, shape[2] - 1, n)
    z = _in_slab_z(rng, slab, y, x, radius + thickness / 2 + _MARGIN)
    centre = np.stack([z, y, x], axis=1)
    # drop the later of two vesicles whose membranes would touch
    keep = np.ones(n, bool)
    gap = 1.1 * thick + VESICLE_GAP_A / voxel_size
    i, j = cKDTree(centre).query_pairs(2 * r_max + gap, output_type="ndarray").reshape(-1, 2).T
    close = np.linalg.norm(centre[i] - centre[j], axis=1) < radius[i] + radius[j] + gap
    keep[np.maximum(i, j)[close]] = False
    t = np.empty(int(keep.sum()), VESICLE_DTYPE)
    t["centre"], t["radius"], t["thickness"] = centre[keep], radius[keep], thickness[keep]
    t["density"] = 1.0
    reach = (radius + thickness / 2 + _MARGIN)[keep, None]
    t["lo"], t["hi"] = centre[keep] - reach, centre[keep] + reach
    return t


def _draw_filaments(rng, shape, voxel_size: float, slab: Slab) -> np.ndarray:
    n = _count(rng, FILAMENTS_PER_UM3 / UM3 * voxel_size**3 * _ice_voxels(shape, slab))
    tube = rng.random(n) < MICROTUBULE_FRACTION
    radius = np.where(tube, MICROTUBULE_RADII_A[0], rng.uniform(*ACTIN_RADIUS_A, n)) / voxel_size
    inner = np.where(tube, MICROTUBULE_RADII_A[1] / voxel_size, 0.0)
    length = np.where(tube, rng.uniform(*MICROTUBULE_LENGTH_A, n), rng.uniform(*ACTIN_LENGTH_A, n))
    bend = np.radians(np.where(tube, MICROTUBULE_BEND_DEG, ACTIN_BEND_DEG))
    density = np.where(tube, 0.9, 0.8)
    step = SEGMENT_A / voxel_size
    # mid-points in the ice; directions nearly parallel to it (elevation ~ N(0, 5°))
    y, x = rng.uniform(0, shape[1] - 1, n), rng.uniform(0, shape[2] - 1, n)
    z = _in_slab_z(rng, slab, y, x, radius + _MARGIN)
    elev, azim = np.radians(rng.normal(0, 5, n)), rng.uniform(0, 2 * np.pi, n)
    d = np.stack([np.sin(elev), np.cos(elev) * np.sin(azim), np.cos(elev) * np.cos(azim)], axis=1)
    # grow two walks from each mid-point, in lock-step, each half the filament's length
    start = np.concatenate([np.stack([z, y, x], 1)] * 2)
    direction = np.concatenate([d, -d])
    steps = np.ceil(np.concatenate([length, length]) / 2 / SEGMENT_A).astype(int)
    walk_bend, walk_r = np.concatenate([bend, bend]), np.concatenate([radius, radius])
    n_steps = int(steps.max(initial=0))
    points = np.empty((2 * n, n_steps + 1, 3))
    points[:, 0] = start
    for s in range(n_steps):
        turn = rng.standard_normal(direction.shape) * walk_bend[:, None]
        turn[:, 0] *= 0.3  # bend mostly within the plane of the ice
        direction = direction + turn
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        nxt = points[:, s] + step * direction
        off = nxt[:, 0] - slab.centre_z  # bounce off the ice surfaces
        out = np.abs(off) > np.maximum(slab.half_thickness - walk_r - _MARGIN, 0.0)
        direction[out, 0] = -np.sign(off[out]) * np.abs(direction[out, 0])
        points[:, s + 1] = points[:, s] + step * direction
    walk, seg = np.nonzero(np.arange(n_steps)[None, :] < steps[:, None])
    fil = walk % max(n, 1)
    t = np.empty(len(walk), SEGMENT_DTYPE)
    t["p0"], t["p1"] = points[walk, seg], points[walk, seg + 1]
    t["radius"], t["inner"], t["density"] = radius[fil], inner[fil], density[fil]
    reach = (radius[fil] + _MARGIN)[:, None]
    t["lo"] = np.minimum(t["p0"], t["p1"]) - reach
    t["hi"] = np.maximum(t["p0"], t["p1"]) + reach
    inside = np.all(t["hi"] > 0, axis=1) & np.all(t["lo"] < np.array(shape) - 1, axis=1)
    return t[inside]


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3) rotation matrices, uniform over SO(3) (from normalised gaussian quaternions)."""
    q = rng.standard_normal((n, 4))
    w, a, b, c = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)], -1),
        np.stack([2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)], -1),
        np.stack([2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)], -1),
    ], axis=1)


def _kind_templates() -> tuple[np.ndarray, np.ndarray]:
    """Lobes of every kind as (kinds, MAX_LOBES, 5) and their support radius (units of R)."""
    lobes = np.zeros((len(PARTICLE_KINDS), MAX_LOBES, 5))
    for k, (*_, kind_lobes) in enumerate(PARTICLE_KINDS):
        for j, (offset, sigma, weight) in enumerate(kind_lobes):
            lobes[k, j] = (*offset, sigma, weight)
    # a point is outside the support when every lobe adds < LOBE_LEVELS[0] / MAX_LOBES
    w = np.maximum(lobes[..., 4], 1e-9)
    reach = np.linalg.norm(lobes[..., :3], axis=-1) + lobes[..., 3] * np.sqrt(
        2 * np.log(np.maximum(w * MAX_LOBES / LOBE_LEVELS[0], 1.0)))
    return lobes, reach.max(axis=1)


def _draw_particles(rng, shape, voxel_size: float, slab: Slab, vesicles: np.ndarray) -> np.ndarray:
    n = _count(rng, PARTICLES_PER_UM3 / UM3 * voxel_size**3 * _ice_voxels(shape, slab))
    share = np.array([k[1] for k in PARTICLE_KINDS])
    kind = rng.choice(len(PARTICLE_KINDS), size=n, p=share / share.sum())
    r_lo, r_hi = (np.array([k[2][i] for k in PARTICLE_KINDS]) / voxel_size for i in (0, 1))
    radius = rng.uniform(r_lo[kind], r_hi[kind])
    templates, support = _kind_templates()
    reach = support[kind] * radius + _MARGIN
    y, x = rng.uniform(0, shape[1] - 1, n), rng.uniform(0, shape[2] - 1, n)
    centre = np.stack([_in_slab_z(rng, slab, y, x, reach), y, x], axis=1)
    rot = _random_rotations(rng, n)
    keep = np.ones(n, bool)
    if n and len(vesicles):  # not through a membrane: test the (up to) 3 nearest vesicles
        far = float(vesicles["radius"].max() + vesicles["thickness"].max() + radius.max() + 2.0)
        dist, idx = cKDTree(vesicles["centre"]).query(centre, k=3, distance_upper_bound=far)
        # a missing neighbour has index len(vesicles) and distance inf: it never collides
        v_radius = np.append(vesicles["radius"], 0.0)[idx]
        v_half = np.append(vesicles["thickness"] / 2, 0.0)[idx]
        keep &= np.all(np.abs(dist - v_radius) > radius[:, None] + v_half + 1.0, axis=1)
    if n:  # not into each other: drop the later of two overlapping particles
        tree = cKDTree(centre, balanced_tree=False, compact_nodes=False)
        i, j = tree.query_pairs(2 * radius.max(), output_type="ndarray").reshape(-1, 2).T
        close = np.linalg.norm(centre[i] - centre[j], axis=1) < 0.9 * (radius[i] + radius[j])
        keep[j[close]] = False
    centre, radius, kind, rot, reach = centre[keep], radius[keep], kind[keep], rot[keep], reach[keep]
    t = np.empty(len(centre), PARTICLE_DTYPE)
    t["centre"], t["radius"], t["kind"] = centre, radius, kind
    t["density"] = np.array([k[3] for k in PARTICLE_KINDS])[kind]
    lobes = templates[kind].copy()  # offsets and sigmas in units of R, then in voxels
    lobes[..., :3] = centre[:, None, :] + np.einsum("nij,nlj->nli", rot, lobes[..., :3]) * radius[:, None, None]
    lobes[..., 3] *= radius[:, None]
    t["lobes"] = lobes
    t["lo"], t["hi"] = centre - reach[:, None], centre + reach[:, None]
    return t
