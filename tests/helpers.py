"""Small builders shared by tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from tomocare.testing import write_mrc


def write_test_mrc(path: Path, data: np.ndarray, *, voxel_size=(3.3, 3.2, 3.1), origin=(30.0, 20.0, 10.0),
                   extended_header: bytes = b"", exttyp: bytes = b"") -> Path:
    """An MRC file (``tomocare.testing.write_mrc``) with a distinct voxel size and origin per axis, (z, y, x)."""
    return write_mrc(path, data, voxel_size=voxel_size, origin=origin, extended_header=extended_header, exttyp=exttyp)


def check_reference_reader(path, shape, voxel, levels=3, version="0.4") -> None:
    """What the reference reader, the ome-zarr package, reads: the format version, axes, units, per-level
    scales in Å, level shapes."""
    pytest.importorskip("ome_zarr")  # the test extra installs it
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    location = parse_url(str(path))
    assert location is not None and location.fmt.version == version
    (node,) = list(Reader(location)())
    assert any(isinstance(spec, Multiscales) for spec in node.specs)
    assert node.metadata["axes"] == [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"]
    transforms = node.metadata["coordinateTransformations"]
    assert len(node.data) == len(transforms) == levels
    for level, (data, steps) in enumerate(zip(node.data, transforms)):
        assert steps[0] == {"type": "scale", "scale": [voxel * 2**level] * 3}
        assert data.shape == tuple(s // 2**level for s in shape)
    assert np.isfinite(np.asarray(node.data[-1])).all()


def check_zarr_format(path: Path, zarr_format: int) -> None:
    """The zarr format of an OME-Zarr store; for v2 the data portal's layout."""
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == zarr_format
    if zarr_format == 2:  # the portal's layout: blosc, chunk keys nested with "/", multiscales in .zattrs
        meta = json.loads((path / "0" / ".zarray").read_text())
        assert meta["compressor"]["id"] == "blosc" and meta["dimension_separator"] == "/"
        attrs = json.loads((path / ".zattrs").read_text())
        assert attrs["multiscales"][0]["version"] == "0.4" and "ome" not in attrs
        assert not (path / "zarr.json").exists()
    else:
        assert group.attrs["ome"]["version"] == "0.5"
