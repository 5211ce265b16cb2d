"""Find even/odd half-tomogram pairs in a directory, by the naming conventions users have."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.volume import Volume, open_volume

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".mrc", ".rec", ".map")
_EVEN = re.compile(r"^(?P<stem>.+?)[_.-](?P<tag>even|evn)(?P<ext>\.\w+)$", re.I)  # NAME_even, AreTomo3 _EVN
_HALF1 = re.compile(r"^(?P<stem>.+?)[_.-]?(?P<tag>half1)(?P<rest>.*)$", re.I)  # RELION 5 *half1*
_SECOND_HALF = re.compile(r"([_.-](odd)\.\w+$)|(half2)", re.I)


@dataclass(frozen=True)
class Pair:
    """One tomogram given as two half tomograms with independent noise."""

    name: str
    even: Path
    odd: Path


@dataclass(frozen=True)
class VolumePair:
    """An opened pair: both halves checked to agree in shape and voxel size."""

    name: str
    even: Volume
    odd: Volume


def open_pair(pair: Pair, *, images: bool = False, first: str = "its even half") -> VolumePair:
    """Open both halves lazily; refuse halves of different shapes or voxel sizes.

    ``images``: 2-D data (:func:`~tomocare.io.volume.open_volume`). ``first`` names the first
    volume in messages (supervised pairs: "its input")."""
    even, odd = open_volume(pair.even, images=images), open_volume(pair.odd, images=images)
    if even.shape != odd.shape:
        raise TomocareError(f"{pair.odd}: shape {odd.shape} differs from {first} {pair.even} {even.shape}")
    if not np.allclose(even.voxel_size, odd.voxel_size, rtol=1e-3):
        raise TomocareError(
            f"{pair.odd}: voxel size {odd.voxel_size} differs from {first} {pair.even} {even.voxel_size}"
        )
    return VolumePair(pair.name, even, odd)


def check_voxel_sizes(pairs: list[VolumePair], *, allow_mixed: bool = False) -> float:
    """The common voxel size (x, Å) of a dataset; mixed sizes (>1% apart) are an error unless allowed.

    0 (a header that does not say) is a size like any other: all 0 is 0, unknown; 0 beside 10 is mixed.
    """
    sizes = {p.name: p.even.voxel_size[-1] for p in pairs}
    first = next(iter(sizes.values()))
    odd_ones = {n: v for n, v in sizes.items() if abs(v - first) > 0.01 * max(abs(v), abs(first))}
    if odd_ones and not allow_mixed:
        detail = ", ".join(f"{n}: {v:g} Å" for n, v in sorted(sizes.items()))
        raise TomocareError(f"tomograms have different voxel sizes ({detail}); use --allow-mixed to proceed anyway")
    return first


@dataclass
class Discovery:
    pairs: list[Pair] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)  # look like a half, but have no partner
    voxel_sizes: dict[str, float] = field(default_factory=dict)  # Å, where a RELION STAR file says

    def check_voxel_sizes(self, pairs: list[VolumePair]) -> None:
        """Warn where a half's header and the STAR file disagree on the voxel size (the header's is used)."""
        for pair in pairs:
            said = self.voxel_sizes.get(pair.name)
            header = pair.even.voxel_size[-1]
            if said and abs(header - said) > 0.01 * said:
                log.warning("%s: header voxel size %g Å differs from the STAR file's %g Å; the header's is used",
                            pair.even.path, header, said)

    def describe_unmatched(self) -> str:
        return "halves without a partner: " + ", ".join(str(p) for p in self.unmatched)


def _volumes(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in VOLUME_SUFFIXES)


def _partner_name(name: str) -> tuple[str, str] | None:
    """(pair name, partner file name) if ``name`` is a first half, else None."""
    m = _EVEN.match(name)
    if m:
        odd_tag = "ODD" if m["tag"].isupper() else ("Odd" if m["tag"][0].isupper() else "odd")
        sep = name[len(m["stem"])]
        return m["stem"], f"{m['stem']}{sep}{odd_tag}{m['ext']}"
    m = _HALF1.match(name)
    if m:
        partner = name[: m.start("tag")] + ("HALF2" if m["tag"].isupper() else "half2") + m["rest"]
        stem = (m["stem"] + m["rest"]).rsplit(".", 1)[0]
        return stem, partner
    return None


def discover_pairs(directory: str | os.PathLike, *, allow_empty: bool = False) -> Discovery:
    """Even/odd pairs in ``directory``, or in a RELION 5 ``tomograms.star`` (``io.relion``); raise
    TomocareError if there are none (unless ``allow_empty``: a watched directory fills later).

    Conventions: ``NAME_even`` / ``NAME_odd`` (any case, so AreTomo3's ``_EVN`` / ``_ODD``
    too), RELION 5 ``*half1*`` / ``*half2*``, and Warp's ``even/`` and ``odd/`` sub-folders with
    the same file names; extensions ``.mrc``, ``.rec``, ``.map``.
    """
    from tomocare.io import relion

    directory = Path(directory)
    if relion.is_star(directory):
        pairs, voxel_sizes = relion.read_pairs(directory)
        return Discovery(pairs=pairs, voxel_sizes=voxel_sizes)
    if not directory.is_dir():
        raise TomocareError(f"{directory}: not a directory")
    found = Discovery()
    files = _volumes(directory)
    by_lower = {p.name.lower(): p for p in files}
    used: set[Path] = set()
    for path in files:
        match = _partner_name(path.name)
        if match is None:
            continue
        name, partner = match
        other = by_lower.get(partner.lower())
        if other is None:
            found.unmatched.append(path)
            continue
        found.pairs.append(Pair(name, path, other))
        used.update((path, other))
    for path in files:
        if path not in used and _SECOND_HALF.search(path.name):
            found.unmatched.append(path)
    even_dir, odd_dir = directory / "even", directory / "odd"
    if even_dir.is_dir() and odd_dir.is_dir():
        odd_files = {p.name: p for p in _volumes(odd_dir)}
        for path in _volumes(even_dir):
            if path.name in odd_files:
                found.pairs.append(Pair(path.stem, path, odd_files.pop(path.name)))
            else:
                found.unmatched.append(path)
        found.unmatched.extend(odd_files.values())
    names = [p.name for p in found.pairs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TomocareError(f"{directory}: several pairs are named {', '.join(duplicates)}")
    if not found.pairs and not allow_empty:
        detail = f"; {found.describe_unmatched()}" if found.unmatched else f" ({len(files)} volume files seen)"
        raise TomocareError(
            f"{directory}: no even/odd pairs found (expected NAME_even/NAME_odd, _EVN/_ODD, *half1*/*half2*, "
            f"or even/ and odd/ folders; extensions {', '.join(VOLUME_SUFFIXES)}){detail}"
        )
    found.pairs.sort(key=lambda p: p.name)
    return found
