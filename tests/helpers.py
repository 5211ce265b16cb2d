"""Small builders shared by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomocare.testing import write_mrc


def write_test_mrc(path: Path, data: np.ndarray, *, voxel_size=(3.3, 3.2, 3.1), origin=(30.0, 20.0, 10.0),
                   extended_header: bytes = b"", exttyp: bytes = b"") -> Path:
    """An MRC file (``tomocare.testing.write_mrc``) with a distinct voxel size and origin per axis, (z, y, x)."""
    return write_mrc(path, data, voxel_size=voxel_size, origin=origin, extended_header=extended_header, exttyp=exttyp)
