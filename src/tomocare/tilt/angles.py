"""Tilt angles (IMOD ``.tlt``), acquisition order, and the even/odd split of tilts.

A ``.tlt`` file holds one angle in degrees per line, in the order of the sections of the
tilt series. The acquisition order, when known, comes as an order list: a CSV of lines
``rank,angle`` (rank 1 = acquired first), as RELION writes it; ``ranks`` below are 0-based
acquisition positions, one per section of the stack.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.atomic import write_atomic


def read_tlt(path: str | os.PathLike) -> np.ndarray:
    """Angles in degrees, one per section, from an IMOD ``.tlt`` file (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise TomocareError(f"{path}: no such angles file")
    values: list[float] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        try:
            values.append(float(text.split()[0]))
        except ValueError:
            raise TomocareError(f"{path}: line {number} is not an angle in degrees: {text[:40]!r}") from None
    if not values:
        raise TomocareError(f"{path}: no angles")
    angles = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(angles)) or np.any(np.abs(angles) >= 90):
        raise TomocareError(f"{path}: angles must be finite and within (-90, 90) degrees")
    return angles


def write_tlt(path: str | os.PathLike, angles: np.ndarray) -> None:
    """Write angles in degrees, one per line (IMOD ``.tlt``)."""
    write_atomic(path, "".join(f"{a:.2f}\n" for a in np.asarray(angles, dtype=float)))


def tilt_range_angles(max_angle: float = 60.0, step: float = 3.0) -> np.ndarray:
    """Angles from -max_angle to +max_angle in ``step`` degrees, in stack (ascending) order."""
    n = int(round(2 * max_angle / step)) + 1
    return np.linspace(-max_angle, max_angle, n)


def dose_symmetric_ranks(angles: np.ndarray, group: int = 2) -> np.ndarray:
    """Acquisition ranks of a dose-symmetric scheme (Hagen et al. 2017), one per angle.

    The tilt nearest 0° first, then ``group`` tilts on the positive side, ``group`` on the
    negative side, and so on outwards; one side continues alone when the other is used up.
    """
    angles = np.asarray(angles, dtype=float)
    start = int(np.argmin(np.abs(angles)))
    by_angle = np.argsort(angles, kind="stable")
    pos_in_sorted = int(np.flatnonzero(by_angle == start)[0])
    higher = list(by_angle[pos_in_sorted + 1 :])
    lower = list(by_angle[:pos_in_sorted][::-1])
    order = [start]
    while higher or lower:
        for side in (higher, lower):
            order += side[:group]
            del side[:group]
    ranks = np.empty(len(angles), dtype=np.int64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(len(angles))
    return ranks


def write_order(path: str | os.PathLike, angles: np.ndarray, ranks: np.ndarray) -> None:
    """Write an order list: lines ``rank,angle`` in acquisition order, rank from 1."""
    rows = sorted(zip(np.asarray(ranks).tolist(), np.asarray(angles, dtype=float).tolist()))
    write_atomic(path, "".join(f"{r + 1},{a:.2f}\n" for r, a in rows))


def read_order(path: str | os.PathLike, angles: np.ndarray) -> np.ndarray:
    """0-based acquisition ranks of the stack's sections, matching the order list's angles to ``angles``."""
    path = Path(path)
    if not path.is_file():
        raise TomocareError(f"{path}: no such order list")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rank, angle = (float(v) for v in line.replace(",", " ").split()[:2])
        except ValueError:
            raise TomocareError(f"{path}: line {number} is not 'rank,angle': {line.strip()[:40]!r}") from None
        rows.append((rank, angle))
    angles = np.asarray(angles, dtype=float)
    if len(rows) != len(angles):
        raise TomocareError(f"{path}: {len(rows)} tilts in the order list, {len(angles)} in the angles")
    rows.sort()
    listed = np.array([a for _, a in rows])
    ranks = np.full(len(angles), -1, dtype=np.int64)
    for rank, angle in enumerate(listed):
        free = np.flatnonzero(ranks < 0)
        best = free[np.argmin(np.abs(angles[free] - angle))]
        if abs(angles[best] - angle) > 0.5:
            raise TomocareError(f"{path}: angle {angle:g} matches no tilt of the stack (within 0.5°)")
        ranks[best] = rank
    return ranks


def even_odd_indices(n: int, ranks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack indices of the even and odd halves: alternate tilts in acquisition order (else by index).

    Both are returned in ascending stack order, so each half is still sorted by angle when the
    stack is.
    """
    order = np.arange(n) if ranks is None else np.argsort(np.asarray(ranks), kind="stable")
    return np.sort(order[0::2]), np.sort(order[1::2])
