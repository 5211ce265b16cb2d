"""RELION 5 tomogram sets (``tomograms.star``): half tomograms in, denoised tomograms back out.

RELION 5's reconstruction with "half tomograms" writes a ``data_global`` table with one row per
tomogram: ``rlnTomoName``, ``rlnTomoReconstructedTomogramHalf1/Half2`` (paths relative to the
project directory, where RELION runs), ``rlnTomoTiltSeriesPixelSize`` and
``rlnTomoTomogramBinning`` (the tomogram's voxel size is their product). Downstream jobs read
denoised tomograms from ``rlnTomoReconstructedTomogramDenoised``. The STAR file is read and written
with the ``starfile`` package (``pip install -e '.[relion]'`` from a clone).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tomocare.errors import TomocareError

log = logging.getLogger(__name__)

NAME, HALF1, HALF2 = "rlnTomoName", "rlnTomoReconstructedTomogramHalf1", "rlnTomoReconstructedTomogramHalf2"
PIXEL, BINNING = "rlnTomoTiltSeriesPixelSize", "rlnTomoTomogramBinning"
DENOISED = "rlnTomoReconstructedTomogramDenoised"


def is_star(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".star"


def _starfile():
    try:
        import starfile
    except ImportError:
        raise TomocareError("reading RELION STAR files needs the starfile package: pip install -e '.[relion]' "
                            "(from a clone of tomocare)") from None
    return starfile


def _blocks(path: Path) -> dict:
    """Every data block of the STAR file, by name; one-line errors for files that are not STAR."""
    if not path.is_file():
        raise TomocareError(f"{path}: no such STAR file")
    try:
        blocks = _starfile().read(path, always_dict=True)
    except Exception as err:  # starfile raises whatever pandas meets in a broken file
        raise TomocareError(f"{path}: not a readable STAR file ({type(err).__name__}: {err})") from None
    if "global" not in blocks or not hasattr(blocks["global"], "columns"):
        raise TomocareError(f"{path}: no data_global table (a RELION 5 tomograms.star has one)")
    return blocks


def project_dir(star: Path) -> Path:
    """The RELION project directory of a STAR file: the folder above ``JobType/jobNNN/``, as
    RELION writes it, else the STAR file's own folder."""
    star = star.resolve()
    if re.fullmatch(r"job\d+", star.parent.name):
        return star.parents[2]
    return star.parent


def _resolve(value: str, star: Path, bases: list[Path]) -> Path:
    """A path from the STAR file, absolute, or relative to the project directory as RELION reads it
    (then to the STAR file's folder, for a set that was moved)."""
    path = Path(value)
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return base / path
    raise TomocareError(f"{star}: {value} not found relative to the project directory {bases[0]} or {star.parent}")


def read_pairs(star: str | Path) -> tuple[list, dict[str, float]]:
    """The even/odd pairs (``discover.Pair``) of a RELION 5 tomogram set, and each tomogram's
    voxel size in Å from the STAR file (tilt-series pixel size times binning), where it says."""
    from tomocare.io.discover import Pair

    star = Path(star)
    table = _blocks(star)["global"]
    missing = [c for c in (NAME, HALF1, HALF2) if c not in table.columns]
    if missing:
        raise TomocareError(
            f"{star}: no {', '.join(missing)} column (reconstruct with half tomograms in RELION 5 first)"
        )
    bases = [project_dir(star), star.resolve().parent]
    pairs, voxel_sizes = [], {}
    for _, row in table.iterrows():
        name = str(row[NAME])
        pairs.append(Pair(name, _resolve(str(row[HALF1]), star, bases), _resolve(str(row[HALF2]), star, bases)))
        if PIXEL in table.columns:
            voxel_sizes[name] = float(row[PIXEL]) * (float(row[BINNING]) if BINNING in table.columns else 1.0)
    if not pairs:
        raise TomocareError(f"{star}: the data_global table has no tomograms")
    return pairs, voxel_sizes


def write_denoised(star: str | Path, out: str | Path, denoised: dict[str, Path]) -> Path:
    """A copy of the tomogram set ``star`` at ``out`` whose ``rlnTomoReconstructedTomogramDenoised``
    names the denoised tomogram of every row in ``denoised`` (relative to the project directory when
    it lies inside it, as RELION writes paths; else absolute). Other rows keep what they had, or
    ``None``; every other column and block is kept."""
    from tomocare.io.atomic import atomic_path

    star, out = Path(star), Path(out)
    blocks = _blocks(star)
    table = blocks["global"].copy()
    project = project_dir(star)

    def relion_path(path: Path) -> str:
        path = path.resolve()
        return str(path.relative_to(project)) if path.is_relative_to(project) else str(path)

    old = table[DENOISED] if DENOISED in table.columns else ["None"] * len(table)
    table[DENOISED] = [relion_path(denoised[str(n)]) if str(n) in denoised else str(o)
                       for n, o in zip(table[NAME], old)]
    blocks["global"] = table
    with atomic_path(out, overwrite=True) as tmp:
        _starfile().write(blocks, tmp)
    return out
