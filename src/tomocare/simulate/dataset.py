"""Write simulated tomograms to disk: even/odd halves, ground truth and particle tables."""

from __future__ import annotations

import inspect
import numbers
import os
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.atomic import atomic_path, check_output, check_output_dir
from tomocare.io.mrc import write_mrc
from tomocare.simulate.tomogram import simulate_tomogram, validate_arguments

PARTICLE_COLUMNS = ("z", "y", "x", "radius", "kind")


def tomogram_seed(seed: int, index: int) -> int:
    """The seed of tomogram ``index`` of a dataset simulated with ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint32)[0])


class TomogramOptions(TypedDict, total=False):
    """What :func:`simulate_tomogram` takes besides the seed (its defaults apply to what is left out)."""

    shape: tuple[int, int, int]
    snr: float
    tilt_range: float
    voxel_size: float
    chunks: int | tuple[int, int, int]


def simulate_dataset(
    out_dir: str | os.PathLike, *, n_tomograms: int = 2, seed: int = 0, overwrite: bool = False,
    **tomogram: Unpack[TomogramOptions],
) -> list[dict]:
    """Write ``tomo_NNN_{even,odd,clean}.mrc`` and ``tomo_NNN_particles.csv`` into ``out_dir``.

    Tomogram ``i`` is ``simulate_tomogram(seed=tomogram_seed(seed, i), **tomogram)``. Volumes are computed
    block by block on the current dask scheduler while they are written. Existing files are refused (checked for
    all tomograms before anything is written) unless ``overwrite``. Returns one dict per
    tomogram: name, seed, noise_std and the paths even, odd, clean, particles.
    """
    defaults = {k: p.default for k, p in inspect.signature(simulate_tomogram).parameters.items()
                if k not in ("seed", "kinds")}
    validate_arguments(**{**defaults, **tomogram, "seed": seed})
    if not isinstance(n_tomograms, numbers.Integral) or isinstance(n_tomograms, bool) or n_tomograms < 1:
        raise TomocareError(f"simulate: n_tomograms must be a positive integer, got {n_tomograms!r}")
    out = Path(out_dir)
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = []
    for i in range(n_tomograms):
        name = f"tomo_{i:03d}"
        paths = {kind: out / f"{name}_{kind}.mrc" for kind in ("even", "odd", "clean")}
        paths["particles"] = out / f"{name}_particles.csv"
        for path in paths.values():
            check_output(path, overwrite=overwrite)
        plans.append((name, paths))
    written = []
    for i, (name, paths) in enumerate(plans):
        sim = simulate_tomogram(seed=tomogram_seed(seed, i), **tomogram)
        for kind in ("even", "odd", "clean"):
            write_mrc(getattr(sim, kind), paths[kind], voxel_size=sim.voxel_size, overwrite=overwrite)
        write_particles(sim.particles, paths["particles"], overwrite=overwrite)
        written.append({"name": name, "seed": sim.seed, "noise_std": sim.noise_std,
                        **{k: str(p) for k, p in paths.items()}})
    return written


def write_particles(particles: np.ndarray, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write a particle table as CSV with a header line: z, y, x, radius (voxels), kind."""
    columns = np.column_stack([particles[c].astype(np.float64) for c in PARTICLE_COLUMNS]).reshape(-1, 5)
    with atomic_path(path, overwrite=overwrite) as tmp:
        np.savetxt(tmp, columns, fmt=["%.2f"] * 4 + ["%d"], delimiter=",",
                   header=",".join(PARTICLE_COLUMNS), comments="")
