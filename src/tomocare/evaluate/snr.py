"""SNR estimated from paired signal and background boxes (NT2C, Li et al. 2022, Eq. 5)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from tomocare.errors import TomocareError

BOX_COLUMNS = ("pair", "kind", "z0", "y0", "x0", "z1", "y1", "x1")
BOXES_HELP = (
    "CSV with a header line and columns pair,kind,z0,y0,x0,z1,y1,x1: each pair (any label) has one row of "
    "kind 'signal' and one of kind 'background'; boxes are voxel index ranges [z0,z1) x [y0,y1) x [x0,x1)."
)

Box = tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class BoxPair:
    name: str
    signal: Box
    background: Box


def read_boxes(path: str | os.PathLike) -> list[BoxPair]:
    """Read box pairs from CSV (see ``BOXES_HELP``); malformed files raise TomocareError."""
    path = Path(path)
    if not path.is_file():
        raise TomocareError(f"{path}: no such file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(c not in rows[0] for c in BOX_COLUMNS):
        raise TomocareError(f"{path}: expected the columns {','.join(BOX_COLUMNS)}")
    pairs: dict[str, dict[str, Box]] = {}
    for line, row in enumerate(rows, start=2):
        kind = row["kind"].strip().lower()
        if kind not in ("signal", "background"):
            raise TomocareError(f"{path}: line {line}: kind must be 'signal' or 'background', got {row['kind']!r}")
        try:
            box = cast(Box, tuple(int(row[c]) for c in BOX_COLUMNS[2:]))
        except (TypeError, ValueError):
            raise TomocareError(f"{path}: line {line}: box corners must be integers") from None
        entry = pairs.setdefault(row["pair"].strip(), {})
        if kind in entry:
            raise TomocareError(f"{path}: line {line}: pair {row['pair']!r} has two {kind} boxes")
        entry[kind] = box
    out = []
    for name, entry in pairs.items():
        if len(entry) != 2:
            raise TomocareError(f"{path}: pair {name!r} needs one signal and one background box")
        out.append(BoxPair(name, entry["signal"], entry["background"]))
    return out


def check_box(box: Box, shape: tuple[int, ...], label: str) -> tuple[slice, ...]:
    """The box as slices; TomocareError if it is empty or reaches outside ``shape``."""
    lo, hi = box[:3], box[3:]
    if any(a < 0 or b > n or b <= a for a, b, n in zip(lo, hi, shape)) or np.prod(np.subtract(hi, lo)) < 8:
        raise TomocareError(f"{label}: box z{lo[0]}:{hi[0]} y{lo[1]}:{hi[1]} x{lo[2]}:{hi[2]} is outside the "
                            f"volume of shape {tuple(shape)} or holds fewer than 8 voxels")
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def estimate_snr(volume, pairs: list[BoxPair], *, source: str = "boxes") -> dict:
    """SNR from paired boxes, following NT2C (Li et al., Bioinformatics 2022), Eq. 5:

    ``SNR = (1/N) sum_i (var(s_i) - var(b_i)) / var(b_i)``

    with ``s_i`` the voxels of the i-th signal box (specimen plus noise) and ``b_i`` those of
    its paired background box (noise only), so ``var(s_i) - var(b_i)`` estimates the signal
    variance and ``var(b_i)`` the noise variance near it. ``volume`` is an array-like; only
    the boxes are read. Returns the linear SNR, the same in dB (10 log10, None if not
    positive) and the per-pair values.
    """
    shape = tuple(volume.shape)
    if not pairs:
        raise TomocareError(f"{source}: no box pairs")
    ratios = []
    for p in pairs:
        s = np.asarray(volume[check_box(p.signal, shape, f"{source}: pair {p.name} signal")], np.float64)
        b = np.asarray(volume[check_box(p.background, shape, f"{source}: pair {p.name} background")], np.float64)
        vb = float(b.var())
        if not vb > 0:
            raise TomocareError(f"{source}: pair {p.name}: the background box is constant (variance 0)")
        ratios.append((float(s.var()) - vb) / vb)
    snr = float(np.mean(ratios))
    return {"snr": snr, "snr_db": float(10 * np.log10(snr)) if snr > 0 else None, "n_pairs": len(ratios),
            "per_pair": {p.name: r for p, r in zip(pairs, ratios)}}
