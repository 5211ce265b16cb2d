"""Small builders shared by tests: MRC files written with mrcfile itself."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np


def write_test_mrc(
    path: Path,
    data: np.ndarray,
    *,
    voxel_size=(3.3, 3.2, 3.1),
    origin=(30.0, 20.0, 10.0),
    extended_header: bytes = b"",
    exttyp: bytes = b"",
) -> Path:
    """An MRC file with voxel size and origin given as (z, y, x)."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = tuple(reversed(voxel_size))
        mrc.header.origin = tuple(reversed(origin))
        if extended_header:
            mrc.set_extended_header(np.frombuffer(extended_header, dtype="V1"))
            mrc.header.exttyp = exttyp
    return path
