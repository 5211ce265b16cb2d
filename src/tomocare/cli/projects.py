"""Commands on tomograms kept by data-management projects: copick-predict (a copick project, local roots)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from tomocare.cli.app import app
from tomocare.cli.options import Block, ModelOption, Overwrite, Scheduler, Workers, open_client
from tomocare.errors import TomocareError
from tomocare.io.copick import CopickProject


@app.command("copick-predict")
def copick_predict(
    config: Annotated[Path, typer.Argument(help="copick project config (JSON; local overlay/static roots).")],
    model: ModelOption,
    voxel_size: Annotated[float, typer.Option("--voxel-size", help="Voxel spacing of the tomograms, Å "
                                              "(the VoxelSpacing directory, to 3 decimals).")],
    tomo_type: Annotated[Optional[str], typer.Option(
        "--tomo-type", help="Tomogram type to denoise (one volume per run).")] = None,
    even_type: Annotated[Optional[str], typer.Option("--even-type", help="Tomogram type of the even halves.")] = None,
    odd_type: Annotated[Optional[str], typer.Option("--odd-type", help="Tomogram type of the odd halves.")] = None,
    out_type: Annotated[str, typer.Option("--out-type", help="New tomogram type written to the overlay root "
                                          "(OME-Zarr 0.4 on zarr v2, as copick reads).")] = "tomocare-denoised",
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Run to denoise, repeatable (default: every run "
                                                     "with the input types at this voxel spacing).")] = None,
    block: Block = None,
    chunks: Annotated[Optional[int], typer.Option("--chunks", help="Output chunk edge in voxels [256].")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the block plan of each run and exit.")] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise the tomograms of a copick project.

    With a trained model; each is written back to the project's overlay as --out-type (OME-Zarr 0.4)."""
    from tomocare.cli.predict import _run_operator
    from tomocare.config import load_settings
    from tomocare.model import Model
    from tomocare.predict.network import NetworkOperator
    from tomocare.pretrained import resolve

    if tomo_type is not None and (even_type or odd_type):
        raise TomocareError("give either --tomo-type or --even-type and --odd-type, not both")
    types = [tomo_type] if tomo_type is not None else [t for t in (even_type, odd_type) if t is not None]
    if len(types) != (1 if tomo_type is not None else 2):
        raise TomocareError("give --even-type and --odd-type (or --tomo-type for one volume per run)")
    project = CopickProject.open(config)
    # without --run: the runs that have the inputs; none: the first run, to say what it lacks
    runs = run or [r for r in project.runs() if _has(project, r, voxel_size, types)] or project.runs()[:1]
    if not runs:
        raise TomocareError(f"{config}: the copick project has no runs (in {project.overlay} or {project.static})")
    jobs = [([project.tomogram(r, voxel_size, t) for t in types], project.output(r, voxel_size, out_type))
            for r in runs]  # every input checked before anything is computed
    settings = load_settings(None, predict=dict(block=block, chunks=chunks, format="ome-zarr-0.4")).predict
    operator = NetworkOperator.from_settings(Model.read(resolve(model)), settings)
    with open_client(scheduler, workers) if not dry_run else contextlib.nullcontext():
        for inputs, out in jobs:
            _run_operator(operator, list(inputs), out, None, settings, dry_run=dry_run, overwrite=overwrite,
                          scheduler=scheduler, workers=workers)


def _has(project: CopickProject, run: str, voxel_size: float, types: list[str]) -> bool:
    try:
        for t in types:
            project.tomogram(run, voxel_size, t)
    except TomocareError:
        return False
    return True
