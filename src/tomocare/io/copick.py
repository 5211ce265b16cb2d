"""Tomograms of a copick project on a local filesystem: where to read them, where a new one goes.

A copick project is a JSON config (``config_type`` ``filesystem``) naming an ``overlay_root`` (written)
and optionally a ``static_root`` (read-only; the overlay is used when absent), as ``local:///path``,
``file:///path`` or a plain path. Tomograms are OME-Zarr 0.4 stores on zarr v2 at::

    ROOT/ExperimentRuns/RUN/VoxelSpacing{size:.3f}/TOMO_TYPE.zarr

A tomogram type is looked up in the overlay first, then in the static root; new tomograms are written
to the overlay (tomocare's ``ome-zarr-0.4`` format). Even/odd halves are two tomogram types named by the
user. Remote roots (s3://, the data portal) are not supported.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tomocare.errors import TomocareError

#: Names tomocare gives a new tomogram type: copick skips names with a leading dot or "features".
_TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True)
class CopickProject:
    """A copick project's local roots: ``overlay`` (written) and ``static`` (read; the overlay when absent)."""

    config: Path
    overlay: Path
    static: Path

    @classmethod
    def open(cls, config: str | os.PathLike) -> CopickProject:
        """Read a copick config file; refuse a missing or malformed one, or a root that is not local."""
        path = Path(config)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TomocareError(f"{path}: no such copick config file") from None
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise TomocareError(f"{path}: not a readable copick config (JSON: {' '.join(str(err).split())})") from None
        if not isinstance(data, dict):
            raise TomocareError(f"{path}: a copick config is a JSON object")
        kind = data.get("config_type", "filesystem")
        if kind != "filesystem":
            raise TomocareError(f"{path}: config_type {kind!r} is not supported (only local 'filesystem' projects)")
        if not data.get("overlay_root"):
            raise TomocareError(f"{path}: copick config has no overlay_root")
        overlay = _local_root(path, "overlay_root", data["overlay_root"])
        static = _local_root(path, "static_root", data["static_root"]) if data.get("static_root") else overlay
        return cls(path, overlay, static)

    def runs(self) -> list[str]:
        """Run names in either root, sorted (hidden entries skipped, as copick does)."""
        names = {p.name for root in {self.overlay, self.static} for p in _children(root / "ExperimentRuns")}
        return sorted(names)

    def voxel_spacing_dir(self, root: Path, run: str, voxel_size: float) -> Path:
        return root / "ExperimentRuns" / run / f"VoxelSpacing{voxel_size:.3f}"

    def tomogram(self, run: str, voxel_size: float, tomo_type: str) -> Path:
        """The store of an existing tomogram (overlay first, then static); a missing run, voxel spacing or
        type is a ``TomocareError`` listing what the project has."""
        if run not in self.runs():
            raise TomocareError(f"{self.config}: no run {run!r} in the copick project ({_listing(self.runs())})")
        spacings = self._spacings(run)
        name = f"VoxelSpacing{voxel_size:.3f}"
        if name not in spacings:
            found = ", ".join(s.removeprefix("VoxelSpacing") for s in sorted(spacings)) or "none"
            raise TomocareError(f"{self.config}: run {run!r} has no voxel spacing {voxel_size:.3f} Å (found: {found})")
        for root in (self.overlay, self.static):
            store = self.voxel_spacing_dir(root, run, voxel_size) / f"{tomo_type}.zarr"
            if store.is_dir():
                return store
        types = sorted({p.name.removesuffix(".zarr") for root in {self.overlay, self.static}
                        for p in _children(self.voxel_spacing_dir(root, run, voxel_size))
                        if p.name.endswith(".zarr") and "features" not in p.name})
        raise TomocareError(f"{self.config}: run {run!r} at {voxel_size:.3f} Å has no tomogram type {tomo_type!r} "
                            f"({_listing(types)})")

    def output(self, run: str, voxel_size: float, tomo_type: str) -> Path:
        """Where a new tomogram type is written: in the overlay root."""
        if not _TYPE_NAME.fullmatch(tomo_type) or "features" in tomo_type:
            raise TomocareError(f"{tomo_type!r}: a new tomogram type is letters, digits and '-' (not 'features')")
        return self.voxel_spacing_dir(self.overlay, run, voxel_size) / f"{tomo_type}.zarr"

    def _spacings(self, run: str) -> set[str]:
        return {p.name for root in {self.overlay, self.static}
                for p in _children(root / "ExperimentRuns" / run) if p.name.startswith("VoxelSpacing")}


def _local_root(config: Path, key: str, url: object) -> Path:
    if not isinstance(url, str):
        raise TomocareError(f"{config}: {key} must be a string")
    for prefix in ("local://", "file://"):
        if url.startswith(prefix):
            url = url[len(prefix):]
            break
    else:
        if "://" in url:
            raise TomocareError(f"{config}: {key} {url!r} is not local (only local:// and file:// roots)")
    return Path(url).expanduser()


def _children(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _listing(names: list[str]) -> str:
    if not names:
        return "none found"
    shown = ", ".join(names[:10])
    return f"found: {shown}{', ...' if len(names) > 10 else ''}"
