"""Tilt-series commands: simulate-tilts, reconstruct, split-frames, split-tilts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, cast

import typer

from tomocare.cli.app import app
from tomocare.cli.options import Overwrite, Scheduler, Seed, VoxelSize, Workers, open_client

if TYPE_CHECKING:
    from tomocare.tilt.wbp import Window

Angles = Annotated[Path, typer.Option("--angles", help="IMOD .tlt file: one tilt angle in degrees per image.")]
Order = Annotated[
    Optional[Path],
    typer.Option("--order", help="Acquisition order list (CSV lines 'rank,angle', rank 1 first); default: by index."),
]


@app.command("simulate-tilts")
def simulate_tilts(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the tilt series (created).")],
    n: Annotated[int, typer.Option("--n", help="Number of tilt series.")] = 1,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Phantom shape z y x, in voxels.")] = (64, 128, 128),
    max_angle: Annotated[float, typer.Option(help="Largest tilt angle, degrees.")] = 60.0,
    step: Annotated[float, typer.Option(help="Tilt increment, degrees (dose-symmetric acquisition order).")] = 3.0,
    dose: Annotated[float, typer.Option(help="Electrons per pixel per tilt.")] = 20.0,
    seed: Seed = 0,
    voxel_size: VoxelSize = 10.0,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Write simulated aligned tilt series.

    With ground truth: NAME.mrc (noisy), NAME_clean.mrc, NAME_projections.mrc, NAME_phantom.mrc,
    NAME_wedge.mrc (the phantom after the missing wedge), NAME.tlt and NAME_order.csv."""
    from tomocare.simulate.tiltseries import simulate_tilt_series, write_tilt_series

    with open_client(scheduler, workers):
        for i in range(n):
            sim = simulate_tilt_series(shape, max_angle=max_angle, step=step, dose=dose,
                                       voxel_size=voxel_size, seed=seed + i)
            paths = write_tilt_series(sim, out_dir / f"ts_{i:03d}", overwrite=overwrite)
            typer.echo(f"ts_{i:03d}: {len(sim.angles)} tilts -> " + ", ".join(str(p) for p in paths.values()))


@app.command()
def reconstruct(
    tilt_series: Annotated[Path, typer.Argument(help="Aligned tilt series (MRC stack, tilt axis along y).")],
    out: Annotated[Path, typer.Argument(help="Output tomogram (MRC); with --split even-odd, OUT_even/OUT_odd.mrc.")],
    angles: Angles,
    thickness: Annotated[
        Optional[int], typer.Option(help="Tomogram thickness in voxels (default: half the image width).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="'none', or 'even-odd': two half tomograms from alternate tilts.")
    ] = "none",
    order: Order = None,
    filter: Annotated[str, typer.Option("--filter", help="Ramp filter apodisation: ramp, cosine or hamming.")] = "ramp",
    y_chunk: Annotated[int, typer.Option(help="Rows of the tilt axis reconstructed per task.")] = 16,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Reconstruct a tomogram from a tilt series.

    Weighted back-projection of an aligned tilt series, slab by slab along y on dask workers."""
    from tomocare.tilt.reconstruct import reconstruct_tomogram

    with open_client(scheduler, workers):
        written = reconstruct_tomogram(tilt_series, angles, out, thickness=thickness, split=split, order_file=order,
                                       window=cast("Window", filter), y_chunk=y_chunk, overwrite=overwrite)
    for path, stats in written.items():
        typer.echo(f"{tilt_series} -> {path} (mean {stats.mean:.4g}, std {stats.std:.4g})")


@app.command("split-frames")
def split_frames(
    movie: Annotated[
        list[Path], typer.Argument(help="Aligned movie (MRC stack), or one MRC file per frame, in order.")
    ],
    even: Annotated[Path, typer.Option("--even", help="Output: sum of frames 0, 2, 4, ... (MRC).")],
    odd: Annotated[Path, typer.Option("--odd", help="Output: sum of frames 1, 3, 5, ... (MRC).")],
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Split a movie into even and odd frame sums.

    Two images with independent noise (P2P-df)."""
    from tomocare.tilt.split import split_frames as run

    with open_client(scheduler, workers):
        run(movie, even, odd, overwrite=overwrite)
    typer.echo(f"{', '.join(map(str, movie))} -> {even}, {odd}")


@app.command("split-tilts")
def split_tilts(
    tilt_series: Annotated[Path, typer.Argument(help="Tilt series (MRC stack).")],
    angles: Angles,
    even: Annotated[
        Path, typer.Option("--even", help="Output stack of the even tilts (its .tlt is written beside it).")
    ],
    odd: Annotated[Path, typer.Option("--odd", help="Output stack of the odd tilts (its .tlt is written beside it).")],
    order: Order = None,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Split a tilt series into alternate tilts.

    In acquisition order if known, else by index."""
    from tomocare.tilt.split import split_tilts as run

    with open_client(scheduler, workers):
        outputs = run(tilt_series, angles, even, odd, order_file=order, overwrite=overwrite)
    typer.echo(f"{tilt_series} -> " + ", ".join(str(p) for p in outputs.values()))
