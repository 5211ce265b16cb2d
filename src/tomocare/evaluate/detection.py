"""Downstream detection as in cryo-CARE (Buchholz et al. 2019, §2.3): threshold, components, P/R.

Normalise the volume, threshold it at Otsu's level, label connected components, keep those
of at least ``s`` voxels and take their centroids as detections; compare them with the known
particle positions (one-to-one matches within a radius) over a sweep of ``s``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from tomocare.errors import TomocareError

POLARITIES = ("bright", "dark")
# The simulator (tomocare.simulate) renders particles as positive density added to the ice:
# they are brighter than their surroundings, hence the default polarity "bright". Tomograms
# in the usual cryo-ET convention (protein dark) need polarity "dark".
DEFAULT_POLARITY = "bright"


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the histogram cut that maximises the between-class variance."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        raise ValueError("Otsu needs at least two distinct finite values")
    counts, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)  # class below the cut after bin i
    w1 = v.size - w0
    s0 = np.cumsum(counts * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (np.sum(counts * centres) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    i = int(np.argmax(between))
    return float(edges[i + 1])


@dataclass(frozen=True)
class Components:
    """Connected components above the threshold: centroids (z, y, x voxels) and sizes (voxels)."""

    centroids: np.ndarray  # (n, 3)
    sizes: np.ndarray  # (n,)
    threshold: float  # in units of the volume's standard deviation, after the polarity flip


def find_components(volume: np.ndarray, *, polarity: str = DEFAULT_POLARITY) -> Components:
    """Normalise (zero mean, unit std; negated for ``dark``), Otsu-threshold and label (6-connected)."""
    if polarity not in POLARITIES:
        raise TomocareError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    v = np.asarray(volume, np.float32)
    std = float(v.std())
    if not std > 0:
        raise TomocareError("detection: the volume is constant")
    v = (v - np.float32(v.mean())) / np.float32(std)
    if polarity == "dark":
        v = -v
    t = otsu_threshold(v)
    labels, n = ndimage.label(v > t)
    flat = labels.ravel()
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    sizes = np.bincount(lab, minlength=n + 1)[1:]
    coords = np.unravel_index(fg, v.shape)
    centroids = np.stack(
        [np.bincount(lab, weights=c, minlength=n + 1)[1:] / np.maximum(sizes, 1) for c in coords], axis=1
    ) if n else np.zeros((0, 3))
    return Components(centroids, sizes, t)


def read_particles(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, 3: z, y, x voxels) and radii (voxels) from a ``NAME_particles.csv`` of the simulator."""
    path = Path(path)
    if not path.is_file():
        raise TomocareError(f"{path}: no such file")
    with open(path) as f:
        header = f.readline().strip().split(",")
    missing = [c for c in ("z", "y", "x", "radius") if c not in header]
    if missing:
        raise TomocareError(f"{path}: missing column {missing[0]!r} (expected z,y,x,radius[,kind] in voxels)")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.size == 0:
        return np.zeros((0, 3)), np.zeros(0)
    cols = [header.index(c) for c in ("z", "y", "x")]
    return data[:, cols], data[:, header.index("radius")]


def match(detections: np.ndarray, positions: np.ndarray, radii: np.ndarray) -> int:
    """True positives: one-to-one, nearest pairs first, a detection within the particle's radius."""
    if len(detections) == 0 or len(positions) == 0:
        return 0
    tree_p, tree_d = cKDTree(positions), cKDTree(detections)
    dist = tree_p.sparse_distance_matrix(tree_d, float(radii.max()), output_type="ndarray")
    dist = dist[dist["v"] <= radii[dist["i"]]]
    used_p, used_d, tp = set(), set(), 0
    for k in np.argsort(dist["v"], kind="stable"):
        i, j = int(dist["i"][k]), int(dist["j"][k])
        if i not in used_p and j not in used_d:
            used_p.add(i)
            used_d.add(j)
            tp += 1
    return tp


def size_thresholds(sizes: np.ndarray, count: int = 24) -> np.ndarray:
    """Minimum-size thresholds for the sweep: 1 voxel up to the largest component, geometrically spaced."""
    top = int(sizes.max()) if len(sizes) else 1
    return np.unique(np.round(np.geomspace(1, max(top, 1), count)).astype(int))


def detection_curve(
    volume: np.ndarray,
    positions: np.ndarray,
    radii: np.ndarray,
    *,
    polarity: str = DEFAULT_POLARITY,
    match_radius: float | None = None,
    max_voxels: int | None = None,
    thresholds: np.ndarray | None = None,
) -> dict:
    """Precision, recall and F1 of the detections for each minimum component size.

    A detection is the centroid of a component of at least ``s`` (and, if given, at most
    ``max_voxels``) voxels; it matches a particle within ``match_radius`` voxels (default:
    the particle's own radius). Returns the curve, the best F1 with its size threshold, the
    Otsu threshold (in standard deviations) and the polarity used.
    """
    comps = find_components(volume, polarity=polarity)
    radii = np.full(len(positions), float(match_radius)) if match_radius is not None else np.asarray(radii, float)
    keep_max = comps.sizes <= max_voxels if max_voxels is not None else np.ones(len(comps.sizes), bool)
    sweep = size_thresholds(comps.sizes) if thresholds is None else np.asarray(thresholds, int)
    rows = []
    for s in sweep:
        sel = (comps.sizes >= s) & keep_max
        tp = match(comps.centroids[sel], positions, radii)
        n_det = int(sel.sum())
        precision = tp / n_det if n_det else 0.0
        recall = tp / len(positions) if len(positions) else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"min_voxels": int(s), "detections": n_det, "true_positives": tp,
                     "precision": precision, "recall": recall, "f1": f1})
    best = max(rows, key=lambda r: r["f1"]) if rows else {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    return {
        "polarity": polarity,
        "otsu_threshold_std": comps.threshold,
        "n_particles": int(len(positions)),
        "n_components": int(len(comps.sizes)),
        "min_voxels": [r["min_voxels"] for r in rows],
        "precision": [r["precision"] for r in rows],
        "recall": [r["recall"] for r in rows],
        "f1": [r["f1"] for r in rows],
        "rows": rows,
        "best": best,
    }
