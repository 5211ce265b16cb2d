"""Tilt series: angles and acquisition order, weighted back-projection, even/odd splitting.

:func:`reconstruct_tomogram` reconstructs slab by slab along the tilt axis on dask workers;
:func:`split_frames` and :func:`split_tilts` write even/odd halves of movies and tilt series.
"""

from tomocare.tilt.angles import dose_symmetric_ranks, even_odd_indices, read_order, read_tlt, write_order, write_tlt
from tomocare.tilt.reconstruct import reconstruct_lazy, reconstruct_tomogram
from tomocare.tilt.split import frame_sums, split_frames, split_tilts
from tomocare.tilt.wbp import project_slab, reconstruct_slab

__all__ = [
    "dose_symmetric_ranks", "even_odd_indices", "frame_sums", "project_slab", "read_order", "read_tlt",
    "reconstruct_lazy", "reconstruct_slab", "reconstruct_tomogram", "split_frames", "split_tilts",
    "write_order", "write_tlt",
]
