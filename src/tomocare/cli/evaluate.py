"""The evaluate command: FSC, metrics against a reference, SNR from boxes, detection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tomocare.cli.app import app
from tomocare.evaluate.snr import BOXES_HELP


@app.command()
def evaluate(
    a: Annotated[Path, typer.Argument(help="Volume to measure (MRC or OME-Zarr), e.g. a half or a denoised tomogram.")],
    b: Annotated[Optional[Path], typer.Argument(help="Second volume: FSC of A against B (the other half).")] = None,
    reference: Annotated[
        Optional[Path],
        typer.Option(help="Ground truth: PSNR, SSIM, NRMSE, MSE of A (and B), whole and p5/p50/p95 over "
                     "sub-volumes."),
    ] = None,
    fit: Annotated[bool, typer.Option(help="Fit scale and offset to the reference (least squares) first.")] = True,
    boxes: Annotated[Optional[Path], typer.Option(help="SNR (NT2C Eq. 5) from paired boxes. " + BOXES_HELP)] = None,
    particles: Annotated[
        Optional[Path],
        typer.Option(help="Particle table (NAME_particles.csv from 'tomocare simulate': z,y,x,radius in voxels): "
                     "detection precision/recall."),
    ] = None,
    polarity: Annotated[
        str, typer.Option(help="Particles 'bright' (tomocare simulate) or 'dark' (usual cryo-ET contrast).")
    ] = "bright",
    match_radius: Annotated[
        Optional[float], typer.Option(help="Detection match radius in voxels (default: each particle's radius).")
    ] = None,
    cube: Annotated[int, typer.Option(help="Edge of the sub-volumes for the metric percentiles, in voxels.")] = 64,
    memory_limit: Annotated[
        float,
        typer.Option(help="GiB a whole-volume step (FSC, detection) may use; larger volumes use sub-volumes "
                     "for FSC."),
    ] = 1.0,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for metrics.json, fsc.csv, fsc.png, pr.png.")
    ] = Path("evaluation"),
) -> None:
    """Measure the quality of a restoration.

    FSC (0.5/0.143 in Å), PSNR/SSIM/NRMSE/MSE against a reference, SNR from boxes, detection P/R."""
    from tomocare.errors import TomocareError
    from tomocare.evaluate.evaluate import evaluate as run_evaluation
    from tomocare.evaluate.evaluate import summary_lines
    from tomocare.io.atomic import refuse_inputs

    for path in (a, b, reference, boxes, particles):
        if path is not None and not path.exists():
            raise TomocareError(f"{path}: no such file")
    refuse_inputs(out, [a, b, reference, boxes, particles])
    if b is None and reference is None and boxes is None and particles is None:
        raise TomocareError("nothing to measure: give a second volume B, --reference, --boxes or --particles")
    if cube < 16:
        raise TomocareError(f"--cube {cube}: sub-volumes must be at least 16 voxels")
    result = run_evaluation(
        a, b, out_dir=out, reference=reference, fit=fit, boxes=boxes, particles=particles, polarity=polarity,
        match_radius=match_radius, cube=cube, memory_limit=int(memory_limit * 2**30),
    )
    for line in summary_lines(result):
        typer.echo(line)
